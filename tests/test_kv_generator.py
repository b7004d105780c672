"""The hf generator end to end on a tiny model: prompt layout, modes, streaming, warm/drop, fallback."""

from __future__ import annotations

import pytest
import torch

from chronorag.kvcache.generator import (
    DEFAULT_SYSTEM_PROMPT,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    TokenEvent,
    load_generator,
)
from chronorag.kvcache.hf_backend import HFGenerator
from chronorag.kvcache.prompt import PromptError, build_prompt, encode_chunk
from chronorag.kvcache.testing import CharTokenizer, tiny_model

CHUNKS = [(11, "Northwind opened a plant in 2019."), (12, "The CEO in 2021 was Ada Park."), (13, "Sales rose by 4%.")]


@pytest.fixture(scope="module")
def model():
    return tiny_model(layers=3, seed=7)


def _gen(model, **opts) -> HFGenerator:
    return HFGenerator.from_model(model, CharTokenizer(), model_id="tiny-7", **opts)


def test_prompt_tokenises_each_chunk_on_its_own():
    tok = CharTokenizer()
    parts = build_prompt(tok, "Be brief.", CHUNKS, "Who was CEO?")
    assert parts.chunk_ids == [encode_chunk(tok, text) for _, text in CHUNKS]
    assert parts.prefix_ids[0] == tok.bos_token_id and tok.bos_token_id not in parts.all_ids[1:]
    assert tok.decode(parts.all_ids).endswith("Who was CEO?\nAnswer briefly.\n<assistant>\n")
    assert parts.chunk_spans[0][0] == len(parts.prefix_ids) and parts.chunk_refs == ["11", "12", "13"]
    with pytest.raises(PromptError):
        build_prompt(tok, "", [("x",)], "q")


def test_stream_yields_tokens_then_result_with_timings(model):
    gen = _gen(model)
    events = list(gen.stream(GenerationRequest("Who was CEO?", CHUNKS, max_new_tokens=6)))
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    result = events[-1]
    assert isinstance(result, GenerationResult) and len(tokens) == len(result.token_ids) >= 1
    assert "".join(t.text for t in tokens) == result.text
    t = result.timings
    assert t.ttft_s > 0 and t.prefill_s > 0 and t.total_s >= t.ttft_s and t.queue_s >= 0
    assert result.cache.chunk_misses == 3 and result.cache.mode == "blend(r=0.15)"
    assert result.cache.recomputed_tokens + result.cache.reused_tokens == result.cache.chunk_tokens


def test_modes_and_ratio_one_agree_with_full(model):
    gen = _gen(model)
    req = dict(question="Who was CEO?", chunks=CHUNKS, max_new_tokens=8)
    full = gen.generate(GenerationRequest(**req, mode="full"))
    assert gen.generate(GenerationRequest(**req, ratio=1.0)).token_ids == full.token_ids
    prefix = gen.generate(GenerationRequest(**req, mode="prefix"))
    assert prefix.token_ids == full.token_ids
    again = gen.generate(GenerationRequest(**req, mode="prefix"))  # whole prompt now cached
    assert again.token_ids == full.token_ids and again.cache.reused_tokens == again.cache.prompt_tokens - 1
    naive = gen.generate(GenerationRequest(**req, mode="naive"))
    assert naive.cache.mode == "blend(r=0)" and naive.cache.recomputed_tokens == 0


def test_warm_then_hits_and_drop_forces_recompute(model, tmp_path):
    gen = _gen(model, disk_dir=str(tmp_path), memory_bytes=1 << 20)
    assert gen.warm(CHUNKS) == 3 and gen.warm(CHUNKS) == 0
    r = gen.generate(GenerationRequest("Who was CEO?", CHUNKS, max_new_tokens=2))
    assert (r.cache.chunk_hits, r.cache.chunk_misses) == (3, 0)
    assert gen.drop([12]) == 1
    r = gen.generate(GenerationRequest("Who was CEO?", CHUNKS, max_new_tokens=2))
    assert (r.cache.chunk_hits, r.cache.chunk_misses) == (2, 1)
    # a changed text under the same chunk id is a different key: a miss, never a stale hit
    changed = [(12, "The CEO in 2021 was Bo Li.")] + CHUNKS[:1]
    r = gen.generate(GenerationRequest("Who was CEO?", changed, max_new_tokens=2))
    assert (r.cache.chunk_hits, r.cache.chunk_misses) == (1, 1)
    assert gen.drop([12]) == 2  # both versions of chunk 12
    # the disk tier survives a new generator (new process)
    fresh = _gen(model, disk_dir=str(tmp_path))
    r = fresh.generate(GenerationRequest("Who was CEO?", CHUNKS[:1], max_new_tokens=2))
    assert r.cache.chunk_hits == 1 and r.cache.store["disk_hits"] == 1


