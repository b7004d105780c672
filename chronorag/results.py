"""What the engine's verbs return: typed, so the CLI, the REST API and the evals format the same
objects instead of each assembling its own JSON."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chronorag.types import SearchHit

if TYPE_CHECKING:
    from chronorag.kvcache.generator import CacheReport, Timings
    from chronorag.query import Query

SNIPPET_CHARS = 300


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _from_iso(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class IndexState:
    """One derived index as a read saw it: the change it had applied and how far it was behind
    (log entries, or chunks when it must be rebuilt), plus its own figures."""

    name: str
    applied_seq: int
    behind: int = 0
    info: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"applied_seq": self.applied_seq, "behind": self.behind, **self.info}


class Hits(list):
    """``retrieve()``'s result: the ranked :class:`SearchHit` list, which also says which indexes
    answered from behind the store (``stale``: index name -> entries not yet applied) and carries
    the analysed ``query``. It compares and iterates as a plain list."""

    def __init__(self, hits: Iterable[SearchHit] = (), stale: Mapping[str, int] | None = None,
                 query: "Query | None" = None) -> None:
        super().__init__(hits)
        self.stale: dict[str, int] = dict(stale or {})
        self.query = query

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.query.text if self.query is not None else None,
                "results": [h.to_dict() for h in self], "stale": dict(self.stale),
                "query": self.query.to_dict() if self.query is not None else None}


@dataclass(frozen=True)
class SyncResult:
    """What ``sync`` did: log entries (or chunks, for a rebuild) each index applied, and what is
    still behind afterwards (a writer that came in meanwhile)."""

    applied: Mapping[str, int]
    stale: Mapping[str, int]
    change_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"applied": dict(self.applied), "stale": dict(self.stale), "change_seq": self.change_seq}


def stale_line(stale: Mapping[str, int]) -> str:
    """The one warning line a text-mode command prints for indexes that are behind."""
    parts = ", ".join(f"{name} by {n:,} change(s)" for name, n in stale.items())
    return f"indexes behind the store: {parts}; results come from what they hold (run `chronorag sync`)"


@dataclass(frozen=True)
class Citation:
    """A chunk placed in the answer's context, numbered in prompt order (the model cites ``[n]``)."""

    n: int
    chunk_id: int
    doc_id: str
    published_at: datetime | None
    snippet: str

    @classmethod
    def of(cls, n: int, hit: SearchHit) -> "Citation":
        snippet = textwrap.shorten(" ".join(hit.text.split()), width=SNIPPET_CHARS, placeholder=" ...")
        return cls(n, hit.chunk_id, hit.doc_id, hit.published_at, snippet)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "chunk_id": self.chunk_id, "doc_id": self.doc_id,
                "published_at": _iso(self.published_at), "snippet": self.snippet}


@dataclass(frozen=True)
class AnswerTimings:
    """Milliseconds of each stage; ``generation`` is the generator's own breakdown."""

    retrieve_ms: float = 0.0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    generation: "Timings | None" = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"retrieve_ms": round(self.retrieve_ms, 3), "ttft_ms": round(self.ttft_ms, 3),
                               "total_ms": round(self.total_ms, 3)}
        if self.generation is not None:
            out["generation"] = asdict(self.generation)
        return out


@dataclass(frozen=True)
class Answer:
    """An answer with what it was made from. ``text`` is None when nothing was retrieved (the model
    is not asked: its answer would be its own guess presented as grounded); ``reason`` says why."""

    question: str
    text: str | None
    citations: tuple[Citation, ...]
    chunks: tuple[SearchHit, ...]
    timings: AnswerTimings
    cache: "CacheReport | None" = None
    finish_reason: str | None = None
    reason: str | None = None
    stale: Mapping[str, int] = field(default_factory=dict)
    query: "Query | None" = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "citations": [c.to_dict() for c in self.citations],
            "sources": [h.to_dict() for h in self.chunks],
            "timings": self.timings.to_dict(),
            "cache": asdict(self.cache) if self.cache is not None else None,
            "finish_reason": self.finish_reason,
            "reason": self.reason,
            "stale": dict(self.stale),
            "query": self.query.to_dict() if self.query is not None else None,
        }


@dataclass(frozen=True)
class TimelineFact:
    """One fact of the temporal graph as users see it: entity names, validity, source chunks."""

    fact_id: str
    subject: str
    relation: str
    object: str
    time: datetime | None = None
    time_end: datetime | None = None
    granularity: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    recorded_at: datetime | None = None
    invalidated_by: str | None = None
    invalidated_at: datetime | None = None
    description: str = ""
    source_chunk_ids: tuple[int, ...] = ()
    confidence: float = 0.0

    _TIMES = ("time", "time_end", "valid_from", "valid_to", "recorded_at", "invalidated_at")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TimelineFact":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in cls._TIMES:
            if k in known:
                known[k] = _from_iso(known[k])
        known["source_chunk_ids"] = tuple(known.get("source_chunk_ids") or ())
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if not k.startswith("_")}
        for k in self._TIMES:
            out[k] = _iso(out[k])
        out["source_chunk_ids"] = list(self.source_chunk_ids)
        return out


@dataclass(frozen=True)
class EntityTimeline:
    name: str
    facts: tuple[TimelineFact, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "facts": [f.to_dict() for f in self.facts]}


@dataclass(frozen=True)
class PeriodSummary:
    """A node of the year > quarter > month > day hierarchy: its summary, top facts, children."""

    period: str
    level: str
    start: str
    end: str
    summary: str = ""
    n_facts: int = 0
    n_chunks: int = 0
    top_facts: tuple[TimelineFact, ...] = ()
    children: tuple[tuple[str, str], ...] = ()  # (period, summary)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PeriodSummary":
        return cls(
            period=d["period"], level=d["level"], start=d["start"], end=d["end"], summary=d.get("summary") or "",
            n_facts=int(d.get("n_facts") or 0), n_chunks=int(d.get("n_chunks") or 0),
            top_facts=tuple(TimelineFact.from_dict(f) for f in d.get("top_facts") or ()),
            children=tuple((c["period"], c.get("summary") or "") for c in d.get("children") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "level": self.level, "start": self.start, "end": self.end,
                "summary": self.summary, "n_facts": self.n_facts, "n_chunks": self.n_chunks,
                "top_facts": [f.to_dict() for f in self.top_facts],
                "children": [{"period": p, "summary": s} for p, s in self.children]}


@dataclass(frozen=True)
class Stats:
    """What a data directory holds (``chronorag stats``)."""

    data_dir: str
    documents: int
    undated_documents: int
    chunks: int
    tokens: int
    embeddings: int
    change_seq: int
    change_log_entries: int
    published_from: str | None
    published_to: str | None
    indexes: tuple[IndexState, ...]
    disk_bytes: int

    @property
    def stale(self) -> dict[str, int]:
        return {ix.name: ix.behind for ix in self.indexes if ix.behind}

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["indexes"] = {ix.name: ix.to_dict() for ix in self.indexes}
        out["stale"] = self.stale
        return out
