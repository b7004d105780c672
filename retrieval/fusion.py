"""Reciprocal rank fusion: combines rankings whose scores are not comparable (BM25 vs cosine vs graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def rrf_fuse(
    rankings: Mapping[str, Sequence[int]],
    k: int = 60,
    weights: Mapping[str, float] | None = None,
    scales: Mapping[str, Mapping[int, float]] | None = None,
) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(d) = sum_r w_r * s_r(d) / (k + rank_r(d)), ranks from 1.

    ``s_r(d)`` is 1 unless ``scales`` gives a retriever's own normalised score (0..1) per id: for a
    retriever whose scores carry meaning beyond order (the graph's time validity), a far weaker
    second candidate should not earn almost as much as the first, as plain RRF with k=60 would.

    Ties are broken by the best single rank, then by id, so results are deterministic.
    """
    if k < 1:
        raise ValueError(f"rrf k must be >= 1, got {k}")
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for name, ids in rankings.items():
        w = 1.0 if weights is None else float(weights.get(name, 1.0))
        if w == 0.0:
            continue
        scale = scales.get(name) if scales else None
        seen: set[int] = set()
        rank = 0
        for doc in ids:
            if doc in seen:  # a retriever listing an id twice gets credit once
                continue
            seen.add(doc)
            rank += 1
            factor = 1.0 if scale is None else float(scale.get(doc, 0.0))
            scores[doc] = scores.get(doc, 0.0) + w * factor / (k + rank)
            best_rank[doc] = min(best_rank.get(doc, rank), rank)
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))
