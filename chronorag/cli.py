"""Command line: ``chronorag ingest | delete | retrieve | answer | kv | graph | stats | merge``.

Human-readable output by default, ``--json`` for scripts. Bad usage or bad input exits with code 2
and one line on stderr. Per-record ingest errors (and failed ``retrieve --questions`` lines) are
reported and skipped; the command then exits with code 3 once the rest is done, so a script
notices what it lost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from chronorag.config import ConfigError, load_settings
from chronorag.store import StoreError

EXIT_USAGE = 2
EXIT_PARTIAL = 3  # finished, but some records or question lines failed (each one reported)
MAX_ERRORS_SHOWN = 20


class UsageError(Exception):
    """Bad usage or bad input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise UsageError(message)


def _add_common(p: argparse.ArgumentParser) -> None:
    """--data-dir and --config, accepted before or after the subcommand (``chronorag --data-dir D
    stats`` as well as ``chronorag stats --data-dir D``). SUPPRESS keeps a level that was not given
    the option from overwriting the value another level parsed."""
    p.add_argument("--data-dir", type=str, default=argparse.SUPPRESS,
                   help="data directory (default ./chronorag-data, env CHRONORAG_DATA_DIR)")
    p.add_argument("--config", type=str, default=argparse.SUPPRESS, help="TOML settings file (env CHRONORAG_CONFIG)")


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="only chunks published at or after (YYYY, YYYY-MM, YYYY-MM-DD or ISO-8601)")
    p.add_argument("--until", help="only chunks published at or before (a date includes that whole day)")
    p.add_argument("--doc-id", action="append", dest="doc_ids", help="restrict to document id (repeatable)")
    p.add_argument("--source", action="append", dest="sources", help="restrict to source (repeatable)")
    p.add_argument("--retriever", action="append", choices=["bm25", "dense", "graph"], dest="retrievers",
                   help="use only these retrievers (repeatable; default all)")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=True,
                   help="fuse temporal-graph candidates (default on)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chronorag", description="RAG over document collections that change over time.")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("ingest", help="ingest a JSONL file, a folder of .txt/.md, or the CRUD-RAG corpus",
                       epilog="Bad records are reported and skipped while the rest lands; "
                              "the exit code is then 3 (0 when every record landed).")
    _add_common(p)
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=["jsonl", "dir", "crud"], help="input format (guessed if omitted)")
    p.add_argument("--limit", type=int, help="ingest at most this many records")
    p.add_argument("--workers", type=int, help="processes for chunking")
    p.add_argument("--no-dense", action="store_true",
                   help="skip embedding in this run (the dense index catches up on the next command that "
                        "uses it; set embedder = \"none\" to go without vectors)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("delete", help="delete documents by id from the store and every index")
    _add_common(p)
    p.add_argument("doc_ids", nargs="+")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("retrieve", help="hybrid retrieval for a question (or a file of questions)")
    _add_common(p)
    p.add_argument("question", nargs="?")
    p.add_argument("--questions", type=Path, help="file: one question per line (text or JSON with 'question'); "
                   "one JSON line out per question, exit 3 if some lines failed")
    p.add_argument("--top-k", type=int, default=8)
    _add_filters(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("answer", help="retrieve, then generate an answer reusing the chunks' KV caches")
    _add_common(p)
    p.add_argument("question")
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--mode", choices=["blend", "full", "prefix", "naive"], help="KV reuse mode (default from settings)")
    p.add_argument("--ratio", type=float, help="share of chunk tokens recomputed when blending (default 0.15)")
    _add_filters(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("kv", help="chunk KV caches")
    _add_common(p)
    ksub = p.add_subparsers(dest="kv_command", parser_class=_Parser)
    k = ksub.add_parser("warm", help="precompute KV caches for documents' chunks (all without ids)")
    _add_common(k)
    k.add_argument("doc_ids", nargs="*")
    k.add_argument("--quiet", action="store_true")
    k.add_argument("--json", action="store_true", help="print the count and the cache tiers as JSON")
    k = ksub.add_parser("stats", help="KV cache tiers: entries and bytes (hit/miss counters are this process's)")
    _add_common(k)
    k.add_argument("--json", action="store_true")

    p = sub.add_parser("stats", help="what the data directory holds")
    _add_common(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("graph", help="inspect the temporal knowledge graph")
    _add_common(p)
    gsub = p.add_subparsers(dest="graph_command", parser_class=_Parser)
    g = gsub.add_parser("entity", help="timeline of an entity's facts")
    _add_common(g)
    g.add_argument("name")
    g.add_argument("--json", action="store_true")
    g = gsub.add_parser("period", help="summary and top facts of a period (2023, 2023-Q3, 2023-08, 2023-08-11)")
    _add_common(g)
    g.add_argument("period")
    g.add_argument("--json", action="store_true")

    p = sub.add_parser("merge", help="merge BM25 delta segments into the main segment now")
    _add_common(p)
    p.add_argument("--json", action="store_true")
    return parser


def parse_bound(value: str | None, end: bool = False) -> datetime | None:
    """A --since/--until value; a year, month or day stands for its whole period."""
    if value is None:
        return None
    from chronorag.ingest.dates import DateParseError
    from chronorag.timebounds import period_bounds

    try:
        start, stop = period_bounds(value)
    except DateParseError as exc:
        raise UsageError(f"bad date {value!r}: {exc}") from None
    return stop if end else start


def _settings(args: argparse.Namespace, **extra):
    return load_settings(config_file=getattr(args, "config", None), data_dir=getattr(args, "data_dir", None), **extra)


def _open_engine(settings, create: bool = False):
    """Only ``ingest`` creates a store; the other commands refuse a data directory without one
    (a mistyped --data-dir would otherwise answer "no results" from a new, empty store)."""
    from chronorag.engine import ChronoRAG

    if not create and not settings.store_path.is_file():
        raise UsageError(f"no chronorag store in {settings.data_dir} (ingest documents first, or pass --data-dir)")
    return ChronoRAG(settings, create=create)


def _looks_like_crud(path: Path) -> bool:
    from chronorag.ingest.loaders import guess_format

    try:
        return guess_format(path) == "crud"
    except ValueError:  # a name guess_format cannot read; the loader decides
        return False


def cmd_ingest(args: argparse.Namespace) -> int:
    from itertools import islice

    from tqdm import tqdm

    from chronorag.ingest.loaders import guess_format, load

    if not args.path.exists():
        raise UsageError(f"no such file or directory: {args.path}")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be positive")
    settings = _settings(args, workers=args.workers, embedder="none" if args.no_dense else None)
    try:
        fmt = args.format or guess_format(args.path)
        if args.format == "jsonl" and _looks_like_crud(args.path):
            print(f"chronorag: warning: {args.path} looks like raw CRUD-RAG lines; as JSONL their date "
                  "headers stay in the text and they get no dates (use --format crud)", file=sys.stderr)
        # CRUD-RAG is Chinese news: its naive times are Beijing time unless configured otherwise.
        default_tz = "Asia/Shanghai" if fmt == "crud" and settings.default_tz == "UTC" else settings.default_tz
        records = load(args.path, fmt, default_tz=default_tz)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if args.limit:
        records = islice(records, min(args.limit, sys.maxsize))
    show = not args.quiet and not args.json
    with _open_engine(settings, create=True) as engine:
        bar = tqdm(desc="ingest", unit="doc", disable=not show, file=sys.stderr)
        index_bars: dict[str, tqdm] = {}

        def index_step(name: str, n: int) -> None:
            if name not in index_bars:  # one bar per index: each applies every changed chunk
                index_bars[name] = tqdm(desc=f"index {name}", unit="chunk", disable=not show, file=sys.stderr)
            index_bars[name].update(n)

        try:
            report = engine.insert(records, progress=bar.update, index_progress=index_step)
        finally:
            for b in (bar, *index_bars.values()):
                b.close()
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        for err in report.errors[:MAX_ERRORS_SHOWN]:
            print(f"skipped {err}", file=sys.stderr)
        if len(report.errors) > MAX_ERRORS_SHOWN:
            print(f"... and {len(report.errors) - MAX_ERRORS_SHOWN} more errors", file=sys.stderr)
        print(report.summary_line())
    return EXIT_PARTIAL if report.failed else 0


def cmd_delete(args: argparse.Namespace) -> int:
    if any(not d.strip() for d in args.doc_ids):
        raise UsageError("empty document id")
    with _open_engine(_settings(args)) as engine:
        deleted = engine.delete(args.doc_ids)
    missing = [d for d in args.doc_ids if d not in set(deleted)]
    if args.json:
        print(json.dumps({"deleted": deleted, "not_found": missing}, ensure_ascii=False))
    else:
        print(f"deleted {len(deleted)} document(s)" + (f"; not found: {', '.join(missing)}" if missing else ""))
    return 0


def _read_questions(path: Path) -> list[tuple[int, str | None, dict]]:
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    out.append((n, None, {"error": f"line {n}: bad JSON ({exc.msg})"}))
                    continue
                q = obj.get("question") if isinstance(obj, dict) else None
                if not isinstance(q, str) or not q.strip():
                    problem = "empty 'question'" if isinstance(q, str) else "no 'question' string"
                    out.append((n, None, {"error": f"line {n}: {problem}"}))
                    continue
                out.append((n, q, {k: v for k, v in obj.items() if k != "question"}))
            else:
                out.append((n, line, {}))
    if not out:
        raise UsageError(f"no questions in {path}")
    return out


def _print_hits(question: str, hits) -> None:
    print(f"Q: {question}")
    if not hits:
        print("  (no results)")
    for rank, h in enumerate(hits, 1):
        date = h.published_at.date().isoformat() if h.published_at else "undated"
        via = ", ".join(f"{k}#{v}" for k, v in h.ranks.items())
        print(f"{rank:>3}. [{date}] {h.doc_id}  chunk {h.chunk_id}  score {h.score:.4f}  ({via})")
        snippet = " ".join(h.text.split())
        print(textwrap.indent(textwrap.shorten(snippet, width=300, placeholder=" ..."), "     "))


def _check_question(question: str | None) -> None:
    if question is not None and not question.strip():
        raise UsageError("question is empty")
    if question is not None and not any(ch.isalnum() for ch in question):
        raise UsageError("question has no words to search for")


def _retrieve_kwargs(args: argparse.Namespace) -> dict:
    if args.top_k < 1:
        raise UsageError("--top-k must be >= 1")
    since, until = parse_bound(args.since), parse_bound(args.until, end=True)
    if since and until and since > until:
        raise UsageError(f"--since {args.since} is after --until {args.until}")
    if not args.graph and args.retrievers and "graph" in args.retrievers:
        raise UsageError("--retriever graph and --no-graph contradict each other")
    return dict(top_k=args.top_k, since=since, until=until, doc_ids=args.doc_ids,
                sources=args.sources, retrievers=args.retrievers, use_graph=args.graph)


def cmd_answer(args: argparse.Namespace) -> int:
    from chronorag.kvcache import GenerationError
    from chronorag.kvcache.model_loader import ModelLoadError

    _check_question(args.question)
    kwargs = _retrieve_kwargs(args)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be >= 1")
    stream = None if args.json else (lambda text: print(text, end="", flush=True))
    with _open_engine(_settings(args)) as engine:
        try:
            result, hits = engine.answer(args.question, max_new_tokens=args.max_new_tokens,
                                         on_token=stream, mode=args.mode, ratio=args.ratio, **kwargs)
        except (GenerationError, ModelLoadError) as exc:  # bad settings or a model that is not there
            raise UsageError(str(exc)) from None
    if result is None:
        reason = "no documents matched the question and filters; nothing to answer from"
        if args.json:
            print(json.dumps({"question": args.question, "answer": None, "sources": [], "reason": reason}, ensure_ascii=False))
        else:
            print(f"({reason})")
        return 0
    if args.json:
        print(json.dumps({"question": args.question, "answer": result.text,
                          "sources": [h.to_dict() for h in hits], "timings": result.to_dict()["timings"],
                          "cache": result.to_dict()["cache"]}, ensure_ascii=False, default=str))
        return 0
    t, c = result.timings, result.cache
    print()
    for rank, h in enumerate(hits, 1):
        date = h.published_at.date().isoformat() if h.published_at else "undated"
        print(f"  [{rank}] {h.doc_id} ({date}, chunk {h.chunk_id})")
    reason = f", fallback: {c.fallback_reason}" if c.fallback_reason else ""
    print(f"  mode {c.mode}: TTFT {t.ttft_s * 1000:.0f} ms (model load {t.load_model_s:.1f} s), "
          f"{t.decode_tokens_per_s:.1f} tok/s, chunk KV hits {c.chunk_hits} misses {c.chunk_misses}, "
          f"recomputed {c.recomputed_tokens}/{c.chunk_tokens} chunk tokens{reason}")
    return 0


def _kv_tiers(stats: dict) -> str:
    mb = 1 << 20
    return (f"{stats['memory_entries']} chunk(s) in memory ({stats['memory_bytes'] / mb:.1f} MiB), "
            f"{stats['disk_entries']} on disk ({stats['disk_bytes'] / mb:.1f} MiB)")


def cmd_kv(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from chronorag.kvcache import GenerationError
    from chronorag.kvcache.model_loader import ModelLoadError

    if args.kv_command is None:
        raise UsageError("kv needs a subcommand: warm [DOC_ID...] or stats")
    with _open_engine(_settings(args)) as engine:
        if args.kv_command == "stats":
            stats = engine.generator.cache_stats()
            if args.json:
                print(json.dumps(stats, default=str))
            else:
                print(f"KV cache: {_kv_tiers(stats)}")
                print(f"this process: {stats['memory_hits']} memory hit(s), {stats['disk_hits']} disk hit(s), "
                      f"{stats['misses']} miss(es), {stats['memory_evictions']} memory eviction(s)")
            return 0
        missing = [d for d in args.doc_ids if engine.store.get_document(d) is None]
        if missing:
            raise UsageError(f"unknown document id(s): {', '.join(missing)}")
        bar = tqdm(desc="kv warm", unit="chunk", disable=args.quiet, file=sys.stderr)
        try:
            done = engine.warm_kv(args.doc_ids or None, progress=bar.update)
        except (GenerationError, ModelLoadError) as exc:
            raise UsageError(str(exc)) from None
        finally:
            bar.close()
        stats = engine.generator.cache_stats()
    if args.json:
        print(json.dumps({"computed": done, "cache": stats}, default=str))
    else:
        print(f"computed KV for {done} chunk(s); the cache holds {_kv_tiers(stats)}")
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    if (args.question is None) == (args.questions is None):
        both = args.question is not None
        raise UsageError("give a question or --questions FILE, not both" if both else "give either a question or --questions FILE")
    _check_question(args.question)
    kwargs = _retrieve_kwargs(args)
    questions = _read_questions(args.questions) if args.questions is not None else []
    with _open_engine(_settings(args)) as engine:
        if args.question is not None:
            hits = engine.retrieve(args.question, **kwargs)
            if args.json:
                print(json.dumps({"question": args.question, "results": [h.to_dict() for h in hits]},
                                 ensure_ascii=False))
            else:
                _print_hits(args.question, hits)
            return 0
        bad = 0
        for n, question, extra in questions:
            if question is None:
                bad += 1
                print(json.dumps({"line": n, **extra}, ensure_ascii=False))
                continue
            try:
                hits = engine.retrieve(question, **kwargs)
            except ValueError as exc:
                bad += 1
                print(json.dumps({"line": n, "question": question, "error": str(exc)}, ensure_ascii=False))
                continue
            print(json.dumps({"line": n, **extra, "question": question,
                              "results": [h.to_dict() for h in hits]}, ensure_ascii=False), flush=True)
    if bad:
        print(f"chronorag: {bad} of {len(questions)} question line(s) failed; their output lines carry "
              "an 'error'", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open_engine(_settings(args)) as engine:
        stats = engine.stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
        return 0
    print(f"data dir     {stats['data_dir']}")
    print(f"documents    {stats['documents']:,} ({stats['undated_documents']:,} undated)")
    print(f"chunks       {stats['chunks']:,} ({stats['tokens']:,} tokens, {stats['embeddings']:,} embeddings)")
    print(f"published    {stats['published_from'] or '-'} .. {stats['published_to'] or '-'}")
    for name, info in stats["indexes"].items():
        print(f"index {name:<6} {_index_summary(name, info)}")
    print(f"disk         {stats['disk_bytes'] / 1e6:.1f} MB")
    return 0


def _index_summary(name: str, info: dict) -> str:
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


def cmd_graph(args: argparse.Namespace) -> int:
    if args.graph_command is None:
        raise UsageError("graph needs a subcommand: entity NAME or period PERIOD")
    with _open_engine(_settings(args)) as engine:
        if engine.graph is None:
            raise UsageError("the graph is disabled in settings (graph = 'none')")
        engine.sync()
        if args.graph_command == "entity":
            result = engine.graph.entity_timeline(args.name)
        else:
            result = engine.graph.period_summary(args.period)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, default=str))
    elif args.graph_command == "entity":
        print(f"Timeline of {args.name} ({len(result)} facts)")
        for f in result:
            when = f.get("time") or f.get("valid_from") or "undated"
            valid = f" (valid {f.get('valid_from') or '?'} .. {f.get('valid_to') or 'now'})" if f.get("valid_to") else ""
            print(f"  {str(when)[:10]}  {f.get('subject')} --{f.get('relation')}--> {f.get('object')}{valid}")
    else:
        print(f"{result.get('period')} ({result.get('level')}): {result.get('n_facts')} facts, {result.get('n_chunks')} chunks")
        print(textwrap.fill(result.get("summary") or "(no summary)", width=100, initial_indent="  ", subsequent_indent="  "))
        for f in result.get("top_facts", []):
            print(f"  - {f.get('subject')} --{f.get('relation')}--> {f.get('object')}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    with _open_engine(_settings(args)) as engine:
        before = engine.bm25.stats()
        engine.merge()
        stats = engine.bm25.stats()
    if args.json:
        print(json.dumps(stats))
        return 0
    # the BM25 index holds chunks (bm25s calls them documents)
    held = f"{stats['live_docs']} chunk(s), vocabulary {stats['vocab']}"
    if before["segments"] <= 1 and not before["deleted"]:
        print(f"nothing to merge: the BM25 index is one segment ({held})")
    else:
        dropped = f", dropping {before['deleted']} deleted chunk(s)" if before["deleted"] else ""
        print(f"merged {before['segments']} BM25 segment(s) into {stats['segments']}{dropped}: {held}")
    return 0


COMMANDS = {"ingest": cmd_ingest, "delete": cmd_delete, "retrieve": cmd_retrieve,
            "stats": cmd_stats, "merge": cmd_merge, "graph": cmd_graph, "answer": cmd_answer, "kv": cmd_kv}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            raise UsageError(f"give a command: {', '.join(COMMANDS)} (chronorag --help)")
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError, StoreError, ValueError) as exc:
        print(f"chronorag: error: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("chronorag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # never a traceback for users; CHRONORAG_DEBUG=1 shows it
        if os.environ.get("CHRONORAG_DEBUG"):
            raise
        print(f"chronorag: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
