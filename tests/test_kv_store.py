"""Chunk KV store: content keys, byte budgets, disk round trip, cost-aware eviction, drop by chunk id."""

from __future__ import annotations

import os
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chronorag.kvcache import kv_file
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


def _fail_write(*_args, **_kwargs):
    raise PermissionError(13, "Permission denied")


def test_a_failed_disk_write_keeps_the_entry_in_memory_and_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(kv_file, "write_atomic", _fail_write)  # what a read-only folder or full disk does
    store = ChunkStore(disk_dir=tmp_path, disk_bytes=1 << 20)
    store.put("k1", _kv(seed=1), 1)
    store.put("k2", _kv(seed=2), 2)
    assert store.get("k1") is not None and store.get("k2") is not None
    assert store.stats().disk_entries == 0 and store.keys_for(1) == {"k1"}
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "cannot store chunk KV" in warnings[0].getMessage()
    assert warnings[0].name.startswith("chronorag.")
    with pytest.raises(OSError):
        store.put("k3", _kv(seed=3), 3, strict=True)


def _damage_flip(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a byte in the tensor data, after the header
    path.write_bytes(bytes(data))


def _damage_nan(path):
    with safe_open(str(path), framework="pt") as f:
        md, k, v = f.metadata(), f.get_tensor("k"), f.get_tensor("v")
    save_file({"k": torch.full_like(k, float("nan")), "v": torch.full_like(v, float("nan"))}, str(path), metadata=md)


@pytest.mark.parametrize("damage", [_damage_flip, _damage_nan])
def test_damaged_tensor_bytes_are_a_miss_and_the_file_is_dropped(tmp_path, caplog, damage):
    DiskTier(tmp_path, budget_bytes=1 << 20).put("abc", _kv(), "c")
    damage(tmp_path / "abc.safetensors")
    tier = DiskTier(tmp_path, budget_bytes=1 << 20)  # the header still reads fine
    assert "abc" in tier.policy.meta
    assert tier.get("abc") is None and "abc" not in tier.policy.meta
    assert not (tmp_path / "abc.safetensors").exists()
    assert sum("damaged KV file" in r.getMessage() for r in caplog.records) == 1


def test_files_written_without_a_checksum_are_dropped_on_open(tmp_path, caplog):
    kv = _kv()
    save_file({"k": kv.k, "v": kv.v}, str(tmp_path / "old.safetensors"),
              metadata={"chunk_id": "c", "compute_s": "0.1", "hits": "0"})  # the format before checksums
    tier = DiskTier(tmp_path, budget_bytes=1 << 20)
    assert "old" not in tier.policy.meta and not (tmp_path / "old.safetensors").exists()
    assert "older chronorag" in caplog.text


def test_two_writers_of_one_key_do_not_collide(tmp_path, monkeypatch):
    """Another process storing the same key between our write and our rename: both succeed."""
    first, second = DiskTier(tmp_path, 1 << 20), DiskTier(tmp_path, 1 << 20)
    real_replace, calls = os.replace, []

    def racing_replace(src, dst):
        calls.append(src)
        if len(calls) == 1:
            second.put("abc", _kv(), "c")  # the other writer finishes first
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", racing_replace)
    assert first.put("abc", _kv(), "c") is True
    assert len(calls) == 2 and calls[0] != calls[1]
    assert torch.equal(DiskTier(tmp_path, 1 << 20).get("abc").k, _kv().k)


def test_a_temp_file_removed_before_the_rename_counts_as_stored_when_the_entry_exists(tmp_path, monkeypatch):
    real_replace = os.replace

    def cleaned_up(src, dst):
        real_replace(src, dst)  # the entry is there (another process stored the same content)...
        raise FileNotFoundError(2, "No such file or directory", src)  # ...and our temp file was gone

    tier = DiskTier(tmp_path, 1 << 20)
    monkeypatch.setattr(os, "replace", cleaned_up)
    assert tier.put("abc", _kv(), "c") is True and "abc" in tier.policy.meta


def test_start_up_removes_only_stale_temp_files(tmp_path):
    old = time.time() - 2 * 3600
    names = ["abc.tmp", ".tmpq1w2e3.kv", ".tmpXYZ", "def.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    for name in names[:3]:
        os.utime(tmp_path / name, (old, old))
    (tmp_path / ".tmp-fresh.kv").write_bytes(b"being written by a live process")
    DiskTier(tmp_path, 1 << 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-fresh.kv", "def.tmp"]


@pytest.mark.parametrize("shape, dtype, problem", [
    ((2, 2, 9, 4), torch.float32, "shape"),
    ((2, 3, 8, 4), torch.float32, "shape"),
    ((2, 2, 8, 4), torch.bfloat16, "dtype"),
])
def test_an_entry_of_the_wrong_shape_or_dtype_is_dropped(tmp_path, caplog, shape, dtype, problem):
    store = ChunkStore(disk_dir=tmp_path, disk_bytes=1 << 20)
    store.put("k", _kv(tokens=8), 5)
    assert store.get("k", (2, 2, 8, 4), torch.float32) is not None
    assert store.get("k", shape, dtype) is None
    assert not store.contains("k") and store.keys_for(5) == set() and not list(tmp_path.glob("*.safetensors"))
    assert problem in caplog.text and store.stats().misses == 1
