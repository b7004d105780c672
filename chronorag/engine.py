"""The facade the CLI, the REST API and the evals share: ``insert`` / ``delete`` / ``retrieve``.

It owns one store and the derived indexes built from it, and keeps them in step: every write goes
to the store first, then each index catches up from the store's change log under a data-directory
lock, so two processes never write the same index files and a crash only leaves an index behind.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Iterator

from chronorag import arguments
from chronorag.config import Settings, load_settings
from chronorag.indexing import DerivedIndex, catch_up, trim_change_log
from chronorag.ingest.dates import resolve_tz
from chronorag.ingest.pipeline import IngestReport, ingest_documents
from chronorag.store import Store, StoreError
from chronorag.types import Document, LoadError, SearchFilters, SearchHit

log = logging.getLogger(__name__)


class DataDirLocked(RuntimeError):
    """Another process is writing to this data directory."""


LLM_GRAPH_SYSTEM = "You extract facts from news text and answer with JSON only."


def _open_only(method):
    """Methods of a closed ChronoRAG raise StoreError instead of reopening indexes or failing in SQLite."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        self._check_open()
        return method(self, *args, **kwargs)

    return checked


def _tree_bytes(root: Path) -> int:
    """Bytes of the files under ``root``; a writer may rename or remove files during the walk."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # gone since it was listed
    return total


class ChronoRAG:
    def __init__(self, settings: Settings | None = None, embedder=None, create: bool = True) -> None:
        """``create=False`` only opens an existing store (read commands), never makes one."""
        settings = settings or load_settings()
        self.settings = replace(settings, data_dir=Path(settings.data_dir)).validate()  # Settings(...) by hand
        if self.settings.data_dir.exists() and not self.settings.data_dir.is_dir():
            raise StoreError(f"data directory {self.settings.data_dir} is a file, not a directory")
        if create:
            try:
                self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # e.g. a parent is a file
                raise StoreError(f"cannot create data directory {self.settings.data_dir}: {exc}") from None
        self.store = Store(self.settings.store_path, create=create)
        self._embedder = embedder
        self._bm25 = None
        self._dense = None
        self._graph = None
        self._retriever = None
        self._generator = None
        self._kv_index = None
        self._last_parse = None
        self._warned_behind = False
        self._closed = False

    # ------------------------------------------------------------ components
    @property
    @_open_only
    def bm25(self):
        if self._bm25 is None:
            from chronorag.retrieval.bm25_segments import SegmentedBM25
            from chronorag.retrieval.tokenize import Tokenizer

            self._bm25 = SegmentedBM25(
                self.settings.data_dir / "bm25",
                Tokenizer(bigrams=self.settings.bm25_bigrams),
                workers=self.settings.workers,
            )
        return self._bm25

    @property
    def embedder(self):
        if self._embedder is None and self.settings.dense_enabled:
            from chronorag.retrieval.embedder import load_embedder

            self._embedder = load_embedder(self.settings.embedder)
        return self._embedder

    @property
    @_open_only
    def dense(self):
        if self._dense is None and self.settings.dense_enabled:
            from chronorag.retrieval.dense_index import DenseIndex

            self._dense = DenseIndex(
                self.settings.data_dir / "dense",
                self.embedder,
                self.store,
                kind=self.settings.dense_kind,
            )
        return self._dense

    @property
    @_open_only
    def graph(self):
        if self._graph is None and self.settings.graph_enabled:
            from chronorag.graph import GraphIndex

            extractor = summariser = None
            if self.settings.graph.strip().lower() == "llm":
                extractor, summariser = self._llm_graph_parts()
            self._graph = GraphIndex(self.store, extractor=extractor, summariser=summariser,
                                     workers=self.settings.workers)
        return self._graph

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

    @property
    @_open_only
    def generator(self):
        """The answer generator, built on first use; its chunk KV caches follow the store's log."""
        if self._generator is None:
            from chronorag.kvcache import load_generator
            from chronorag.kvcache.kv_index import ChunkKVIndex

            s = self.settings
            kv_dir = s.data_dir / "kvcache"
            if kv_dir.exists() and not kv_dir.is_dir():
                raise StoreError(f"KV cache path {kv_dir} is not a directory (move it away; chronorag recreates it)")
            if s.generator == "hf":
                opts = dict(model=s.model or None, mode=s.kv_mode, ratio=s.kv_ratio,
                            memory_bytes=s.kv_memory_mb << 20, disk_dir=str(kv_dir),
                            disk_bytes=s.kv_disk_mb << 20, store_dtype=s.kv_store_dtype)
            elif s.generator == "openai":
                opts = dict(base_url=s.openai_base_url, model=s.model or "default")
            else:
                opts = dict(model=s.model or None, mode=s.kv_mode)
            self._generator = load_generator(s.generator, **opts)
            self._kv_index = ChunkKVIndex(self._generator, s.data_dir / "kvcache-state.json")
            with self._write_lock(wait=False) as got:
                if got:  # drop KV of chunks deleted or changed since this data dir last generated
                    catch_up(self.store, self._kv_index)
                    self.store.record_index_progress({self._kv_index.name: self._kv_index.applied_seq})
        return self._generator

    def indexes(self) -> list[DerivedIndex]:
        return [ix for ix in (self.bm25, self.dense, self.graph, self._kv_index) if ix is not None]

    @property
    @_open_only
    def retriever(self):
        if self._retriever is None:
            from chronorag.retrieval.doc_evidence import DocumentEvidenceSearcher
            from chronorag.retrieval.hybrid import HybridConfig, HybridRetriever

            searchers = {"bm25": self.bm25}
            if self.settings.doc_evidence > 0:
                searchers["bm25"] = DocumentEvidenceSearcher(
                    self.bm25, self.store.doc_ids_of, self.settings.doc_evidence, self.settings.doc_evidence_depth
                )
            if self.dense is not None:
                searchers["dense"] = self.dense
            if self.graph is not None:
                searchers["graph"] = self.graph
            self._retriever = HybridRetriever(
                self.store,
                searchers,
                HybridConfig(rrf_k=self.settings.rrf_k, candidate_depth=self.settings.candidate_depth),
            )
        return self._retriever

    # --------------------------------------------------------------- locking
    @contextmanager
    def _write_lock(self, wait: bool = True) -> Iterator[bool]:
        """Exclusive lock on the data directory; yields False if ``wait`` is off and it is taken."""
        path = self.settings.data_dir / ".write.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                log.warning("waiting for another writer to finish with %s", self.settings.data_dir)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- verbs
    @_open_only
    def sync(self, report: IngestReport | None = None, progress: Callable[[str, int], None] | None = None) -> None:
        """Bring every derived index in step with the store (also what start-up recovery does);
        ``progress(index_name, n_chunks)`` as each index applies changes."""
        with self._write_lock() as _:
            self._sync_locked(report, progress)

    def _sync_locked(self, report: IngestReport | None, progress: Callable | None) -> None:
        for index in self.indexes():
            t0 = time.perf_counter()
            if getattr(index, "extractor_changed", False):
                # the graph's rows came from another extractor (e.g. rule -> llm): redo them all
                log.warning("graph extractor changed to %s; re-extracting every chunk", index.extractor.name)
                index.reset()
            step = None if progress is None else (lambda n, name=index.name: progress(name, n))
            catch_up(self.store, index, progress=step)
            if report is not None:
                report.add_time(index.name, time.perf_counter() - t0)
        applied = {ix.name: ix.applied_seq for ix in self.indexes()}
        self.store.purge_retired(min(applied.values(), default=self.store.max_seq()))
        self.store.record_index_progress(applied)
        trim_change_log(self.store, applied)

    @_open_only
    def insert(
        self,
        records: Iterable[Document | LoadError],
        progress: Callable[[int], None] | None = None,
        index_progress: Callable[[str, int], None] | None = None,
    ) -> IngestReport:
        """Ingest documents (new, changed or unchanged) and update every index;
        ``index_progress(index_name, n_chunks)`` as each index catches up."""
        if isinstance(records, Document):
            records = [records]
        elif isinstance(records, (str, bytes, dict)) or not isinstance(records, Iterable):
            raise ValueError(f"records must be Documents (one or an iterable), got {type(records).__name__}")
        s = self.settings
        with self._write_lock():
            report = ingest_documents(
                self.store,
                records,
                chunk_size=s.chunk_size,
                chunk_overlap=s.chunk_overlap,
                batch_size=s.ingest_batch,
                workers=s.workers,
                progress=progress,
            )
            self._sync_locked(report, index_progress)
        return report

    @_open_only
    def delete(self, doc_ids: str | Iterable[str]) -> list[str]:
        """Remove documents from the store and every index; returns the ids that existed."""
        ids = arguments.id_list(doc_ids, "doc_ids")
        if ids is None:
            raise ValueError("doc_ids must be a string or a collection of strings, got None")
        with self._write_lock():
            deleted = self.store.delete_documents(ids)
            self._sync_locked(None, None)
        return deleted

    @_open_only
    def prune(self, prefix: str, keep: Iterable[str]) -> list[str]:
        """Delete the stored documents whose id starts with ``prefix`` (a folder's ``name/``) that are
        not in ``keep``: what a re-read folder no longer holds. An id in ``keep`` ending with '/'
        keeps every id below it (a sub-folder that could not be read). Returns the deleted ids."""
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty string (an empty one would match every document)")
        keep = set(keep)
        folders = tuple(k for k in keep if k.endswith("/"))
        stale = [d for d in self.store.doc_ids_with_prefix(prefix) if d not in keep and not d.startswith(folders)]
        return self.delete(stale) if stale else []

    @_open_only
    def retrieve(
        self,
        question: str,
        top_k: int = 8,
        since: datetime | None = None,
        until: datetime | None = None,
        doc_ids: Iterable[str] | None = None,
        sources: Iterable[str] | None = None,
        retrievers: Sequence[str] | None = None,
        use_graph: bool = True,
    ) -> list[SearchHit]:
        """Hybrid retrieval (BM25 + dense + temporal graph, fused with RRF) under optional filters.

        ``retrievers`` picks sources explicitly; otherwise all enabled ones are used, the graph
        only when ``use_graph`` and the question names a time, and vectors only for questions in a language the embedder was
        trained on (the default MiniLM is English-only: its neighbours for a Chinese question are
        noise that would dilute BM25 in fusion). Naive ``since``/``until`` are read in the
        settings' ``default_tz``; a date stands for its whole day. ``doc_ids``/``sources``: None
        means no restriction, an empty collection matches nothing.
        """
        question = arguments.question_text(question)
        top_k = arguments.positive_int(top_k, "top_k")
        tz = resolve_tz(self.settings.default_tz)
        since = arguments.time_bound(since, "since", tz)
        until = arguments.time_bound(until, "until", tz, end=True)
        if since and until and since > until:
            raise ValueError(f"since {since.isoformat()} is after until {until.isoformat()}")
        doc_ids, sources = arguments.id_list(doc_ids, "doc_ids"), arguments.id_list(sources, "sources")
        retrievers = arguments.id_list(retrievers, "retrievers")
        if retrievers == []:
            raise ValueError("retrievers is empty (None uses every enabled retriever)")
        if doc_ids == [] or sources == []:
            return []
        self._catch_up_if_free()
        filters = SearchFilters(
            since=since,
            until=until,
            doc_ids=frozenset(doc_ids) if doc_ids is not None else None,
            sources=frozenset(sources) if sources is not None else None,
        )
        if retrievers is not None:
            use = tuple(retrievers)
            missing = {"dense": self.dense, "graph": self.graph}
            off = [r for r in use if r in missing and missing[r] is None]
            if off:
                raise ValueError(f"retriever(s) disabled in settings: {', '.join(off)}")
        else:
            use = tuple(n for n in self.retriever.searchers if use_graph or n != "graph")
            if "dense" in use and not self._embedder_speaks(question):
                use = tuple(n for n in use if n != "dense")
            if "graph" in use and not self.graph.names_a_time(question):
                # no time in the question: the graph's candidates are mere entity mentions, which
                # only dilute BM25 (CRUD-RAG: recall@8 0.290 -> 0.275 with them)
                use = tuple(n for n in use if n != "graph")
        return self.retriever.search(
            question, top_k=top_k, filters=filters, use=use, weights=self._fusion_weights(question, use)
        )

    def _embedder_speaks(self, question: str) -> bool:
        from chronorag.retrieval.tokenize import detect_language

        languages = getattr(self.embedder, "languages", None)
        language = detect_language(question)
        return not languages or language == "mixed" or language in languages

    def _graph_parse(self, question: str):
        """Only the scope mode and relation hints are read from it, so reuse within one store version is safe."""
        key = (question, self.store.max_seq())  # a new ingest may add the entities it names
        if self._last_parse is None or self._last_parse[0] != key:
            self._last_parse = (key, self.graph.parse_question(question))
        return self._last_parse[1]

    def _fusion_weights(self, question: str, use: Sequence[str]) -> dict[str, float] | None:
        """Trust the graph more when the question asks about a time: BM25 and vectors cannot tell
        a 2019 statement of a fact from a 2022 one, the graph's validity intervals can."""
        if "graph" not in use or self.graph is None:
            return None
        parsed = self._graph_parse(question)
        # Only when the question asks for a relation the graph tracks over time (who led, where
        # based, revenue...) of an entity it knows, at some time, and the graph holds such a fact
        # for that time; otherwise its candidates are mere mentions (all scored alike) or, with
        # no known entity, the period's headline chunks, and count less than a text match.
        tracked = parsed.scope.mode != "any" and parsed.relations and parsed.entities
        if tracked and self.graph.has_relation_evidence(question):
            return {"graph": self.settings.graph_time_weight}
        return {"graph": self.settings.graph_mention_weight}

    def _catch_up_if_free(self) -> None:
        """Readers catch indexes up when no writer holds the directory; else they read what is committed."""
        for ix in self.indexes():  # first adopt what other processes committed to the indexes
            refresh = getattr(ix, "refresh", None)
            if refresh is not None:
                refresh()
        newest = self.store.max_seq()  # once per query, not once per index
        behind = any(ix.applied_seq < newest for ix in self.indexes())
        if not behind:
            return
        with self._write_lock(wait=False) as got:
            if got:
                self._sync_locked(None, None)
                self._warned_behind = False
            elif not self._warned_behind:  # a writer is at work and brings the indexes up; no waiting
                self._warned_behind = True  # once per wait, not once per query
                log.warning("another writer is updating %s: results may miss its newest changes",
                            self.settings.data_dir)

    @_open_only
    def answer(
        self,
        question: str,
        top_k: int = 4,
        max_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        mode: str | None = None,
        ratio: float | None = None,
        **retrieve_kwargs,
    ):
        """Retrieve, then generate from the chunks' reusable KV caches. Returns (result, hits), hits
        being the chunks answered from: the lowest-ranked are left out if they overflow the model.

        With nothing retrieved the result is None and the model is not asked: an answer from no
        documents would be the model's own guess presented as grounded.
        """
        from chronorag.kvcache import GenerationRequest, GenerationResult, TokenEvent

        if max_new_tokens is not None:
            arguments.positive_int(max_new_tokens, "max_new_tokens")
        request = GenerationRequest(  # checked before retrieval: bad settings fail the same either way
            question=arguments.question_text(question),
            chunks=(),
            max_new_tokens=self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens,
            mode=mode,
            ratio=ratio,
        ).validate()
        hits = self.retrieve(question, top_k=top_k, **retrieve_kwargs)
        if not hits:
            return None, hits
        request = replace(request, chunks=tuple((h.chunk_id, h.text) for h in hits))
        result = None
        for event in self.generator.stream(request):
            if isinstance(event, TokenEvent) and on_token is not None:
                on_token(event.text)
            elif isinstance(event, GenerationResult):
                result = event
        if result is not None and result.cache.dropped_chunks:  # left out to fit the model's context
            hits = hits[: len(hits) - result.cache.dropped_chunks]
        return result, hits

    @_open_only
    def warm_kv(self, doc_ids: str | Iterable[str] | None = None, progress: Callable | None = None) -> int:
        """Precompute chunk KV caches for these documents (all when None); returns chunks computed."""
        doc_ids = arguments.id_list(doc_ids, "doc_ids")
        if doc_ids == []:
            return 0
        gen = self.generator
        done = 0
        if doc_ids is not None:
            ids = [cid for d in doc_ids for cid in self.store.doc_chunk_ids(d)]
            batches = [list(self.store.get_chunks(ids).values())]
        else:
            batches = self.store.iter_chunks(256)
        for chunks in batches:
            done += gen.warm([(c.chunk_id, c.text) for c in chunks])
            if progress is not None:
                progress(len(chunks))
        return done

    @_open_only
    def merge(self) -> None:
        """Compact BM25 delta segments into one main segment now (normally done in the background)."""
        with self._write_lock():
            self.bm25.merge()

    @_open_only
    def stats(self) -> dict:
        counts = self.store.counts()
        first, last = self.store.time_range()
        out: dict = {
            "data_dir": str(Path(self.settings.data_dir).resolve()),
            **counts,
            "published_from": first,
            "published_to": last,
            "indexes": {},
        }
        for index in self.indexes():
            info = {"applied_seq": index.applied_seq}
            if hasattr(index, "stats"):
                info.update(index.stats())
            out["indexes"][index.name] = info
        out["disk_bytes"] = _tree_bytes(Path(self.settings.data_dir))
        return out

    def close(self) -> None:
        """Release the indexes' files and the store; later calls raise StoreError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._bm25 is not None:
            self._bm25.close()  # waits for a background merge to finish
        self._bm25 = self._dense = self._graph = self._retriever = None
        self.store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"this ChronoRAG on {self.settings.data_dir} is closed")

    def __enter__(self) -> "ChronoRAG":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
