"""BM25 tokenisation: English stemming/stop words, Chinese words via jieba plus character bigrams,
mixed text, numbers."""

from __future__ import annotations

import pickle
from pathlib import Path

import jieba
import numpy as np
import pytest

from chronorag.retrieval.stopwords import CHINESE_STOP_WORDS
from chronorag.retrieval.tokenize import BIGRAM_MARK, Tokenizer, detect_language


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    """Words only: the word rules read more plainly without the bigrams (tested on their own)."""
    return Tokenizer(bigrams=False)


def bigrams(*grams: str) -> list[str]:
    return [BIGRAM_MARK + g for g in grams]


def test_english_lowercase_stem_and_stop_words(tok):
    out = tok.tokenize("The Companies were RUNNING quickly, and the revenue rose.")
    assert out == ["compani", "run", "quick", "revenu", "rose"]
    assert tok.tokenize("the and of to") == []


def test_english_alphanumeric_words_stay_whole(tok):
    assert tok.tokenize("Q3 results for H100 and iPhone15") == ["q3", "result", "h100", "iphone15"]


def test_chinese_words_match_jieba_and_drop_punctuation():
    plain = Tokenizer(search_mode=False, bigrams=False)
    sentences = [
        "国家统计局今天发布数据，七月份社会消费品零售总额同比增长。",
        "记者从市文化和旅游局获悉：暑期旅游市场持续升温！",
        "中国人民银行决定下调金融机构存款准备金率",
    ]
    for s in sentences:
        expected = [
            w for w in jieba.lcut(s, HMM=False) if w.strip("，。：！") and w not in CHINESE_STOP_WORDS
        ]
        assert plain.tokenize(s) == expected
    out = plain.tokenize("我们在北京参加了会议。")
    assert out == ["北京", "参加", "会议"]  # 我们 / 在 / 了 are stop words, 。 is punctuation


def test_search_mode_matches_jieba_cut_for_search(tok):
    for s in ("中华人民共和国国务院发布通知", "上海市浦东新区举办人工智能大会"):
        expected = [
            w for w in jieba.lcut_for_search(s, HMM=False) if w not in CHINESE_STOP_WORDS
        ]
        assert tok.tokenize(s) == expected


def test_search_mode_adds_words_inside_long_words(tok):
    out = tok.tokenize("上海市浦东新区")
    assert {"上海", "浦东", "新区", "上海市", "上海市浦东新区"} <= set(out)
    # a query for the part now shares terms with a document naming the whole
    assert set(tok.tokenize("浦东新区")) & set(out)
    assert Tokenizer(search_mode=False, bigrams=False).tokenize("上海市浦东新区") == ["上海市浦东新区"]


def test_mixed_text_keeps_letter_words_of_the_dictionary(tok):
    out = tok.tokenize("2023年A股市场GDP增长")
    assert out == ["2023", "年", "a股", "市场", "gdp", "增长"]
    assert "iphone15" in tok.tokenize("苹果发布iPhone15手机")


def test_numbers(tok):
    assert tok.tokenize("增长8.5%") == ["增长", "8.5"]
    assert tok.tokenize("营收1,200万元")[-2:] == ["1200", "万元"]
    assert tok.tokenize("500万元") == ["500", "万元"]
    assert tok.tokenize("07月28日")[:3] == ["7", "月", "28"]
    assert tok.tokenize("2023.07.28") == ["2023", "7", "28"]  # a dotted date is not a decimal
    assert tok.tokenize("股票代码000001")[-1] == "000001"  # codes keep their zeros
    assert tok.tokenize("２０２３年ＧＤＰ增长８．５％") == ["2023", "年", "gdp", "增长", "8.5"]


