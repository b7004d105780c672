"""Plain data passed between stages (loaders, chunker, store, indexes, retrievers)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: none belongs in one line of output


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``) and undecodable bytes of a
    file name (lone surrogates) as ``\\udcff``: printable, and always one line."""
    text = CONTROL_CHARS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Document:
    """A dated source document as a loader produced it. ``published_at`` is tz-aware or None."""

    doc_id: str
    text: str
    published_at: datetime | None = None
    title: str | None = None
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadError:
    """One input record that could not become a Document; the rest of the batch still loads."""

    source: str
    line: int | None
    doc_id: str | None
    message: str

    def __str__(self) -> str:
        """One line, whatever characters the file's name holds."""
        where = one_line(self.source) + (f":{self.line}" if self.line is not None else "")
        who = f" (doc {one_line(self.doc_id)})" if self.doc_id else ""
        return f"{where}{who}: {one_line(self.message)}"


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before the store assigns it an id."""

    ord: int
    text: str
    char_start: int
    char_end: int
    n_tokens: int


@dataclass(frozen=True)
class Chunk:
    """A stored chunk. ``chunk_id`` is a store-assigned integer, never reused (FAISS ids)."""

    chunk_id: int
    doc_id: str
    ord: int
    text: str
    char_start: int
    char_end: int
    n_tokens: int
    published_at: datetime | None
    source: str


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied by every retriever. Undated chunks never match a time bound.

    ``since`` and ``until`` are both inclusive, unlike a Period's exclusive end: they are what a user
    bounds publication by (an until-day includes that whole day), so a period is put here as its
    ``start`` and ``last`` (chronorag.arguments.time_bound, TimeScope.publication_filter)."""

    since: datetime | None = None
    until: datetime | None = None
    doc_ids: frozenset[str] | None = None
    sources: frozenset[str] | None = None

    @property
    def is_empty(self) -> bool:
        return self.since is None and self.until is None and not self.doc_ids and not self.sources


@dataclass
class SearchHit:
    """One ranked chunk; ``scores`` holds each retriever's own score (and rank) for it."""

    chunk_id: int
    doc_id: str
    published_at: datetime | None
    score: float
    text: str
    source: str = ""
    ord: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "published_at": self.published_at.isoformat() if self.published_at else None,
            "score": self.score,
            "scores": self.scores,
            "ranks": self.ranks,
            "source": self.source,
            "ord": self.ord,
            "text": self.text,
        }
