"""ChunkKVIndex drops deleted chunks' KV and follows the store's change log like other indexes."""

from __future__ import annotations

from datetime import datetime, timezone

from chronorag.kvcache.hf_backend import HFGenerator
from chronorag.kvcache.kv_index import ChunkKVIndex
from chronorag.kvcache.testing import CharTokenizer, tiny_model
from chronorag.types import Chunk


def _chunk(cid: int, text: str) -> Chunk:
    return Chunk(cid, "doc", cid, text, 0, len(text), len(text), datetime(2024, 1, 1, tzinfo=timezone.utc), "test")


def test_index_warms_added_drops_deleted_and_persists_seq(tmp_path):
    gen = HFGenerator.from_model(tiny_model(layers=2), CharTokenizer(), disk_dir=str(tmp_path / "kv"))
    index = ChunkKVIndex(gen, tmp_path / "kv_state.json", warm_added=True)
    index.apply([_chunk(1, "first chunk"), _chunk(2, "second chunk")], [])
    index.commit(5)
    assert gen.store.keys_for(1) and gen.store.keys_for(2)
    index.apply([], [1])
    index.commit(6)
    assert not gen.store.keys_for(1) and gen.store.keys_for(2)
    assert ChunkKVIndex(gen, tmp_path / "kv_state.json").applied_seq == 6
    index.reset()
    assert gen.store.stats().disk_entries == 0 and index.applied_seq == 0
