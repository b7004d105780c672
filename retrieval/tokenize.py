"""BM25 tokenisation for Chinese, English and mixed text.

Chinese runs become jieba's words (see chronorag.retrieval.zh_segment, which computes them faster
than jieba itself: tokenising the whole CRUD-RAG corpus has to fit the ingestion budget),
in search mode by default: long words also yield the 2- and 3-character dictionary words inside
them, so '浦东新区' finds '上海市浦东新区'. Latin words are lowercased, stop-word filtered and
Snowball-stemmed, accented ones after folding to ASCII. Words of other scripts are case-folded
runs of letters and marks (no stemmer for them); hiragana and katakana runs are terms of their
own. Numbers are kept ('8.5', '1,200' -> '1200', '07' -> '7', '٢٠٢١' -> '2021'): dates and
amounts are what financial and news questions ask about.

Search mode is on and jieba's HMM for unknown words off by default: on CRUD-RAG search mode
found more for a little more CPU time, and the HMM added CPU time without finding more
(docs/figures.md).

Each Chinese run also yields its overlapping character bigrams as terms of their own (marked with
``BIGRAM_MARK``, so a two-character word and the same bigram are counted apart), as Lucene's CJK
analyser does. Words are precise where the dictionary knows the word; bigrams still match where
segmentation goes wrong (names and terms the dictionary lacks, a word cut differently in question
and text). On CRUD-RAG both together beat either alone, and trigrams on top did not help
(docs/figures.md).
"""

from __future__ import annotations

import multiprocessing
import re
import sys
import threading
import unicodedata
from collections.abc import Sequence

import numpy as np

from chronorag.retrieval.stopwords import CHINESE_STOP_WORDS, ENGLISH_STOP_WORDS
from chronorag.retrieval.zh_segment import (
    join_unknown_with_hmm,
    load_lexicon,
    segment_chinese,
    with_subwords,
)

TOKENIZER_VERSION = 3  # bump whenever the rules or the word lists change: indexes then rebuild

_CJK = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KANA = "\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff"


def _mark_ranges() -> str:
    """Combining marks (Mn/Mc/Me) of the Basic Multilingual Plane as a regex class body: Devanagari
    vowel signs, Thai tone marks, Arabic harakat... belong inside words, but Python's \\w does
    not match them. Read from the Unicode database once per process."""
    ranges: list[list[int]] = []
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)


_MARKS = _mark_ranges()

# One match per token candidate: a Chinese run (optionally led by one capital letter, so that
# dictionary words like A股 / H股 / T恤 / X光 survive), an ASCII word, a hiragana or a katakana
# run, a word of any other script (Latin with accents, Cyrillic, Greek, Arabic, Hebrew, Devanagari,
# Hangul...: letters and marks up to the next space, punctuation, digit, or switch to Chinese or
# kana), or a number.
_TOKEN_RE = re.compile(
    rf"((?:(?<![A-Za-z0-9])[A-Z])?[{_CJK}]+)"
    rf"|([A-Za-z]+(?:[0-9]+[A-Za-z]*)*(?![^\W\d_{_CJK}{_KANA}]|[{_MARKS}]))"
    r"|([\u3041-\u3096\u309d-\u309f]+|[\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff]+)"
    rf"|((?:[^\W\d_{_CJK}{_KANA}]|[{_MARKS}])+)"
    r"|(\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![.\d])|(?<!\d\.)\d+\.\d+(?![.\d])|\d+)"
)
_CJK_RE = re.compile(f"[{_CJK}]")
_LATIN_RE = re.compile(r"[A-Za-z]")
# Full-width digits and letters (２０２３, ＧＤＰ) and the full-width point between digits; not the
# full-width comma, which in Chinese separates list items rather than thousands.
_FULLWIDTH_RE = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")
_FULLWIDTH = {c: c - 0xFEE0 for c in (*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B), 0xFF0E)}
_RUN_CACHE_MAX_LEN = 16  # short runs repeat across articles ("记者", "据悉", "同比增长"): memoise them
_RUN_CACHE_SIZE = 200_000  # entries: bounds each process's memory for it (docs/figures.md)
# Prefix of a character-bigram term; no other term can start with it (words are letters, marks
# and digits only).
BIGRAM_MARK = "~"


