"""The facade the CLI, the REST API and the evals share: insert, delete, retrieve, answer.

It owns one store and the parts built from it (:mod:`chronorag.components`) and keeps them in
step: every write goes to the store first, then each derived index catches up from the store's
change log under the data-directory lock, so two writers never write the same index files and a
crash only leaves an index behind. Reads answer from what the indexes last committed: a small
backlog is applied on the way, a large one is left to writers (``sync``) and reported as
``stale``. One engine may be shared by the threads of a server.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chronorag import arguments
from chronorag.components import Components
from chronorag.config import Settings, load_settings
from chronorag.datadir import DataDir
from chronorag.indexing import DerivedIndex, backlog, catch_up, trim_change_log
from chronorag.ingest.pipeline import BatchHook, IngestReport, ingest_documents
from chronorag.periods import resolve_tz
from chronorag.query import Query
from chronorag.results import (
    Answer, AnswerTimings, Citation, EntityTimeline, Hits, IndexState, PeriodSummary, Stats, SyncResult, TimelineFact,
)
from chronorag.store import Store, StoreError
from chronorag.types import Document, LoadError

if TYPE_CHECKING:
    from chronorag.kvcache import TokenEvent

IndexProgress = Callable[[str, int], None]  # (index name, log entries or chunks just applied)
# Beyond this many changes between the query's most and least advanced index, listing the chunks
# only some hold would cost more than the read itself; such a read reports the lag as stale.
MAX_HIDDEN_CHANGES = 50_000


def _open_only(method):
    """Methods of a closed ChronoRAG raise StoreError instead of reopening indexes or failing in SQLite."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        self._check_open()
        return method(self, *args, **kwargs)

    return checked