def test_words_of_every_script_are_terms(tok):
    assert tok.tokenize("Компания Газпром назначила") == ["компания", "газпром", "назначила"]
    assert tok.tokenize("ΕΛΛΗΝΙΚΆ Σίσυφος") == ["ελληνικά", "σίσυφοσ"]  # case-folded, final sigma too
    assert tok.tokenize("مرحبا بالعالم") == ["مرحبا", "بالعالم"]
    assert tok.tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs and virama stay inside
    assert tok.tokenize("삼성전자는 발표했다") == ["삼성전자는", "발표했다"]
    assert tok.tokenize("日本語のテキスト・ラーメン") == ["日本", "語", "の", "テキスト", "ラーメン"]
    assert tok.tokenize("のsmile Apple中国") == ["の", "smile", "appl", "中国"]


def test_accents_fold_so_plain_typing_matches(tok):
    assert tok.tokenize("Müller café naïve Zürich2020") == ["muller", "cafe", "naiv", "zurich", "2020"]
    assert tok.tokenize("Muller cafe naive") == ["muller", "cafe", "naiv"]
    assert tok.tokenize("e\u0301cole") == tok.tokenize("\u00e9cole") == ["ecol"]  # NFD == NFC
    assert tok.tokenize("thé") == []  # folds to an English stop word


def test_digits_of_other_scripts_are_numbers(tok):
    assert tok.tokenize("سنة ٢٠٢١") == ["سنة", "2021"]
    assert tok.tokenize("वर्ष २०२१") == ["वर्ष", "2021"]


def test_empty_and_punctuation_only(tok):
    assert tok.tokenize("") == []
    assert tok.tokenize("！！，。——   ...") == []


def test_detect_language():
    assert detect_language("国家统计局发布七月份数据") == "zh"
    assert detect_language("2023年A股市场GDP增长8.5%") == "zh"
    assert detect_language("What did the CEO say about margins?") == "en"
    assert detect_language("苹果发布iPhone 15 Pro") == "mixed"
    assert detect_language("2023 8.5%") == "mixed"


def test_tokenize_many_with_workers_matches_sequential():
    tok = Tokenizer(parallel_min_chars=0)
    texts = [f"第{i}次会议讨论了GDP增长{i}.5%和running costs" for i in range(40)] + [""]
    assert tok.tokenize_many(texts, workers=2) == [tok.tokenize(t) for t in texts]


def test_encode_many_round_trips():
    tok = Tokenizer()
    texts = ["北京发布消费券", "", "cats and dogs", "北京 cats 2023"]
    words, ids, offsets = tok.encode_many(texts)
    assert ids.dtype == np.int32 and offsets.tolist()[0] == 0 and len(offsets) == len(texts) + 1
    vocab = np.array(words, dtype=object)
    for i, t in enumerate(texts):
        assert vocab[ids[offsets[i] : offsets[i + 1]]].tolist() == tok.tokenize(t)


def test_signature_names_the_options_and_pickles():
    assert Tokenizer().signature != Tokenizer(hmm=True).signature
    assert Tokenizer().signature != Tokenizer(search_mode=False).signature
    assert Tokenizer().signature != Tokenizer(bigrams=False).signature
    clone = pickle.loads(pickle.dumps(Tokenizer(hmm=True, bigrams=False)))
    assert clone.signature == Tokenizer(hmm=True, bigrams=False).signature
    assert clone.tokenize("国家统计局") == ["国家", "统计", "统计局", "国家统计局"]


def test_chinese_runs_add_their_character_bigrams():
    both = Tokenizer()
    assert both.tokenize("国家统计局") == ["国家", "统计", "统计局", "国家统计局", *bigrams("国家", "家统", "统计", "计局")]
    # a two-character word and the same bigram are counted apart
    assert both.tokenize("市场") == ["市场", *bigrams("市场")]
    # per run: punctuation, digits and Latin words end one; a lone character has no bigram
    assert both.tokenize("增长8.5%，年") == ["增长", *bigrams("增长"), "8.5", "年"]
    # the capital that leads 'A股' is part of the word, not of the bigrams
    assert both.tokenize("A股市场") == ["a股", "市场", *bigrams("股市", "市场")]
    # English and other scripts are unchanged
    assert both.tokenize("Revenue grew 8%") == Tokenizer(bigrams=False).tokenize("Revenue grew 8%")
    assert all(not w.startswith(BIGRAM_MARK) for w in both.tokenize("Q3 iPhone15 Müller 2,023 の"))


