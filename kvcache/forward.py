"""A layer-by-layer forward pass over a Llama-family model's own modules.

transformers' forward computes every row of every layer; blending needs to compute only some rows
(selected chunk tokens and the question) against a KV cache that mixes cached and fresh entries.
So this module drives the model's weights directly: embed, per layer (norm, q/k/v projections, our
RoPE, attention over a preallocated KV buffer, o_proj, MLP), final norm, lm_head. Rows are identified
by absolute position; a row at position p attends to buffer entries 0..p only (exact causal masking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from chronorag.kvcache.rope import RopeSpec, UnsupportedRope, apply_rope, rope_cos_sin, rope_spec_from_config

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class UnsupportedModel(ValueError):
    """The model cannot be driven layer by layer (architecture or RoPE variant); the reason says why."""


@dataclass
class KVBuffer:
    """Post-RoPE keys and values for every layer, preallocated to ``capacity`` positions."""

    k: torch.Tensor  # (layers, kv_heads, capacity, head_dim)
    v: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def nbytes(self) -> int:
        return 2 * self.k[:, :, : self.length].numel() * self.k.element_size()


def _check_architecture(model: Any) -> str | None:
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {sorted(SUPPORTED_MODEL_TYPES)}"
    inner = getattr(model, "model", None)
    for name in ("embed_tokens", "layers", "norm"):
        if inner is None or not hasattr(inner, name):
            return f"model has no model.{name}"
    if not hasattr(model, "lm_head"):
        return "model has no lm_head"
    layer = inner.layers[0]
    for name in ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn"):
        if not hasattr(layer, name):
            return f"decoder layer has no {name}"
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if not hasattr(layer.self_attn, name):
            return f"attention has no {name}"
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True):
        return f"sliding-window attention ({window}) is not supported"
    if getattr(config, "layer_types", None) and any(t != "full_attention" for t in config.layer_types):
        return "mixed attention layer types are not supported"
    return None


class LayerRunner:
    """Runs chosen rows of a supported model through chosen layers; holds no per-request state."""

    def __init__(self, model: Any) -> None:
        reason = _check_architecture(model)
        if reason is None:
            try:
                self.rope: RopeSpec = rope_spec_from_config(model.config)
            except UnsupportedRope as exc:
                reason = str(exc)
        if reason is not None:
            raise UnsupportedModel(reason)
        cfg = model.config
        self.model = model
        self.layers = model.model.layers
        self.n_layers = len(self.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = self.rope.head_dim
        self.scaling = getattr(self.layers[0].self_attn, "scaling", self.head_dim**-0.5)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    # ----------------------------------------------------------- buffers
    def new_buffer(self, capacity: int) -> KVBuffer:
        shape = (self.n_layers, self.n_kv_heads, capacity, self.head_dim)
        zeros = lambda: torch.zeros(shape, dtype=self.dtype, device=self.device)  # noqa: E731
        return KVBuffer(k=zeros(), v=zeros())

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.embed_tokens(ids.to(self.device))

    # ------------------------------------------------------- layer parts
    def project(self, layer: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (heads, A, D), pre-RoPE k and v (kv_heads, A, D) for rows ``hidden`` (A, H)."""
        mod = self.layers[layer]
        attn = mod.self_attn
        x = mod.input_layernorm(hidden)
        rows = x.shape[0]
        q = attn.q_proj(x).view(rows, -1, self.head_dim)
        k = attn.k_proj(x).view(rows, -1, self.head_dim)
        v = attn.v_proj(x).view(rows, -1, self.head_dim)
        if hasattr(attn, "q_norm"):  # Qwen3 normalises each head before RoPE
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)

    def write(self, buf: KVBuffer, layer: int, pos: torch.Tensor, k_pre: torch.Tensor, v: torch.Tensor) -> None:
        """Rotate keys to ``pos`` and store them with their values at those buffer slots."""
        cos, sin = rope_cos_sin(self.rope, pos, k_pre.dtype, self.device)
        buf.k[layer][:, pos] = apply_rope(k_pre, cos, sin).to(buf.k.dtype)
        buf.v[layer][:, pos] = v.to(buf.v.dtype)

    def finish(
        self, buf: KVBuffer, layer: int, hidden: torch.Tensor, q: torch.Tensor, pos: torch.Tensor, kv_len: int
    ) -> torch.Tensor:
        """Attention of rows at ``pos`` over buffer slots [0, kv_len) (causal), then the MLP block."""
        mod = self.layers[layer]
        cos, sin = rope_cos_sin(self.rope, pos, q.dtype, self.device)
        q = apply_rope(q, cos, sin)
        keys, values = buf.k[layer][:, :kv_len], buf.v[layer][:, :kv_len]
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:  # explicit GQA expansion: sdpa's enable_gqa takes a slow path on CPU
            keys = keys.repeat_interleave(groups, dim=0)
            values = values.repeat_interleave(groups, dim=0)
        rows = pos.numel()
        mask, causal, pad = None, False, 0
        tail = rows > 1 and bool((pos == torch.arange(kv_len - rows, kv_len, device=pos.device)).all())
        if tail and 2 * rows >= kv_len:
            # the last rows in order (full prefill, or prefix caching's long suffix): pad the queries
            # to a square and use the fused causal kernel, faster on CPU than an explicit mask
            causal, pad = True, kv_len - rows
            if pad:
                q = torch.cat([q.new_zeros(q.shape[0], pad, q.shape[2]), q], dim=1)
        elif not (rows == 1 and int(pos[0]) == kv_len - 1):  # a lone last row sees everything
            mask = torch.arange(kv_len, device=self.device)[None, :] <= pos.to(self.device)[:, None]
        out = F.scaled_dot_product_attention(
            q[None], keys[None], values[None], attn_mask=mask, is_causal=causal, scale=self.scaling
        )[0, :, pad:]
        out = out.transpose(0, 1).reshape(hidden.shape[0], -1)
        hidden = hidden + mod.self_attn.o_proj(out)
        return hidden + mod.mlp(mod.post_attention_layernorm(hidden))

    def step(
        self, buf: KVBuffer, layer: int, hidden: torch.Tensor, pos: torch.Tensor, kv_len: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One full layer for rows at ``pos``; returns new hidden and the rows' pre-RoPE k and v."""
        q, k_pre, v = self.project(layer, hidden)
        self.write(buf, layer, pos, k_pre, v)
        return self.finish(buf, layer, hidden, q, pos, kv_len), k_pre, v

    def logits(self, hidden_rows: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.model.norm(hidden_rows)).float()

    # ----------------------------------------------------- whole passes
    def run(
        self,
        buf: KVBuffer,
        ids: torch.Tensor,
        pos: torch.Tensor,
        kv_len: int,
        capture: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """All layers for token ``ids`` at positions ``pos``; returns final-norm logits of the last row.

        Slots of ``buf`` below ``kv_len`` not in ``pos`` must already hold valid KV. With ``capture``
        given, each layer's pre-RoPE (k, v) of these rows is appended (what the chunk store keeps).
        """
        hidden = self.embed(ids)
        for layer in range(self.n_layers):
            hidden, k_pre, v = self.step(buf, layer, hidden, pos, kv_len)
            if capture is not None:
                capture.append((k_pre, v))
        buf.length = max(buf.length, kv_len)
        return self.logits(hidden[-1:])[0]

    def decode(
        self,
        buf: KVBuffer,
        first_logits: torch.Tensor,
        max_new_tokens: int,
        stop_ids: frozenset[int],
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Iterator[int]:
        """Yield generated token ids, feeding each back at the next position until a stop id or the cap."""
        logits = first_logits
        for i in range(max_new_tokens):
            token = pick_token(logits, temperature, generator)
            yield token
            if token in stop_ids or i == max_new_tokens - 1:
                return
            if buf.length >= buf.capacity:
                raise RuntimeError(f"KV buffer full at {buf.length} positions")
            pos = torch.tensor([buf.length], device=self.device)
            logits = self.run(buf, torch.tensor([token]), pos, buf.length + 1)


def pick_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def to_transformers_cache(buf: KVBuffer) -> Any:
    """The buffer's filled part as a transformers ``DynamicCache`` (to decode with ``model.generate``)."""
    from transformers import DynamicCache

    n = buf.length
    return DynamicCache(ddp_cache_data=[(buf.k[i, None, :, :n], buf.v[i, None, :, :n]) for i in range(buf.k.shape[0])])


def cache_kwarg(model: Any) -> str:
    """The keyword ``model``'s forward takes the KV cache under: transformers 5.2x renamed
    ``past_key_values`` to ``cache`` (the old name goes in 5.40), older releases know only the first.
    Reads the signature: look it up once per model, not per decoded token."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``cache`` as the keyword argument ``model``'s forward takes it (see :func:`cache_kwarg`)."""
    return {cache_kwarg(model): cache}


def output_cache(out: Any) -> Any:
    """The KV cache a transformers forward returned, under either release's field name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
