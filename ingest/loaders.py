"""Loaders: files in, a stream of ``Document | LoadError`` out, one record at a time.

Every bad record becomes a :class:`LoadError` naming the file, the 1-based line and the id if one
could be read, and loading goes on; only a bad *argument* (unknown format, missing path) raises.
Files are read as bytes line by line and decoded per line, so one stray latin-1 byte costs one
record, not the file, and a 400 MB corpus never sits in memory.

Duplicate ids inside one input: the first record wins and every later one with the same id becomes a
LoadError naming the line that was kept. Keeping the last instead would need the whole file read
before the first document could be yielded; to replace a document, ingest the new version again
(the pipeline updates documents by id).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from chronorag.ingest.dates import (
    CRUD_BODY_MARK, MAX_CRUD_HEADER_CHARS, SHANGHAI, UTC, DateParseError, crud_header_date,
    parse_datetime, resolve_tz, split_crud_line,
)
from chronorag.ingest.checks import doc_id_problem
from chronorag.ingest.loaders_dir import load_directory
from chronorag.ingest.loaders_ect import ECTRecordError, ect_document, ect_id, looks_like_ect
from chronorag.types import Document, LoadError

__all__ = ["FORMATS", "guess_format", "load", "load_crud", "load_directory", "load_ect", "load_jsonl"]

FORMATS = ("jsonl", "dir", "crud", "ect")
Record = Document | LoadError
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
_SNIFF_LINES = 20
# chronorag JSONL's fields; anything else is dropped, so the loader says so (a 'date' field would
# otherwise leave a whole corpus silently undated).
JSONL_FIELDS = ("id", "text", "published_at", "title", "metadata", "source")
_FIELD_HINTS = {
    **dict.fromkeys(("date", "published", "publish_date", "pub_date", "pubdate", "publication_date",
                     "timestamp", "time", "datetime", "created_at", "created", "updated_at"), "published_at"),
    **dict.fromkeys(("doc_id", "docid", "_id", "uid", "key"), "id"),
    **dict.fromkeys(("content", "body", "contents", "document", "passage", "article"), "text"),
    **dict.fromkeys(("headline", "name"), "title"),
    **dict.fromkeys(("meta", "attributes", "extra"), "metadata"),
}
log = logging.getLogger(__name__)


def load(path: str | os.PathLike, fmt: str | None = None,
         default_tz: str | tzinfo | None = None) -> Iterator[Record]:
    """Dispatch on ``fmt`` ('jsonl', 'dir', 'crud', 'ect'), or guess it from the path when None.

    ``default_tz`` is the zone of naive timestamps; None means the format's own default (UTC,
    or Asia/Shanghai for CRUD-RAG). Raises ValueError for an unknown or unguessable format or a
    path of the wrong kind, FileNotFoundError for a missing path; both before anything is read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if fmt is None:
        fmt = guess_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if (fmt == "dir") != path.is_dir():
        kind = "a directory" if fmt == "dir" else "a file"
        raise ValueError(f"format {fmt!r} reads {kind}, but {path} is not one")
    if fmt == "dir":
        return load_directory(path, UTC if default_tz is None else default_tz)
    if fmt == "crud":
        return load_crud(path, SHANGHAI if default_tz is None else default_tz)
    if fmt == "ect":
        return load_ect(path, UTC if default_tz is None else default_tz)
    return load_jsonl(path, UTC if default_tz is None else default_tz)


