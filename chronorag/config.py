"""Settings, resolved from (highest first) explicit arguments, environment variables, a TOML file, defaults.

The TOML file is the first that exists of: ``--config PATH`` / ``$CHRONORAG_CONFIG``,
``./chronorag.toml``, ``<data dir>/chronorag.toml``. Keys are the field names below, at top level or
under a ``[chronorag]`` table.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "CHRONORAG_"
BM25_CHINESE = ("words+bigrams", "words")
PLANNERS = ("mcts", "greedy", "topk")
PLANNER_RERANKERS = ("none", "features", "e5", "cross-encoder", "all")


class ConfigError(ValueError):
    """A setting has a bad value or the config file cannot be read."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./chronorag-data")
    chunk_size: int = 256
    chunk_overlap: int = 32
    # 'minilm-int8' (default: fast, English), 'e5-small' (multilingual, better recall, several times
    # slower; 'e5-small-int8' a little faster), 'minilm-fp32' (reference), or 'none' for BM25-only.
    embedder: str = "minilm-int8"
    # FAISS index kind: 'flat' (exact inner product), 'hnsw' or 'ivf' for scale.
    dense_kind: str = "flat"
    # Temporal graph extractor: 'rule' (fast default, no LLM), 'llm' (the configured generator writes
    # fact quadruples and period summaries; rules cover what it misses) or 'none' to skip the graph.
    graph: str = "rule"
    # 'llm' graph only: generator calls per document (extraction cost is bounded per document).
    graph_llm_calls_per_doc: int = 4
    # RRF weight of the graph for questions asking a tracked relation (who led, revenue...) of an
    # entity it knows at some time, when it holds such a fact then: it is the only time-aware retriever.
    graph_time_weight: float = 3.0
    # Its RRF weight for other questions naming a time: then its candidates are chunks mentioning a
    # known entity in that time, or the period's headline chunks, weaker evidence than a text match:
    # they reorder what BM25 found more than they add to it (CRUD-RAG: see docs/figures.md).
    graph_mention_weight: float = 0.5
    rrf_k: int = 60
    # Chinese BM25 terms: 'words+bigrams' (jieba's words plus each run's overlapping character
    # bigrams, which find names the dictionary lacks: better recall, at a slower BM25 stage, more
    # memory and a larger data directory; docs/figures.md) or 'words'.
    bm25_chinese: str = "words+bigrams"
    # Candidates each retriever contributes to fusion.
    candidate_depth: int = 100
    # BM25 document evidence: a document's best chunk among BM25's best doc_evidence_depth gets this
    # share of the scores of its next 3 chunks there (0 = off): an article whose other chunks also
    # match is more likely the one the question is about (its recall gain: docs/figures.md).
    doc_evidence: float = 0.3
    doc_evidence_depth: int = 300
    # Generation: backend 'hf' (transformers with per-chunk KV reuse), 'vllm' or 'openai'.
    generator: str = "hf"
    # Local model directory or .gguf file for 'hf' ('' = the bundled SmolLM2-135M-Instruct); model
    # name for 'vllm'/'openai'.
    model: str = ""
    # 'blend' (CacheBlend-style reuse), 'full', 'prefix' or 'naive' (reuse without recompute).
    kv_mode: str = "blend"
    kv_ratio: float = 0.15
    kv_memory_mb: int = 1024
    # dtype chunk KV is kept in (memory and disk tiers): 'auto' = bfloat16 for an fp32 model (half the
    # bytes, same answers in our measurements), else the model's own; or float32 / bfloat16 / float16.
    kv_store_dtype: str = "auto"
    kv_disk_mb: int = 4096
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    max_new_tokens: int = 64
    # Time zone for timestamps that carry none (JSONL/dir); CRUD-RAG uses Asia/Shanghai.
    default_tz: str = "UTC"
    # Documents per store transaction during ingestion.
    ingest_batch: int = 512
    # Processes for chunking/tokenising during ingestion (1 = in-process).
    workers: int = 1
    # Query planner (`chronorag query`, docs/planner.md). Context budget in the generator's tokens
    # (chunks only; the prompt around them is counted apart).
    planner_budget: int = 1024
    # 'mcts' (Monte Carlo tree search), 'greedy' (marginal gain per cost) or 'topk' (truncation).
    planner: str = "mcts"
    # 'none', 'features' (model-free: fused score, time fit, entities, recency), 'e5' (features +
    # multilingual-e5-small similarity from stored e5 vectors; skipped when the store has none),
    # 'cross-encoder' (features + the model in planner_cross_encoder) or 'all'.
    planner_reranker: str = "features"
    # Local directory of a sentence-transformers cross-encoder ('' = none; never downloaded).
    planner_cross_encoder: str = ""
    # e5 vectors: 'stored' (only the store's), 'on-the-fly' (embed missing candidates: slow, about
    # 13 chunks/s on 2 cores) for the 'e5'/'all' rerankers.
    planner_e5: str = "stored"
    planner_pool: int = 60  # candidates planned over, after folding near-duplicates
    planner_iterations: int = 200  # MCTS iteration cap
    planner_time_ms: float = 20.0  # MCTS wall-clock cap
    planner_seed: int = 0
    # Abstain when no candidate in the question's time scope is worth this much alone (0..1).
    planner_abstain_floor: float = 0.25
    # Prefill cost model (benchmarks/planner.py --calibrate measures them on this machine): ms per
    # fresh prompt token, per cached chunk token at kv_ratio (its recompute share plus KV loading),
    # and per request.
    planner_fresh_token_ms: float = 2.5
    planner_cached_token_ms: float = 0.55
    planner_request_ms: float = 40.0
    # REST service limits (chronorag serve): documents and megabytes per request (beyond: 413),
    # generation requests running or waiting at once (beyond: 429), seconds one generation may run
    # (checked between tokens), seconds ``?wait=true`` waits for an ingestion job.
    api_max_documents: int = 5000
    api_max_body_mb: float = 32.0
    api_generation_queue: int = 8
    api_generation_timeout_s: float = 120.0
    api_wait_timeout_s: float = 300.0

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.sqlite3"

    @property
    def graph_enabled(self) -> bool:
        return self.graph.strip().lower() != "none"

    @property
    def dense_enabled(self) -> bool:
        return self.embedder.strip().lower() != "none"

    @property
    def bm25_bigrams(self) -> bool:
        return self.bm25_chinese == "words+bigrams"

    def validate(self) -> "Settings":
        if self.chunk_size < 16:
            raise ConfigError(f"chunk_size must be >= 16 tokens, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(
                f"chunk_overlap must be in [0, chunk_size), got {self.chunk_overlap}"
            )
        if self.dense_kind not in {"flat", "hnsw", "ivf"}:
            raise ConfigError(f"dense_kind must be flat, hnsw or ivf, got {self.dense_kind!r}")
        from chronorag.kvcache.generator import MODES, STORE_DTYPES  # light: no torch

        if self.kv_mode not in MODES:
            raise ConfigError(f"kv_mode must be one of {', '.join(MODES)}, got {self.kv_mode!r}")
        if not 0.0 <= self.kv_ratio <= 1.0:
            raise ConfigError(f"kv_ratio must be in [0, 1], got {self.kv_ratio}")
        if self.kv_store_dtype not in STORE_DTYPES:
            raise ConfigError(f"kv_store_dtype must be one of {', '.join(STORE_DTYPES)}, got {self.kv_store_dtype!r}")
        if self.bm25_chinese not in BM25_CHINESE:
            raise ConfigError(f"bm25_chinese must be one of {', '.join(BM25_CHINESE)}, got {self.bm25_chinese!r}")
        if self.generator not in {"hf", "vllm", "openai"}:
            raise ConfigError(f"generator must be hf, vllm or openai, got {self.generator!r}")
        from chronorag.retrieval.embedder import available_embedders, is_known_embedder

        if self.embedder.strip().lower() != "none" and not is_known_embedder(self.embedder):
            raise ConfigError(
                f"embedder must be one of {', '.join(available_embedders())} or none, got {self.embedder!r}"
            )
        from chronorag.periods import resolve_tz

        try:
            resolve_tz(self.default_tz)
        except ValueError as exc:
            raise ConfigError(f"default_tz: {exc}") from None
        if self.graph.strip().lower() not in {"rule", "llm", "none"}:
            raise ConfigError(f"graph must be rule, llm or none, got {self.graph!r}")
        if self.graph_llm_calls_per_doc < 1:
            raise ConfigError("graph_llm_calls_per_doc must be >= 1")
        if not 0.0 <= self.doc_evidence <= 1.0:
            raise ConfigError(f"doc_evidence must be in [0, 1], got {self.doc_evidence}")
        for name in ("rrf_k", "candidate_depth", "doc_evidence_depth", "ingest_batch", "workers", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("api_max_documents", "api_generation_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("api_max_body_mb", "api_generation_timeout_s", "api_wait_timeout_s"):
            if not getattr(self, name) > 0:  # NaN fails too
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("kv_memory_mb", "kv_disk_mb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("graph_time_weight", "graph_mention_weight"):
            if not getattr(self, name) >= 0:  # NaN fails too: it would turn every score into NaN
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        self._validate_planner()
        return self

    def _validate_planner(self) -> None:
        if self.planner not in PLANNERS:
            raise ConfigError(f"planner must be one of {', '.join(PLANNERS)}, got {self.planner!r}")
        if self.planner_reranker not in PLANNER_RERANKERS:
            raise ConfigError(f"planner_reranker must be one of {', '.join(PLANNER_RERANKERS)}, "
                              f"got {self.planner_reranker!r}")
        if self.planner_e5 not in ("stored", "on-the-fly"):
            raise ConfigError(f"planner_e5 must be stored or on-the-fly, got {self.planner_e5!r}")
        if self.planner_reranker == "cross-encoder" and not self.planner_cross_encoder.strip():
            raise ConfigError("planner_reranker = 'cross-encoder' needs planner_cross_encoder (a local model directory)")
        if self.planner_cross_encoder.strip() and not Path(self.planner_cross_encoder).expanduser().is_dir():
            raise ConfigError(f"planner_cross_encoder {self.planner_cross_encoder!r} is not a directory")
        for name in ("planner_budget", "planner_pool", "planner_iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.planner_seed < 0:
            raise ConfigError(f"planner_seed must be >= 0, got {self.planner_seed}")
        if not self.planner_time_ms > 0:
            raise ConfigError(f"planner_time_ms must be > 0, got {self.planner_time_ms}")
        if not 0.0 <= self.planner_abstain_floor <= 1.0:
            raise ConfigError(f"planner_abstain_floor must be in [0, 1], got {self.planner_abstain_floor}")
        for name in ("planner_fresh_token_ms", "planner_cached_token_ms", "planner_request_ms"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELD_TYPES[name]
    if isinstance(value, bool) and kind != "str":  # TOML true is not a number
        raise ConfigError(f"setting {name}: cannot use {value!r} (expected {kind})")
    try:
        if kind == "Path":
            if not str(value).strip():
                raise ValueError("empty path")
            return Path(os.path.expanduser(str(value)))
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not a whole number")
            return int(value)
        if kind == "float":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("not a finite number")
            return number
        return str(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"setting {name}: cannot use {value!r} ({exc})") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, ValueError) as exc:  # TOMLDecodeError, or bytes that are not UTF-8
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return data.get("chronorag", data)


def load_settings(
    config_file: str | Path | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Resolve settings; ``overrides`` whose value is None are ignored (unset CLI flags)."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    env_values = {
        name: env[ENV_PREFIX + name.upper()]
        for name in _FIELD_TYPES
        if ENV_PREFIX + name.upper() in env
    }
    explicit = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(explicit) - set(_FIELD_TYPES)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    data_dir = Path(explicit.get("data_dir") or env_values.get("data_dir") or Settings.data_dir)
    candidates = [config_file if config_file is not None else env.get(ENV_PREFIX + "CONFIG")]
    if candidates[0] is not None and not str(candidates[0]).strip():
        raise ConfigError("the config file name (--config or $CHRONORAG_CONFIG) is empty")
    if candidates[0] is not None and not Path(candidates[0]).is_file():
        raise ConfigError(f"config file not found: {candidates[0]}")
    candidates += [Path("chronorag.toml"), data_dir / "chronorag.toml"]
    for cand in candidates:
        if cand is not None and Path(cand).is_file():
            file_values = _read_toml(Path(cand))
            bad = set(file_values) - set(_FIELD_TYPES)
            if bad:
                raise ConfigError(f"{cand}: unknown setting(s): {', '.join(sorted(bad))}")
            values.update(file_values)
            break
    values.update(env_values)
    values.update(explicit)
    settings = replace(Settings(), **{k: _coerce(k, v) for k, v in values.items()})
    return settings.validate()
