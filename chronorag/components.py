"""Builds the engine's parts from :class:`~chronorag.config.Settings`: indexes, embedder, graph,
generator, the hybrid retriever and the query analyser.

Each part is built on first use, once, under a lock, however many threads ask at the same time.
This is the one module that knows which implementation stands behind each seam; a user who
swaps one (a vector database for FAISS, a vLLM cluster for the local model) changes it here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chronorag.analysis import FusionWeights, QueryAnalyzer
from chronorag.config import Settings
from chronorag.datadir import DataDir
from chronorag.indexing import DerivedIndex, catch_up
from chronorag.store import Store, StoreError

if TYPE_CHECKING:
    from chronorag.graph import GraphIndex
    from chronorag.kvcache import Generator
    from chronorag.retrieval.dense_index import DenseIndex
    from chronorag.retrieval.hybrid import HybridRetriever

LLM_GRAPH_SYSTEM = "You extract facts from news text and answer with JSON only."


class Components:
    """The parts one :class:`~chronorag.engine.ChronoRAG` works with."""

    def __init__(self, settings: Settings, store: Store, data_dir: DataDir, embedder: Any = None,
                 generator: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.data_dir = data_dir
        self._embedder = embedder
        self._generator = generator
        self._built: dict[str, Any] = {}
        self._lock = threading.RLock()  # parts build others (the retriever needs the indexes)

    def _once(self, name: str, build: Callable[[], Any]) -> Any:
        part = self._built.get(name)
        if part is None and name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = build()
                part = self._built[name]
        return part

    def built(self, name: str) -> Any:
        """The part if it was built, else None (never builds)."""
        return self._built.get(name)

    # --------------------------------------------------------------- indexes
    @property
    def bm25(self):
        def build():
            from chronorag.retrieval.bm25_segments import SegmentedBM25
            from chronorag.retrieval.tokenize import Tokenizer

            return SegmentedBM25(self.settings.data_dir / "bm25", Tokenizer(bigrams=self.settings.bm25_bigrams),
                                 workers=self.settings.workers)

        return self._once("bm25", build)

    @property
    def embedder(self):
        def build():
            if self._embedder is not None or not self.settings.dense_enabled:
                return self._embedder
            from chronorag.retrieval.embedder import load_embedder

            return load_embedder(self.settings.embedder)

        return self._once("embedder", build)

    @property
    def dense(self) -> "DenseIndex | None":
        def build():
            if not self.settings.dense_enabled:
                return None
            from chronorag.retrieval.dense_index import DenseIndex

            return DenseIndex(self.settings.data_dir / "dense", self.embedder, self.store, kind=self.settings.dense_kind)

        return self._once("dense", build)

    @property
    def graph(self) -> "GraphIndex | None":
        def build():
            if not self.settings.graph_enabled:
                return None
            from chronorag.graph import GraphIndex

            extractor = summariser = None
            if self.settings.graph.strip().lower() == "llm":
                extractor, summariser = self._llm_graph_parts()
            return GraphIndex(self.store, extractor=extractor, summariser=summariser, workers=self.settings.workers)

        return self._once("graph", build)

    def _llm_graph_parts(self):
        """LLM extractor + summariser over the configured generator; the rule extractor backs it up."""
        from chronorag.graph.extract import RuleExtractor
        from chronorag.graph.llm_extract import LLMExtractor, LLMSummariser
        from chronorag.kvcache import GenerationRequest

        def complete(prompt: str) -> str:
            request = GenerationRequest(prompt, (), system_prompt=LLM_GRAPH_SYSTEM, max_new_tokens=256, mode="full")
            return self.generator.generate(request).text

        s = self.settings
        model = s.model or f"{s.generator}-default"
        extractor = LLMExtractor(complete, max_calls_per_doc=s.graph_llm_calls_per_doc,
                                 fallback=RuleExtractor(), model_name=model)
        return extractor, LLMSummariser(complete)

    # ------------------------------------------------------------- generation
    @property
    def generator(self) -> "Generator":
        """The answer generator; its chunk KV caches follow the store's log (the kvcache index)."""
        return self._once("generator", self._build_generator)

    def _build_generator(self) -> "Generator":
        from chronorag.kvcache.kv_index import ChunkKVIndex

        s = self.settings
        kv_dir = s.data_dir / "kvcache"
        if kv_dir.exists() and not kv_dir.is_dir():
            raise StoreError(f"KV cache path {kv_dir} is not a directory (move it away; chronorag recreates it)")
        generator = self._generator or self._generator_from_settings(kv_dir)
        kv_index = ChunkKVIndex(generator, s.data_dir / "kvcache-state.json")
        with self.data_dir.write_lock(wait=False) as got:
            if got:  # drop KV of chunks deleted or changed since this data dir last generated
                catch_up(self.store, kv_index)
                self.store.record_index_progress({kv_index.name: kv_index.applied_seq})
        self._built["kvcache"] = kv_index
        return generator

    def _generator_from_settings(self, kv_dir) -> "Generator":
        from chronorag.kvcache import load_generator

        s = self.settings
        if s.generator == "hf":
            opts = dict(model=s.model or None, mode=s.kv_mode, ratio=s.kv_ratio,
                        memory_bytes=s.kv_memory_mb << 20, disk_dir=str(kv_dir),
                        disk_bytes=s.kv_disk_mb << 20, store_dtype=s.kv_store_dtype)
        elif s.generator == "openai":
            opts = dict(base_url=s.openai_base_url, model=s.model or "default")
        else:
            opts = dict(model=s.model or None, mode=s.kv_mode)
        return load_generator(s.generator, **opts)

    def indexes(self) -> list[DerivedIndex]:
        """Every derived index this process holds, building BM25, vectors and the graph."""
        return [ix for ix in (self.bm25, self.dense, self.graph, self.built("kvcache")) if ix is not None]

    def built_indexes(self) -> list[DerivedIndex]:
        """The indexes built so far (what a read refreshes; it never builds one to report on it)."""
        return [ix for ix in (self.built(n) for n in ("bm25", "dense", "graph", "kvcache")) if ix is not None]

    # -------------------------------------------------------------- retrieval
    @property
    def retriever(self) -> "HybridRetriever":
        def build():
            from chronorag.retrieval.doc_evidence import DocumentEvidenceSearcher
            from chronorag.retrieval.hybrid import ByText, HybridConfig, HybridRetriever

            s = self.settings
            bm25 = self.bm25
            if s.doc_evidence > 0:
                bm25 = DocumentEvidenceSearcher(bm25, self.store.doc_ids_of, s.doc_evidence, s.doc_evidence_depth)
            searchers: dict[str, Any] = {"bm25": ByText(bm25)}
            if self.dense is not None:
                searchers["dense"] = ByText(self.dense)
            if self.graph is not None:
                searchers["graph"] = self.graph
            return HybridRetriever(self.store, searchers,
                                   HybridConfig(rrf_k=s.rrf_k, candidate_depth=s.candidate_depth))

        return self._once("retriever", build)

    @property
    def analyzer(self) -> QueryAnalyzer:
        def build():
            from chronorag.graph.timescope import parse_time_scope
            from chronorag.retrieval.tokenize import detect_language

            s = self.settings
            return QueryAnalyzer(parse_time_scope, detect_language, graph=self.graph,
                                 embedder=self.embedder,
                                 weights=FusionWeights(s.graph_time_weight, s.graph_mention_weight))

        return self._once("analyzer", build)

    def close(self) -> None:
        bm25 = self.built("bm25")
        if bm25 is not None:
            bm25.close()  # waits for a background merge to finish
        for name in ("dense", "graph", "kvcache"):
            part = self.built(name)
            if part is not None:
                part.close()
        self._built.clear()
