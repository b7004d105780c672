"""The hf generator over a damaged, foreign or unwritable disk tier, and prompts that overflow the model."""

from __future__ import annotations

import logging

import pytest
import torch

from chronorag.kvcache import kv_file
from chronorag.kvcache.generator import GenerationError, GenerationRequest, RequestError
from chronorag.kvcache.hf_backend import HFGenerator
from chronorag.kvcache.prompt import build_prompt
from chronorag.kvcache.testing import CharTokenizer, tiny_model

CHUNKS = [(11, "Northwind opened a plant in 2019."), (12, "The CEO in 2021 was Ada Park."), (13, "Sales rose by 4%.")]
QUESTION = "Who was CEO?"


@pytest.fixture(scope="module")
def model():
    return tiny_model(layers=3, seed=7)


def _gen(model, **opts) -> HFGenerator:
    return HFGenerator.from_model(model, CharTokenizer(), model_id="tiny-7", **opts)


def _answer(gen) -> tuple[list[int], object]:
    result = gen.generate(GenerationRequest(QUESTION, CHUNKS, max_new_tokens=6))
    return result.token_ids, result.cache


def _file_of(gen, chunk_id):
    (key,) = gen.store.keys_for(chunk_id)
    return gen.store.disk._path(key)


def _flip(path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x55
    path.write_bytes(bytes(data))


def test_damaged_entries_are_recomputed_by_answer_and_by_warm(model, tmp_path, caplog):
    reference, _ = _answer(_gen(model))
    gen = _gen(model, disk_dir=str(tmp_path))
    assert gen.warm(CHUNKS) == 3
    _flip(_file_of(gen, 12))
    tokens, cache = _answer(_gen(model, disk_dir=str(tmp_path)))  # a new process reads the disk tier
    assert tokens == reference and (cache.chunk_hits, cache.chunk_misses) == (2, 1)
    assert sum("damaged KV file" in r.getMessage() for r in caplog.records) == 1
    _flip(_file_of(gen, 13))
    assert _gen(model, disk_dir=str(tmp_path)).warm(CHUNKS) == 1  # warm re-checks what it finds
    assert _answer(_gen(model, disk_dir=str(tmp_path)))[1].chunk_misses == 0


@pytest.mark.parametrize("reshape", [
    lambda t: t[:, :, :-3],  # fewer tokens than the chunk has
    lambda t: torch.cat([t, t], dim=1),  # another model's KV heads
    lambda t: t[:-1],  # layers
    lambda t: t[..., :8],  # head dim
    lambda t: t.float(),  # dtype (the store keeps bfloat16 for this fp32 model)
])
def test_a_valid_file_of_the_wrong_shape_is_dropped_and_recomputed(model, tmp_path, caplog, reshape):
    reference, _ = _answer(_gen(model))
    gen = _gen(model, disk_dir=str(tmp_path))
    gen.warm(CHUNKS)
    path = _file_of(gen, 11)
    k, v, md = kv_file.read(path)
    meta = {name: md[name] for name in ("chunk_id", "compute_s", "hits")}
    path.write_bytes(kv_file.encode(reshape(k), reshape(v), meta))  # checksum and format are fine
    for _ in range(2):  # healed after the first time
        tokens, cache = _answer(_gen(model, disk_dir=str(tmp_path)))
        assert tokens == reference
    assert sum("dropping cached KV" in r.getMessage() for r in caplog.records) == 1


def _unwritable(*_args, **_kwargs):
    raise OSError(28, "No space left on device")


def test_an_unwritable_disk_tier_answers_but_warm_fails(model, tmp_path, monkeypatch, caplog):
    reference, _ = _answer(_gen(model))
    monkeypatch.setattr(kv_file, "write_atomic", _unwritable)
    gen = _gen(model, disk_dir=str(tmp_path))
    assert _answer(gen)[0] == reference and _answer(gen)[1].chunk_hits == 3  # the memory tier still serves
    assert sum("cannot store chunk KV" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(GenerationError, match=f"cannot store chunk KV in {tmp_path}: No space left on device"):
        _gen(model, disk_dir=str(tmp_path)).warm(CHUNKS)


def _positions_for(n_chunks: int, max_new: int) -> int:
    parts = build_prompt(CharTokenizer(), "You are a helpful assistant. Answer from the given documents only, briefly.",
                         CHUNKS, QUESTION)
    return len(parts.prefix_ids) + len(parts.suffix_ids) + sum(map(len, parts.chunk_ids[:n_chunks])) + max_new


def test_lowest_ranked_chunks_are_left_out_to_fit_the_context(caplog):
    limit = _positions_for(1, 4) + 5  # room for the first chunk, not the second
    small = HFGenerator.from_model(tiny_model(layers=2, max_position_embeddings=limit), CharTokenizer())
    full = HFGenerator.from_model(tiny_model(layers=2), CharTokenizer())
    result = small.generate(GenerationRequest(QUESTION, CHUNKS, max_new_tokens=4, mode="full"))
    alone = full.generate(GenerationRequest(QUESTION, CHUNKS[:1], max_new_tokens=4, mode="full"))
    assert result.cache.dropped_chunks == 2 and result.token_ids == alone.token_ids
    assert result.cache.prompt_tokens + 4 <= limit
    assert sum("left out the 2 lowest-ranked of 3 chunks" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(RequestError, match="positions"):  # not even the question fits
        small.generate(GenerationRequest(QUESTION, CHUNKS, max_new_tokens=limit))


@pytest.mark.parametrize("opts, message", [
    (dict(mode="bogus"), "mode must be one of"),
    (dict(ratio=1.5), "ratio must be in"),
    (dict(ratio="0.3"), "ratio must be a number"),
    (dict(ratio=True), "ratio must be a number"),
    (dict(max_new_tokens="4"), "max_new_tokens must be an integer"),
])
def test_bad_request_arguments_are_value_errors(model, opts, message):
    with pytest.raises(ValueError, match=message) as info:
        _gen(model).generate(GenerationRequest(QUESTION, CHUNKS, **opts))
    assert isinstance(info.value, GenerationError)  # callers catching GenerationError still do


def test_a_ratio_outside_blend_is_ignored_with_a_warning(model, caplog):
    gen = _gen(model)
    with caplog.at_level(logging.WARNING):
        gen.generate(GenerationRequest(QUESTION, CHUNKS, max_new_tokens=2, mode="full", ratio=0.7))
        gen.generate(GenerationRequest(QUESTION, CHUNKS, max_new_tokens=2, mode="blend", ratio=0.7))
    assert [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()] == [
        "ratio 0.7 is ignored in full mode (only blend recomputes a share of chunk tokens)"]
