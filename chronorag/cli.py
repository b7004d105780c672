"""Command line: ``chronorag ingest | delete | retrieve | sync | answer | kv | graph | stats | merge``.

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
from collections.abc import Iterable, Iterator, Sequence
from datetime import timezone
from pathlib import Path

from chronorag.cli_args import UsageError, build_parser
from chronorag.cli_format import kv_tiers, print_answer, print_hits, print_period, print_stats, print_timeline, warn_stale
from chronorag.config import ConfigError, load_settings
from chronorag.store import StoreError

EXIT_USAGE = 2
EXIT_PARTIAL = 3  # finished, but some records or question lines failed (each one reported)
MAX_ERRORS_SHOWN = 20
# what the engine's argument checks call an argument, as the command line spells it
FLAG_NAMES = {"top_k": "--top-k", "since": "--since", "until": "--until", "doc_ids": "--doc-id",
              "sources": "--source", "retrievers": "--retriever", "max_new_tokens": "--max-new-tokens"}
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


def _retrieve_kwargs(args: argparse.Namespace) -> dict:
    """The engine's own argument check (:func:`chronorag.arguments.retrieval_request`), run before
    the store opens so bad usage fails at once, and not once per ``--questions`` line. The bounds go
    on as typed: the engine reads them in default_tz, exactly as it reads the Python API's."""
    from chronorag.arguments import retrieval_request
    from chronorag.periods import resolve_tz

    if not args.graph and args.retrievers and "graph" in args.retrievers:
        raise UsageError("--retriever graph and --no-graph contradict each other")
    tz = resolve_tz(_settings(args).default_tz) if args.since or args.until else timezone.utc
    retrieval_request(getattr(args, "question", None), args.top_k, args.since, args.until, args.doc_ids,
                      args.sources, args.retrievers, tz, names=FLAG_NAMES)
    return dict(top_k=args.top_k, since=args.since, until=args.until, doc_ids=args.doc_ids,
                sources=args.sources, retrievers=args.retrievers, use_graph=args.graph)


def cmd_answer(args: argparse.Namespace) -> int:
    from chronorag.kvcache import GenerationError, TokenEvent
    from chronorag.kvcache.model_loader import ModelLoadError

    kwargs = _retrieve_kwargs(args)
    answer = None
    with _open_engine(_settings(args)) as engine:
        try:
            for event in engine.answer_stream(args.question, max_new_tokens=args.max_new_tokens, mode=args.mode,
                                              ratio=args.ratio, **kwargs):
                if isinstance(event, TokenEvent):
                    if not args.json:
                        print(event.text, end="", flush=True)
                else:
                    answer = event
        except (GenerationError, ModelLoadError) as exc:  # bad settings or a model that is not there
            raise UsageError(str(exc)) from None
    warn_stale(answer.stale, args.json)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, default=str))
        return 0
    print_answer(answer)
    return 0


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
                print(f"KV cache: {kv_tiers(stats)}")
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
        print(f"computed KV for {done} chunk(s); the cache holds {kv_tiers(stats)}")
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    if (args.question is None) == (args.questions is None):
        both = args.question is not None
        raise UsageError("give a question or --questions FILE, not both" if both else "give either a question or --questions FILE")
    kwargs = _retrieve_kwargs(args)
    questions = _read_questions(args.questions) if args.questions is not None else []
    with _open_engine(_settings(args)) as engine:
        if args.question is not None:
            hits = engine.retrieve(args.question, **kwargs)
            if args.json:
                print(json.dumps(hits.to_dict(), ensure_ascii=False))
            else:
                warn_stale(hits.stale, False)
                print_hits(args.question, hits)
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
            print(json.dumps({"line": n, **extra, **hits.to_dict()}, ensure_ascii=False), flush=True)
    if bad:
        print(f"chronorag: {bad} of {len(questions)} question line(s) failed; their output lines carry "
              "an 'error'", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Catch every derived index up with the store, with a progress bar per index."""
    from tqdm import tqdm

    show = not args.quiet and not args.json
    with _open_engine(_settings(args)) as engine:
        bars: dict[str, tqdm] = {}

        def step(name: str, n: int) -> None:
            if name not in bars:
                bars[name] = tqdm(desc=f"sync {name}", unit="change", disable=not show, file=sys.stderr)
            bars[name].update(n)

        try:
            result = engine.sync(progress=step)
        finally:
            for bar in bars.values():
                bar.close()
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        done = ", ".join(f"{name} {n:,}" for name, n in result.applied.items() if n) or "nothing to do"
        behind = f"; still behind (a writer came in): {result.stale}" if result.stale else ""
        print(f"synced: {done}; indexes at change {result.change_seq:,}{behind}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open_engine(_settings(args)) as engine:
        stats = engine.stats()
    if args.json:
        print(json.dumps(stats.to_dict(), ensure_ascii=False))
        return 0
    print_stats(stats)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    if args.graph_command is None:
        raise UsageError("graph needs a subcommand: entity NAME or period PERIOD")
    with _open_engine(_settings(args)) as engine:
        if engine.graph is None:
            raise UsageError("the graph is disabled in settings (graph = 'none')")
        stale = engine.read_state()
        if args.graph_command == "entity":
            result = engine.entity_timeline(args.name)
        else:
            result = engine.period_summary(args.period)
    warn_stale({k: v for k, v in stale.items() if k == "graph"}, args.json)
    if args.json:
        out = result.to_dict()
        print(json.dumps(out["facts"] if args.graph_command == "entity" else out, ensure_ascii=False))
    elif args.graph_command == "entity":
        print_timeline(result)
    else:
        print_period(result)
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


def _lazy(module: str, name: str):
    """A command that lives in its own module, imported when it runs (the service pulls FastAPI)."""
    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


COMMANDS = {"ingest": cmd_ingest, "delete": cmd_delete, "retrieve": cmd_retrieve, "sync": cmd_sync,
            "serve": _lazy("chronorag.cli_service", "cmd_serve"), "keys": _lazy("chronorag.cli_service", "cmd_keys"),
            "worker": _lazy("chronorag.cli_jobs", "cmd_worker"), "watch": _lazy("chronorag.cli_jobs", "cmd_watch"),
            "query": _lazy("chronorag.cli_query", "cmd_query"),
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
