"""CacheBlend-style prefill: fuse per-chunk KV caches and recompute only the tokens that need it.

Each chunk's KV was computed behind the shared prefix only, so its keys sit at the wrong positions
and its tokens never attended to earlier chunks. Blending (1) rotates the cached pre-RoPE keys to
their new positions, (2) runs the first ``check_layer`` layers in full for every chunk token (cheap,
and exact), (3) at the check layer compares each chunk token's fresh K/V with its cached K/V and keeps
the ``ratio`` share that deviate most, (4) carries only those tokens and the suffix (question plus
assistant header, always computed) through the remaining layers, writing their fresh K/V over the
cached entries. ``ratio`` 1 is a full prefill, ``ratio`` 0 is plain concatenation of cached KV (the
check-layer pass is skipped). Full prefill and prefix caching share the same runner and buffers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from chronorag.kvcache.chunk_store import ChunkKV
from chronorag.kvcache.forward import KVBuffer, LayerRunner
from chronorag.kvcache.rope import apply_rope, rope_cos_sin


class BlendError(ValueError):
    """Blend inputs do not fit together (lengths, shapes, settings)."""


@dataclass(frozen=True)
class BlendConfig:
    ratio: float = 0.15
    check_layer: int = 1  # layers below it run in full; selection happens at it
    # which deviation ranks tokens: "kv" (keys + values), "k" or "v"
    score: str = "kv"
    # always recompute this many leading tokens of every chunk after the first (within the budget)
    lead_tokens: int = 0

    def validate(self, n_layers: int) -> "BlendConfig":
        if not 0.0 <= self.ratio <= 1.0:
            raise BlendError(f"recompute ratio must be in [0, 1], got {self.ratio}")
        if not 0 <= self.check_layer < n_layers:
            raise BlendError(f"check_layer must be in [0, {n_layers}), got {self.check_layer}")
        if self.score not in ("kv", "k", "v") or self.lead_tokens < 0:
            raise BlendError(f"score must be kv, k or v and lead_tokens >= 0, got {self.score!r}, {self.lead_tokens}")
        return self


@dataclass
class PrefillOutput:
    buf: KVBuffer
    logits: torch.Tensor  # next-token logits after the last prompt token (fp32)
    n_reused: int = 0  # prompt tokens whose KV came from a cache (in the deep layers)
    n_recomputed: int = 0  # chunk tokens recomputed through every layer
    selected: torch.Tensor | None = None  # absolute positions of recomputed chunk tokens
    place_s: float = 0.0  # rotating/copying cached KV into the buffer
    compute_s: float = 0.0  # running layers
    details: dict = field(default_factory=dict)


@torch.no_grad()
def full_prefill(runner: LayerRunner, ids: torch.Tensor, capacity: int) -> PrefillOutput:
    buf = runner.new_buffer(max(capacity, len(ids)))
    t0 = time.perf_counter()
    logits = runner.run(buf, ids, torch.arange(len(ids)), len(ids))
    return PrefillOutput(buf, logits, compute_s=time.perf_counter() - t0)


@torch.no_grad()
def extend_prefill(runner: LayerRunner, ids: torch.Tensor, reused: KVBuffer, n_reused: int, capacity: int) -> PrefillOutput:
    """Prefix caching: keep the first ``n_reused`` positions' KV as they are, compute the rest."""
    n = len(ids)
    n_reused = min(n_reused, n - 1)  # the last token must run to produce logits
    buf = runner.new_buffer(max(capacity, n))
    t0 = time.perf_counter()
    buf.k[:, :, :n_reused] = reused.k[:, :, :n_reused]
    buf.v[:, :, :n_reused] = reused.v[:, :, :n_reused]
    t1 = time.perf_counter()
    logits = runner.run(buf, ids[n_reused:], torch.arange(n_reused, n), n)
    return PrefillOutput(buf, logits, n_reused=n_reused, place_s=t1 - t0, compute_s=time.perf_counter() - t1)


@torch.no_grad()
def compute_chunk_kv(runner: LayerRunner, prefix: KVBuffer, chunk_ids: Sequence[int]) -> ChunkKV:
    """A chunk's pre-RoPE KV computed right behind the prefix; the prefix's own entries are dropped."""
    if not len(chunk_ids):
        raise BlendError("cannot cache an empty chunk")
    t0 = time.perf_counter()
    p, c = prefix.length, len(chunk_ids)
    buf = runner.new_buffer(p + c)
    buf.k[:, :, :p], buf.v[:, :, :p] = prefix.k[:, :, :p], prefix.v[:, :, :p]
    capture: list[tuple[torch.Tensor, torch.Tensor]] = []
    runner.run(buf, torch.as_tensor(list(chunk_ids)), torch.arange(p, p + c), p + c, capture=capture)
    k = torch.stack([kv[0] for kv in capture])
    v = torch.stack([kv[1] for kv in capture])
    return ChunkKV(k=k, v=v, compute_s=time.perf_counter() - t0)


