"""RoPE re-positioning and the refusal of RoPE variants we cannot move."""

from __future__ import annotations

import pytest
import torch

from chronorag.kvcache.forward import LayerRunner, UnsupportedModel, output_cache
from chronorag.kvcache.rope import UnsupportedRope, rope_at, rope_spec_from_config
from chronorag.kvcache.testing import tiny_config, tiny_model


def test_spec_reads_theta_and_head_dim():
    spec = rope_spec_from_config(tiny_config(rope_theta=12345.0))
    assert spec.theta == 12345.0 and spec.head_dim == 16


def test_rope_matches_transformers_rotation():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = tiny_config()
    x = torch.randn(1, 2, 7, 16)
    pos = torch.tensor([[3, 9, 10, 40, 41, 100, 511]])
    cos, sin = LlamaRotaryEmbedding(cfg)(x, pos)
    ref, _ = apply_rotary_pos_emb(x, x, cos, sin)
    ours = rope_at(rope_spec_from_config(cfg), x, pos[0])
    assert torch.allclose(ours, ref, atol=1e-6)


def test_repositioned_cached_keys_equal_keys_computed_there():
    """A chunk's pre-RoPE keys rotated to offset o equal the model's keys for those tokens at o."""
    model = tiny_model(layers=1, seed=3)
    runner = LayerRunner(model)
    ids = torch.randint(4, 300, (10,))
    hidden = runner.embed(ids)
    _, k_pre, _ = runner.project(0, hidden)  # layer 0 keys depend only on the tokens
    for offset in (0, 17, 250):
        buf = runner.new_buffer(offset + 10)
        runner.step(buf, 0, hidden, torch.arange(offset, offset + 10), offset + 10)
        moved = rope_at(runner.rope, k_pre, torch.arange(offset, offset + 10))
        assert torch.allclose(buf.k[0][:, offset:], moved, atol=1e-6)
    # and the transformers model agrees about where those keys sit
    with torch.no_grad():
        out = model(ids[None], position_ids=torch.arange(250, 260)[None], use_cache=True)
    assert torch.allclose(output_cache(out).layers[0].keys[0], moved, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}), "linear"),
        (dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}), "partial"),
    ],
)
def test_unsupported_rope_is_refused_with_reason(overrides, reason):
    cfg = tiny_config(**overrides)
    with pytest.raises(UnsupportedRope, match=reason):
        rope_spec_from_config(cfg)
    with pytest.raises(UnsupportedModel, match=reason):
        LayerRunner(tiny_model(**overrides))


def test_sliding_window_model_is_refused():
    model = tiny_model("qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=0)
    with pytest.raises(UnsupportedModel, match="sliding"):
        LayerRunner(model)


def test_qwen2_with_biases_runs_exactly():
    model = tiny_model("qwen2", seed=2)
    runner = LayerRunner(model)
    ids = torch.randint(4, 300, (30,))
    buf = runner.new_buffer(30)
    ours = runner.run(buf, ids, torch.arange(30), 30)
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    assert torch.allclose(ours, ref, atol=1e-4)


def test_cache_argument_follows_the_installed_transformers():
    from types import SimpleNamespace

    from chronorag.kvcache.forward import cache_kwargs

    class Old:
        def forward(self, input_ids, past_key_values=None, use_cache=None): ...

    class New:
        def forward(self, input_ids, cache=None, use_cache=None, **kwargs): ...

    assert cache_kwargs(Old(), "kv") == {"past_key_values": "kv"}
    assert cache_kwargs(New(), "kv") == {"cache": "kv"}
    assert output_cache(SimpleNamespace(past_key_values="old")) == "old"
    assert output_cache(SimpleNamespace(cache="new", past_key_values="alias")) == "new"
