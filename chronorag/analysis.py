"""Question -> :class:`~chronorag.query.Query`: the one place that decides which retrievers apply
and how much each counts.

The parts it needs come in from the engine (a time-scope parser, a language detector, the graph's
:class:`~chronorag.query.QuestionReader`), so this module depends on no subpackage and a user who
swaps the graph for a graph database keeps the same analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from chronorag.query import Query, QuestionReader, query_kind
from chronorag.types import SearchFilters

if TYPE_CHECKING:
    from chronorag.periods import TimeScope

# (question, now, anchor resolver or None) -> scope; the resolver dates 'before X became CEO'.
ScopeParser = Callable[[str, datetime, "Callable[[str, str], datetime | None] | None"], "TimeScope"]


@dataclass(frozen=True)
class FusionWeights:
    """The graph's weight in fusion: strong when the question asks a relation the graph tracks
    over time of an entity it knows, in a time for which it holds such a fact (BM25 and vectors
    cannot tell a 2019 statement of a fact from a 2022 one; the graph's validity intervals can),
    weak otherwise (its candidates are then mere mentions or a period's headline chunks)."""

    graph_time: float = 3.0
    graph_mention: float = 0.5


class QueryAnalyzer:
    """Builds a :class:`Query`; shared by every thread of a server (it holds no per-call state)."""

    def __init__(
        self,
        parse_scope: ScopeParser,
        detect_language: Callable[[str], str],
        graph: QuestionReader | None = None,
        embedder: Any = None,
        weights: FusionWeights = FusionWeights(),
    ) -> None:
        self.parse_scope = parse_scope
        self.detect_language = detect_language
        self.graph = graph
        self.embedder = embedder  # its ``languages`` decide which questions vectors serve
        self.weights = weights

    def analyse(
        self,
        text: str,
        available: Sequence[str],
        filters: SearchFilters = SearchFilters(),
        top_k: int = 8,
        retrievers: Sequence[str] | None = None,
        use_graph: bool = True,
        now: datetime | None = None,
    ) -> Query:
        """``available``: the retrievers this engine can serve now, in fusion order.
        ``retrievers`` picks sources explicitly (each must be available); otherwise every
        available one that applies: the graph only when ``use_graph`` and the question names a
        time, vectors only for a language the embedder was trained on (the default MiniLM's
        neighbours for a Chinese question are noise that would dilute BM25 in fusion)."""
        now = now or datetime.now(timezone.utc)
        language = self.detect_language(text)
        anchors: list[str] = []
        scope = self.parse_scope(text, now, lambda anchor, mode: anchors.append(anchor))
        if retrievers is not None:
            use = _explicit(retrievers, available)
        else:
            use = tuple(r for r in available if self._applies(r, language, use_graph, scope, anchors))
        reading = None
        if "graph" in use and self.graph is not None:
            reading = self.graph.read_question(text, now)
            scope = reading.scope
            if retrievers is None and scope.mode == "any":  # its anchor named no event it knows
                use = tuple(r for r in use if r != "graph")
        weights: dict[str, float] = {}
        relation = None
        if "graph" in use and reading is not None:
            tracked = scope.mode != "any" and reading.relations and reading.entities
            if tracked and reading.relation_evidence:
                weights["graph"] = self.weights.graph_time
                relation = reading.relations[0]
            else:
                weights["graph"] = self.weights.graph_mention
        return Query(
            text=text, language=language, scope=scope, kind=query_kind(scope), filters=filters,
            retrievers=use, weights=weights, top_k=top_k, now=now,
            entities=reading.entities if reading is not None else (), relation=relation, graph=reading,
        )

    def _applies(self, name: str, language: str, use_graph: bool, scope: "TimeScope", anchors: list[str]) -> bool:
        if name == "dense":
            langs = self.embedder.languages if self.embedder is not None else None
            return not langs or language == "mixed" or language in langs
        if name == "graph":
            # no time in the question: the graph's candidates are mere entity mentions, which only
            # dilute BM25; an event anchor may still name a time once the graph dates it
            return use_graph and (scope.mode != "any" or bool(anchors))
        return True


RETRIEVERS = ("bm25", "dense", "graph")


def _explicit(retrievers: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    unknown = [r for r in retrievers if r not in RETRIEVERS]
    if unknown:
        raise ValueError(f"unknown retriever(s): {', '.join(unknown)} ({', '.join(RETRIEVERS)})")
    off = [r for r in retrievers if r not in available]
    if off:
        raise ValueError(f"retriever(s) disabled in settings: {', '.join(off)}")
    return tuple(dict.fromkeys(retrievers))
