"""Chinese word segmentation over jieba's dictionary, in a form fast enough for bulk indexing.

jieba picks, for a run of Chinese characters, the route through its word DAG with the highest
product of word probabilities. ``segment_chinese`` computes the same route (identical output to
``jieba.lcut(run, HMM=False)`` on pure Chinese runs, ties going to the longer word) in one
backward pass without building the DAG, faster than jieba's own Python loop. The
optional HMM pass and search-mode sub-words mirror jieba's ``HMM=True`` and ``cut_for_search``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
from pathlib import Path

PREFIX_ONLY = 1.0  # marker in the lexicon: a prefix of some word, not a word (log-probs are < 0)

_lexicon_lock = threading.Lock()
_lexicon: dict[str, float] | None = None
_unknown_logp = 0.0


def _writable_cache_dir() -> str | None:
    """jieba caches its parsed dictionary in the temp dir; use a user cache dir if that is read-only."""
    for cand in (tempfile.gettempdir(), os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")):
        try:
            Path(cand).mkdir(parents=True, exist_ok=True)
            if os.access(cand, os.W_OK):
                return cand
        except OSError:
            continue
    return None


_LEXICON_FORMAT = 1  # bump when the lexicon's contents change meaning


def _lexicon_cache_path(cache_dir: str) -> Path:
    """Our parsed lexicon's cache file, named after the dictionary's contents (cheap to hash), not
    its path: every virtualenv or checkout with the same jieba shares one file instead of leaving
    one more behind in the temp dir each time."""
    import hashlib

    import jieba

    source = Path(jieba.dt.dictionary or Path(jieba.__file__).with_name("dict.txt"))
    digest = hashlib.sha1(source.read_bytes())
    digest.update(f"|{jieba.__version__}|{_LEXICON_FORMAT}".encode())
    return Path(cache_dir) / f"chronorag-lexicon-{digest.hexdigest()[:16]}.marshal"


def _read_cached(path: Path) -> tuple[dict[str, float], float] | None:
    import marshal

    try:
        lexicon, unknown = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None  # missing or damaged: rebuild it
    return (lexicon, unknown) if isinstance(lexicon, dict) and isinstance(unknown, float) else None


def _write_cached(path: Path, lexicon: dict[str, float], unknown: float) -> None:
    import marshal

    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, delete=False) as fh:
            fh.write(marshal.dumps((lexicon, unknown)))
        os.replace(fh.name, path)  # readers see the old file or the whole new one
    except OSError:
        pass  # a read-only cache only costs the next process the build


def load_lexicon() -> tuple[dict[str, float], float]:
    """(word -> log probability or PREFIX_ONLY, log probability of an unknown character).

    Built from jieba's dictionary once per process (forked workers inherit it), with jieba's
    start-up logging silenced, and cached on disk: reading it back is much faster than building it,
    which every one-shot CLI command that meets Chinese text would otherwise pay.
    """
    global _lexicon, _unknown_logp
    if _lexicon is not None:
        return _lexicon, _unknown_logp
    with _lexicon_lock:
        if _lexicon is None:
            import jieba

            jieba.setLogLevel(logging.ERROR)
            cache_dir = _writable_cache_dir()
            cache = _lexicon_cache_path(cache_dir) if cache_dir is not None else None
            cached = _read_cached(cache) if cache is not None else None
            if cached is not None:
                _lexicon, _unknown_logp = cached
                return _lexicon, _unknown_logp
            if cache_dir is not None and jieba.dt.tmp_dir is None:
                jieba.dt.tmp_dir = cache_dir
            jieba.dt.check_initialized()
            log_total = math.log(jieba.dt.total)
            _unknown_logp = -log_total
            _lexicon = {
                w: (math.log(f) - log_total if f else PREFIX_ONLY) for w, f in jieba.dt.FREQ.items()
            }
            if cache is not None:
                _write_cached(cache, _lexicon, _unknown_logp)
    return _lexicon, _unknown_logp


def segment_chinese(run: str, lexicon: dict[str, float], unknown_logp: float) -> list[str]:
    """Maximum-probability segmentation of one run over jieba's word DAG (ties: longer word)."""
    n = len(run)
    score = [0.0] * (n + 1)
    ends = [0] * n
    get = lexicon.get
    for i in range(n - 1, -1, -1):
        best = None
        best_end = i + 1
        j = i + 1
        v = get(run[i])
        while v is not None:
            if v < 0.5:  # a word, not only a prefix
                s = v + score[j]
                if best is None or s >= best:
                    best, best_end = s, j
            j += 1
            if j > n:
                break
            v = get(run[i:j])
        if best is None:  # no dictionary word starts here: the character stands alone
            best = unknown_logp + score[i + 1]
        score[i] = best
        ends[i] = best_end
    words = []
    i = 0
    while i < n:
        j = ends[i]
        words.append(run[i:j])
        i = j
    return words


def join_unknown_with_hmm(words: list[str], lexicon: dict[str, float]) -> list[str]:
    """jieba's HMM pass: runs of single characters that are not a known word are re-cut by the HMM."""
    from jieba import finalseg

    out: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        if len(buf) == 1:
            out.append(buf[0])
        elif buf:
            joined = "".join(buf)
            if lexicon.get(joined, PREFIX_ONLY) < 0.5:
                out.extend(buf)
            else:
                out.extend(finalseg.cut(joined))
        buf.clear()

    for w in words:
        if len(w) == 1:
            buf.append(w)
        else:
            flush()
            out.append(w)
    flush()
    return out


def with_subwords(words: list[str], lexicon: dict[str, float]) -> list[str]:
    """Search mode: a long word also yields the dictionary words of 2 and 3 characters inside it.

    '上海市浦东新区' is one dictionary word; without its parts a query for '浦东新区' misses it.
    """
    out: list[str] | None = None
    get = lexicon.get
    for idx, w in enumerate(words):
        n = len(w)
        if n <= 2:
            if out is not None:
                out.append(w)
            continue
        if out is None:
            out = words[:idx]
        for i in range(n - 1):
            if get(w[i : i + 2], PREFIX_ONLY) < 0.5:
                out.append(w[i : i + 2])
        for i in range(n - 2 if n > 3 else 0):
            if get(w[i : i + 3], PREFIX_ONLY) < 0.5:
                out.append(w[i : i + 3])
        out.append(w)
    return words if out is None else out
