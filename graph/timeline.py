"""The year > quarter > month > day hierarchy, its links to facts and chunks, and period summaries.

Each node summarises its period extractively: candidate sentences are its own facts' sentences and
chunk leads plus its children's best items, scored by how central their entities are within the
period. A change marks a leaf and its ancestors dirty (``GraphIndex``), and only those are
re-summarised (``period_summaries``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timedelta
from typing import Protocol

LEVELS = ("year", "quarter", "month", "day")
# ASCII digits only ('\d' also matches '２０２１' and '٢٠٢١', which then named no period at all);
# a day only after a month.
PERIOD_LABEL = re.compile(r"^([0-9]{4})(?:-Q([1-4])|-([0-9]{2})(?:-([0-9]{2}))?)?$")
_LABEL_FORMS = "use 2023, 2023-Q3, 2023-08 or 2023-08-11"


def level_of(label: str) -> str:
    m = PERIOD_LABEL.match(label)
    if not m:
        raise ValueError(f"not a period label: {_shown(label)} ({_LABEL_FORMS})")
    try:  # a real calendar period: not month 13, not 30 February, not year 0
        datetime(int(m.group(1)), int(m.group(3) or 1), int(m.group(4) or 1))
    except ValueError as exc:
        raise ValueError(f"not a period label: {_shown(label)}: {exc} ({_LABEL_FORMS})") from None
    if m.group(4):
        return "day"
    if m.group(3):
        return "month"
    if m.group(2):
        return "quarter"
    return "year"


def parent_of(label: str) -> str | None:
    level = level_of(label)
    if level == "day":
        return label[:7]
    if level == "month":
        return f"{label[:4]}-Q{(int(label[5:7]) - 1) // 3 + 1}"
    if level == "quarter":
        return label[:4]
    return None


@lru_cache(maxsize=65536)  # a bulk ingest asks for the same few thousand days a million times
def lineage(label: str) -> tuple[str, ...]:
    """The label and its ancestors, finest first: '2023-08-11' -> (.., '2023-08', '2023-Q3', '2023')."""
    out = [label]
    while (p := parent_of(out[-1])) is not None:
        out.append(p)
    return tuple(out)


def day_label(t: datetime) -> str:
    return t.date().isoformat()


def node_for_span(start: datetime | None, end: datetime | None, granularity: str | None) -> str | None:
    """The finest hierarchy node whose period holds the whole span (None for untimed facts)."""
    if start is None:
        return None
    last = (end - timedelta(microseconds=1)) if end is not None else start
    if granularity == "day" or last.date() == start.date():
        return day_label(start)
    if (start.year, start.month) == (last.year, last.month):
        return f"{start.year}-{start.month:02d}"
    if start.year == last.year and (start.month - 1) // 3 == (last.month - 1) // 3:
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    if start.year == last.year:
        return f"{start.year}"
    return None


def _month_start(y: int, m: int) -> datetime:
    """First instant of month ``m`` (13 = next January); datetime.max past year 9999."""
    if m > 12:
        y, m = y + 1, m - 12
    return datetime(y, m, 1) if y <= datetime.max.year else datetime.max


def _shown(label: str, limit: int = 40) -> str:
    return repr(label if len(label) <= limit else label[:limit] + "...")


def period_span(label: str) -> tuple[datetime, datetime]:
    """Naive [start, end) of a label (compare with local wall-clock times)."""
    level = level_of(label)
    y = int(label[:4])
    if level == "year":
        return datetime(y, 1, 1), _month_start(y, 13)
    if level == "quarter":
        q = int(label[6])
        return datetime(y, 3 * q - 2, 1), _month_start(y, 3 * q + 1)
    m = int(label[5:7])
    if level == "month":
        return datetime(y, m, 1), _month_start(y, m + 1)
    s = datetime(y, m, int(label[8:10]))
    return s, (s + timedelta(days=1) if s.date() < datetime.max.date() else datetime.max)


@dataclass
class SummaryItem:
    """A candidate sentence for a period summary."""

    text: str
    ref: str  # 'fact:<key>' or 'chunk:<id>'
    time: str | None
    entities: list[str] = field(default_factory=list)
    weight: float = 1.0  # evidence strength (sources, confidence)
    score: float = 0.0


class Summariser(Protocol):
    name: str

    def summarise(self, period: str, items: Sequence[SummaryItem]) -> str: ...


class ExtractiveSummariser:
    """The top few items, in time order. No model, deterministic."""

    name = "extractive"

    def __init__(self, sentences: int = 3, max_chars: int = 600) -> None:
        self.sentences = sentences
        self.max_chars = max_chars
        self.calls = 0

    def summarise(self, period: str, items: Sequence[SummaryItem]) -> str:
        self.calls += 1
        best = sorted(items, key=lambda it: -it.score)[: self.sentences]
        best.sort(key=lambda it: (it.time or "", -it.score))
        text = " ".join(it.text.strip() for it in best)
        return text[: self.max_chars]


def rank_items(items: list[SummaryItem], keep: int) -> list[SummaryItem]:
    """Score by entity centrality within the period plus evidence weight; drop repeated sentences."""
    freq: Counter[str] = Counter()
    for it in items:
        freq.update(set(it.entities))
    for it in items:
        centrality = sum(math.log1p(freq[e] - 1) for e in set(it.entities)) if it.entities else 0.0
        it.score = round(centrality + it.weight, 6)
    items.sort(key=lambda it: (-it.score, it.ref))
    out, seen = [], set()
    for it in items:
        norm = re.sub(r"\W+", "", it.text.casefold())[:120]
        if norm and norm not in seen:
            seen.add(norm)
            out.append(it)
        if len(out) >= keep:
            break
    return out


@dataclass
class PeriodNode:
    label: str
    facts: set[str] = field(default_factory=set)  # directly at this node
    chunks: set[int] = field(default_factory=set)  # published on this day
    children: set[str] = field(default_factory=set)
    summary: str = ""
    top_items: list[SummaryItem] = field(default_factory=list)
    n_facts: int = 0  # including descendants
    n_chunks: int = 0


class Timeline:
    """Period nodes with their direct fact/chunk links and stored summaries (written by period_summaries)."""

    def __init__(self) -> None:
        self.nodes: dict[str, PeriodNode] = {}

    def _node(self, label: str) -> PeriodNode:
        """The node for ``label``, created (with its ancestors) if missing."""
        node = self.nodes.get(label)
        if node is None:
            node = self.nodes[label] = PeriodNode(label)
            parent = parent_of(label)
            if parent is not None:
                self._node(parent).children.add(label)
        return node

    def add_fact(self, label: str, key: str) -> None:
        self._node(label).facts.add(key)

    def remove_fact(self, label: str, key: str) -> None:
        if label in self.nodes:
            self.nodes[label].facts.discard(key)

    def add_chunk(self, label: str, chunk_id: int) -> None:
        self._node(label).chunks.add(chunk_id)

    def remove_chunk(self, label: str, chunk_id: int) -> None:
        if label in self.nodes:
            self.nodes[label].chunks.discard(chunk_id)

    def drop(self, label: str) -> None:
        self.nodes.pop(label, None)
        parent = parent_of(label)
        if parent in self.nodes:
            self.nodes[parent].children.discard(label)

    def restore(self, summaries: dict[str, dict]) -> None:
        """Put stored summaries (``facts_store.read_summaries``) on the nodes that exist."""
        for label, row in summaries.items():
            if label not in self.nodes:
                continue
            node = self.nodes[label]
            node.summary = row["summary"]
            node.top_items = [SummaryItem(**it) for it in row["top_items"]]
            node.n_facts, node.n_chunks = row["n_facts"], row["n_chunks"]
