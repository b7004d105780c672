"""transformers backend: prefill by blending per-chunk KV caches, then decode from the fused cache.

Models our layer-by-layer runner cannot drive (other architectures, scaled or partial RoPE) still
answer, through transformers' own forward with a full prefill; the result names the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, replace
from typing import Any, Iterable, Iterator

import torch

from chronorag.kvcache.blend import BlendConfig, BlendError, PrefillOutput, blend_prefill, compute_chunk_kv, extend_prefill, full_prefill
from chronorag.kvcache.chunk_store import ChunkKV, ChunkStore, chunk_key
from chronorag.kvcache.forward import KVBuffer, LayerRunner, UnsupportedModel, cache_kwarg, output_cache, pick_token
from chronorag.kvcache.generator import (
    DEFAULT_SYSTEM_PROMPT,
    STORE_DTYPES,
    CacheReport,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Generator,
    IncrementalDetokenizer,
    RequestError,
    Timings,
    TokenEvent,
    check_mode,
    check_ratio,
)
from chronorag.kvcache.model_loader import LoadedModel, load_model, tokenizer_identity
from chronorag.kvcache.prefix_cache import PrefixCache
from chronorag.kvcache.prompt import (
    ChunkRef,
    PromptError,
    PromptLayout,
    PromptParts,
    build_prompt,
    encode_chunk,
    encode_prefix,
    fit_to_context,
)

log = logging.getLogger(__name__)


def _stop_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None), getattr(model.config, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source)
    return frozenset(ids)


class HFGenerator(Generator):
    backend = "hf"

    def __init__(
        self,
        model: str | None = None,
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str | None = None,
        mode: str = "blend",
        ratio: float = 0.15,
        check_layer: int = 1,
        score: str = "kv",
        lead_tokens: int = 0,
        memory_bytes: int = 1 << 30,
        disk_dir: str | None = None,
        disk_bytes: int = 8 << 30,
        store_dtype: str = "auto",
        prefix_cache_bytes: int = 256 << 20,
        layout: PromptLayout | None = None,
        loaded: LoadedModel | None = None,
    ) -> None:
        mode, ratio = check_mode(mode), check_ratio(ratio)
        self._load_args = dict(model=model, gguf_file=gguf_file, device=device, dtype=dtype)
        self.mode, self.ratio = mode, ratio
        self.blend_config = BlendConfig(ratio, check_layer, score, lead_tokens)
        self.layout = layout or PromptLayout()
        self.store = ChunkStore(memory_bytes=memory_bytes, disk_dir=disk_dir, disk_bytes=disk_bytes)
        if store_dtype not in STORE_DTYPES:
            raise RequestError(f"store_dtype must be one of {', '.join(STORE_DTYPES)}, got {store_dtype!r}")
        self._store_dtype_name = store_dtype
        self.store_dtype: torch.dtype | None = None  # resolved against the model's dtype on attach
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self._prefixes: OrderedDict[tuple[int, ...], KVBuffer] = OrderedDict()
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = loaded
        self._runner: LayerRunner | None = None
        self._unsupported: str | None = None
        if loaded is not None:
            self._attach(loaded)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, model_id: str = "custom", **opts: Any) -> "HFGenerator":
        """Wrap an already-built model (tests, callers sharing one model)."""
        device = str(next(model.parameters()).device)
        loaded = LoadedModel(model.eval(), tokenizer, model_id, tokenizer_identity(tokenizer), device)
        return cls(loaded=loaded, **opts)

    # ------------------------------------------------------------ set-up
    def _attach(self, loaded: LoadedModel) -> None:
        self._loaded = loaded
        model_dtype = next(loaded.model.parameters()).dtype
        name = self._store_dtype_name
        if name == "auto":  # bfloat16: half the bytes, same greedy answers on 22/22 real SmolLM2 contexts
            self.store_dtype = torch.bfloat16 if model_dtype == torch.float32 else model_dtype
        else:
            self.store_dtype = getattr(torch, name)
        self._stop = _stop_ids(loaded.model, loaded.tokenizer)
        try:
            self._runner = LayerRunner(loaded.model)
            self.blend_config.validate(self._runner.n_layers)
        except UnsupportedModel as exc:
            self._runner, self._unsupported = None, str(exc)
            log.warning("KV blending disabled for %s, using full prefill: %s", loaded.model_id, exc)
        except BlendError as exc:
            raise GenerationError(str(exc)) from None

    def load(self) -> None:
        with self._lock:
            self._ensure_loaded()

    def _ensure_loaded(self) -> float:
        if self._loaded is not None:
            return 0.0
        t0 = time.perf_counter()
        self._attach(load_model(**self._load_args))
        return time.perf_counter() - t0

    @property
    def tokenizer(self) -> Any:
        self._ensure_loaded()
        return self._loaded.tokenizer

    @property
    def blending_supported(self) -> tuple[bool, str | None]:
        self._ensure_loaded()
        return self._runner is not None, self._unsupported

    # ------------------------------------------------------------ caches
    def _prefix_buffer(self, prefix_ids: list[int]) -> KVBuffer:
        key = tuple(prefix_ids)
        buf = self._prefixes.get(key)
        if buf is None:
            buf = full_prefill(self._runner, torch.tensor(prefix_ids), len(prefix_ids)).buf
            self._prefixes[key] = buf
            while len(self._prefixes) > 16:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(key)
        return buf

    def _chunk_kv(self, chunk_id: Any, prefix_ids: list[int], ids: list[int], report: CacheReport, timings: Timings,
                  strict: bool = False) -> ChunkKV:
        """The chunk's KV from the store (checked against this model's shape), else computed and
        stored; ``strict``: a failed disk write raises OSError instead of a warning."""
        key = chunk_key(self._loaded.model_id, self._loaded.tokenizer_id, prefix_ids, ids)
        r = self._runner
        kv = self.store.get(key, (r.n_layers, r.n_kv_heads, len(ids), r.head_dim), self.store_dtype)
        if kv is not None:
            report.chunk_hits += 1
            return kv
        report.chunk_misses += 1
        t0 = time.perf_counter()
        kv = compute_chunk_kv(self._runner, self._prefix_buffer(prefix_ids), ids)
        if kv.k.dtype != self.store_dtype:
            kv = ChunkKV(kv.k.to(self.store_dtype), kv.v.to(self.store_dtype), kv.compute_s)
        self.store.put(key, ChunkKV(kv.k.cpu(), kv.v.cpu(), kv.compute_s), chunk_id, strict=strict)
        timings.chunk_compute_s += time.perf_counter() - t0
        return kv

    def warm(self, chunks: Iterable[ChunkRef], system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> int:
        """Compute and store KV for chunks not cached yet (behind this system prompt's prefix).

        Cached entries are read back and checked (damaged ones are recomputed). Storing is the point
        of warming, so a disk tier that cannot be written (read-only, full) is a GenerationError
        naming the directory; chunks stored before it stay stored."""
        with self._lock:
            self._ensure_loaded()
            if self._runner is None:
                return 0
            tok = self._loaded.tokenizer
            prefix_ids = encode_prefix(tok, system_prompt, self.layout)
            report = CacheReport()
            for chunk_id, text in chunks:
                ids = encode_chunk(tok, text, self.layout)
                if not ids:
                    continue
                try:
                    self._chunk_kv(chunk_id, prefix_ids, ids, report, Timings(), strict=True)
                except OSError as exc:
                    where = self.store.disk.dir if self.store.disk is not None else "the KV cache"
                    raise GenerationError(f"cannot store chunk KV in {where}: {exc.strerror or exc}") from None
            return report.chunk_misses

    def drop(self, chunk_ids: Iterable[Any]) -> int:
        removed = self.store.drop(chunk_ids)
        self.prefix_cache.clear()  # a dropped chunk may sit inside cached prompts
        return removed

    def cache_stats(self) -> dict[str, Any]:
        stats = asdict(self.store.stats())
        stats["hit_rate"] = self.store.stats().hit_rate
        stats["prefix_cache_bytes"] = self.prefix_cache.used_bytes
        stats["prefix_cache_entries"] = len(self.prefix_cache)
        return stats

    # ----------------------------------------------------------- prefill
    def _prefill(self, parts: PromptParts, chunks: list[ChunkRef], mode: str, ratio: float, capacity: int,
                 report: CacheReport, timings: Timings) -> PrefillOutput:
        ids = parts.all_ids
        tensor = torch.tensor(ids)
        report.chunk_tokens = sum(map(len, parts.chunk_ids))
        if mode == "full":
            return full_prefill(self._runner, tensor, capacity)
        if mode == "prefix":
            buf, n = self.prefix_cache.lookup(ids)
            if n < len(parts.prefix_ids):
                buf, n = self._prefix_buffer(parts.prefix_ids), len(parts.prefix_ids)
            out = extend_prefill(self._runner, tensor, buf, n, capacity)
            self.prefix_cache.insert(ids, out.buf)
            return out
        t0 = time.perf_counter()
        prefix = self._prefix_buffer(parts.prefix_ids)
        kvs, spans = [], []
        for (chunk_id, _), cids, span in zip(chunks, parts.chunk_ids, parts.chunk_spans):
            if cids:
                kvs.append(self._chunk_kv(chunk_id, parts.prefix_ids, cids, report, timings))
                spans.append(span)
        fetch_s = time.perf_counter() - t0 - timings.chunk_compute_s
        out = blend_prefill(self._runner, tensor, prefix, kvs, spans, replace(self.blend_config, ratio=ratio), capacity)
        out.place_s += fetch_s
        return out

    # ------------------------------------------------------------ stream
    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent | GenerationResult]:
        t_arrive = time.perf_counter()
        request.validate()
        with self._lock:
            timings = Timings(queue_s=time.perf_counter() - t_arrive)
            timings.load_model_s = self._ensure_loaded()
            t_start = time.perf_counter()
            yield from self._serve(request, timings, t_arrive, t_start)

    def _serve(self, req: GenerationRequest, timings: Timings, t_arrive: float, t_start: float):
        tok = self._loaded.tokenizer
        mode = req.mode or self.mode
        ratio = self.ratio if req.ratio is None else req.ratio
        if req.ratio is not None and mode != "blend":
            log.warning("ratio %g is ignored in %s mode (only blend recomputes a share of chunk tokens)", req.ratio, mode)
        if mode == "naive":
            mode, ratio = "blend", 0.0
        chunks = list(req.chunks)
        parts = build_prompt(tok, req.system_prompt, chunks, req.question, self.layout)
        timings.tokenize_s = time.perf_counter() - t_start
        parts, dropped = self._fit(parts, req.max_new_tokens)
        chunks = chunks[:len(parts.chunk_ids)]
        n = parts.n_tokens
        report = CacheReport(mode=mode if mode != "blend" else f"blend(r={ratio:g})", prompt_tokens=n,
                             dropped_chunks=dropped)
        gen = torch.Generator().manual_seed(req.seed) if req.seed is not None else None
        with torch.no_grad():
            if self._runner is None:
                report.mode, report.fallback_reason = "full-native", self._unsupported
                tokens = self._native_tokens(parts.all_ids, req, gen, timings, t_start)
            else:
                out = self._prefill(parts, chunks, mode, ratio, n + req.max_new_tokens, report, timings)
                timings.kv_load_s, timings.recompute_s = out.place_s, out.compute_s
                report.reused_tokens, report.recomputed_tokens = out.n_reused, out.n_recomputed
                timings.prefill_s = time.perf_counter() - t_start
                tokens = self._runner.decode(out.buf, out.logits, req.max_new_tokens, self._stop, req.temperature, gen)
            detok = IncrementalDetokenizer(tok, skip_ids=self._stop)
            generated: list[int] = []
            t_first = None
            for token in tokens:
                generated.append(token)
                if t_first is None:
                    t_first = time.perf_counter()
                    timings.ttft_s = t_first - t_arrive
                yield TokenEvent(detok.push(token), token)
        t_end = time.perf_counter()
        timings.decode_s = t_end - (t_first or t_end)
        if len(generated) > 1 and timings.decode_s > 0:
            timings.decode_tokens_per_s = (len(generated) - 1) / timings.decode_s
        timings.total_s = t_end - t_arrive
        report.store = self.cache_stats()
        finish = "stop" if generated and generated[-1] in self._stop else "length"
        yield GenerationResult(detok.emitted, generated, finish, timings, report)

    def _fit(self, parts: PromptParts, max_new_tokens: int) -> tuple[PromptParts, int]:
        """Leave out the lowest-ranked chunks that do not fit the model's positions (one warning)."""
        limit = getattr(self._loaded.model.config, "max_position_embeddings", None)
        if not limit:
            return parts, 0
        try:
            fitted, dropped = fit_to_context(parts, limit - max_new_tokens)
        except PromptError as exc:
            raise RequestError(f"{exc} in the model's {limit} positions with max_new_tokens={max_new_tokens}") from None
        if dropped:
            log.warning("left out the %d lowest-ranked of %d chunks: the prompt must fit the model's %d positions "
                        "with %d new tokens", dropped, len(parts.chunk_ids), limit, max_new_tokens)
        return fitted, dropped

    def _native_tokens(self, ids: list[int], req: GenerationRequest, gen, timings: Timings, t_start: float) -> Iterator[int]:
        """Full prefill and decode through transformers' own forward (unsupported architectures)."""
        model = self._loaded.model
        device = next(model.parameters()).device
        cache_key = cache_kwarg(model)  # the keyword, read off the signature once, not per token
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
        timings.prefill_s = timings.recompute_s = time.perf_counter() - t_start
        for i in range(req.max_new_tokens):
            token = pick_token(out.logits[0, -1].float(), req.temperature, gen)
            yield token
            if token in self._stop:
                return
            if i < req.max_new_tokens - 1:
                out = model(input_ids=torch.tensor([[token]], device=device), use_cache=True,
                            **{cache_key: output_cache(out)})

    # ------------------------------------------------------- evaluation
    def evaluate(self, request: GenerationRequest) -> tuple[torch.Tensor, list[int], CacheReport, Timings]:
        """First-token logits and the greedy/sampled answer ids under the request's mode (benchmarks).

        Same prefill and decode as ``stream``, but exposes the logits that quality metrics need.
        """
        request.validate()
        with self._lock, torch.no_grad():
            timings = Timings()
            self._ensure_loaded()
            if self._runner is None:
                raise GenerationError(f"blending unsupported: {self._unsupported}")
            mode = request.mode or self.mode
            ratio = self.ratio if request.ratio is None else request.ratio
            if mode == "naive":
                mode, ratio = "blend", 0.0
            chunks = list(request.chunks)
            parts = build_prompt(self._loaded.tokenizer, request.system_prompt, chunks, request.question, self.layout)
            report = CacheReport(mode=mode, prompt_tokens=parts.n_tokens)
            t0 = time.perf_counter()
            out = self._prefill(parts, chunks, mode, ratio, parts.n_tokens + request.max_new_tokens, report, timings)
            timings.prefill_s = time.perf_counter() - t0
            report.reused_tokens, report.recomputed_tokens = out.n_reused, out.n_recomputed
            gen = torch.Generator().manual_seed(request.seed) if request.seed is not None else None
            ids = list(self._runner.decode(out.buf, out.logits, request.max_new_tokens, self._stop, request.temperature, gen))
            timings.decode_s = time.perf_counter() - t0 - timings.prefill_s
            return out.logits, ids, report, timings

    def prefill_logits(self, request: GenerationRequest) -> tuple[torch.Tensor, CacheReport, Timings]:
        """Next-token logits after the prompt under the request's mode (one decode step, discarded)."""
        logits, _, report, timings = self.evaluate(replace(request, max_new_tokens=1))
        return logits, report, timings
