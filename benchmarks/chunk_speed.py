"""Chunking throughput on real CRUD-RAG text, printed as one JSON line.

    python benchmarks/chunk_speed.py                  # first 5,000 articles, one process
    python benchmarks/chunk_speed.py --all --workers 2
    python benchmarks/chunk_speed.py --n 3000 --verify  # also check every chunk against the tokenizer

``--verify`` re-tokenises every chunk with the real MiniLM tokenizer (slow) and checks the invariants:
exact token counts, no chunk over the limit, text == doc[char_start:char_end], and every
non-whitespace character covered.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import sys
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import crud_dir  # noqa: E402

from chronorag.ingest.chunker import Chunker  # noqa: E402

_chunker: Chunker | None = None


def _init(chunk_size: int, overlap: int) -> None:
    global _chunker
    _chunker = Chunker(chunk_size, overlap)


def _split_many(texts: list[str]) -> list[list]:
    return [_chunker.split(t) for t in texts]


def crud_texts(limit: int | None) -> list[str]:
    """Article bodies (the date header before 正文： removed, as the loader does)."""
    out = []
    with gzip.open(crud_dir() / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in islice(fh, limit):
            text = json.loads(line)["text"]
            out.append(text.split("正文：", 1)[-1])
    return out


def verify(texts: list[str], drafts: list[list], chunk_size: int) -> dict:
    from chronorag.ingest.token_count import load_minilm_tokenizer

    tok = load_minilm_tokenizer()
    problems = {"count_mismatch": 0, "too_long": 0, "bad_offsets": 0, "uncovered_docs": 0}
    for text, chunks in zip(texts, drafts):
        covered = bytearray(len(text))
        real = tok.encode_batch([c.text for c in chunks], add_special_tokens=False) if chunks else []
        for c, enc in zip(chunks, real):
            problems["count_mismatch"] += len(enc.ids) != c.n_tokens
            problems["too_long"] += len(enc.ids) > chunk_size
            problems["bad_offsets"] += text[c.char_start : c.char_end] != c.text
            covered[c.char_start : c.char_end] = b"\x01" * (c.char_end - c.char_start)
        problems["uncovered_docs"] += any(
            not covered[i] and not ch.isspace() for i, ch in enumerate(text)
        )
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args()

    texts = crud_texts(None if args.all else args.n)
    chars = sum(map(len, texts))
    t0 = time.perf_counter()
    if args.workers > 1:
        step = 256
        parts = [texts[i : i + step] for i in range(0, len(texts), step)]
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(args.workers, _init, (args.chunk_size, args.overlap)) as pool:
            drafts = [d for part in pool.imap(_split_many, parts) for d in part]
    else:
        _init(args.chunk_size, args.overlap)
        drafts = _split_many(texts)
    seconds = time.perf_counter() - t0
    n_chunks = sum(map(len, drafts))
    result = {
        "docs": len(texts),
        "chars": chars,
        "workers": args.workers,
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(texts) / seconds, 1),
        "chars_per_s": round(chars / seconds),
        "chunks": n_chunks,
        "mean_tokens": round(sum(c.n_tokens for d in drafts for c in d) / max(n_chunks, 1), 1),
    }
    if args.verify:
        result["verify"] = verify(texts, drafts, args.chunk_size)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
