"""vLLM backend (optional ``gpu`` extra): automatic prefix caching, and LMCache blending where it works.

Status: experimental and NOT exercised on this project's CPU-only CI. Everything up to the engine
boundary (token layout, sampling and LMCache settings, the import guard) is unit-tested; the engine
calls themselves are not. Modes:

* ``prefix`` (default): vLLM with ``enable_prefix_caching=True``; the baseline engine.
* ``blend``: vLLM + LMCache's ``LMCacheConnectorV1`` with blending enabled (CacheBlend). Segments are
  separated by ``blend_separator`` tokens, as LMCache's blend_kv_v1 example expects. The ``gpu`` extra
  pins vllm 0.32.0 (the newest built for torch 2.13.0, which the CPU stack pins) and lmcache 0.5.6;
  whether that pair blends has not been verified on a GPU. If lmcache cannot be imported the backend
  falls back to ``prefix`` and says why.
* ``full``: prefix caching off, a plain full prefill per request.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable, Iterator

from chronorag.kvcache.generator import (
    DEFAULT_SYSTEM_PROMPT,
    BackendUnavailable,
    CacheReport,
    GenerationRequest,
    GenerationResult,
    Generator,
    Timings,
    TokenEvent,
    check_mode,
    check_ratio,
)
from chronorag.kvcache.prompt import ChunkRef, PromptLayout, build_prompt, encode_chunk, encode_prefix

log = logging.getLogger(__name__)
VLLM_MODES = ("prefix", "blend", "full")
INSTALL_HINT = "install the 'gpu' extra on a CUDA machine: pip install 'chronorag[gpu]' (vllm; lmcache for blending)"


def import_vllm() -> Any:
    """The vllm module, or BackendUnavailable with an install hint (never a bare ImportError)."""
    try:
        import vllm  # noqa: PLC0415
    except Exception as exc:  # ImportError, or CUDA/driver errors raised at import time
        raise BackendUnavailable(f"vLLM backend unavailable ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    return vllm


def lmcache_env(ratio: float, check_layers: int = 1, separator: str = " # # ", chunk_size: int = 256,
                cpu_gb: float = 5.0) -> dict[str, str]:
    """Environment LMCache reads at engine start to enable CacheBlend."""
    ratio = check_ratio(ratio)
    return {
        "LMCACHE_CHUNK_SIZE": str(int(chunk_size)),
        "LMCACHE_ENABLE_BLENDING": "True",
        "LMCACHE_BLEND_SPECIAL_STR": separator,
        "LMCACHE_USE_LAYERWISE": "True",
        "LMCACHE_BLEND_CHECK_LAYERS": str(int(check_layers)),
        "LMCACHE_BLEND_RECOMPUTE_RATIOS": f"{ratio:g}",
        "LMCACHE_LOCAL_CPU": "True",
        "LMCACHE_MAX_LOCAL_CPU_SIZE": f"{cpu_gb:g}",
    }


def token_prompt(tokenizer: Any, request: GenerationRequest, layout: PromptLayout,
                 separator_ids: list[int] | None = None) -> list[int]:
    """Prompt token ids; with ``separator_ids`` each segment (prefix, chunks, suffix) is delimited."""
    parts = build_prompt(tokenizer, request.system_prompt, list(request.chunks), request.question, layout)
    if not separator_ids:
        return parts.all_ids
    out = list(parts.prefix_ids)
    for ids in parts.chunk_ids:
        out += separator_ids + ids
    return out + separator_ids + parts.suffix_ids


def sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"max_tokens": request.max_new_tokens, "temperature": request.temperature}
    if request.seed is not None:
        out["seed"] = request.seed
    return out


class VLLMGenerator(Generator):
    backend = "vllm"

    def __init__(self, model: str, mode: str = "prefix", ratio: float = 0.15, check_layers: int = 1,
                 blend_separator: str = " # # ", gpu_memory_utilization: float = 0.8,
                 max_model_len: int | None = None, layout: PromptLayout | None = None,
                 engine_kwargs: dict[str, Any] | None = None) -> None:
        check_mode(mode, VLLM_MODES)
        self.model, self.mode, self.ratio, self.check_layers = model, mode, ratio, check_layers
        self.separator = blend_separator
        self.layout = layout or PromptLayout()
        self.engine_kwargs = dict(engine_kwargs or {})
        self.engine_kwargs.setdefault("gpu_memory_utilization", gpu_memory_utilization)
        if max_model_len:
            self.engine_kwargs["max_model_len"] = max_model_len
        self.fallback_reason: str | None = None
        self._llm = None
        self._sep_ids: list[int] | None = None

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM`` under the current mode (without building anything)."""
        args = dict(model=self.model, enable_prefix_caching=self.mode == "prefix", **self.engine_kwargs)
        if self.mode == "blend":
            args["kv_transfer_config"] = {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
        return args

    def _engine(self):
        if self._llm is not None:
            return self._llm
        vllm = import_vllm()
        if self.mode == "blend":
            try:
                import lmcache  # noqa: F401, PLC0415
            except Exception as exc:  # noqa: BLE001
                self.fallback_reason = f"lmcache unavailable ({exc}); using prefix caching"
                log.warning(self.fallback_reason)
                self.mode = "prefix"
        args = self.engine_args()
        if self.mode == "blend":
            os.environ.update(lmcache_env(self.ratio, self.check_layers, self.separator))
            from vllm.config import KVTransferConfig  # noqa: PLC0415

            args["kv_transfer_config"] = KVTransferConfig(**args["kv_transfer_config"])
        self._llm = vllm.LLM(**args)
        tok = self._llm.get_tokenizer()
        self._sep_ids = tok.encode(self.separator, add_special_tokens=False) if self.mode == "blend" else None
        return self._llm

    def _run(self, prompt_ids: list[int], params: dict[str, Any]):
        vllm = import_vllm()
        llm = self._engine()
        outs = llm.generate([{"prompt_token_ids": prompt_ids}], vllm.SamplingParams(**params), use_tqdm=False)
        return outs[0]

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent | GenerationResult]:
        """vLLM's offline engine returns whole answers: one text event, then the result."""
        t0 = time.perf_counter()
        req = request.validate()
        llm = self._engine()
        prompt_ids = token_prompt(llm.get_tokenizer(), req, self.layout, self._sep_ids)
        out = self._run(prompt_ids, sampling_kwargs(req))
        t1 = time.perf_counter()
        completion = out.outputs[0]
        timings = Timings(total_s=t1 - t0, ttft_s=t1 - t0, prefill_s=t1 - t0)
        metrics = getattr(out, "metrics", None)
        if metrics is not None and getattr(metrics, "first_token_time", None) and getattr(metrics, "arrival_time", None):
            timings.ttft_s = timings.prefill_s = metrics.first_token_time - metrics.arrival_time
        report = CacheReport(mode=f"vllm-{self.mode}", fallback_reason=self.fallback_reason,
                             prompt_tokens=len(prompt_ids),
                             reused_tokens=int(getattr(out, "num_cached_tokens", 0) or 0))
        yield TokenEvent(completion.text, None)
        finish = "stop" if completion.finish_reason == "stop" else "length"
        yield GenerationResult(completion.text, list(completion.token_ids), finish, timings, report)

    def warm(self, chunks: Iterable[ChunkRef], system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> int:
        """Blend mode: prefill [prefix][sep][chunk] once per chunk so LMCache stores its KV."""
        llm = self._engine()
        if self.mode != "blend":
            return 0
        tok = llm.get_tokenizer()
        prefix = encode_prefix(tok, system_prompt, self.layout)
        n = 0
        for _, text in chunks:
            self._run(prefix + self._sep_ids + encode_chunk(tok, text, self.layout), {"max_tokens": 1, "temperature": 0.0})
            n += 1
        return n

    def drop(self, chunk_ids: Iterable[Any]) -> int:
        """Engine caches are content-addressed: a changed chunk never hits stale KV; nothing to drop."""
        return 0
