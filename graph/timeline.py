"""The year > quarter > month > day hierarchy's nodes, their links to facts and chunks, and summaries.

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
from typing import Protocol

from chronorag.periods import parent_of


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
