"""Reciprocal rank fusion: combines rankings whose scores are not comparable (BM25 vs cosine vs graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def rrf_fuse(
    rankings: Mapping[str, Sequence[int]],
    k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(d) = sum_r w_r / (k + rank_r(d)), ranks starting at 1.

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
        seen: set[int] = set()
        rank = 0
        for doc in ids:
            if doc in seen:  # a retriever listing an id twice gets credit once
                continue
            seen.add(doc)
            rank += 1
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
            best_rank[doc] = min(best_rank.get(doc, rank), rank)
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))