class ChronoRAG:
    def __init__(self, settings: Settings | None = None, embedder: Any = None, create: bool = True, *,
                 generator: Any = None) -> None:
        """``create=False`` only opens an existing store (read commands), never makes one.
        ``embedder`` / ``generator`` replace the ones the settings name (any object with their
        interface: :class:`~chronorag.retrieval.embedder.Embedder`, :class:`~chronorag.kvcache.Generator`)."""
        settings = settings or load_settings()
        self.settings = replace(settings, data_dir=Path(settings.data_dir)).validate()  # Settings(...) by hand
        self.data_dir = DataDir(self.settings.data_dir, create=create)
        self.store = Store(self.settings.store_path, create=create)
        self._parts = Components(self.settings, self.store, self.data_dir, embedder, generator)
        self._closed = False

    # ------------------------------------------------------------ components
    @property
    @_open_only
    def bm25(self):
        return self._parts.bm25

    @property
    def embedder(self):
        return self._parts.embedder

    @property
    @_open_only
    def dense(self):
        return self._parts.dense

    @property
    @_open_only
    def graph(self):
        return self._parts.graph

    @property
    @_open_only
    def retriever(self):
        """The hybrid retriever (its ``searchers`` by name); benchmarks swap one to compare."""
        return self._parts.retriever

    @property
    @_open_only
    def generator(self):
        """The answer generator, built on first use; its chunk KV caches follow the store's log."""
        return self._parts.generator

    @_open_only
    def indexes(self) -> list[DerivedIndex]:
        return self._parts.indexes()

    @_open_only
    def warm_up(self, generator: bool = True) -> None:
        """Load now what a server wants loaded before its first request: the indexes, the whole
        graph in memory, the embedder's model and (``generator``) the answer model."""
        parts = self._parts
        parts.indexes()
        parts.retriever
        parts.analyzer
        if parts.graph is not None:
            parts.graph.load()
        if parts.embedder is not None:
            parts.embedder.encode_query("warm up")
        if generator:
            parts.generator.load()

    # ------------------------------------------------------------- writing
    @_open_only
    def sync(self, progress: IndexProgress | None = None) -> SyncResult:
        """Bring every derived index in step with the store (``chronorag sync``): the work reads
        leave to writers. Resumable: each window of the log is committed as it is applied, so an
        interrupted sync (even kill -9) keeps its work and a re-run finishes it."""
        with self.data_dir.write_lock():
            applied = self._catch_up_locked(self._parts.indexes(), None, progress)
        newest = self.store.max_seq()
        stale = {ix.name: backlog(self.store, ix) for ix in self._parts.indexes() if ix.applied_seq < newest}
        return SyncResult(applied, {k: v for k, v in stale.items() if v}, newest)

    def _catch_up_locked(self, indexes: Sequence[DerivedIndex], report: IngestReport | None,
                         progress: IndexProgress | None) -> dict[str, int]:
        applied: dict[str, int] = {}
        for index in indexes:
            t0 = time.perf_counter()
            step = None if progress is None else functools.partial(progress, index.name)
            applied[index.name] = catch_up(self.store, index, progress=step)
            if report is not None:
                report.add_time(index.name, time.perf_counter() - t0)
        held = {ix.name: ix.applied_seq for ix in self._parts.built_indexes()}
        self.store.purge_retired(min(held.values(), default=self.store.max_seq()))
        self.store.record_index_progress(held)
        trim_change_log(self.store, held)
        return applied

    @_open_only
    def insert(
        self,
        records: Iterable[Document | LoadError] | Document,
        progress: Callable[[int], None] | None = None,
        index_progress: IndexProgress | None = None,
        on_batch: BatchHook | None = None,
    ) -> IngestReport:
        """Ingest documents (new, changed or unchanged) and update every index;
        ``index_progress(index_name, n)`` as each index catches up. ``on_batch(cursor, counts,
        errors)`` runs inside each batch's store transaction (see :func:`ingest_documents`): an
        ingestion job's progress commits with the documents it counts."""
        if isinstance(records, Document):
            records = [records]
        elif isinstance(records, (str, bytes, dict)) or not isinstance(records, Iterable):
            raise ValueError(f"records must be Documents (one or an iterable), got {type(records).__name__}")
        s = self.settings
        with self.data_dir.write_lock():
            report = ingest_documents(self.store, records, chunk_size=s.chunk_size, chunk_overlap=s.chunk_overlap,
                                      batch_size=s.ingest_batch, workers=s.workers, progress=progress,
                                      on_batch=on_batch)
            self._catch_up_locked(self._parts.indexes(), report, index_progress)
        return report

    @_open_only
    def delete(self, doc_ids: str | Iterable[str]) -> list[str]:
        """Remove documents from the store and every index; returns the ids that existed."""
        ids = arguments.id_list(doc_ids, "doc_ids")
        if ids is None:
            raise ValueError("doc_ids must be a string or a collection of strings, got None")
        with self.data_dir.write_lock():
            deleted = self.store.delete_documents(ids)
            self._catch_up_locked(self._parts.indexes(), None, None)
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
    def merge(self) -> None:
        """Compact BM25 delta segments into one main segment now (normally done in the background)."""
        with self.data_dir.write_lock():
            self._parts.bm25.merge()

    # ------------------------------------------------------------- reading
    def _prepare_read(self) -> tuple[dict[str, int], list[DerivedIndex]]:
        """Adopt what other processes committed, apply a backlog small enough to cost about a
        second, and say which indexes are still behind (name -> entries) and which serve reads."""
        indexes = self._parts.indexes()
        for ix in indexes:
            ix.refresh()
        newest = self.store.max_seq()
        behind = {ix.name: backlog(self.store, ix) for ix in indexes if ix.applied_seq < newest}
        small = [ix for ix in indexes if 0 < behind.get(ix.name, 0) <= ix.read_backlog]
        if small:
            with self.data_dir.write_lock(wait=False) as got:
                if got:  # else a writer is at work and brings them up; a read never waits for it
                    self._catch_up_locked(small, None, None)
                    for ix in small:
                        behind[ix.name] = backlog(self.store, ix) if ix.applied_seq < self.store.max_seq() else 0
        stale = {name: n for name, n in behind.items() if n}
        # an index that never committed anything holds nothing to read (a store ingested without
        # vectors): leave it out rather than, say, load a model to embed the question for nothing
        serving = [ix for ix in indexes if not (ix.name in stale and ix.applied_seq == 0)]
        return stale, serving

    def _unseen_by_some(self, retrievers: Sequence[str], serving: Sequence[DerivedIndex]) -> frozenset[int]:
        """Chunks some of the query's indexes hold and others have not applied yet (an ingest in
        progress): hidden, so a document is visible through every index or through none."""
        seqs = [ix.applied_seq for ix in serving if ix.name in retrievers]
        if len(seqs) < 2 or min(seqs) == max(seqs) or max(seqs) - min(seqs) > MAX_HIDDEN_CHANGES:
            return frozenset()
        return frozenset(self.store.chunk_ids_added_after(min(seqs)))

    @_open_only
    def read_state(self) -> dict[str, int]:
        """What a read does first: adopt other processes' commits and apply a backlog of about a
        second's work; returns the indexes still behind (name -> entries)."""
        return self._prepare_read()[0]

    def _request(self, question: str, top_k: int = 8, since: Any = None, until: Any = None, doc_ids: Any = None,
                 sources: Any = None, retrievers: Any = None) -> arguments.RetrievalRequest:
        return arguments.retrieval_request(question, top_k, since, until, doc_ids, sources, retrievers,
                                           resolve_tz(self.settings.default_tz))

    @_open_only
    def analyse(self, question: str, now: datetime | None = None, use_graph: bool = True, **request: Any) -> Query:
        """The question as every stage reads it (see :class:`chronorag.query.Query`), against the
        indexes as they stand (no catch-up); ``request`` takes :meth:`retrieve`'s arguments."""
        checked = self._request(question, **request)
        return self._analyse(checked, use_graph, now, tuple(self._parts.retriever.searchers))

    def _analyse(self, request: arguments.RetrievalRequest, use_graph: bool, now: datetime | None,
                 available: Sequence[str]) -> Query:
        r = request
        return self._parts.analyzer.analyse(r.question, available, r.filters, r.top_k, r.retrievers, use_graph, now)

    @_open_only
    def retrieve(
        self,
        question: str,
        top_k: int = 8,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        doc_ids: Iterable[str] | None = None,
        sources: Iterable[str] | None = None,
        retrievers: Sequence[str] | None = None,
        use_graph: bool = True,
    ) -> Hits:
        """Hybrid retrieval (BM25 + dense + temporal graph, fused with RRF) under optional filters.

        ``retrievers`` picks sources explicitly; otherwise every enabled one that applies to the
        question (see :meth:`QueryAnalyzer.analyse`). Naive ``since``/``until`` are read in the
        settings' ``default_tz``; a date, or a string naming a year, month or day, stands for that
        whole period. ``doc_ids``/``sources``: None means no restriction, an empty collection
        matches nothing. The result is a list of hits whose ``stale`` names the indexes that were
        behind the store (and by how much) when it was read.
        """
        request = self._request(question, top_k, since, until, doc_ids, sources, retrievers)
        stale, serving = self._prepare_read()
        available = tuple(self._parts.retriever.searchers)
        if request.retrievers is None:  # chosen retrievers: an index that holds nothing yet sits out
            names = {ix.name for ix in serving}
            available = tuple(r for r in available if r in names)
        query = self._analyse(request, use_graph, None, available)
        return self.search(query, stale, self._unseen_by_some(query.retrievers, serving))

    def search(self, query: Query, stale: dict[str, int] | None = None, hidden: frozenset[int] = frozenset()) -> Hits:
        """Fused hits for an analysed query (what ``retrieve`` does after analysis); ``hidden``
        chunks are left out of every retriever's list."""
        f = query.filters
        if (f.doc_ids is not None and not f.doc_ids) or (f.sources is not None and not f.sources):
            return Hits([], stale, query)
        return Hits(self._parts.retriever.search(query, hidden), stale, query)

    @_open_only
    def answer_stream(
        self,
        question: str,
        top_k: int = 4,
        max_new_tokens: int | None = None,
        mode: str | None = None,
        ratio: float | None = None,
        **retrieve_kwargs: Any,
    ) -> Iterator["TokenEvent | Answer"]:
        """Retrieve, then generate from the chunks' reusable KV caches: the answer's token events
        as they come, then the :class:`Answer`. Chunks that overflow the model's context are left
        out lowest-ranked first.

        With nothing retrieved the model is not asked (an answer from no documents would be its
        own guess presented as grounded): the only event is an Answer whose ``text`` is None.
        """
        from chronorag.kvcache import GenerationRequest, GenerationResult, TokenEvent

        t0 = time.perf_counter()
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
        retrieve_ms = (time.perf_counter() - t0) * 1000
        if not hits:
            yield Answer(question, None, (), (), AnswerTimings(retrieve_ms, 0.0, retrieve_ms),
                         reason="no documents matched the question and filters; nothing to answer from",
                         stale=hits.stale, query=hits.query)
            return
        request = replace(request, chunks=tuple((h.chunk_id, h.text) for h in hits))
        result = None
        for event in self.generator.stream(request):
            if isinstance(event, TokenEvent):
                yield event
            elif isinstance(event, GenerationResult):
                result = event
        if result is None:
            from chronorag.kvcache import GenerationError

            raise GenerationError(f"the {self.settings.generator} backend ended without a result")
        used = list(hits)
        if result.cache.dropped_chunks:  # left out to fit the model's context
            used = used[: len(used) - result.cache.dropped_chunks]
        total_ms = (time.perf_counter() - t0) * 1000
        timings = AnswerTimings(retrieve_ms, retrieve_ms + result.timings.ttft_s * 1000, total_ms, result.timings)
        yield Answer(question, result.text, tuple(Citation.of(n, h) for n, h in enumerate(used, 1)), tuple(used),
                     timings, cache=result.cache, finish_reason=result.finish_reason, stale=hits.stale,
                     query=hits.query)

    def answer(self, question: str, top_k: int = 4, **kwargs: Any) -> Answer:
        """:meth:`answer_stream` without the token events."""
        for event in self.answer_stream(question, top_k=top_k, **kwargs):
            if isinstance(event, Answer):
                return event
        raise AssertionError("answer_stream ended without an Answer")  # pragma: no cover

    @_open_only
    def warm_kv(self, doc_ids: str | Iterable[str] | None = None, progress: Callable[[int], None] | None = None) -> int:
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

    # -------------------------------------------------------------- graph views
    def _graph_or_fail(self):
        graph = self._parts.graph
        if graph is None:
            raise ValueError("the graph is disabled in settings (graph = 'none')")
        return graph

    @_open_only
    def entity_timeline(self, name: str) -> EntityTimeline:
        """Every fact the graph holds about an entity, oldest first (UnknownEntity, a ValueError
        that suggests close names, when it knows none by that name)."""
        facts = self._graph_or_fail().entity_timeline(name)
        return EntityTimeline(name, tuple(TimelineFact.from_dict(f) for f in facts))

    @_open_only
    def period_summary(self, period: str, top: int = 10) -> PeriodSummary:
        """Summary, top facts and children of '2023', '2023-Q3', '2023-08' or '2023-08-11'."""
        return PeriodSummary.from_dict(self._graph_or_fail().period_summary(period, top))

    @_open_only
    def stats(self) -> Stats:
        counts = self.store.counts()
        first, last = self.store.time_range()
        newest = self.store.max_seq()
        states = tuple(
            IndexState(ix.name, ix.applied_seq, backlog(self.store, ix) if ix.applied_seq < newest else 0, ix.stats())
            for ix in self._parts.indexes()
        )
        return Stats(data_dir=str(self.settings.data_dir.resolve()), published_from=first, published_to=last,
                     indexes=states, disk_bytes=self.data_dir.tree_bytes(), **counts)

    # ---------------------------------------------------------------- life
    def close(self) -> None:
        """Release the indexes' files and the store; later calls raise StoreError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._parts.close()
        self.store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"this ChronoRAG on {self.settings.data_dir} is closed")

    def __enter__(self) -> "ChronoRAG":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
