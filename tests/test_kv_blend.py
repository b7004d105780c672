"""Blending boundary behaviour on a tiny seeded Llama (GQA 4 q / 2 kv heads): exact where it must be."""

from __future__ import annotations

import pytest
import torch

from chronorag.kvcache.blend import (
    BlendConfig,
    BlendError,
    blend_prefill,
    compute_chunk_kv,
    extend_prefill,
    full_prefill,
    select_count,
)
from chronorag.kvcache.forward import LayerRunner, cache_kwargs, to_transformers_cache
from chronorag.kvcache.rope import rope_at
from chronorag.kvcache.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(layers=4, seed=1)


@pytest.fixture(scope="module")
def runner(model):
    return LayerRunner(model)


def _prompt(seed: int = 0, chunk_lens=(12, 15, 9)):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(4, 300, (6,), generator=g)
    chunks = [torch.randint(4, 300, (n,), generator=g) for n in chunk_lens]
    suffix = torch.randint(4, 300, (5,), generator=g)
    spans, at = [], len(prefix)
    for c in chunks:
        spans.append((at, at + len(c)))
        at += len(c)
    return prefix, chunks, suffix, spans, torch.cat([prefix, *chunks, suffix])


def _setup(runner, seed=0, chunk_lens=(12, 15, 9)):
    prefix, chunks, suffix, spans, ids = _prompt(seed, chunk_lens)
    pbuf = full_prefill(runner, prefix, len(prefix)).buf
    kvs = [compute_chunk_kv(runner, pbuf, c.tolist()) for c in chunks]
    return pbuf, kvs, spans, ids


def test_runner_matches_transformers_forward(model, runner):
    ids = _prompt(3)[-1]
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    out = full_prefill(runner, ids, len(ids))
    assert torch.allclose(out.logits, ref, atol=1e-4)


def test_ratio_one_matches_full_prefill(runner):
    pbuf, kvs, spans, ids = _setup(runner)
    full = full_prefill(runner, ids, len(ids))
    out = blend_prefill(runner, ids, pbuf, kvs, spans, BlendConfig(ratio=1.0), len(ids))
    assert out.n_recomputed == sum(e - s for s, e in spans)
    assert (out.logits - full.logits).abs().max() < 1e-3
    assert torch.allclose(out.buf.k[:, :, : len(ids)], full.buf.k[:, :, : len(ids)], atol=1e-4)


@pytest.mark.parametrize("ratio", [0.0, 0.15, 0.5])
def test_single_chunk_matches_full_prefill(runner, ratio):
    pbuf, kvs, spans, ids = _setup(runner, seed=5, chunk_lens=(20,))
    full = full_prefill(runner, ids, len(ids))
    out = blend_prefill(runner, ids, pbuf, kvs, spans, BlendConfig(ratio=ratio), len(ids))
    assert (out.logits - full.logits).abs().max() < 1e-3


def test_ratio_zero_is_plain_concatenation(model, runner):
    """Reference built independently: RoPE'd cached KV in a transformers cache, suffix run by HF."""
    pbuf, kvs, spans, ids = _setup(runner, seed=2)
    out = blend_prefill(runner, ids, pbuf, kvs, spans, BlendConfig(ratio=0.0), len(ids))
    assert out.n_recomputed == 0
    c_end = spans[-1][1]
    ks = [pbuf.k[:, :, : pbuf.length]] + [rope_at(runner.rope, kv.k, torch.arange(s, e)) for kv, (s, e) in zip(kvs, spans)]
    vs = [pbuf.v[:, :, : pbuf.length]] + [kv.v for kv in kvs]
    k, v = torch.cat(ks, dim=2), torch.cat(vs, dim=2)
    assert torch.allclose(out.buf.k[:, :, :c_end], k, atol=1e-6)  # cached entries left untouched
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=[(k[i, None], v[i, None]) for i in range(k.shape[0])])
    with torch.no_grad():
        ref = model(ids[None, c_end:], position_ids=torch.arange(c_end, len(ids))[None], **cache_kwargs(model, cache)).logits[0, -1]
    assert (out.logits - ref).abs().max() < 1e-4
    # and it is not a full prefill: cross-chunk attention is missing
    full = full_prefill(runner, ids, len(ids))
    assert (out.logits - full.logits).abs().max() > 1e-3


