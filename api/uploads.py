"""Request bodies of ``POST /v1/documents`` turned into loader records (``Document | LoadError``).

Both kinds go through chronorag's own loaders, so a document posted here is checked exactly as
``chronorag ingest`` checks a line of a file: JSON documents are written out as JSONL, an upload
is saved under its own name (a .txt/.md note inside a folder, as a folder ingest names it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from chronorag.api.errors import ApiError
from chronorag.api.models import DocumentsIn
from chronorag.ingest.loaders import guess_format, load
from chronorag.types import Document, LoadError

Record = Document | LoadError
NOTE_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
UPLOAD_FORMATS = ("jsonl", "crud")
DEFAULT_FOLDER = "uploads"
COPY_CHUNK = 1 << 20


def _relabel(records: list[Record], tmp: Path, shown: str) -> list[Record]:
    """Errors name the request or the uploaded file, not the temporary copy; a document whose
    source or metadata cannot be stored (a lone surrogate) fails alone instead of the whole job."""
    out = []
    for r in records:
        if isinstance(r, LoadError) and r.source.startswith(str(tmp)):
            r = replace(r, source=shown)
        elif isinstance(r, Document):
            try:
                json.dumps([r.source, r.metadata], ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as exc:
                r = LoadError(shown, None, r.doc_id, f"'source' or 'metadata' is not valid Unicode: {exc.reason}")
        out.append(r)
    return out


def _bounded(records, max_documents: int) -> list[Record]:
    out = []
    for r in records:
        out.append(r)
        if len(out) > max_documents:
            raise ApiError(413, f"more than {max_documents:,} documents in one request (api_max_documents)",
                           "too_many_documents")
    return out


def json_records(body: DocumentsIn, default_tz: str, max_documents: int) -> list[Record]:
    if len(body.documents) > max_documents:
        raise ApiError(413, f"{len(body.documents):,} documents in one request; the limit is "
                       f"{max_documents:,} (api_max_documents)", "too_many_documents")
    tmp = Path(tempfile.mkdtemp(prefix="chronorag-api-"))
    try:
        path = tmp / "api.jsonl"  # the loader's default source is the file's name: 'api'
        with open(path, "w", encoding="utf-8") as fh:
            for doc in body.documents:
                # ASCII escapes: a lone surrogate reaches the loader, which fails that document alone
                fh.write(json.dumps(doc.model_dump(exclude_none=True)) + "\n")
        return _relabel(_bounded(load(path, "jsonl", default_tz=default_tz), max_documents), tmp, "request")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _safe_name(name: str | None) -> str:
    name = unicodedata.normalize("NFC", Path((name or "").replace("\\", "/")).name)
    if not name or name in {".", ".."} or "\x00" in name:
        raise ApiError(400, "the uploaded file needs a name ending in .jsonl, .jsonl.gz, .txt or .md")
    return name


def _folder(folder: str | None) -> str:
    folder = DEFAULT_FOLDER if folder is None or not folder.strip() else unicodedata.normalize("NFC", folder.strip())
    if "/" in folder or "\\" in folder or folder in {".", ".."} or "\x00" in folder or len(folder) > 200:
        raise ApiError(400, f"folder must be one plain folder name, got {folder!r}")
    return folder


def upload_records(stream: IO[bytes], filename: str | None, fmt: str | None, folder: str | None,
                   default_tz: str, max_documents: int) -> list[Record]:
    """Records of one uploaded file: JSONL (plain or gzip; raw CRUD-RAG lines with ``fmt='crud'``)
    or one .txt/.md note whose id is ``folder/name`` (front matter and file-name dates as a folder
    ingest reads them)."""
    name = _safe_name(filename)
    lower = name.lower()
    if fmt is not None and fmt not in UPLOAD_FORMATS:
        raise ApiError(400, f"format must be one of {', '.join(UPLOAD_FORMATS)}, got {fmt!r}")
    is_note = lower.endswith(NOTE_SUFFIXES)
    if not is_note and not lower.endswith(JSONL_SUFFIXES):
        raise ApiError(415, f"cannot read {name!r}: upload a .jsonl, .jsonl.gz, .txt or .md file",
                       "unsupported_media_type")
    if is_note and fmt is not None:
        raise ApiError(400, f"format {fmt!r} reads JSON lines; {name!r} is a note (leave format out)")
    tmp = Path(tempfile.mkdtemp(prefix="chronorag-api-"))
    try:
        if is_note:
            root = tmp / _folder(folder)
            root.mkdir()
            target = root / name
        else:
            target = tmp / name
        with open(target, "wb") as out:
            shutil.copyfileobj(stream, out, COPY_CHUNK)
        if is_note:
            records = load(root, "dir", default_tz=default_tz)
        else:
            chosen = fmt or guess_format(target)
            if chosen == "crud" and default_tz == "UTC":  # as `chronorag ingest --format crud`: Beijing time
                default_tz = "Asia/Shanghai"
            if chosen not in UPLOAD_FORMATS:
                raise ApiError(400, f"{name!r} looks like {chosen!r} records; upload jsonl or crud lines")
            records = load(target, chosen, default_tz=default_tz)
        return _relabel(_bounded(records, max_documents), tmp, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def form_value(value: Any) -> str | None:
    return value if isinstance(value, str) else None
