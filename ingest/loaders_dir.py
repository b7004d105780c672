"""A directory of .txt/.md files as documents, dated by front matter or file name, never by mtime.

A file's modification time says when it was copied, not when it was written, so a file with no date
in its front matter or name is loaded undated rather than given a plausible-looking wrong date.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from datetime import datetime, tzinfo
from pathlib import Path

from chronorag.ingest.checks import doc_id_problem, unicode_problem
from chronorag.ingest.dates import UTC, DateParseError, parse_datetime, resolve_tz
from chronorag.ingest.front_matter import split_front_matter
from chronorag.types import Document, LoadError

TEXT_SUFFIXES = (".txt", ".md")
DATE_KEYS = ("date", "published_at", "published", "pubdate")
_HEADING = re.compile(r"#[ \t]+(.+?)[ \t#]*")
# 2023-08-11-foo.md, 20230811_foo.txt, 2023_08_11 x.txt, report.2023.08.11.md: one separator, used twice.
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})([-_. ]?)(\d{2})\2(\d{2})(?!\d)")
log = logging.getLogger(__name__)


def filename_date(name: str, tz: tzinfo) -> datetime | None:
    """A date written into a file name (year 1900-2100, a real calendar day), else None."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    for m in _NAME_DATE.finditer(stem):
        year, month, day = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if 1900 <= year <= 2100:
            try:
                return datetime(year, month, day, tzinfo=tz)
            except ValueError:
                continue
    return None


def markdown_title(body: str) -> str | None:
    """The text of a leading ``# Heading`` (the first non-blank line), else None."""
    for line in body.split("\n"):
        if line.strip():
            m = _HEADING.fullmatch(line.strip())
            return m.group(1).strip() if m else None
    return None


def load_directory(path: str | os.PathLike, default_tz: str | tzinfo = UTC) -> Iterator[Document | LoadError]:
    """Every .txt/.md file under ``path`` (recursively, sorted, hidden entries skipped) as a Document.

    doc_id is the directory's name and the file's path below it, with '/' separators
    (``notes/2023/a.md``): stable wherever the folder is mounted, and two folders that both hold an
    ``index.md`` do not overwrite each other's document. source is the directory's name. Ids are
    NFC-normalised, so a name written decomposed (as macOS does) and composed is one document; a
    file whose name is not valid UTF-8 is a LoadError showing its bytes escaped (``bad\\xff.md``).
    Dates come from front matter (``date``/``published_at``/``published``/``pubdate``) or else the
    file name; other front-matter keys go into metadata, with ``date_from`` saying where the date came
    from. Undecodable, empty, unreadable files and bad front-matter dates are LoadErrors, and so are
    .txt/.md entries that are not regular files (a FIFO would block the read forever) and folders
    below ``path`` that cannot be read (doc_id ``notes/sub/``: their files are not gone, only unread).
    Symbolic links are never followed, to files or folders: each is skipped with a warning (a link
    to a file would store the same text twice, under a name that may not carry its date).
    Raises before iteration when ``path`` is not a readable directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {_shown(root)}")
    try:
        with os.scandir(root):
            pass
    except OSError as exc:  # not a per-file problem: nothing under it can be read
        raise type(exc)(f"cannot read folder {_shown(root)}: {exc.strerror or exc}") from None
    prefix = id_prefix(root)
    return _iter_directory(root, prefix.removesuffix("/"), resolve_tz(default_tz))


def id_prefix(path: str | os.PathLike) -> str:
    """``'<folder name>/'``: what every id of a document loaded from the folder ``path`` starts with.
    Raises ValueError for a folder name that is not valid UTF-8 (no id could be stored)."""
    name = Path(path).resolve().name
    if unicode_problem(name) is not None:
        raise ValueError(f"folder name is not valid UTF-8: {_shown(name)}")
    return unicodedata.normalize("NFC", name) + "/"


def _shown(path: str | os.PathLike) -> str:
    """A path as text for messages: undecodable bytes of its name escaped, never a lone surrogate."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _text_files(root: Path) -> Iterator[Path | tuple[Path, str]]:
    """.txt/.md files (a folder's files, then its sub-folders), or (folder, why it cannot be read);
    links are skipped with a warning."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield root, f"cannot read folder: {exc.strerror or exc}"
        return
    folders = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            if entry.is_dir() or entry.name.lower().endswith(TEXT_SUFFIXES):
                log.warning("skipping symbolic link %s: links are not followed", _shown(path))
        elif entry.is_dir(follow_symlinks=False):
            folders.append(path)
        elif entry.name.lower().endswith(TEXT_SUFFIXES):
            yield path
    for folder in folders:
        yield from _text_files(folder)


def _iter_directory(root: Path, source_name: str, tz: tzinfo) -> Iterator[Document | LoadError]:
    for file in _text_files(root):
        if isinstance(file, tuple):  # its doc_id, 'notes/sub/', keeps what it holds from --prune
            folder, problem = file
            inner = "" if folder == root else f"{folder.relative_to(root).as_posix()}/"
            below = unicodedata.normalize("NFC", f"{source_name}/{inner}")
            yield LoadError(_shown(folder), None, below if unicode_problem(below) is None else None, problem)
            continue
        relative = file.relative_to(root).as_posix()
        if unicode_problem(relative) is not None:
            yield LoadError(_shown(file), None, None, "file name is not valid UTF-8; rename the file")
            continue
        doc_id = unicodedata.normalize("NFC", f"{source_name}/{relative}")
        yield _load_file(file, doc_id, source_name, tz)


def _load_file(file: Path, doc_id: str, source_name: str, tz: tzinfo) -> Document | LoadError:
    where = _shown(file)
    problem = doc_id_problem(doc_id)
    if problem:
        return LoadError(where, None, None, f"file path unusable as an id: {problem}")
    try:
        if not stat.S_ISREG(os.lstat(file).st_mode):  # a FIFO or device: opening it may block forever
            return LoadError(where, None, doc_id, "not a regular file")
        raw = file.read_bytes()
    except OSError as exc:
        return LoadError(where, None, doc_id, f"cannot read file: {exc.strerror or exc}")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return LoadError(where, 1, doc_id, "file is UTF-16 encoded; convert it to UTF-8")
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return LoadError(where, line, doc_id, f"not valid UTF-8: byte 0x{raw[exc.start]:02x}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    fm, body = split_front_matter(text)
    if fm.unclosed:
        log.warning("%s: front matter not closed; read as text (its date and title are not used)", where)
    body = body.strip()
    if not body:
        return LoadError(where, None, doc_id, "empty file" if not text.strip() else "no text after the front matter")
    metadata: dict[str, str] = {k: v for k, v in fm.values.items() if v and k not in DATE_KEYS and k != "title"}
    published_at = None
    date_key = next((k for k in DATE_KEYS if fm.values.get(k)), None)
    if date_key is not None:
        try:
            published_at = parse_datetime(fm.values[date_key], tz)
        except DateParseError as exc:
            return LoadError(where, fm.lines[date_key], doc_id, f"bad front-matter {date_key!r}: {exc}")
        metadata["date_from"] = "front_matter"
    else:
        published_at = filename_date(file.name, tz)
        if published_at is not None:
            metadata["date_from"] = "filename"
    title = fm.values.get("title") or None
    if title is None and file.suffix.lower() == ".md":
        title = markdown_title(body)
    return Document(doc_id=doc_id, text=body, published_at=published_at, title=title,
                    source=source_name, metadata=metadata)
