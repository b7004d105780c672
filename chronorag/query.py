"""A question as every stage reads it: parsed once, frozen, passed down.

BM25 and vectors read its text, the graph its time scope, entities and relation, fusion its
retrievers and weights, and (next) the planner its kind and scope. Nothing re-parses the question
and no stage keeps a memo of the last one, so one engine can serve many threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from chronorag.types import SearchFilters

if TYPE_CHECKING:
    from chronorag.periods import TimeScope

# What a question asks of time: a state at one instant ('who led X in 2021', 'latest'), an order
# of events ('before X became CEO'), what happened in a period ('August 2023'), or nothing.
QUERY_KINDS = ("point", "sequence", "period", "open")
_KIND_OF_MODE = {"as_of": "point", "latest": "point", "before": "sequence", "after": "sequence",
                 "in": "period", "any": "open"}


def query_kind(scope: "TimeScope") -> str:
    return _KIND_OF_MODE.get(scope.mode, "open")


@dataclass(frozen=True)
class GraphReading:
    """What a graph made of a question: the scope with event anchors dated from its facts, the
    known entities it names, the relations it asks, and whether a fact of such a relation holds
    in that scope. ``view`` is the graph's own per-question state (the subgraph it read), handed
    back to the graph's search so it is not read twice; no other stage looks inside."""

    scope: "TimeScope"
    entities: tuple[str, ...] = ()
    relations: tuple[str, ...] = ()
    broad: bool = False
    relation_evidence: bool = False
    view: Any = field(default=None, compare=False, repr=False)


class QuestionReader(Protocol):
    """The graph's side of query analysis (the embedded temporal graph, or a graph database)."""

    def read_question(self, text: str, now: datetime) -> GraphReading: ...


@dataclass(frozen=True)
class Query:
    """One analysed question.

    ``scope`` is the time the question asks about (the graph's reading when the graph was
    consulted, else the plain parse); ``kind`` one of :data:`QUERY_KINDS`; ``relation`` the
    relation the graph tracks over time that the question asks, when the graph holds evidence of
    it; ``retrievers`` the retrievers that apply, with their fusion ``weights`` (absent = 1).
    """

    text: str
    language: str
    scope: "TimeScope"
    kind: str
    filters: SearchFilters
    retrievers: tuple[str, ...]
    weights: Mapping[str, float] = field(default_factory=dict)
    top_k: int = 8
    now: datetime | None = None
    entities: tuple[str, ...] = ()
    relation: str | None = None
    graph: GraphReading | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in QUERY_KINDS:
            raise ValueError(f"query kind must be one of {', '.join(QUERY_KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def to_dict(self) -> dict[str, Any]:
        """What a user sees of the analysis (``--json``, the REST API)."""
        return {
            "text": self.text,
            "language": self.language,
            "kind": self.kind,
            "scope": self.scope.to_dict(),
            "entities": list(self.entities),
            "relation": self.relation,
            "retrievers": list(self.retrievers),
            "weights": dict(self.weights),
        }
