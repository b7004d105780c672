"""Rotary position embedding, applied by us so cached pre-RoPE keys can be moved to new positions.

A chunk's keys are stored before rotation; reusing them at another offset is then one rotation, and
no inverse rotation (with its rounding) is ever needed. Only the plain RoPE of Llama/Qwen/Mistral is
supported: scaled or partial variants change what "position p" means and are refused with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


class UnsupportedRope(ValueError):
    """The model's position encoding is not one we can re-position; the reason says why."""


@dataclass(frozen=True)
class RopeSpec:
    theta: float
    head_dim: int

    def inv_freq(self, device: torch.device | str = "cpu") -> torch.Tensor:
        # Same arithmetic as transformers' default RoPE so rotations match bit for bit.
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
        return 1.0 / (self.theta ** (exponent / self.head_dim))


def _rope_params(config: Any) -> dict:
    params = getattr(config, "rope_parameters", None)
    if params is None:  # transformers 4.x style config
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_type", params.get("type", "default"))
        if getattr(config, "rope_theta", None) is not None:
            params.setdefault("rope_theta", config.rope_theta)
    return dict(params)


def rope_spec_from_config(config: Any) -> RopeSpec:
    """Read theta and head size from a HF config, or raise UnsupportedRope naming the obstacle."""
    params = _rope_params(config)
    if params and not isinstance(params.get("rope_type", params.get("type")), (str, type(None))):
        raise UnsupportedRope(f"per-layer rope parameters are not supported: {params!r}")
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    if rope_type != "default":
        raise UnsupportedRope(f"rope scaling type {rope_type!r} is not supported (only plain RoPE)")
    partial = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    if partial is not None and float(partial) != 1.0:
        raise UnsupportedRope(f"partial rotary embedding (factor {partial}) is not supported")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise UnsupportedRope("config has no rope_theta")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim % 2:
        raise UnsupportedRope(f"odd head_dim {head_dim}")
    return RopeSpec(theta=float(theta), head_dim=int(head_dim))


def rope_cos_sin(
    spec: RopeSpec, positions: torch.Tensor, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (len(positions), head_dim), computed in fp32 then cast."""
    freqs = positions.to(device=device, dtype=torch.float)[:, None] * spec.inv_freq(device)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape (..., T, head_dim) with tables of shape (T, head_dim)."""
    return x * cos + _rotate_half(x) * sin


def rope_at(spec: RopeSpec, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Convenience: rotate pre-RoPE ``x`` (..., T, head_dim) to the given absolute positions."""
    cos, sin = rope_cos_sin(spec, positions, x.dtype, x.device)
    return apply_rope(x, cos, sin)
