"""Chunker: exact offsets, token limit, coverage, Chinese and English sentences, overlap, no downloads."""

from __future__ import annotations

import random
import unicodedata

import pytest

from chronorag.ingest.chunker import Chunker, split_sentences
from chronorag.ingest.token_count import WordPieceCounter, load_minilm_tokenizer

EN = (
    "Operator: Good morning, and welcome to the third quarter 2024 earnings call. "
    "Revenue was $4.2 billion, up 12% year over year, driven by strong demand in North America. "
    "Gross margin expanded 150 basis points to 43.1%. We repurchased 2.3 million shares! "
    "Looking ahead, we expect fiscal 2025 revenue growth of 8% to 10%; capital expenditures "
    "should be roughly $600 million. Are there any questions? Yes: from Morgan Stanley.\n"
)
ZH = (
    "人民网柏林7月28日电（记者刘仲华、张慧中）7月27日晚，中国驻德国大使馆举行庆祝中国人民解放军建军96周年招待会。"
    "德军政官员、各界人士、多国驻德使节和武官、华侨华人、留学生及中资企业代表等约350人出席招待会！"
    "吴俊辉表示，李强总理上月对德国进行了正式访问，传承了两国友谊，深化了双边合作。"
    "今年初，中德两国国防部举行了工作对话；前不久，两国防长在香格里拉对话会期间进行了会晤……"
    "他说：“中国军队始终是维护世界和平的坚定力量。”\n"
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_minilm_tokenizer()


@pytest.fixture(scope="module")
def chunker():
    return Chunker(chunk_size=64, chunk_overlap=8)


def _check_invariants(text, chunks, tokenizer, size):
    covered = [False] * len(text)
    for i, c in enumerate(chunks):
        assert c.ord == i
        assert text[c.char_start : c.char_end] == c.text
        assert c.text == c.text.strip() and c.text
        real = len(tokenizer.encode(c.text, add_special_tokens=False).ids)
        assert c.n_tokens == real <= size
        for j in range(c.char_start, c.char_end):
            covered[j] = True
    missing = [ch for ch, ok in zip(text, covered) if not ok and not ch.isspace()]
    assert not missing, f"uncovered characters: {''.join(missing)[:40]!r}"


def test_english_text(chunker, tokenizer):
    text = EN * 6
    chunks = chunker.split(text)
    assert len(chunks) > 3
    _check_invariants(text, chunks, tokenizer, 64)
    # packing prefers sentence ends: most chunks end with sentence punctuation
    enders = sum(c.text[-1] in ".!?;" for c in chunks)
    assert enders >= len(chunks) - 2


def test_chinese_text_splits_on_chinese_sentence_marks(chunker, tokenizer):
    text = ZH * 5
    chunks = chunker.split(text)
    _check_invariants(text, chunks, tokenizer, 64)
    assert len(chunks) > 5
    assert sum(c.text[-1] in "。！？；…”" for c in chunks) >= len(chunks) - 2


def test_sentence_splitter_handles_both_languages_losslessly():
    text = "第一句。第二句！第三句？Fourth one. Fifth: 3.5 stays whole… 第六句；end\n\nnext line"
    parts = split_sentences(text)
    assert "".join(parts) == text
    assert parts[:3] == ["第一句。", "第二句！", "第三句？"]
    assert "Fourth one. " in parts and any("3.5 stays whole" in p for p in parts)
    assert parts[-1] == "next line"


def test_empty_and_whitespace_text(chunker):
    assert chunker.split("") == []
    assert chunker.split("  \n\t \u3000 ") == []
    with pytest.raises(TypeError):
        chunker.split(None)


def test_short_text_is_one_chunk_with_offsets(chunker):
    text = "\n\n  Hello world.  \n"
    (only,) = chunker.split(text)
    assert only.text == "Hello world." and (only.char_start, only.char_end) == (4, 16)
    assert only.n_tokens == 3


def test_overlap_between_consecutive_chunks(tokenizer):
    # llama-index carries whole sentences (that fit in the overlap) into the next chunk
    text = " ".join(f"Short sentence number {i} is here." for i in range(80))
    with_overlap = Chunker(chunk_size=48, chunk_overlap=16).split(text)
    without = Chunker(chunk_size=48, chunk_overlap=0).split(text)
    shared = 0
    for a, b in zip(with_overlap, with_overlap[1:]):
        assert b.char_start >= a.char_start and b.char_end > a.char_end
        if b.char_start < a.char_end:
            shared += 1
            tail = text[b.char_start : a.char_end]
            assert len(tokenizer.encode(tail, add_special_tokens=False).ids) <= 16
    assert shared >= len(with_overlap) // 2
    assert all(b.char_start >= a.char_end for a, b in zip(without, without[1:]))
    assert len(with_overlap) > len(without)


def test_long_unpunctuated_sentences_respect_the_limit(tokenizer):
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    english = " ".join(rng.choices(words, k=400))  # no sentence end at all
    chinese = "".join(rng.choices("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质", k=300))
    chunker = Chunker(chunk_size=32, chunk_overlap=4)
    for text in (english, chinese, english + "，" + chinese):
        _check_invariants(text, chunker.split(text), tokenizer, 32)


def test_words_longer_than_the_limit_are_cut(tokenizer):
    text = "start " + "x1y2" * 60 + " middle " + "q" * 150 + " end."
    chunker = Chunker(chunk_size=16, chunk_overlap=0)
    chunks = chunker.split(text)
    _check_invariants(text, chunks, tokenizer, 16)


def test_chunks_stay_under_a_character_cap_when_words_are_one_unknown_token(tokenizer):
    """WordPiece counts any word over 100 characters as one [UNK]: a token budget alone let a
    200,000-character line through as one chunk."""
    chunker = Chunker(chunk_size=16, chunk_overlap=0)
    cap = chunker.max_chars
    assert cap == 16 * 8
    for text in ("x" * 5000, "intro words. " + "ab" * 900 + " tail of the line", "e\u0301" * 400,
                 "hash " + "f00d" * 300 + "\n" + "next paragraph with words " * 3):
        chunks = chunker.split(text)
        assert chunks and all(len(c.text) <= cap for c in chunks), text[:20]
        _check_invariants(text, chunks, tokenizer, 16)
        assert all(not c.text[0].isspace() and not unicodedata.combining(c.text[0]) for c in chunks)
    words = "ordinary words, as in any text. " * 40  # never meet the cap: llama-index's chunks
    assert [c.text for c in chunker.split(words)] == chunker.node_parser.split_text(words)


def test_repeated_paragraphs_keep_their_own_offsets(chunker, tokenizer):
    para = "The same paragraph again. It repeats word for word.\n"
    text = para * 20
    chunks = chunker.split(text)
    _check_invariants(text, chunks, tokenizer, 64)
    assert chunks[-1].char_end == len(text.rstrip())


def test_chunks_equal_llama_index_split_text(chunker):
    for text in (EN * 5, ZH * 4, (EN + ZH) * 3, "短句。" * 200):
        spans = chunker.node_parser.split_spans(text)
        assert [text[s:e] for s, e, _ in spans] == chunker.node_parser.split_text(text)


TRICKY = [
    "Café déjà vu — naïve coöperation, résumé.",
    "emoji 🙂🚀 and flags 🇩🇪, zero\u200bwidth, soft\u00adhyphen, nbsp\u00a0here",
    "control\x0bchars\x0cand\x85next\x1cdone",
    "ＦＵＬＬ－ＷＩＤＴＨ：１２３，ａｂｃ。",
    "日本語のテキスト、カタカナ、한국어 텍스트 and 中文混合English123abc",
    "compat ideographs 豈更車 and ext-B 𠀀𠀁 chars",
    "https://example.com/path?q=1&x=2#frag e-mail: someone@example.org",
    "a" * 120 + " " + "b1" * 60 + " supercalifragilisticexpialidocious",
    "İstanbul ǅemal ß ﬁ ligature Ωmega ΣΊΣΥΦΟΣ",
    "tabs\tand\r\nwindows\u2028line\u2029sep\u3000ideographic space",
]


@pytest.mark.parametrize("text", TRICKY)
def test_fast_token_count_is_exact(tokenizer, text):
    counter = WordPieceCounter(tokenizer)
    assert counter.exact_shortcut
    assert counter.count(text) == len(tokenizer.encode(text, add_special_tokens=False).ids)


def test_tricky_texts_chunk_cleanly(tokenizer):
    text = " ".join(TRICKY) * 3
    _check_invariants(text, Chunker(chunk_size=24, chunk_overlap=4).split(text), tokenizer, 24)


def test_no_download_path_is_used(monkeypatch):
    """llama-index's defaults (tiktoken tokenizer, NLTK punkt) must never be reached."""
    import llama_index.core.node_parser.text.sentence as sentence_mod

    def forbidden(*_a, **_k):
        raise AssertionError("a downloading default was used")

    monkeypatch.setattr(sentence_mod, "get_tokenizer", forbidden)
    monkeypatch.setattr(sentence_mod, "split_by_sentence_tokenizer", forbidden)
    chunks = Chunker(chunk_size=32, chunk_overlap=4).split(EN + ZH)
    assert chunks and all(c.n_tokens <= 32 for c in chunks)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="chunk_size"):
        Chunker(chunk_size=8)
    with pytest.raises(ValueError, match="chunk_overlap"):
        Chunker(chunk_size=64, chunk_overlap=64)


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_starts_the_chunker_only_when_something_needs_chunking(tmp_path, monkeypatch, workers):
    """A re-ingest of unchanged documents neither imports llama-index nor forks chunking workers."""
    from datetime import datetime, timezone

    from chronorag.ingest import pipeline
    from chronorag.store import Store
    from chronorag.types import Document

    store = Store(tmp_path / "store.sqlite3")
    docs = [Document(f"d{i}", f"Report {i}. The harbor budget was discussed.", datetime(2024, 1, 1 + i, tzinfo=timezone.utc))
            for i in range(3)]
    first = pipeline.ingest_documents(store, docs, chunk_size=64, chunk_overlap=8, workers=workers)
    assert first.new == 3

    def refuse(self):
        raise AssertionError("chunker started for unchanged documents")

    monkeypatch.setattr(pipeline._ChunkRunner, "_start", refuse)
    again = pipeline.ingest_documents(store, docs, chunk_size=64, chunk_overlap=8, workers=workers)
    assert again.unchanged == 3 and again.new == 0
    changed = [Document("d0", "Report 0 was revised.", docs[0].published_at)]
    with pytest.raises(AssertionError, match="chunker started"):
        pipeline.ingest_documents(store, changed, chunk_size=64, chunk_overlap=8, workers=workers)
    store.close()
