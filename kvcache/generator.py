"""The generation interface every backend implements, its request/result types, and the factory.

A caller hands over a system prompt, the retrieved chunks in order as (chunk_id, text) pairs and the
question; a backend streams ``TokenEvent``s and ends with one ``GenerationResult`` that carries the
full answer, timings and cache statistics. Backends: ``hf`` (transformers, per-chunk KV reuse),
``vllm`` (optional GPU extra) and ``openai`` (any OpenAI-compatible HTTP server, no KV reuse).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from chronorag.errors import UserFacingError
from chronorag.kvcache.prompt import ChunkRef

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer from the given documents only, briefly."
MODES = ("blend", "full", "prefix", "naive")
# dtypes chunk KV can be kept in; 'auto' = bfloat16 for an fp32 model, else the model's own dtype
STORE_DTYPES = ("auto", "float32", "bfloat16", "float16")


class GenerationError(UserFacingError):
    """A request could not be served; the message is one printable line."""


class RequestError(GenerationError, ValueError):
    """A bad argument (mode, ratio, question...): a ValueError, as everywhere in chronorag's API."""


class BackendUnavailable(GenerationError):
    """The backend's optional dependencies or server are missing."""


@dataclass(frozen=True)
class GenerationRequest:
    question: str
    chunks: Sequence[ChunkRef] = ()
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    seed: int | None = None
    mode: str | None = None  # per-request override of the backend's mode
    ratio: float | None = None  # per-request override of the blend recompute ratio

    def validate(self) -> "GenerationRequest":
        if not isinstance(self.question, str) or not self.question.strip():
            raise RequestError("question must be a non-empty string")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, numbers.Integral):
            raise RequestError(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise RequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.mode is not None:
            check_mode(self.mode)
        if self.ratio is not None:
            check_ratio(self.ratio)
        return self


def check_mode(mode: object, allowed: Sequence[str] = MODES) -> str:
    """A KV reuse mode the backend supports."""
    if not isinstance(mode, str) or mode not in allowed:
        raise RequestError(f"mode must be one of {', '.join(allowed)}, got {mode!r}")
    return mode


def check_ratio(ratio: object) -> float:
    """A blend recompute ratio: a real number in [0, 1] (not a bool or a string)."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise RequestError(f"ratio must be a number in [0, 1], got {ratio!r}")
    if not 0.0 <= ratio <= 1.0:
        raise RequestError(f"ratio must be in [0, 1], got {ratio}")
    return float(ratio)


@dataclass
class Timings:
    """Seconds unless named otherwise; ``ttft_s`` runs from the request's arrival to the first token."""

    queue_s: float = 0.0  # waiting for the model (one request at a time per generator)
    load_model_s: float = 0.0  # first request only: lazy model load
    tokenize_s: float = 0.0
    kv_load_s: float = 0.0  # fetching chunk KV from the store and placing it at its positions
    chunk_compute_s: float = 0.0  # computing missing chunk KV on first use
    recompute_s: float = 0.0  # running model layers during prefill
    prefill_s: float = 0.0  # everything from start of work to first-token logits
    ttft_s: float = 0.0
    decode_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    total_s: float = 0.0


@dataclass
class CacheReport:
    mode: str = "full"
    fallback_reason: str | None = None
    prompt_tokens: int = 0
    chunk_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose deep-layer KV came from a cache
    recomputed_tokens: int = 0  # chunk tokens recomputed through all layers (blend)
    chunk_hits: int = 0
    chunk_misses: int = 0
    dropped_chunks: int = 0  # lowest-ranked chunks left out so the prompt fits the model's context
    store: dict = field(default_factory=dict)


@dataclass
class TokenEvent:
    text: str
    token_id: int | None = None


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"
    timings: Timings
    cache: CacheReport

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Generator:
    """Base class: backends implement ``stream``; warm/drop are no-ops where nothing is cached."""

    backend = "base"

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent | GenerationResult]:
        raise NotImplementedError

    def generate(self, request: GenerationRequest) -> GenerationResult:
        result = None
        for event in self.stream(request):
            if isinstance(event, GenerationResult):
                result = event
        if result is None:
            raise GenerationError(f"{self.backend} backend ended without a result")
        return result

    def load(self) -> None:
        """Load the model now instead of on the first request (a server's warm-up)."""

    def warm(self, chunks: Iterable[ChunkRef], system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> int:
        """Precompute KV for these chunks; returns how many were computed (0 where unsupported)."""
        return 0

    def drop(self, chunk_ids: Iterable[Any]) -> int:
        """Forget cached KV of deleted/changed chunks; returns entries removed."""
        return 0

    def cache_stats(self) -> dict[str, Any]:
        return {}


class IncrementalDetokenizer:
    """Turns a growing id list into text deltas, holding back incomplete multi-byte characters."""

    def __init__(self, tokenizer: Any, skip_ids: Iterable[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.skip = set(skip_ids)
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        if token_id not in self.skip:
            self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta = text[len(self.emitted):] if text.startswith(self.emitted) else text
        self.emitted = text
        return delta


def load_generator(backend: str = "hf", **opts: Any) -> Generator:
    """Build a generator: ``hf`` (default), ``vllm`` or ``openai``; ``opts`` go to its constructor."""
    name = (backend or "hf").lower()
    if name in {"hf", "transformers"}:
        from chronorag.kvcache.hf_backend import HFGenerator

        return HFGenerator(**opts)
    if name == "vllm":
        from chronorag.kvcache.vllm_backend import VLLMGenerator

        return VLLMGenerator(**opts)
    if name == "openai":
        from chronorag.kvcache.openai_backend import OpenAIGenerator

        return OpenAIGenerator(**opts)
    raise RequestError(f"unknown generation backend {backend!r} (hf, vllm or openai)")
