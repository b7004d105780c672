"""The command line's grammar: subcommands, options and their help, and how bad usage is reported
(one line, exit code 2) instead of argparse's usage dump."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def _command(sub, name: str, **kw) -> argparse.ArgumentParser:
    """A (sub)command that also takes --data-dir and --config."""
    p = sub.add_parser(name, **kw)
    _add_common(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chronorag", description="RAG over document collections that change over time.")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = _command(sub, "ingest", help="ingest a JSONL file, a folder of .txt/.md, the CRUD-RAG corpus or ECT-QA transcripts",
                 epilog="Bad records are reported and skipped while the rest lands; "
                        "the exit code is then 3 (0 when every record landed).")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=["jsonl", "dir", "crud", "ect"], help="input format (guessed if omitted)")
    p.add_argument("--limit", type=int, help="ingest at most this many records")
    p.add_argument("--prune", action="store_true",
                   help="folders only: delete stored documents of this folder whose files are gone "
                        "(a file that failed to load keeps its stored version)")
    p.add_argument("--workers", type=int, help="processes for chunking")
    p.add_argument("--no-dense", action="store_true",
                   help="skip embedding in this run (the dense index catches up on the next command that "
                        "uses it; set embedder = \"none\" to go without vectors)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = _command(sub, "delete", help="delete documents by id from the store and every index "
                 "(exit 3 if some ids are not stored; the others are deleted)")
    p.add_argument("doc_ids", nargs="+")
    p.add_argument("--json", action="store_true")

    p = _command(sub, "retrieve", help="hybrid retrieval for a question (or a file of questions)")
    p.add_argument("question", nargs="?")
    p.add_argument("--questions", type=Path, help="file: one question per line (text or JSON with 'question'); "
                   "one JSON line out per question, exit 3 if some lines failed")
    p.add_argument("--top-k", type=int, default=8)
    _add_filters(p)
    p.add_argument("--json", action="store_true")

    p = _command(sub, "answer", help="retrieve, then generate an answer reusing the chunks' KV caches")
    p.add_argument("question")
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--mode", choices=["blend", "full", "prefix", "naive"], help="KV reuse mode (default from settings)")
    p.add_argument("--ratio", type=float, help="share of chunk tokens recomputed when blending (default 0.15)")
    _add_filters(p)
    p.add_argument("--json", action="store_true")

    p = _command(sub, "query", help="plan the most useful chunk set under a cost budget, then answer from it")
    p.add_argument("question", nargs="?")
    p.add_argument("--questions", type=Path, help="file: one question per line (text or JSON with 'question'); "
                   "one JSON line out per input line, in order")
    p.add_argument("--budget", type=str, help="context budget in the generator's tokens (default from settings)")
    p.add_argument("--budget-ms", type=str, help="context budget in estimated prefill milliseconds instead")
    p.add_argument("--planner", choices=["mcts", "greedy", "topk"], default="mcts")
    p.add_argument("--no-generate", action="store_true", help="plan (and show the plan) without generating")
    p.add_argument("--max-new-tokens", type=int)
    _add_filters(p)
    p.add_argument("--json", action="store_true")

    p = _command(sub, "kv", help="chunk KV caches")
    ksub = p.add_subparsers(dest="kv_command", parser_class=_Parser)
    k = _command(ksub, "warm", help="precompute KV caches for documents' chunks (all without ids)")
    k.add_argument("doc_ids", nargs="*")
    k.add_argument("--quiet", action="store_true")
    k.add_argument("--json", action="store_true", help="print the count and the cache tiers as JSON")
    k = _command(ksub, "stats", help="KV cache tiers: entries and bytes (hit/miss counters are this process's)")
    k.add_argument("--json", action="store_true")

    p = _command(sub, "sync", help="catch every derived index up with the store (what reads leave to writers); "
                 "resumable: an interrupted sync keeps its work")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true")

    p = _command(sub, "stats", help="what the data directory holds")
    p.add_argument("--json", action="store_true")

    p = _command(sub, "graph", help="inspect the temporal knowledge graph")
    gsub = p.add_subparsers(dest="graph_command", parser_class=_Parser)
    g = _command(gsub, "entity", help="timeline of an entity's facts")
    g.add_argument("name")
    g.add_argument("--json", action="store_true")
    g = _command(gsub, "period", help="summary and top facts of a period (2023, 2023-Q3, 2023-08, 2023-08-11)")
    g.add_argument("period")
    g.add_argument("--json", action="store_true")

    p = _command(sub, "merge", help="merge BM25 delta segments into the main segment now")
    p.add_argument("--json", action="store_true")
    _add_service_commands(sub)
    return parser


def _add_service_commands(sub) -> None:
    """The long-running side: the REST service, the ingestion worker, a folder watch, API keys."""
    p = _command(sub, "serve", help="run the REST API (and the ingestion worker, when no other process is the writer)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-auth", action="store_true",
                   help="serve without API keys (refused together with a non-loopback --host)")
    p.add_argument("--no-worker", action="store_true", help="serve reads only; leave ingestion jobs to `chronorag worker`")

    p = _command(sub, "worker", help="run queued ingestion jobs (one writer per data directory)")
    p.add_argument("--once", action="store_true", help="run the jobs queued now, then exit")
    p.add_argument("--quiet", action="store_true")

    p = _command(sub, "watch", help="ingest new, changed and deleted files of a folder as they appear, through jobs")
    p.add_argument("path", type=Path)
    p.add_argument("--once", action="store_true", help="queue what differs from the store now, then exit")
    p.add_argument("--no-worker", action="store_true", help="only queue jobs (a running serve or worker applies them)")
    p.add_argument("--quiet", action="store_true")

    p = _command(sub, "keys", help="API keys for `chronorag serve` (stored hashed in the store)")
    ksub = p.add_subparsers(dest="keys_command", parser_class=_Parser)
    k = _command(ksub, "create", help="create a key; it is printed once")
    k.add_argument("--scope", choices=["read", "write", "admin"], required=True)
    k.add_argument("--name", default="")
    k.add_argument("--json", action="store_true")
    k = _command(ksub, "list", help="the keys (never the secrets)")
    k.add_argument("--json", action="store_true")
    k = _command(ksub, "revoke", help="revoke a key by id")
    k.add_argument("key_id")
    k.add_argument("--json", action="store_true")

