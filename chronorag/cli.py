"""Command line: ``chronorag ingest | delete | retrieve | answer | kv | graph | stats | merge``.

Human-readable output by default, ``--json`` for scripts. Bad usage or bad input exits with code 2
and one line on stderr. Per-record ingest errors (and failed ``retrieve --questions`` lines) are
reported and skipped; the command then exits with code 3 once the rest is done, so a script
notices what it lost (so does ``delete`` given an id that is not stored).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from chronorag.cli_args import UsageError, build_parser, parse_bound
from chronorag.config import ConfigError, load_settings
from chronorag.store import StoreError

EXIT_USAGE = 2
EXIT_PARTIAL = 3  # finished, but some records or question lines failed (each one reported)
MAX_ERRORS_SHOWN = 20
log = logging.getLogger(__name__)


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


def _noting_ids(records: Iterable, seen: set[str]) -> Iterator:
    """``records`` unchanged, each id (loaded or failed) added to ``seen``: what --prune keeps."""
    for record in records:
        if isinstance(record.doc_id, str):
            seen.add(record.doc_id)
        yield record


def cmd_ingest(args: argparse.Namespace) -> int:
    from itertools import islice

    from tqdm import tqdm

    from chronorag.ingest.loaders import guess_format, load
    from chronorag.ingest.loaders_dir import id_prefix

    if not args.path.exists():
        raise UsageError(f"no such file or directory: {args.path}")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be positive")
    settings = _settings(args, workers=args.workers, embedder="none" if args.no_dense else None)
    try:
        fmt = args.format or guess_format(args.path)
        if args.format == "jsonl" and _looks_like_crud(args.path):
            log.warning("%s looks like raw CRUD-RAG lines; as JSONL their date headers stay in the text "
                        "and they get no dates (use --format crud)", args.path)
        if args.prune and fmt != "dir":
            raise UsageError("--prune only applies to a folder (--format dir)")
        if args.prune and args.limit is not None:
            raise UsageError("--prune cannot be combined with --limit: a partial read would delete the rest")
        # CRUD-RAG is Chinese news: its naive times are Beijing time unless configured otherwise.
        default_tz = "Asia/Shanghai" if fmt == "crud" and settings.default_tz == "UTC" else settings.default_tz
        records = load(args.path, fmt, default_tz=default_tz)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if args.limit:
        records = islice(records, min(args.limit, sys.maxsize))
    seen: set[str] = set()
    if args.prune:
        records = _noting_ids(records, seen)
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
        if args.prune:
            report.pruned = len(engine.prune(id_prefix(args.path), seen))
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        for err in report.errors[:MAX_ERRORS_SHOWN]:
            print(f"skipped {err}", file=sys.stderr)
        if len(report.errors) > MAX_ERRORS_SHOWN:
            print(f"... and {len(report.errors) - MAX_ERRORS_SHOWN} more errors", file=sys.stderr)
        print(report.summary_line())
    return EXIT_PARTIAL if report.failed else 0


def _check_doc_ids(doc_ids: Sequence[str]) -> None:
    if any(not d.strip() for d in doc_ids):
        raise UsageError("empty document id")


def cmd_delete(args: argparse.Namespace) -> int:
    _check_doc_ids(args.doc_ids)
    with _open_engine(_settings(args)) as engine:
        deleted = engine.delete(args.doc_ids)
    found = set(deleted)
    missing = list(dict.fromkeys(d for d in args.doc_ids if d not in found))
    if args.json:
        print(json.dumps({"deleted": deleted, "not_found": missing}, ensure_ascii=False))
    else:
        print(f"deleted {len(deleted)} document(s)")
        if missing:
            print(f"not found: {', '.join(missing)}", file=sys.stderr)
    # a mistyped id is a record that failed, like a bad ingest line: the rest is done, exit 3 says so
    return EXIT_PARTIAL if missing else 0


def _read_questions(path: Path) -> list[tuple[int, str | None, dict]]:
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    out = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8").strip()
            except UnicodeDecodeError as exc:  # a replaced byte would silently change the question
                out.append((n, None, {"error": f"line {n}: not valid UTF-8 (byte 0x{raw[exc.start]:02x})"}))
                continue
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
    """The engine's own check, run before the store is opened."""
    from chronorag.arguments import question_text

    if question is not None:
        try:
            question_text(question)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


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
    _check_doc_ids(getattr(args, "doc_ids", None) or ())
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
    print(f"change log   at {stats['change_seq']:,}; {stats['change_log_entries']:,} entries kept for indexes behind")
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


class _StderrWarnings(logging.Handler):
    """chronorag's own warnings (ignored fields, a busy writer...) on stderr, one line each, prefixed
    like its errors; ``sys.stderr`` is looked up per message, so a replaced stderr is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"chronorag: {record.levelname.lower()}: {' '.join(record.getMessage().split())}",
                  file=sys.stderr)
        except Exception:  # never let a warning break the command
            self.handleError(record)


def _show_warnings() -> None:
    logger = logging.getLogger("chronorag")
    if not any(isinstance(h, _StderrWarnings) for h in logger.handlers):
        logger.addHandler(_StderrWarnings(logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    _show_warnings()
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
