"""Generation with reusable per-chunk KV caches (CacheBlend-style blending), behind one interface.

    from chronorag.kvcache import load_generator, GenerationRequest
    gen = load_generator("hf")                      # SmolLM2-135M-Instruct, loaded on first use
    gen.warm([(17, "chunk text"), ...])             # optional: precompute chunk KV
    result = gen.generate(GenerationRequest("question?", chunks=[(17, "chunk text"), ...]))
    for event in gen.stream(request): ...           # TokenEvent..., then GenerationResult
    gen.drop([17])                                  # chunk deleted or changed

Modules: generator (interface, types, factory), prompt (token layout), rope, forward (layer-by-layer
runner), blend (the algorithm), chunk_store (memory + disk tiers), prefix_cache (baseline),
hf_backend / vllm_backend / openai_backend (engines), model_loader, testing (tiny models).
"""

from chronorag.kvcache.generator import (
    DEFAULT_SYSTEM_PROMPT,
    BackendUnavailable,
    CacheReport,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Generator,
    RequestError,
    Timings,
    TokenEvent,
    load_generator,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "BackendUnavailable",
    "CacheReport",
    "GenerationError",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "RequestError",
    "Timings",
    "TokenEvent",
    "load_generator",
]
