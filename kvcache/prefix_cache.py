"""Exact prefix caching (the vLLM automatic-prefix-caching baseline) at token granularity.

Only the longest cached prefix of the exact token sequence is reused: a chunk whose predecessors
changed gets no reuse, which is what per-chunk blending improves on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from chronorag.kvcache.forward import KVBuffer


class PrefixCache:
    def __init__(self, budget_bytes: int = 256 << 20, max_entries: int = 64) -> None:
        self.budget = int(budget_bytes)
        self.max_entries = int(max_entries)
        self._entries: OrderedDict[tuple[int, ...], KVBuffer] = OrderedDict()
        self._lock = threading.Lock()
        self.used_bytes = 0

    def lookup(self, ids: list[int]) -> tuple[KVBuffer | None, int]:
        """The entry sharing the longest prefix with ``ids``, and that prefix's length."""
        best, best_n = None, 0
        with self._lock:
            for key, buf in self._entries.items():
                n = 0
                for a, b in zip(key, ids):
                    if a != b:
                        break
                    n += 1
                if n > best_n:
                    best, best_n = key, n
            if best is None:
                return None, 0
            self._entries.move_to_end(best)
            return self._entries[best], best_n

    def insert(self, ids: list[int], buf: KVBuffer) -> None:
        n = len(ids)
        kept = KVBuffer(k=buf.k[:, :, :n].clone(), v=buf.v[:, :, :n].clone(), length=n)
        size = kept.nbytes()
        if size > self.budget:
            return
        key = tuple(ids)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used_bytes -= old.nbytes()
            while self._entries and (self.used_bytes + size > self.budget or len(self._entries) >= self.max_entries):
                _, victim = self._entries.popitem(last=False)
                self.used_bytes -= victim.nbytes()
            self._entries[key] = kept
            self.used_bytes += size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
