"""When to merge BM25 segments: small synchronous delta merges, big merges in the background.

Kept apart from the index so that the rule can be read, and tested, on plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MergePlan:
    kind: str  # 'none' | 'full' (everything, may run in the background) | 'deltas' (synchronous)
    members: tuple[int, ...] = ()  # positions of the segments to merge

    @property
    def needed(self) -> bool:
        return self.kind != "none"


def plan_merge(
    sizes: Sequence[int],
    deleted: int,
    busy: frozenset[int],
    max_segments: int,
    delta_fraction: float,
) -> MergePlan:
    """Decide from segment sizes, the number of tombstones and which segments a merge already holds.

    - 'full' when the deltas (every segment but the largest) or the tombstones exceed
      ``delta_fraction`` of all documents and no merge is running: the result is one segment,
      and the cost is amortised since the index must grow by that fraction before the next one.
    - 'deltas' when there are more than ``max_segments`` segments: merge the free deltas (not the
      main segment, not segments a running merge holds) into one; cheap because they are small.
    """
    total = sum(sizes)
    if total == 0 or not sizes:
        return MergePlan("none")
    main = max(range(len(sizes)), key=lambda i: sizes[i])
    delta_docs = total - sizes[main]
    if not busy and (delta_docs > delta_fraction * total or deleted > delta_fraction * total):
        return MergePlan("full", tuple(range(len(sizes))))
    if len(sizes) > max_segments:
        free = tuple(i for i in range(len(sizes)) if i not in busy and (busy or i != main))
        if len(free) > 1:
            return MergePlan("deltas", free)
    return MergePlan("none")
