"""The default model (SmolLM2-135M-Instruct GGUF): exactness at the boundaries and an end-to-end answer."""

from __future__ import annotations

import pytest
import torch

from chronorag.kvcache.generator import GenerationRequest, load_generator
from chronorag.kvcache.hf_backend import HFGenerator
from chronorag.kvcache.prompt import build_prompt

pytestmark = pytest.mark.slow

CHUNKS = [
    ("a", "Northwind Energy appointed Maria Lopez as chief executive in March 2021, replacing Tom Reed."),
    ("b", "In 2019 Northwind opened a solar plant in Nevada with a capacity of 300 megawatts."),
    ("c", "Northwind's revenue rose 12 percent in 2022, driven by wind projects in Texas."),
]
QUESTION = "Who became chief executive of Northwind Energy in 2021?"


@pytest.fixture(scope="module")
def gen():
    torch.set_num_threads(2)
    g = load_generator("hf", model=None, device="cpu")
    if not g.blending_supported[0]:
        pytest.fail(f"SmolLM2 should support blending: {g.blending_supported[1]}")
    return g


def test_template_prefix_and_runner_match_transformers(gen):
    tok, model = gen.tokenizer, gen._loaded.model
    parts = build_prompt(tok, "You are helpful.", CHUNKS, QUESTION)
    assert tok.decode(parts.prefix_ids).startswith("<|im_start|>system\nYou are helpful.<|im_end|>")
    assert tok.decode(parts.suffix_ids).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        ref = model(torch.tensor([parts.all_ids])).logits[0, -1]
    ours, _, _ = gen.prefill_logits(GenerationRequest(QUESTION, CHUNKS, system_prompt="You are helpful.", mode="full"))
    assert (ours - ref).abs().max() < 1e-3


def test_ratio_one_and_single_chunk_match_full_prefill(gen):
    """Exact in fp32 (the chunk KV kept in fp32); the default bfloat16 storage stays close."""
    assert gen.store_dtype == torch.bfloat16  # 'auto' for an fp32 model
    gen32 = HFGenerator(loaded=gen._loaded, store_dtype="float32")
    req = dict(question=QUESTION, system_prompt="You are helpful.")
    one_full, _, _ = gen.prefill_logits(GenerationRequest(chunks=CHUNKS[:1], mode="full", **req))
    one_bf16, _, _ = gen.prefill_logits(GenerationRequest(chunks=CHUNKS[:1], ratio=0.15, **req))
    assert 0 < (one_bf16 - one_full).abs().max() < 0.1 and int(one_bf16.argmax()) == int(one_full.argmax())
    gen = gen32
    full, _, _ = gen.prefill_logits(GenerationRequest(chunks=CHUNKS, mode="full", **req))
    blended, rep, _ = gen.prefill_logits(GenerationRequest(chunks=CHUNKS, ratio=1.0, **req))
    assert rep.recomputed_tokens == rep.chunk_tokens and (blended - full).abs().max() < 1e-3
    one_full, _, _ = gen.prefill_logits(GenerationRequest(chunks=CHUNKS[:1], mode="full", **req))
    one_blend, _, _ = gen.prefill_logits(GenerationRequest(chunks=CHUNKS[:1], ratio=0.15, **req))
    assert (one_blend - one_full).abs().max() < 1e-3
    naive, _, _ = gen.prefill_logits(GenerationRequest(chunks=CHUNKS, ratio=0.0, **req))
    assert (naive - full).abs().max() > 1e-2  # multi-chunk reuse without recompute is not exact


def test_blend_generation_end_to_end(gen):
    """Decoding from the fused cache: a single cached chunk answers exactly like a full prefill."""
    full = gen.generate(GenerationRequest(QUESTION, CHUNKS[:1], max_new_tokens=12, mode="full"))
    blended = gen.generate(GenerationRequest(QUESTION, CHUNKS[:1], max_new_tokens=12))
    assert "Lopez" in full.text and blended.token_ids == full.token_ids
    first = gen.generate(GenerationRequest(QUESTION, CHUNKS, max_new_tokens=8))
    assert (first.cache.chunk_hits, first.cache.chunk_misses) == (1, 2)  # "a" was cached above
    again = gen.generate(GenerationRequest(QUESTION, CHUNKS, max_new_tokens=8))
    assert (again.cache.chunk_hits, again.cache.chunk_misses) == (3, 0)
    assert again.token_ids == first.token_ids  # stored KV reproduces what was just computed
    assert again.text.strip() and again.timings.decode_tokens_per_s > 0


def test_converted_model_cache_matches_the_gguf(gen, capfd):
    """The safetensors copy made on first load gives the same tokens and logits, loads without a
    progress bar (leaving transformers' own setting as it was), and only a complete copy is used."""
    from transformers.utils import logging as hf_logging

    from chronorag.kvcache import model_loader as ml

    path = ml._cache_dir_for(ml.default_model_cache(), gen._loaded.model_id)
    assert (path / "COMPLETE").is_file()
    assert hf_logging.is_progress_bar_enabled()
    capfd.readouterr()
    tok, lm = ml._load_converted(path)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    assert ml.tokenizer_identity(tok) == gen._loaded.tokenizer_id
    ids = tok(QUESTION)["input_ids"]
    assert ids == gen.tokenizer(QUESTION)["input_ids"]
    with torch.no_grad():
        x = torch.tensor([ids])
        assert (lm(x).logits - gen._loaded.model(x).logits).abs().max() < 1e-5
    (path / "COMPLETE").unlink()
    assert ml._load_converted(path) is None
