"""Text-mode output of the commands: each formats one of the engine's typed results (``--json``
prints their ``to_dict()`` instead)."""

from __future__ import annotations

import sys
import textwrap

from chronorag.results import stale_line


def print_hits(question: str, hits) -> None:
    print(f"Q: {question}")
    if not hits:
        print("  (no results)")
    for rank, h in enumerate(hits, 1):
        date = h.published_at.date().isoformat() if h.published_at else "undated"
        via = ", ".join(f"{k}#{v}" for k, v in h.ranks.items())
        print(f"{rank:>3}. [{date}] {h.doc_id}  chunk {h.chunk_id}  score {h.score:.4f}  ({via})")
        snippet = " ".join(h.text.split())
        print(textwrap.indent(textwrap.shorten(snippet, width=300, placeholder=" ..."), "     "))


def warn_stale(stale: dict[str, int], as_json: bool) -> None:
    """One warning line for indexes a read found behind (``--json`` carries ``stale`` instead)."""
    if stale and not as_json:
        print(f"chronorag: warning: {stale_line(stale)}", file=sys.stderr)


def kv_tiers(stats: dict) -> str:
    mb = 1 << 20
    return (f"{stats['memory_entries']} chunk(s) in memory ({stats['memory_bytes'] / mb:.1f} MiB), "
            f"{stats['disk_entries']} on disk ({stats['disk_bytes'] / mb:.1f} MiB)")


def print_answer(answer) -> None:
    """The text-mode tail of ``answer`` (the tokens were printed as they came): the numbered
    citations and one line of timings and cache use."""
    if answer.text is None:
        print(f"({answer.reason})")
        return
    print()
    for c in answer.citations:
        date = c.published_at.date().isoformat() if c.published_at else "undated"
        print(f"  [{c.n}] {c.doc_id} ({date}, chunk {c.chunk_id})")
    t, c = answer.timings.generation, answer.cache
    reason = f", fallback: {c.fallback_reason}" if c.fallback_reason else ""
    print(f"  mode {c.mode}: TTFT {answer.timings.ttft_ms:.0f} ms (retrieval {answer.timings.retrieve_ms:.0f} ms, "
          f"model load {t.load_model_s:.1f} s), {t.decode_tokens_per_s:.1f} tok/s, chunk KV hits {c.chunk_hits} "
          f"misses {c.chunk_misses}, recomputed {c.recomputed_tokens}/{c.chunk_tokens} chunk tokens{reason}")


def print_stats(stats) -> None:
    print(f"data dir     {stats.data_dir}")
    print(f"documents    {stats.documents:,} ({stats.undated_documents:,} undated)")
    print(f"chunks       {stats.chunks:,} ({stats.tokens:,} tokens, {stats.embeddings:,} embeddings)")
    print(f"published    {stats.published_from or '-'} .. {stats.published_to or '-'}")
    print(f"change log   at {stats.change_seq:,}; {stats.change_log_entries:,} entries kept for indexes behind")
    for ix in stats.indexes:
        behind = f"; behind by {ix.behind:,} (chronorag sync)" if ix.behind else ""
        print(f"index {ix.name:<6} {index_summary(ix.name, ix.to_dict())}{behind}")
    print(f"disk         {stats.disk_bytes / 1e6:.1f} MB")


def index_summary(name: str, info: dict) -> str:
    """One readable line per index (``--json`` has every field); unknown indexes as key=value."""
    try:
        if name == "bm25":
            sizes = " + ".join(f"{n:,}" for n in info["segment_docs"]) or "0"
            line = (f"{info['live_docs']:,} live chunks in {info['segments']} segment(s) ({sizes}), vocabulary "
                    f"{info['vocab']:,}; {info['deleted']:,} deleted, {info['pending']:,} pending")
            if info.get("merging"):
                line += "; merging"
            if info.get("last_merge_error"):
                line += f"; last merge failed: {info['last_merge_error']}"
        elif name == "dense":
            line = (f"{info['vectors']:,} vectors, {info['kind']}, {info['embedder']} ({info['dim']}-dim), "
                    f"{info['file_bytes'] / 1e6:.1f} MB")
        elif name == "graph":
            line = (f"{info['entities']:,} entities, {info['facts']:,} facts, {info['time_nodes']:,} time nodes "
                    f"from {info['chunks_extracted']:,} chunks ({info['extractor']})")
        else:
            return ", ".join(f"{k}={v}" for k, v in info.items())
    except (KeyError, TypeError):
        return ", ".join(f"{k}={v}" for k, v in info.items())
    return f"{line}; at change {info['applied_seq']:,}" if "applied_seq" in info else line


def print_timeline(timeline) -> None:
    print(f"Timeline of {timeline.name} ({len(timeline.facts)} facts)")
    for f in timeline.facts:
        when = f.time or f.valid_from
        valid = f" (valid {_day(f.valid_from) or '?'} .. {_day(f.valid_to) or 'now'})" if f.valid_to else ""
        print(f"  {_day(when) or 'undated'}  {f.subject} --{f.relation}--> {f.object}{valid}")


def print_period(result) -> None:
    print(f"{result.period} ({result.level}): {result.n_facts} facts, {result.n_chunks} chunks")
    print(textwrap.fill(result.summary or "(no summary)", width=100, initial_indent="  ", subsequent_indent="  "))
    for f in result.top_facts:
        print(f"  - {f.subject} --{f.relation}--> {f.object}")


def _day(t) -> str | None:
    return t.isoformat()[:10] if t is not None else None