def guess_format(path: str | os.PathLike) -> str:
    """'dir' for a directory; for a .jsonl(.gz) file 'ect' if its first record has ECT-QA's transcript
    fields (``cleaned_content``, ``stock_code``, ``year``, ``quarter``), 'crud' if its first records
    look like raw CRUD-RAG lines (only ``id`` and ``text``, text opening with a ``…正文：`` header),
    else 'jsonl'."""
    path = Path(path)
    if path.is_dir():
        return "dir"
    if not path.name.lower().endswith(_JSONL_SUFFIXES):
        raise ValueError(f"cannot tell the format of {path} from its name; "
                         f"pass a format ({', '.join(FORMATS)}) or use a .jsonl/.jsonl.gz file")
    records = []
    try:
        for _, raw in _raw_lines(path):
            if raw.strip():
                try:
                    records.append(json.loads(raw.decode("utf-8", errors="replace")))
                except ValueError:
                    pass
                # An ECT-QA line is a whole transcript (~20 kB): its first one settles the guess.
                if len(records) >= _SNIFF_LINES or (records and looks_like_ect(records[0])):
                    break
    except (OSError, EOFError):
        pass  # unreadable: the loader itself reports it as a LoadError
    objects = [r for r in records if isinstance(r, dict)]
    if objects and looks_like_ect(objects[0]):
        return "ect"
    crud_like = objects and all(set(r) <= {"id", "text"} for r in objects) and any(
        isinstance(r.get("text"), str) and CRUD_BODY_MARK.search(r["text"], 0, MAX_CRUD_HEADER_CHARS + 3)
        for r in objects)
    return "crud" if crud_like else "jsonl"


def load_jsonl(path: str | os.PathLike, default_tz: str | tzinfo = UTC) -> Iterator[Record]:
    """Documents from JSON lines ``{"id", "text", "published_at"?, "title"?, "metadata"?, "source"?}``
    (plain or .gz). ``source`` defaults to the file's name without its suffixes."""
    path = _existing_file(path)
    return _iter_jsonl(path, resolve_tz(default_tz))


def load_crud(path: str | os.PathLike, default_tz: str | tzinfo = SHANGHAI,
              body_dates: bool = True) -> Iterator[Record]:
    """Documents from the CRUD-RAG corpus (``{"id", "text"}`` raw news lines, plain or .gz).

    The text becomes the body after the ``正文：`` header; the date comes from the header, else
    (``body_dates``) from the body or a year-less day, judged by the span of header dates of the same
    feed (the id before its last ':', the raw source file; see ``dates.crud_header_date``);
    ``metadata['date_from']`` says which. With ``body_dates`` the file is read twice (the first pass
    only collects the feeds' header spans).
    """
    path = _existing_file(path)
    return _iter_crud(path, resolve_tz(default_tz), body_dates)


def load_ect(path: str | os.PathLike, default_tz: str | tzinfo = UTC) -> Iterator[Record]:
    """Documents from ECT-QA's raw transcript lines (plain or .gz; see ``loaders_ect``): id
    ``{sector}-{stock_code}-{year}-{quarter}``, the call date from the page header (undated, with
    ``metadata['undated_reason']``, when it names none), the fiscal period in the title."""
    path = _existing_file(path)
    return _iter_ect(path, resolve_tz(default_tz))


# --- reading ---------------------------------------------------------------------------------

