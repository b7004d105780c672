"""What makes a Document storable. The loaders check records as they parse them; Documents built in
code reach the pipeline unchecked, and one bad value must fail that document, not the batch (or,
like a naive date, every later catch-up of the graph)."""

from __future__ import annotations

import json
from datetime import datetime

from chronorag.types import CONTROL_CHARS, Document

MAX_ID_CHARS = 1024


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as UTF-8 (SQLite and every index need it), or None: a lone
    surrogate, e.g. os.fsdecode's stand-in for an undecodable byte of a file name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{exc.reason} at character {exc.start}"
    return None


def doc_id_problem(doc_id: str) -> str | None:
    """Why an id cannot be stored, or None. A NUL cannot be passed to `chronorag delete`, a newline
    or tab breaks every line-oriented output, and a lone surrogate (a file name's undecodable byte)
    cannot be written to SQLite: it would fail the whole batch."""
    if not doc_id.strip():
        return "empty 'id'"
    if CONTROL_CHARS.search(doc_id):
        return f"'id' contains a control character: {doc_id!r}"
    problem = unicode_problem(doc_id)
    if problem:
        return f"'id' is not valid Unicode: {problem}: {doc_id!r}"
    if len(doc_id) > MAX_ID_CHARS:
        return f"'id' is longer than {MAX_ID_CHARS} characters"
    return None


def document_problem(doc: object) -> str | None:
    """Why ``doc`` cannot be stored, or None."""
    if not isinstance(doc, Document):
        return f"expected a Document, got {type(doc).__name__}"
    if not isinstance(doc.doc_id, str):
        return f"'id' must be a string, got {type(doc.doc_id).__name__}"
    problem = doc_id_problem(doc.doc_id)
    if problem:
        return problem
    if not isinstance(doc.text, str):
        return f"'text' must be a string, got {type(doc.text).__name__}"
    if not doc.text.strip():
        return "empty 'text'"
    if doc.title is not None and not isinstance(doc.title, str):
        return f"'title' must be a string, got {type(doc.title).__name__}"
    for name, value in (("text", doc.text), ("title", doc.title or "")):
        problem = unicode_problem(value)
        if problem:
            return f"'{name}' is not valid Unicode: {problem}"
    if not isinstance(doc.source, str):
        return f"'source' must be a string, got {type(doc.source).__name__}"
    problem = unicode_problem(doc.source)
    if problem:
        return f"'source' is not valid Unicode: {problem}"
    if doc.published_at is not None:
        if not isinstance(doc.published_at, datetime):
            return f"'published_at' must be a datetime, got {type(doc.published_at).__name__}"
        if doc.published_at.utcoffset() is None:
            return "'published_at' has no time zone (give an aware datetime, e.g. tzinfo=timezone.utc)"
    if not isinstance(doc.metadata, dict):
        return f"'metadata' must be a dict, got {type(doc.metadata).__name__}"
    try:
        encoded = json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"'metadata' is not JSON: {exc}"
    problem = unicode_problem(encoded)
    if problem:
        return f"'metadata' is not valid Unicode: {problem}"
    return None
