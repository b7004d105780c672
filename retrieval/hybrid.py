"""Hybrid search: each retriever ranks the allowed chunks, RRF fuses them, the store fills in the text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from chronorag.query import Query
from chronorag.retrieval.fusion import rrf_fuse
from chronorag.store import Store
from chronorag.types import SearchHit


class TextSearcher(Protocol):
    """A retriever that needs only the question's text (BM25, vectors)."""

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class Searcher(Protocol):
    """What a retriever offers fusion: the best ``k`` allowed chunk ids with their own scores, for
    an analysed question (the graph reads its time scope and entities)."""

    def search(self, query: Query, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class ByText:
    """A :class:`TextSearcher` as a :class:`Searcher`."""

    def __init__(self, inner: TextSearcher) -> None:
        self.inner = inner

    def search(self, query: Query, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.search(query.text, k, allowed)


@dataclass(frozen=True)
class HybridConfig:
    rrf_k: int = 60
    candidate_depth: int = 100
    # Retrievers whose scores, normalised by their best, scale their RRF contribution.
    score_scaled: frozenset[str] = frozenset({"graph"})


class HybridRetriever:
    def __init__(
        self, store: Store, searchers: Mapping[str, Searcher], config: HybridConfig = HybridConfig()
    ) -> None:
        self.store = store
        self.searchers = dict(searchers)
        self.config = config

    def search(self, query: Query, hidden: frozenset[int] = frozenset()) -> list[SearchHit]:
        """The fused top ``query.top_k`` of the retrievers the query names, under its filters;
        ``hidden`` chunk ids are dropped from every retriever's candidates."""
        top_k, filters, weights = query.top_k, query.filters, query.weights or None
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        unknown = set(query.retrievers) - set(self.searchers)
        if unknown:
            raise ValueError(f"unknown retriever(s): {', '.join(sorted(unknown))}")
        names = list(dict.fromkeys(query.retrievers))
        allowed = None
        if filters is not None and not filters.is_empty:
            allowed = self.store.chunk_ids_matching(filters)
            if allowed.size == 0:
                return []
        depth = max(top_k, self.config.candidate_depth)
        rankings: dict[str, list[int]] = {}
        own_scores: dict[str, dict[int, float]] = {}
        for name in names:
            ids, scores = self.searchers[name].search(query, depth + min(len(hidden), depth), allowed)
            kept = [(int(i), float(s)) for i, s in zip(ids, scores) if int(i) not in hidden][:depth]
            rankings[name] = [i for i, _ in kept]
            own_scores[name] = dict(kept)
        if len(names) == 1:
            name = names[0]
            fused = [(cid, own_scores[name][cid]) for cid in rankings[name]]
        else:
            scales = {}
            for name in names:
                if name in self.config.score_scaled and own_scores[name]:
                    top = max(own_scores[name].values())
                    if top > 0:
                        scales[name] = {i: max(0.0, s / top) for i, s in own_scores[name].items()}
            fused = rrf_fuse(rankings, k=self.config.rrf_k, weights=weights, scales=scales, scores=own_scores)
        fused = fused[:top_k]
        chunks = self.store.get_chunks([cid for cid, _ in fused])
        hits: list[SearchHit] = []
        for cid, score in fused:
            chunk = chunks.get(cid)
            if chunk is None:  # deleted between index and store read; indexes catch up later
                continue
            hit = SearchHit(
                chunk_id=cid,
                doc_id=chunk.doc_id,
                published_at=chunk.published_at,
                score=float(score),
                text=chunk.text,
                source=chunk.source,
                ord=chunk.ord,
            )
            for name in names:
                if cid in own_scores[name]:
                    hit.scores[name] = own_scores[name][cid]
                    hit.ranks[name] = rankings[name].index(cid) + 1
            hits.append(hit)
        return hits
