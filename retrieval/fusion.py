"""Reciprocal rank fusion: combines rankings whose scores are not comparable (BM25 vs cosine vs graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def rrf_fuse(
    rankings: Mapping[str, Sequence[int]],
    k: int = 60,
    weights: Mapping[str, float] | None = None,
    scales: Mapping[str, Mapping[int, float]] | None = None,
    scores: Mapping[str, Mapping[int, float]] | None = None,
) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(d) = sum_r w_r * s_r(d) / (k + rank_r(d)), ranks from 1.

    ``s_r(d)`` is 1 unless ``scales`` gives a retriever's own normalised score (0..1) per id: for a
    retriever whose scores carry meaning beyond order (the graph's time validity), a far weaker
    second candidate should not earn almost as much as the first, as plain RRF with k=60 would.

    ``scores`` (a retriever's own scores per id) makes ids with equal scores share their group's mean
    rank: a retriever that cannot tell candidates apart (the graph's entity mentions, all scored
    alike) must not hand the first of them, in whatever order it listed them, a better rank.

    Ties in the fused score are broken by the best single rank, then by id, so results are
    deterministic.
    """
    if k < 1:
        raise ValueError(f"rrf k must be >= 1, got {k}")
    fused: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for name, ids in rankings.items():
        w = 1.0 if weights is None else float(weights.get(name, 1.0))
        if w == 0.0:
            continue
        scale = scales.get(name) if scales else None
        unique = list(dict.fromkeys(ids))  # a retriever listing an id twice gets credit once
        ranks = _shared_ranks(unique, scores.get(name) if scores else None)
        for position, (doc, rank) in enumerate(zip(unique, ranks), 1):
            factor = 1.0 if scale is None else float(scale.get(doc, 0.0))
            fused[doc] = fused.get(doc, 0.0) + w * factor / (k + rank)
            best_rank[doc] = min(best_rank.get(doc, position), position)
    return sorted(fused.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))


def _shared_ranks(ids: Sequence[int], own: Mapping[int, float] | None) -> list[float]:
    """1, 2, 3, ... with each run of equal own scores replaced by the run's mean rank (an id
    without a score ties with nothing)."""
    if own is None:
        return [float(r) for r in range(1, len(ids) + 1)]
    out: list[float] = []
    start = 0
    while start < len(ids):
        end = start + 1
        score = own.get(ids[start])
        while end < len(ids) and score is not None and own.get(ids[end]) == score:
            end += 1
        out.extend([(start + 1 + end) / 2] * (end - start))
        start = end
    return out
