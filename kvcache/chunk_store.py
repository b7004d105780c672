"""Two-tier store of per-chunk KV caches: a byte-bounded memory tier over a byte-bounded disk tier.

Entries are pre-RoPE keys and values of one chunk computed behind a fixed prefix (see blend.py). A key
names everything that determines those tensors: model, tokenizer, the chunk's own token ids and the
prefix's token ids, so a changed chunk or system prompt can never hit a stale entry. Both tiers evict
by GreedyDual-Size-Frequency: priority = clock + reuse count x recompute seconds / bytes, and the
clock rises to each victim's priority, so popular, expensive, small entries stay while stale ones age
out (the Cache-Craft idea of weighing reuse against recompute cost). The disk tier is write-through
(the durable copy, safetensors files read through mmap) and is re-indexed from file headers on open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from chronorag.kvcache import kv_file

log = logging.getLogger(__name__)
KEY_VERSION = "chronorag-kv-v1"


@dataclass
class ChunkKV:
    """Pre-RoPE keys and values of one chunk, shape (layers, kv_heads, tokens, head_dim)."""

    k: torch.Tensor
    v: torch.Tensor
    compute_s: float = 0.0

    @property
    def n_tokens(self) -> int:
        return int(self.k.shape[2])

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()


def chunk_key(model_id: str, tokenizer_id: str, prefix_ids: Sequence[int], chunk_ids: Sequence[int]) -> str:
    """Content address of a chunk's KV: changes whenever anything that shaped the tensors changes."""
    payload = json.dumps([KEY_VERSION, model_id, tokenizer_id, list(map(int, prefix_ids)), list(map(int, chunk_ids))])
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class _Meta:
    chunk_id: str
    nbytes: int
    compute_s: float
    hits: int = 0
    priority: float = 0.0


class _GDSF:
    """Priority bookkeeping shared by both tiers."""

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"byte budget must be >= 0, got {budget_bytes}")
        self.budget = int(budget_bytes)
        self.clock = 0.0
        self.meta: dict[str, _Meta] = {}
        self.used = 0

    def value(self, m: _Meta) -> float:
        return self.clock + (m.hits + 1) * max(m.compute_s, 1e-6) / max(m.nbytes, 1)

    def touch(self, key: str) -> None:
        m = self.meta[key]
        m.hits += 1
        m.priority = self.value(m)

    def add(self, key: str, m: _Meta) -> None:
        m.priority = self.value(m)
        self.meta[key] = m
        self.used += m.nbytes

    def remove(self, key: str) -> _Meta | None:
        m = self.meta.pop(key, None)
        if m is not None:
            self.used -= m.nbytes
        return m

    def victims(self, incoming: int, protect: str | None = None) -> list[str]:
        """Keys to evict so that ``incoming`` more bytes fit, lowest priority first."""
        out, free = [], self.budget - self.used
        for key, m in sorted(self.meta.items(), key=lambda kv: kv[1].priority):
            if free >= incoming:
                break
            if key == protect:
                continue
            out.append(key)
            free += m.nbytes
            self.clock = max(self.clock, m.priority)
        return out


class MemoryTier:
    def __init__(self, budget_bytes: int) -> None:
        self.policy = _GDSF(budget_bytes)
        self.data: dict[str, ChunkKV] = {}
        self.evictions = 0
        self.evicted: list[str] = []

    def get(self, key: str) -> ChunkKV | None:
        kv = self.data.get(key)
        if kv is not None:
            self.policy.touch(key)
        return kv

    def put(self, key: str, kv: ChunkKV, chunk_id: str, hits: int = 0) -> bool:
        """Insert, evicting lower-priority entries; False if the entry alone exceeds the budget."""
        if kv.nbytes > self.policy.budget:
            return False
        self.remove(key)
        for victim in self.policy.victims(kv.nbytes):
            self.remove(victim)
            self.evictions += 1
            self.evicted.append(victim)
        self.policy.add(key, _Meta(chunk_id, kv.nbytes, kv.compute_s, hits))
        self.data[key] = kv
        return True

    def remove(self, key: str) -> None:
        self.data.pop(key, None)
        self.policy.remove(key)

    @property
    def used_bytes(self) -> int:
        return self.policy.used