def _place_chunks(runner: LayerRunner, buf: KVBuffer, chunks: Sequence[ChunkKV], spans: Sequence[tuple[int, int]]) -> None:
    for kv, (start, end) in zip(chunks, spans):
        if kv.n_tokens != end - start:
            raise BlendError(f"cached chunk has {kv.n_tokens} tokens, prompt span has {end - start}")
        k = kv.k.to(device=runner.device, dtype=runner.dtype)
        cos, sin = rope_cos_sin(runner.rope, torch.arange(start, end), k.dtype, runner.device)
        buf.k[:, :, start:end] = apply_rope(k, cos, sin)
        buf.v[:, :, start:end] = kv.v.to(device=runner.device, dtype=runner.dtype)


def select_count(ratio: float, n_chunk_tokens: int) -> int:
    if ratio <= 0 or n_chunk_tokens == 0:
        return 0
    return min(n_chunk_tokens, max(1, math.ceil(ratio * n_chunk_tokens - 1e-9)))


def select_rows(deviation: torch.Tensor, spans: Sequence[tuple[int, int]], n_sel: int, lead_tokens: int) -> torch.Tensor:
    """Sorted chunk-relative rows to recompute: leading tokens of later chunks, then top deviation."""
    score = deviation.clone()
    if lead_tokens > 0:
        for start, end in spans[1:]:
            score[start : min(end, start + lead_tokens)] = float("inf")
    return torch.topk(score, n_sel).indices.sort().values


@torch.no_grad()
def blend_prefill(
    runner: LayerRunner,
    ids: torch.Tensor,
    prefix: KVBuffer,
    chunks: Sequence[ChunkKV],
    spans: Sequence[tuple[int, int]],
    config: BlendConfig,
    capacity: int,
) -> PrefillOutput:
    """Prefill ``ids`` = [prefix][chunks...][suffix] from cached chunk KV; see the module docstring."""
    config.validate(runner.n_layers)
    n, p = len(ids), prefix.length
    c_end = spans[-1][1] if spans else p
    if spans and (spans[0][0] != p or any(a[1] != b[0] for a, b in zip(spans, spans[1:]))):
        raise BlendError("chunk spans must tile the prompt right after the prefix")
    if c_end >= n:
        raise BlendError("the prompt needs a non-empty suffix after the chunks")
    buf = runner.new_buffer(max(capacity, n))
    t0 = time.perf_counter()
    buf.k[:, :, :p], buf.v[:, :, :p] = prefix.k[:, :, :p], prefix.v[:, :, :p]
    _place_chunks(runner, buf, chunks, spans)
    t1 = time.perf_counter()

    n_chunk = c_end - p
    n_sel = select_count(config.ratio, n_chunk)
    selected = torch.empty(0, dtype=torch.long)
    if n_sel == 0:
        pos = torch.arange(c_end, n)
        hidden = runner.embed(ids[c_end:])
        first_layer = 0
    else:
        pos = torch.arange(p, n)
        hidden = runner.embed(ids[p:])
        for layer in range(config.check_layer):
            hidden, _, _ = runner.step(buf, layer, hidden, pos, n)
        layer = config.check_layer
        q, k_pre, v = runner.project(layer, hidden)
        cached_k = torch.cat([kv.k[layer] for kv in chunks], dim=1).to(k_pre)
        cached_v = torch.cat([kv.v[layer] for kv in chunks], dim=1).to(v)
        # Rotation preserves distances, so pre-RoPE deviation equals deviation at the new positions.
        dk = ((k_pre[:, :n_chunk] - cached_k) ** 2).sum(dim=(0, 2))
        dv = ((v[:, :n_chunk] - cached_v) ** 2).sum(dim=(0, 2))
        deviation = {"kv": dk + dv, "k": dk, "v": dv}[config.score].float().cpu()
        top = select_rows(deviation, [(a - p, b - p) for a, b in spans], n_sel, config.lead_tokens)
        runner.write(buf, layer, pos, k_pre, v)  # fresh K/V for every row at the check layer
        keep = torch.cat([top, torch.arange(n_chunk, n - p)])
        hidden = runner.finish(buf, layer, hidden[keep.to(hidden.device)], q[:, keep.to(q.device)], pos[keep], n)
        pos = pos[keep]
        selected = top + p
        first_layer = layer + 1
    for layer in range(first_layer, runner.n_layers):
        hidden, _, _ = runner.step(buf, layer, hidden, pos, n)
    buf.length = n
    logits = runner.logits(hidden[-1:])[0]
    t2 = time.perf_counter()
    return PrefillOutput(
        buf,
        logits,
        n_reused=n_chunk - n_sel,
        n_recomputed=n_sel,
        selected=selected,
        place_s=t1 - t0,
        compute_s=t2 - t1,
        details={"check_layer": config.check_layer, "ratio": config.ratio, "chunk_tokens": n_chunk},
    )
