"""Document evidence for lexical chunk ranking.

A chunk of an article whose other chunks also match the question is more likely to come from the
article the question is about than an equally scored chunk standing alone (passage evidence summed
per document). So each document's best candidate among the searcher's best ``depth`` gets
``weight`` times the scores of its next few candidates.

The engine wraps BM25 with it: BM25 scores are zero for chunks sharing no term with the question,
so the lift counts matching text. Cosine scores are positive for every chunk; wrapping MiniLM's
vectors too is not done, though it helped ECT-QA a little (docs/figures.md): there the lift
measures how many chunks lie near the question in any way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from chronorag.retrieval.hybrid import Searcher

# chunk ids -> {chunk id: document id}; ids it does not know count as their own document
DocLookup = Callable[[Sequence[int]], dict[int, str]]


def add_document_evidence(
    ids: np.ndarray, scores: np.ndarray, docs: Sequence[object], weight: float, siblings: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Add to each document's best candidate ``weight`` times the sum of its next ``siblings``
    candidate scores, and sort by the new scores, best first (ties keep the candidates' order).

    Only the best chunk carries the evidence: it moves the document up, while its other chunks keep
    their own scores, so a document with many matching chunks does not crowd the top of the list.
    Only a few siblings count: a long document (a 60-chunk earnings call) has many chunks that
    match a question's common words."""
    ids = np.asarray(ids)
    scores = np.asarray(scores, dtype=np.float64)
    if ids.shape != scores.shape or len(docs) != len(ids):
        raise ValueError("ids, scores and docs must have the same length")
    if siblings < 1:
        raise ValueError(f"siblings must be >= 1, got {siblings}")
    if weight == 0.0 or len(ids) == 0:
        return ids, scores
    members: dict[object, list[int]] = {}
    for position in np.argsort(-scores, kind="stable"):
        members.setdefault(docs[position], []).append(int(position))
    rescored = scores.copy()
    for positions in members.values():
        if len(positions) > 1:
            rescored[positions[0]] += weight * float(scores[positions[1 : siblings + 1]].sum())
    order = np.argsort(-rescored, kind="stable")
    return ids[order], rescored[order]


class DocumentEvidenceSearcher:
    """A :class:`Searcher` that re-ranks another searcher's candidates with document evidence."""

    def __init__(self, inner: Searcher, doc_lookup: DocLookup, weight: float, depth: int) -> None:
        if not weight >= 0:
            raise ValueError(f"document evidence weight must be >= 0, got {weight}")
        if depth < 1:
            raise ValueError(f"document evidence depth must be >= 1, got {depth}")
        self.inner = inner
        self.doc_lookup = doc_lookup
        self.weight = float(weight)
        self.depth = int(depth)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.weight == 0.0:
            return self.inner.search(query, k, allowed)
        ids, scores = self.inner.search(query, max(k, self.depth), allowed)
        if len(ids) == 0:
            return ids, scores
        known = self.doc_lookup([int(i) for i in ids])
        docs = [known.get(int(i), f"#chunk-{int(i)}") for i in ids]
        ids, rescored = add_document_evidence(ids, scores, docs, self.weight)
        return ids[:k], rescored[:k]