class DiskTier:
    """safetensors files named by key (see kv_file.py); metadata in the file header so the index
    survives restarts. Damaged, foreign or older-format files are dropped and recomputed."""

    def __init__(self, directory: str | Path, budget_bytes: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.policy = _GDSF(budget_bytes)
        self.evictions = 0
        self.evicted: list[str] = []
        old_format = 0
        for path in sorted(self.dir.glob("*.safetensors")):
            try:
                md = kv_file.read_metadata(path)
                if md.get("format") != kv_file.FORMAT:
                    old_format += 1
                    self._unlink(path)
                    continue
                m = _Meta(md["chunk_id"], path.stat().st_size, float(md["compute_s"]), int(md.get("hits", 0)))
            except Exception as exc:  # noqa: BLE001 - a torn or foreign file is dropped, not fatal
                log.warning("dropping unreadable KV file %s: %s", path, exc)
                self._unlink(path)
                continue
            self.policy.add(path.stem, m)
        if old_format:
            log.warning("dropped %d KV cache file(s) in %s written without checksums by an older chronorag; "
                        "they are recomputed on use", old_format, self.dir)
        kv_file.remove_stale_temps(self.dir)

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # a read-only directory: the file stays, and is checked again on use
            log.debug("cannot remove %s: %s", path, exc)

    def get(self, key: str) -> ChunkKV | None:
        if key not in self.policy.meta:
            return None
        path = self._path(key)
        try:
            k, v, md = kv_file.read(path)
            kv = ChunkKV(k, v, float(md["compute_s"]))
        except FileNotFoundError:  # another process evicted or dropped it
            self.remove(key)
            return None
        except Exception as exc:  # noqa: BLE001
            log.warning("dropping damaged KV file %s (%s); the chunk's KV is recomputed", path, exc)
            self.remove(key)
            return None
        self.policy.touch(key)
        return kv

    def put(self, key: str, kv: ChunkKV, chunk_id: str) -> bool:
        """Store the entry; False if it alone exceeds the budget. OSError when it cannot be written."""
        if key in self.policy.meta:
            return True
        if kv.nbytes > self.policy.budget:
            return False
        for victim in self.policy.victims(kv.nbytes):
            self.remove(victim)
            self.evictions += 1
            self.evicted.append(victim)
        data = kv_file.encode(kv.k, kv.v, {"chunk_id": chunk_id, "compute_s": repr(kv.compute_s), "hits": "0"})
        kv_file.write_atomic(self._path(key), data)
        self.policy.add(key, _Meta(chunk_id, len(data), kv.compute_s))
        return True

    def remove(self, key: str) -> None:
        self.policy.remove(key)
        self._unlink(self._path(key))

    @property
    def used_bytes(self) -> int:
        return self.policy.used


def _mismatch(kv: ChunkKV, shape: tuple[int, ...], dtype: torch.dtype | None) -> str | None:
    got = (tuple(kv.k.shape), tuple(kv.v.shape))
    if got != (shape, shape):
        return f"shape {got[0]}/{got[1]}, expected {shape}"
    if dtype is not None and (kv.k.dtype, kv.v.dtype) != (dtype, dtype):
        return f"dtype {kv.k.dtype}/{kv.v.dtype}, expected {dtype}"
    return None


@dataclass
class StoreStats:
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    puts: int = 0
    memory_evictions: int = 0
    disk_evictions: int = 0
    dropped: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    memory_entries: int = 0
    disk_entries: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.memory_hits + self.disk_hits + self.misses
        return (self.memory_hits + self.disk_hits) / total if total else 0.0


@dataclass
class ChunkStore:
    """Memory tier over an optional disk tier, with a chunk_id -> keys map for dropping by chunk."""

    memory_bytes: int = 1 << 30
    disk_dir: str | Path | None = None
    disk_bytes: int = 8 << 30
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        self.memory = MemoryTier(self.memory_bytes)
        self.disk = DiskTier(self.disk_dir, self.disk_bytes) if self.disk_dir is not None else None
        self._stats = StoreStats()
        self._write_warned = False
        self._by_chunk: dict[str, set[str]] = {}
        if self.disk is not None:
            for key, m in self.disk.policy.meta.items():
                self._by_chunk.setdefault(m.chunk_id, set()).add(key)

    def get(self, key: str, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None) -> ChunkKV | None:
        """The entry, or None; one whose keys or values are not ``shape``/``dtype`` (a foreign file,
        another model's) is dropped with a warning and counts as a miss, so the caller recomputes."""
        with self._lock:
            kv = self.memory.get(key)
            in_memory = kv is not None
            if kv is None and self.disk is not None and key in self.disk.policy.meta:
                kv = self.disk.get(key)
                if kv is None:  # a damaged or vanished file, dropped by the disk tier
                    self._discard(key)
            if kv is not None and shape is not None:
                problem = _mismatch(kv, tuple(shape), dtype)
                if problem is not None:
                    log.warning("dropping cached KV %s: %s; the chunk's KV is recomputed", key[:12], problem)
                    self._discard(key)
                    kv = None
            if kv is None:
                self._stats.misses += 1
                self._prune()
                return None
            if in_memory:
                self._stats.memory_hits += 1
                return kv
            self._stats.disk_hits += 1
            m = self.disk.policy.meta.get(key)
            self.memory.put(key, kv, m.chunk_id if m else "", hits=m.hits if m else 0)
            self._prune()
            return kv

    def put(self, key: str, kv: ChunkKV, chunk_id: int | str, strict: bool = False) -> None:
        """Keep the entry in memory and on disk. A disk write that fails (read-only directory, full
        disk) raises OSError when ``strict``; otherwise the entry stays in memory only and the first
        failure is logged as a warning."""
        cid = str(chunk_id)
        with self._lock:
            self._stats.puts += 1
            self.memory.put(key, kv, cid)
            self._by_chunk.setdefault(cid, set()).add(key)
            try:
                if self.disk is not None:
                    self.disk.put(key, kv, cid)
            except OSError as exc:
                if strict:
                    raise
                if not self._write_warned:
                    self._write_warned = True
                    log.warning("cannot store chunk KV in %s (%s); using it without saving", self.disk.dir,
                                exc.strerror or exc)
            finally:
                self._prune()

    def _discard(self, key: str) -> None:
        self.memory.remove(key)
        if self.disk is not None:
            self.disk.remove(key)
        for cid, keys in list(self._by_chunk.items()):
            if key in keys:
                keys.discard(key)
                if not keys:
                    del self._by_chunk[cid]

    def _prune(self) -> None:
        """Forget chunk-map entries for keys that left every tier."""
        tiers = [self.memory] + ([self.disk] if self.disk is not None else [])
        for tier in tiers:
            for key in tier.evicted:
                if not self.contains(key):
                    m_cid = next((cid for cid, keys in self._by_chunk.items() if key in keys), None)
                    if m_cid is not None:
                        self._by_chunk[m_cid].discard(key)
                        if not self._by_chunk[m_cid]:
                            del self._by_chunk[m_cid]
            tier.evicted.clear()

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self.memory.data or (self.disk is not None and key in self.disk.policy.meta)

    def chunk_ids(self) -> list[str]:
        with self._lock:
            return list(self._by_chunk)

    def keys_for(self, chunk_id: int | str) -> set[str]:
        with self._lock:
            return set(self._by_chunk.get(str(chunk_id), ()))

    def drop(self, chunk_ids: Iterable[int | str]) -> int:
        """Forget every cached KV of these chunks (deleted or changed); returns entries removed."""
        removed = 0
        with self._lock:
            for cid in map(str, chunk_ids):
                for key in self._by_chunk.pop(cid, set()):
                    present = key in self.memory.data or (self.disk is not None and key in self.disk.policy.meta)
                    self.memory.remove(key)
                    if self.disk is not None:
                        self.disk.remove(key)
                    removed += int(present)
            self._stats.dropped += removed
        return removed

    def stats(self) -> StoreStats:
        with self._lock:
            s = StoreStats(**{k: getattr(self._stats, k) for k in StoreStats.__dataclass_fields__})
            s.memory_evictions = self.memory.evictions
            s.memory_bytes, s.memory_entries = self.memory.used_bytes, len(self.memory.data)
            if self.disk is not None:
                s.disk_evictions = self.disk.evictions
                s.disk_bytes, s.disk_entries = self.disk.used_bytes, len(self.disk.policy.meta)
            return s
