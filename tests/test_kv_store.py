"""Chunk KV store: content keys, byte budgets, disk round trip, cost-aware eviction, drop by chunk id."""

from __future__ import annotations

import pytest
import torch

from chronorag.kvcache.chunk_store import ChunkKV, ChunkStore, DiskTier, MemoryTier, chunk_key


def _kv(tokens: int = 8, cost: float = 0.01, seed: int = 0) -> ChunkKV:
    g = torch.Generator().manual_seed(seed)
    return ChunkKV(torch.randn(2, 2, tokens, 4, generator=g), torch.randn(2, 2, tokens, 4, generator=g), cost)


def test_key_depends_on_model_tokenizer_prefix_and_tokens():
    base = chunk_key("m", "t", [1, 2], [5, 6, 7])
    assert base == chunk_key("m", "t", [1, 2], [5, 6, 7])
    variants = [
        chunk_key("m2", "t", [1, 2], [5, 6, 7]),
        chunk_key("m", "t2", [1, 2], [5, 6, 7]),
        chunk_key("m", "t", [1, 3], [5, 6, 7]),
        chunk_key("m", "t", [1, 2], [5, 6, 8]),
        chunk_key("m", "t", [1], [2, 5, 6, 7]),  # same concatenation, different split
    ]
    assert len({base, *variants}) == 6


def test_memory_tier_respects_byte_budget():
    size = _kv().nbytes
    tier = MemoryTier(budget_bytes=3 * size + 10)
    for i in range(10):
        tier.put(f"k{i}", _kv(seed=i), "c")
        assert tier.used_bytes <= 3 * size + 10
    assert len(tier.data) == 3 and tier.evictions == 7
    assert tier.put("big", _kv(tokens=100), "c") is False  # larger than the whole budget


def test_eviction_keeps_frequent_and_expensive_entries():
    size = _kv().nbytes
    tier = MemoryTier(budget_bytes=3 * size)
    tier.put("popular", _kv(cost=0.01), "a")
    tier.put("expensive", _kv(cost=1.0), "b")
    tier.put("cold", _kv(cost=0.01), "c")
    for _ in range(5):
        assert tier.get("popular") is not None
    tier.put("new1", _kv(cost=0.01), "d")
    assert "cold" not in tier.data and {"popular", "expensive", "new1"} <= set(tier.data)
    tier.put("new2", _kv(cost=0.01), "e")  # new1 (never reused, cheap) goes before the others
    assert {"popular", "expensive", "new2"} == set(tier.data)


def test_stale_popular_entries_age_out():
    """GDSF's clock: an entry reused long ago eventually loses to a stream of fresh reuse."""
    size = _kv().nbytes
    tier = MemoryTier(budget_bytes=2 * size)
    tier.put("old", _kv(), "a")
    tier.get("old")
    for i in range(40):
        tier.put(f"n{i}", _kv(), "b")
        for _ in range(3):
            tier.get(f"n{i}")
    assert "old" not in tier.data


def test_disk_tier_round_trip_and_bound(tmp_path):
    kv = _kv(cost=0.5)
    tier = DiskTier(tmp_path, budget_bytes=10 << 20)
    tier.put("abc", kv, "chunk-1")
    back = tier.get("abc")
    assert torch.equal(back.k, kv.k) and torch.equal(back.v, kv.v) and back.compute_s == 0.5
    reopened = DiskTier(tmp_path, budget_bytes=10 << 20)  # index rebuilt from file headers
    assert reopened.policy.meta["abc"].chunk_id == "chunk-1"
    file_size = reopened.used_bytes
    small = DiskTier(tmp_path / "small", budget_bytes=2 * file_size + 10)
    for i in range(6):
        small.put(f"k{i}", _kv(seed=i), "c")
        assert small.used_bytes <= 2 * file_size + 10
    assert len(list((tmp_path / "small").glob("*.safetensors"))) == 2


def test_corrupt_disk_file_is_a_miss_not_a_crash(tmp_path):
    tier = DiskTier(tmp_path, budget_bytes=1 << 20)
    tier.put("abc", _kv(), "c")
    (tmp_path / "abc.safetensors").write_bytes(b"garbage")
    assert tier.get("abc") is None
    (tmp_path / "zzz.safetensors").write_bytes(b"garbage")
    assert "zzz" not in DiskTier(tmp_path, budget_bytes=1 << 20).policy.meta


def test_store_tiers_counters_and_drop(tmp_path):
    size = _kv().nbytes
    store = ChunkStore(memory_bytes=size, disk_dir=tmp_path, disk_bytes=1 << 20)
    store.put("k1", _kv(seed=1), 7)
    store.put("k2", _kv(seed=2), 8)  # pushes k1 out of memory; disk keeps both
    assert store.get("k1") is not None and store.get("k2") is not None and store.get("nope") is None
    s = store.stats()
    assert (s.memory_hits, s.disk_hits, s.misses) == (0, 2, 1)  # each get promoted, evicting the other
    assert store.get("k2") is not None and store.stats().memory_hits == 1
    assert s.memory_bytes <= size and s.disk_entries == 2
    assert store.keys_for(7) == {"k1"}
    assert store.drop([7]) == 1
    assert store.get("k1") is None and store.keys_for(7) == set()
    # a fresh store over the same directory still knows which keys belong to chunk 8
    again = ChunkStore(memory_bytes=size, disk_dir=tmp_path, disk_bytes=1 << 20)
    assert again.keys_for("8") == {"k2"} and again.drop(["8"]) == 1
    assert not list(tmp_path.glob("*.safetensors"))


def test_negative_budget_is_rejected():
    with pytest.raises(ValueError, match="budget"):
        MemoryTier(-1)


def test_chunk_map_forgets_entries_evicted_from_every_tier():
    size = _kv().nbytes
    store = ChunkStore(memory_bytes=2 * size)
    for i in range(5):
        store.put(f"k{i}", _kv(seed=i), i)
    assert store.stats().memory_entries == 2
    assert sum(bool(store.keys_for(i)) for i in range(5)) == 2
    assert store.drop(range(5)) == 2