def test_bigrams_keep_a_name_the_dictionary_splits_together():
    """'雷军' is not in jieba's dictionary: as words it is just '雷' and '军', which a text using the
    two characters apart has too; its bigram needs them side by side."""
    words, both = Tokenizer(bigrams=False), Tokenizer()
    query, right, wrong = "雷军表示", "小米董事长雷军表示", "军对雷表示"
    assert set(words.tokenize(query)) <= set(words.tokenize(wrong))  # words cannot tell them apart
    assert set(words.tokenize(query)) <= set(words.tokenize(right))
    assert set(both.tokenize(query)) <= set(both.tokenize(right))
    assert BIGRAM_MARK + "雷军" not in both.tokenize(wrong)


def test_hmm_joins_unknown_words():
    assert "营收" in Tokenizer(hmm=True, search_mode=False).tokenize("公司营收增长")
    assert "营收" not in Tokenizer(search_mode=False).tokenize("公司营收增长")


def test_lexicon_cache_is_named_after_the_dictionary_contents(tmp_path, monkeypatch):
    """Another checkout's copy of the same dictionary shares the cache file; an edited one does not."""
    from chronorag.retrieval import zh_segment

    original = Path(jieba.__file__).with_name("dict.txt")
    copy = tmp_path / "elsewhere" / "dict.txt"
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    shared = zh_segment._lexicon_cache_path(str(tmp_path))
    monkeypatch.setattr(jieba.dt, "dictionary", str(copy))
    assert zh_segment._lexicon_cache_path(str(tmp_path)) == shared
    with open(copy, "a", encoding="utf-8") as fh:
        fh.write("时间知识图谱 3 n\n")
    assert zh_segment._lexicon_cache_path(str(tmp_path)) != shared


def test_lexicon_is_cached_on_disk_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    from chronorag.retrieval import zh_segment

    monkeypatch.setattr(zh_segment, "_writable_cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(zh_segment, "_lexicon", None)
    built = zh_segment.load_lexicon()
    (cache,) = tmp_path.glob("chronorag-lexicon-*.marshal")
    import jieba

    def no_build():
        raise AssertionError("the lexicon was rebuilt")

    monkeypatch.setattr(jieba.dt, "check_initialized", no_build)
    monkeypatch.setattr(zh_segment, "_lexicon", None)
    assert zh_segment.load_lexicon() == built  # read back from the file, jieba untouched
    monkeypatch.undo()
    monkeypatch.setattr(zh_segment, "_writable_cache_dir", lambda: str(tmp_path))
    cache.write_bytes(b"\x00garbage")
    monkeypatch.setattr(zh_segment, "_lexicon", None)
    assert zh_segment.load_lexicon() == built  # damaged: rebuilt and rewritten
    assert zh_segment._read_cached(cache) == built
    run = "国家统计局发布数据显示上半年国内生产总值增长"
    assert zh_segment.segment_chinese(run, *built) == ["国家统计局", "发布", "数据", "显示", "上半年", "国内", "生产总值", "增长"]


def test_cached_runs_share_their_term_strings():
    """The run cache holds up to 200k runs; one string per distinct term (not one per run that
    has it) halves its memory."""
    t = Tokenizer()
    first, second = t.tokenize("国家统计"), t.tokenize("统计局长")
    assert "统计" in first and BIGRAM_MARK + "统计" in second
    shared = {w for w in first if w in second}
    assert shared and all(any(w is v for v in second) for w in first if w in shared)