def _normalize_number(num: str) -> str:
    if not num.isascii():  # Arabic-Indic, Devanagari... digits: '٢٠٢١' is the year 2021
        num = "".join(str(unicodedata.digit(c)) if c.isdigit() else c for c in num)
    if "," in num:
        num = num.replace(",", "")
    if len(num) == 2 and num[0] == "0":  # '07' (month, day) matches '7'
        return num[1]
    return num


def detect_language(text: str) -> str:
    """'zh', 'en' or 'mixed' from the share of CJK characters among letters (Latin letters + CJK).

    At least half CJK is 'zh' (a Chinese question naming 'GDP' or 'A股' is still Chinese); at most
    10% is 'en'; text with no letters at all is 'mixed' (nothing to prefer either way).
    """
    cjk = len(_CJK_RE.findall(text))
    latin = len(_LATIN_RE.findall(text))
    if cjk + latin == 0:
        return "mixed"
    share = cjk / (cjk + latin)
    if share >= 0.5:
        return "zh"
    if share <= 0.1:
        return "en"
    return "mixed"


class Tokenizer:
    """Text -> BM25 terms. Deterministic; ``signature`` names everything that changes the output."""

    def __init__(
        self,
        hmm: bool = False,
        search_mode: bool = True,
        stem: bool = True,
        bigrams: bool = True,
        parallel_min_chars: int = 2_000_000,
    ) -> None:
        self.hmm = hmm
        self.search_mode = search_mode
        self.stem = stem
        self.bigrams = bigrams
        self.parallel_min_chars = parallel_min_chars
        self._latin_cache: dict[str, str] = {}
        self._run_cache: dict[str, tuple[str, ...]] = {}
        self._stemmer = None

    @property
    def signature(self) -> str:
        import jieba  # its dictionary decides the Chinese words

        return (
            f"chronorag-tok/v{TOKENIZER_VERSION}/jieba-{jieba.__version__}/hmm={int(self.hmm)}"
            f"/search={int(self.search_mode)}/stem={int(self.stem)}/bigrams={int(self.bigrams)}"
        )

    def __getstate__(self) -> dict:
        return {
            "hmm": self.hmm,
            "search_mode": self.search_mode,
            "stem": self.stem,
            "bigrams": self.bigrams,
            "parallel_min_chars": self.parallel_min_chars,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _latin(self, word: str) -> str:
        """Lowercase, stop-word filter and stem; '' for a stop word. Cached: vocabularies are small."""
        out = self._latin_cache.get(word)
        if out is None:
            low = word.lower()
            if low in ENGLISH_STOP_WORDS:
                out = ""
            elif self.stem:
                if self._stemmer is None:
                    import Stemmer

                    self._stemmer = Stemmer.Stemmer("english")
                out = self._stemmer.stemWord(low)
            else:
                out = low
            if len(self._latin_cache) < 1_000_000:
                self._latin_cache[word] = out
        return out

    def _word(self, word: str) -> str:
        """A word of another script: accented Latin folds to ASCII ('Müller' -> 'muller', so typing
        without accents still matches) and then goes through the English rules; other scripts are
        case-folded only (no stemmer or stop list for them)."""
        out = self._latin_cache.get(word)
        if out is None:
            folded = "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))
            if folded.isascii() and folded.isalpha():
                out = self._latin(folded)
            else:
                out = word.casefold()
            if len(self._latin_cache) < 1_000_000:
                self._latin_cache[word] = out
        return out

    def _chinese_terms(self, run: str) -> tuple[str, ...]:
        """Terms of one Chinese run (words, sub-words, minus stop words, then the run's character
        bigrams); memoised for short runs."""
        lexicon, unknown = load_lexicon()
        words = segment_chinese(run, lexicon, unknown)
        if self.hmm:
            words = join_unknown_with_hmm(words, lexicon)
        if self.search_mode:
            words = with_subwords(words, lexicon)
        terms = []
        for w in words:
            if w in CHINESE_STOP_WORDS:
                continue
            if len(w) == 1 and w < "\u0080":  # a capital letter the dictionary did not join
                w = self._latin(w)
                if not w:
                    continue
            elif w[0] < "\u0080":  # 'A股' -> 'a股', as a query typed in lower case gives
                w = w.lower()
            terms.append(w)
        if self.bigrams:
            han = run[1:] if run[0] < "\u0080" else run  # not the capital of 'A股'
            terms.extend(BIGRAM_MARK + han[i : i + 2] for i in range(len(han) - 1))
        if len(run) <= _RUN_CACHE_MAX_LEN and len(self._run_cache) < _RUN_CACHE_SIZE:
            # interned: the cache's runs share their words and bigrams (half its memory)
            out = self._run_cache[run] = tuple(map(sys.intern, terms))
        else:
            out = tuple(terms)  # tuples of str drop out of the cyclic GC's sight; lists would not
        return out

    def tokenize(self, text: str) -> list[str]:
        if not text:
            return []
        if _FULLWIDTH_RE.search(text):
            text = text.translate(_FULLWIDTH)
        if not text.isascii() and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)  # 'e' + U+0301 and 'é' are one letter
        out: list[str] = []
        cached = self._run_cache.get
        for han, latin, kana, word, num in _TOKEN_RE.findall(text):
            if han:
                terms = cached(han)
                out.extend(self._chinese_terms(han) if terms is None else terms)
            elif latin:
                w = self._latin(latin)
                if w:
                    out.append(w)
            elif kana:
                out.append(kana)
            elif word:
                w = self._word(word)
                if w:
                    out.append(w)
            else:
                out.append(_normalize_number(num))
        return out

    def tokenize_many(self, texts: Sequence[str], workers: int = 1) -> list[list[str]]:
        """Tokenise a batch; ``workers > 1`` forks a process pool when the batch is big enough."""
        if workers <= 1 or len(texts) < 2 * workers or sum(map(len, texts)) < self.parallel_min_chars:
            return [self.tokenize(t) for t in texts]
        vocab, ids, offsets = self.encode_many(texts, workers=workers)
        words = np.asarray(vocab, dtype=object)[ids] if len(vocab) else np.empty(0, dtype=object)
        return [words[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))]

    def encode_many(
        self, texts: Sequence[str], workers: int = 1
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Tokenise into a compact form: (vocab, int32 term ids into vocab, int64 offsets per text).

        This is what the BM25 segments store; it also makes a process pool cheap, since workers
        send back arrays and a small vocabulary instead of millions of Python strings.
        """
        if workers <= 1 or len(texts) < 2 * workers or sum(map(len, texts)) < self.parallel_min_chars:
            return _encode_range(self, texts, 0, len(texts))
        load_lexicon()  # once in the parent, inherited by the forked workers
        self._latin("warm")  # likewise the stemmer: workers then import nothing
        bounds = np.linspace(0, len(texts), num=min(len(texts), workers * 4) + 1).astype(int)
        ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        global _fork_job
        with _fork_lock:  # the job travels to the workers as a global inherited through fork
            _fork_job = (self, texts)
            try:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    parts = pool.map(_encode_fork_range, ranges, chunksize=1)
            finally:
                _fork_job = None
        return merge_encoded(parts)


_fork_lock = threading.Lock()
_fork_job: tuple[Tokenizer, Sequence[str]] | None = None


def _encode_fork_range(rng: tuple[int, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    assert _fork_job is not None, "worker started without a job (not forked?)"
    tok, texts = _fork_job
    return _encode_range(tok, texts, rng[0], rng[1])


def _encode_range(
    tok: Tokenizer, texts: Sequence[str], start: int, stop: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    vocab: dict[str, int] = {}
    ids: list[int] = []
    offsets = np.zeros(stop - start + 1, dtype=np.int64)
    setdefault = vocab.setdefault
    for i in range(start, stop):
        for w in tok.tokenize(texts[i]):
            ids.append(setdefault(w, len(vocab)))
        offsets[i - start + 1] = len(ids)
    return list(vocab), np.asarray(ids, dtype=np.int32), offsets


def merge_encoded(
    parts: Sequence[tuple[list[str], np.ndarray, np.ndarray]],
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Concatenate encoded batches under one vocabulary (first-seen order)."""
    vocab: dict[str, int] = {}
    all_ids: list[np.ndarray] = []
    all_offsets: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    base = 0
    for words, ids, offsets in parts:
        remap = np.fromiter(
            (vocab.setdefault(w, len(vocab)) for w in words), dtype=np.int32, count=len(words)
        )
        all_ids.append(remap[ids] if len(ids) else np.empty(0, dtype=np.int32))
        all_offsets.append(offsets[1:] + base)
        base += int(offsets[-1])
    ids = np.concatenate(all_ids) if all_ids else np.empty(0, dtype=np.int32)
    return list(vocab), ids.astype(np.int32, copy=False), np.concatenate(all_offsets)