def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    return path


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of each line, gzip-transparent, one buffer at a time."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from enumerate(fh, 1)


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]] | LoadError]:
    """Each non-blank line as (line number, JSON object) or a LoadError saying why not."""
    source = str(path)
    lines = _raw_lines(path)
    try:
        for lineno, raw in lines:
            if lineno == 1:
                if raw.startswith(_UTF16_BOMS):
                    yield LoadError(source, 1, None, "file is UTF-16 encoded; convert it to UTF-8")
                    return
                raw = raw.removeprefix(_BOM)
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield LoadError(source, lineno, _id_despite_bad_bytes(raw),
                                f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield LoadError(source, lineno, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(obj, dict):
                yield LoadError(source, lineno, None, f"expected a JSON object, got {_json_type(obj)}")
                continue
            yield lineno, obj
    except (OSError, EOFError) as exc:  # truncated or corrupt gzip stream: report and stop
        yield LoadError(source, None, None, f"cannot read past this point: {exc}")


def _id_despite_bad_bytes(raw: bytes) -> str | None:
    try:
        obj = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    doc_id = obj.get("id") if isinstance(obj, dict) else None
    return doc_id if isinstance(doc_id, str) and doc_id.strip() else None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# --- record checks ---------------------------------------------------------------------------

class _BadRecord(Exception):
    """One field of one record is unusable; becomes a LoadError."""


def _doc_id(obj: dict[str, Any]) -> str:
    doc_id = obj.get("id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)  # numeric ids are common in exports and unambiguous
    if doc_id is None:
        if looks_like_ect(obj):
            raise _BadRecord("missing 'id' (this is an ECT-QA transcript line: use --format ect)")
        raise _BadRecord("missing 'id'" + _instead(obj, "id"))
    if not isinstance(doc_id, str):
        raise _BadRecord(f"'id' must be a string, got {_json_type(doc_id)}")
    problem = doc_id_problem(doc_id)
    if problem:
        raise _BadRecord(problem)
    return doc_id


def _instead(obj: dict[str, Any], field: str) -> str:
    """' (the record has 'doc_id'; rename it to 'id')' when a likely misnaming is present."""
    for key in obj:
        if _FIELD_HINTS.get(key.lower()) == field:
            return f" (the record has '{key}'; rename it to '{field}')"
    return ""


def _text(obj: dict[str, Any]) -> str:
    text = obj.get("text")
    if text is None:
        raise _BadRecord("missing 'text'" + _instead(obj, "text"))
    if not isinstance(text, str):
        raise _BadRecord(f"'text' must be a string, got {_json_type(text)}")
    if not text.strip():
        raise _BadRecord("empty 'text'")
    return text


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRecord(f"'{key}' must be a string, got {_json_type(value)}")
    return value.strip() or None


def _published_at(obj: dict[str, Any], tz: tzinfo) -> datetime | None:
    value = _optional_str(obj, "published_at")
    if value is None:  # absent, null or blank: an undated document, never a guessed date
        return None
    try:
        return parse_datetime(value, tz)
    except DateParseError as exc:
        raise _BadRecord(f"bad 'published_at': {exc}") from None


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadRecord(f"'metadata' must be an object, got {_json_type(value)}")
    return dict(value)


class _FirstWins:
    """Remembers where each id was first seen; a later duplicate becomes a LoadError."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.seen: dict[str, int] = {}

    def duplicate(self, doc_id: str, lineno: int) -> LoadError | None:
        first = self.seen.setdefault(doc_id, lineno)
        if first == lineno:
            return None
        return LoadError(self.source, lineno, doc_id, f"duplicate id (first seen on line {first}, which is kept)")


class _UnknownFields:
    """Warns once per file and field name about fields chronorag JSONL does not read."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.seen: set[str] = set()

    def report(self, obj: dict[str, Any], lineno: int) -> None:
        new = [k for k in obj if k not in JSONL_FIELDS and k not in self.seen]
        if not new:
            return
        self.seen.update(new)
        named = ", ".join(f"'{k}'" + (f" (did you mean '{_FIELD_HINTS[k.lower()]}'?)"
                                       if k.lower() in _FIELD_HINTS else "") for k in new)
        log.warning("%s:%d: ignoring field(s) %s: chronorag JSONL reads %s; put other fields "
                    "under 'metadata' to keep them", self.source, lineno, named, ", ".join(JSONL_FIELDS))


def _iter_jsonl(path: Path, tz: tzinfo) -> Iterator[Record]:
    source = str(path)
    default_source = path.name.split(".")[0] or path.name
    ids = _FirstWins(source)
    unknown = _UnknownFields(source)
    for item in _json_records(path):
        if isinstance(item, LoadError):
            yield item
            continue
        lineno, obj = item
        unknown.report(obj, lineno)
        doc_id = None
        try:
            doc_id = _doc_id(obj)
            doc = Document(doc_id=doc_id, text=_text(obj), published_at=_published_at(obj, tz),
                           title=_optional_str(obj, "title"),
                           source=_optional_str(obj, "source") or default_source,
                           metadata=_metadata(obj))
        except _BadRecord as exc:
            yield LoadError(source, lineno, doc_id, str(exc))
            continue
        yield ids.duplicate(doc_id, lineno) or doc


# Fields of chronorag's own JSONL that raw CRUD-RAG lines never carry: a file with them was given
# the wrong --format, and reading it as CRUD would drop its dates (replacing stored documents).
_JSONL_ONLY_FIELDS = ("published_at", "title", "metadata", "source")


def _refuse_jsonl_fields(obj: dict[str, Any]) -> None:
    extra = [f for f in _JSONL_ONLY_FIELDS if f in obj]
    if extra:
        raise _BadRecord(f"field(s) {', '.join(extra)} are not part of the CRUD-RAG raw format (id, text): "
                         "this looks like chronorag JSONL; use --format jsonl")


def _feed_of(doc_id: str) -> str:
    """A CRUD-RAG id is '<source file>:<line>'; ids without a ':' form one feed per file."""
    return doc_id.rpartition(":")[0]


def _feed_spans(path: Path, tz: tzinfo) -> tuple[dict[str, tuple[datetime, datetime]], dict[int, datetime]]:
    """(earliest, latest) header date per feed, and each dated header by line number (so the real pass
    does not parse it again); bad lines are skipped here and reported by the real pass."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    by_line: dict[int, datetime] = {}
    for item in _json_records(path):
        if isinstance(item, LoadError):
            continue
        try:
            doc_id, text = _doc_id(item[1]), _text(item[1])
        except _BadRecord:
            continue
        found, _, _ = crud_header_date(text, tz, body_fallback=False)
        if found is not None:
            by_line[item[0]] = found
            feed = _feed_of(doc_id)
            old = spans.get(feed)
            spans[feed] = (found, found) if old is None else (min(old[0], found), max(old[1], found))
    return spans, by_line


def _iter_crud(path: Path, tz: tzinfo, body_dates: bool) -> Iterator[Record]:
    source = str(path)
    ids = _FirstWins(source)
    spans, header_dates = _feed_spans(path, tz) if body_dates else ({}, {})
    for item in _json_records(path):
        if isinstance(item, LoadError):
            yield item
            continue
        lineno, obj = item
        doc_id = None
        try:
            doc_id = _doc_id(obj)
            _refuse_jsonl_fields(obj)
            published_at, how = header_dates.get(lineno), "header"
            if published_at is not None:
                body = split_crud_line(_text(obj))[1]
            else:
                published_at, body, how = crud_header_date(_text(obj), tz, body_fallback=body_dates,
                                                           feed_span=spans.get(_feed_of(doc_id)))
            if not body:
                raise _BadRecord("empty body after the '正文：' header")
        except _BadRecord as exc:
            yield LoadError(source, lineno, doc_id, str(exc))
            continue
        doc = Document(doc_id=doc_id, text=body, published_at=published_at, source="crud_rag",
                       metadata={"date_from": how} if how else {})
        yield ids.duplicate(doc_id, lineno) or doc


def _iter_ect(path: Path, tz: tzinfo) -> Iterator[Record]:
    source = str(path)
    ids = _FirstWins(source)
    for item in _json_records(path):
        if isinstance(item, LoadError):
            yield item
            continue
        lineno, obj = item
        try:
            doc = ect_document(obj, tz)
        except ECTRecordError as exc:
            yield LoadError(source, lineno, _ect_id_or_none(obj), str(exc))
            continue
        yield ids.duplicate(doc.doc_id, lineno) or doc


def _ect_id_or_none(obj: dict[str, Any]) -> str | None:
    """The record's id for its LoadError when the id itself is not what failed."""
    try:
        return ect_id(obj)
    except ECTRecordError:
        return None