def test_different_system_prompt_uses_different_cache(model):
    gen = _gen(model)
    gen.warm(CHUNKS, system_prompt="A")
    r = gen.generate(GenerationRequest("q?", CHUNKS, system_prompt="B", max_new_tokens=1))
    assert r.cache.chunk_misses == 3


def test_unsupported_rope_falls_back_to_full_prefill_with_reason(caplog):
    model = tiny_model(layers=2, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    gen = HFGenerator.from_model(model, CharTokenizer())
    assert gen.blending_supported == (False, "rope scaling type 'linear' is not supported (only plain RoPE)")
    r = gen.generate(GenerationRequest("q?", CHUNKS, max_new_tokens=4))
    assert r.cache.mode == "full-native" and "linear" in r.cache.fallback_reason
    parts = build_prompt(CharTokenizer(), DEFAULT_SYSTEM_PROMPT, CHUNKS, "q?")
    with torch.no_grad():
        first = int(model(torch.tensor([parts.all_ids])).logits[0, -1].argmax())
    assert r.token_ids[0] == first
    assert gen.warm(CHUNKS) == 0


def test_bad_requests_give_clear_errors(model):
    gen = _gen(model)
    with pytest.raises(GenerationError, match="question"):
        gen.generate(GenerationRequest("  ", CHUNKS))
    with pytest.raises(GenerationError, match="mode"):
        gen.generate(GenerationRequest("q", CHUNKS, mode="turbo"))
    with pytest.raises(GenerationError, match="positions"):  # no chunk can make room for the question
        gen.generate(GenerationRequest("q" * 2100, CHUNKS))
    with pytest.raises(GenerationError, match="unknown generation backend"):
        load_generator("tgi")
    with pytest.raises(GenerationError, match="ratio"):
        HFGenerator(ratio=2.0)


def test_sampling_is_seeded(model):
    gen = _gen(model)
    req = GenerationRequest("q?", CHUNKS, max_new_tokens=6, temperature=1.0, seed=3)
    assert gen.generate(req).token_ids == gen.generate(req).token_ids


def test_bfloat16_store_halves_chunk_kv_and_keeps_answers(model, tmp_path):
    fp32 = _gen(model, store_dtype="float32")
    bf16 = _gen(model, disk_dir=str(tmp_path))  # 'auto': an fp32 model's chunk KV is kept in bfloat16
    fp32.warm(CHUNKS)
    bf16.warm(CHUNKS)
    assert bf16.store_dtype == torch.bfloat16 and fp32.store_dtype == torch.float32
    assert bf16.store.stats().memory_bytes * 2 == fp32.store.stats().memory_bytes
    req = GenerationRequest("Who was CEO?", CHUNKS, max_new_tokens=1)
    ref, _, _ = fp32.prefill_logits(req)
    got, report, _ = bf16.prefill_logits(req)
    assert report.chunk_hits == 3
    assert torch.allclose(ref, got, atol=0.05) and not torch.equal(ref, got)  # rounded, not ignored
    # the disk tier keeps bfloat16 too, and a new process reads it back as such
    fresh = _gen(model, store_dtype="bfloat16", disk_dir=str(tmp_path))
    half = HFGenerator.from_model(tiny_model(layers=3, seed=7).to(torch.float16), CharTokenizer(), model_id="tiny-7-fp16")
    assert half.store_dtype == torch.float16  # a 16-bit model's KV stays in its own dtype
    again, report, _ = fresh.prefill_logits(req)
    assert report.chunk_hits == 3 and fresh.store.stats().disk_hits == 3 and torch.equal(again, got)
    with pytest.raises(GenerationError, match="store_dtype"):
        _gen(model, store_dtype="int4")
