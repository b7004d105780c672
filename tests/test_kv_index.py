"""ChunkKVIndex drops deleted chunks' KV and follows the store's change log like other indexes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

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


@pytest.mark.parametrize("make_state", [
    lambda p: p.write_text("garbage"),
    lambda p: p.write_text("{}"),
    lambda p: p.write_text('{"applied_seq": "7"}'),
    lambda p: p.write_bytes(b"\xff\xfe"),
    lambda p: p.mkdir(),
])
def test_an_unreadable_state_file_drops_the_cache_and_starts_over(tmp_path, caplog, make_state):
    gen = HFGenerator.from_model(tiny_model(layers=2), CharTokenizer(), disk_dir=str(tmp_path / "kv"))
    gen.warm([(1, "first chunk"), (2, "second chunk")])
    state = tmp_path / "kv_state.json"
    make_state(state)
    index = ChunkKVIndex(gen, state)
    assert index.applied_seq == 0 and gen.store.stats().disk_entries == 0  # deletions since are unknown
    assert str(state) in caplog.text and "starting from scratch" in caplog.text
    index.commit(9)
    assert ChunkKVIndex(gen, state).applied_seq == 9


def test_a_failed_state_write_is_a_warning(tmp_path, caplog):
    gen = HFGenerator.from_model(tiny_model(layers=2), CharTokenizer())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    index = ChunkKVIndex(gen, blocker / "kv_state.json")  # its folder cannot be created
    index.commit(3)
    index.commit(4)
    assert index.applied_seq == 4 and caplog.text.count("cannot save KV cache state") == 1


def test_refresh_adopts_a_later_state_another_process_saved(tmp_path):
    gen = HFGenerator.from_model(tiny_model(layers=2), CharTokenizer())
    state = tmp_path / "kv_state.json"
    reader, writer = ChunkKVIndex(gen, state), ChunkKVIndex(gen, state)
    writer.commit(7)
    assert reader.applied_seq == 0 and reader.refresh() and reader.applied_seq == 7
    assert not reader.refresh()  # nothing newer
    state.write_text("garbage")
    assert not reader.refresh() and reader.applied_seq == 7  # an unreadable file changes nothing