def test_partial_ratio_recomputes_selected_rows_only(runner):
    pbuf, kvs, spans, ids = _setup(runner, seed=4)
    n_chunk = spans[-1][1] - spans[0][0]
    out = blend_prefill(runner, ids, pbuf, kvs, spans, BlendConfig(ratio=0.15), len(ids))
    assert out.n_recomputed == select_count(0.15, n_chunk) == len(out.selected)
    assert out.n_recomputed + out.n_reused == n_chunk
    last = runner.n_layers - 1
    placed = torch.cat([rope_at(runner.rope, kv.k[last], torch.arange(s, e)) for kv, (s, e) in zip(kvs, spans)], dim=1)
    deep = out.buf.k[last][:, spans[0][0] : spans[-1][1]]
    changed = ((deep - placed).abs().amax(dim=(0, 2)) > 1e-6).nonzero().flatten() + spans[0][0]
    assert set(changed.tolist()) <= set(out.selected.tolist())  # unselected rows keep cached deep KV


def test_selected_rows_never_see_later_tokens(runner):
    """Causality: altering a later chunk must not change what earlier recomputed rows produced."""
    pbuf, kvs, spans, ids = _setup(runner, seed=6)
    a = blend_prefill(runner, ids, pbuf, kvs, spans, BlendConfig(ratio=1.0), len(ids))
    ids2 = ids.clone()
    s, e = spans[-1]
    ids2[s:e] = (ids2[s:e] + 7) % 296 + 4
    kvs2 = kvs[:-1] + [compute_chunk_kv(runner, pbuf, ids2[s:e].tolist())]
    b = blend_prefill(runner, ids2, pbuf, kvs2, spans, BlendConfig(ratio=1.0), len(ids))
    assert torch.allclose(a.buf.k[:, :, :s], b.buf.k[:, :, :s], atol=1e-5)
    assert torch.allclose(a.buf.v[:, :, :s], b.buf.v[:, :, :s], atol=1e-5)


def test_quality_improves_with_ratio(runner):
    """Averaged over prompts, recomputing more rows moves logits toward the full prefill."""
    errs = {0.0: 0.0, 0.5: 0.0, 1.0: 0.0}
    for seed in range(4):
        pbuf, kvs, spans, ids = _setup(runner, seed=10 + seed)
        full = full_prefill(runner, ids, len(ids)).logits
        for r in errs:
            out = blend_prefill(runner, ids, pbuf, kvs, spans, BlendConfig(ratio=r), len(ids))
            errs[r] += float((out.logits - full).abs().mean())
    assert errs[1.0] < 1e-3 < errs[0.5] < errs[0.0]


def test_prefix_extension_matches_full(runner):
    ids = _prompt(7)[-1]
    full = full_prefill(runner, ids, len(ids))
    part = full_prefill(runner, ids[:20], 20)
    out = extend_prefill(runner, ids, part.buf, 20, len(ids))
    assert out.n_reused == 20
    assert (out.logits - full.logits).abs().max() < 1e-4


def test_decode_from_fused_cache_matches_transformers(model, runner):
    pbuf, kvs, spans, ids = _setup(runner, seed=8)
    out = blend_prefill(runner, ids, pbuf, kvs, spans, BlendConfig(ratio=0.3), len(ids) + 6)
    hf_cache = to_transformers_cache(out.buf)
    ours = list(runner.decode(out.buf, out.logits, 5, frozenset()))
    theirs, token = [], int(out.logits.argmax())
    with torch.no_grad():
        for i in range(5):
            theirs.append(token)
            pos = torch.tensor([[len(ids) + i]])
            logits = model(torch.tensor([[token]]), position_ids=pos, **cache_kwargs(model, hf_cache)).logits[0, -1]
            token = int(logits.argmax())
    assert ours == theirs


def test_bad_inputs_raise_clear_errors(runner):
    pbuf, kvs, spans, ids = _setup(runner)
    with pytest.raises(BlendError, match="ratio"):
        blend_prefill(runner, ids, pbuf, kvs, spans, BlendConfig(ratio=1.5), len(ids))
    with pytest.raises(BlendError, match="tokens"):
        blend_prefill(runner, ids, pbuf, kvs[::-1], spans, BlendConfig(), len(ids))
    with pytest.raises(BlendError, match="suffix"):
        blend_prefill(runner, ids[: spans[-1][1]], pbuf, kvs, spans, BlendConfig(), len(ids))
