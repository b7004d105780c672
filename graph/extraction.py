"""What every extractor shares: the extraction types, the ``Extractor`` protocol, sentence
splitting and sentence times, and the driver that runs an extractor over chunks (in-process, through
its batch method, or in forked workers).

The rule-based default extractor lives in :mod:`chronorag.graph.extract`, which re-exports all of
these names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from chronorag.graph.timeexpr import DateMention, TimeSpan, span_of_day
from chronorag.types import Chunk


@dataclass(frozen=True)
class EntityMention:
    name: str
    type: str  # PER, ORG, LOC, VALUE, ENT
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class FactDraft:
    """One extracted (subject, relation, object, time) quadruple before merging across chunks."""

    subject: str
    subject_type: str
    relation: str
    object: str
    object_type: str
    time: TimeSpan | None
    time_source: str  # 'sentence', 'document', 'llm' or 'none'
    description: str
    confidence: float = 0.5


@dataclass
class Extraction:
    entities: list[EntityMention] = field(default_factory=list)
    facts: list[FactDraft] = field(default_factory=list)
    dates: list[DateMention] = field(default_factory=list)


@runtime_checkable
class Extractor(Protocol):
    """Turns one chunk's text into entities, dates and facts. ``name`` includes a version."""

    name: str

    def extract(self, text: str, published_at: datetime | None) -> Extraction: ...


def extract_chunks(
    extractor: Extractor,
    chunks: Sequence[Chunk],
    workers: int = 1,
    finish: Callable[[Chunk, Extraction], object] | None = None,
) -> dict[int, object]:
    """Run an extractor over chunks, using its batch method when it has one (LLM call caps).

    An extractor that declares ``parallel_safe`` (pure CPU, no model or connection state) runs in
    ``workers`` forked processes when there is enough work to pay for them. ``finish`` (a
    module-level function) turns each chunk's extraction into what the caller keeps, in the worker.
    """
    batch = getattr(extractor, "extract_batch", None)
    if batch is not None:
        results = batch(chunks)
    elif runs_in_processes(extractor, len(chunks), workers):
        from chronorag.graph.extract_pool import extract_in_processes

        return extract_in_processes(extractor, chunks, workers, finish)
    else:
        results = {c.chunk_id: extractor.extract(c.text, c.published_at) for c in chunks}
    if finish is None:
        return results
    return {c.chunk_id: finish(c, results.get(c.chunk_id, Extraction())) for c in chunks}


_MIN_PARALLEL = 256  # below this, forking costs more than it saves


def runs_in_processes(extractor: Extractor, n_chunks: int, workers: int) -> bool:
    """Whether ``n_chunks`` go to forked workers: pure-CPU extractors (``parallel_safe``, no batch
    method with call caps) and enough work to pay for the fork."""
    return (workers > 1 and n_chunks >= _MIN_PARALLEL and getattr(extractor, "parallel_safe", False)
            and getattr(extractor, "extract_batch", None) is None)


# ------------------------------------------------------------------ sentences
_EN_SENT = re.compile(r"(?<=[.!?])[\"”']?\s+(?=[A-Z\"“(0-9])|\n+")
_ZH_SENT = re.compile(r"(?<=[。！？；!?])|\n+")


def split_sentences(text: str, chinese: bool) -> list[tuple[int, int]]:
    """(start, end) offsets of sentences; abbreviations like 'Inc.' may split an English one (harmless)."""
    out: list[tuple[int, int]] = []
    pos = 0
    for m in (_ZH_SENT if chinese else _EN_SENT).finditer(text):
        if m.start() > pos:
            out.append((pos, m.start()))
        pos = max(pos, m.end())
    if pos < len(text):
        out.append((pos, len(text)))
    return [(s, e) for s, e in out if text[s:e].strip()]


def sentence_time(dates: Sequence[DateMention], start: int, end: int, published_at: datetime | None) -> tuple[TimeSpan | None, str]:
    """A sentence's own first date, else the document's day, else none."""
    for d in dates:
        if start <= d.start < end:
            return d.span, "sentence"
    if published_at is not None:
        return span_of_day(published_at), "document"
    return None, "none"
