"""The temporal graph as a DerivedIndex: ``catch_up`` drives it exactly like BM25 and FAISS.

``apply`` extracts from added chunks (in memory); ``commit`` writes the extraction rows, the
re-summarised time nodes and ``applied_seq`` in ONE store transaction, and updates the networkx
graph from those rows. A crash before commit leaves the index behind, never wrong.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from chronorag.graph import facts_store as fs
from chronorag.graph.extract import Extraction, Extractor, RuleExtractor, extract_chunks, runs_in_processes
from chronorag.graph.extract_pool import ExtractionPool, PendingExtraction
from chronorag.graph.model import FUNCTIONAL_RELATIONS, entity_key
from chronorag.graph.period_summaries import resummarise
from chronorag.graph.retrieve import GraphResult, GraphRetriever, QuestionParse, surface_candidates, unknown_entity
from chronorag.graph.temporal_graph import TemporalGraph
from chronorag.graph.timeline import ExtractiveSummariser, Summariser
from chronorag.periods import PERIOD_LABEL, lineage, parent_of
from chronorag.graph.timescope import parse_time_scope
from chronorag.indexing import DerivedIndex
from chronorag.query import GraphReading, Query
from chronorag.rwlock import ReadWriteLock
from chronorag.store import Store
from chronorag.types import Chunk

log = logging.getLogger(__name__)


_FIRST_SENTENCE = re.compile(r"\s*(.{4,}?(?:[。！？!?]|(?<=.{24})(?<!\b[A-Z][a-z])(?<!\b[A-Z][a-z][a-z])\.(?=\s)|$))", re.S)


def _lead(text: str, limit: int = 240) -> str:
    """The chunk's first sentence (a summary candidate for its day)."""
    m = _FIRST_SENTENCE.match(text[: limit * 2])
    return (m.group(1) if m else text).strip()[:limit]


def _table_rows(chunk: Chunk, ext: Extraction) -> tuple[tuple, list[tuple], list[tuple]]:
    """A chunk's graph_chunks row head (id, doc, date, lead) and its mention and fact rows; built where
    it was extracted (a worker process on bulk ingests)."""
    mentions, facts = fs.extraction_rows(chunk.chunk_id, ext)
    day = chunk.published_at.isoformat() if chunk.published_at else None
    return (chunk.chunk_id, chunk.doc_id, day, _lead(chunk.text)), mentions, facts


def _read_pending(cur) -> list[str]:
    """Time-node labels whose summaries a catch-up still owes (committed with the rows)."""
    row = cur.execute("SELECT value FROM graph_meta WHERE key = 'pending_summaries'").fetchone()
    return json.loads(row[0]) if row else []


# Fact rows a one-shot question about a whole period reads beyond its summaries' top items: the
# candidates' fill-up (ranked after those items) needs ~100 chunks, not a year's ~10^5 facts,
# whose reading would dominate the question's latency.
PERIOD_QUERY_ROWS = 1000


def _summary_fact_keys(summaries: dict[str, dict], label: str) -> set[str]:
    """Facts that the summaries of ``label`` and its direct children rank first."""
    out = set()
    for period, row in summaries.items():
        if period == label or parent_of(period) == label:
            out.update(it["ref"][5:] for it in row["top_items"] if it["ref"].startswith("fact:"))
    return out


@dataclass(frozen=True)
class _QuestionView:
    """The graph a question was parsed against and the parse: a subgraph read for this question
    alone, or the whole loaded graph (``shared``: read under the index's read lock)."""

    retriever: GraphRetriever
    parsed: QuestionParse
    shared: bool


class GraphIndex(DerivedIndex):
    """Entities, timestamped facts and the time hierarchy, kept in step with the store.

    Reads come from many threads: a question is served either from a subgraph read for it alone
    (one-shot commands, the default) or from the whole graph loaded in memory (:meth:`load`, a
    server), which writers change only under the write side of :attr:`_rw`.
    """

    name = "graph"
    read_backlog = 500  # rule extraction of a few hundred chunks takes about a second

    def __init__(
        self,
        store: Store,
        extractor: Extractor | None = None,
        summariser: Summariser | None = None,
        workers: int = 1,
    ) -> None:
        self.store = store
        self.workers = max(1, int(workers))
        self.extractor = extractor or RuleExtractor()
        self.summariser = summariser or ExtractiveSummariser()
        fs.ensure_schema(store)
        self._applied_seq = int(fs.read_meta(store, "applied_seq") or 0)
        self._graph: TemporalGraph | None = None
        self._pending_add: dict[int, tuple[tuple, list[tuple], list[tuple]]] = {}  # chunk id -> table rows
        self._pending_del: set[int] = set()
        self.extract_seconds = 0.0  # time apply() waited on extraction
        self._pool: ExtractionPool | None = None  # open for the length of one catch-up
        self._prefetched: PendingExtraction | None = None
        self.partial_queries = True
        self._rw = ReadWriteLock()  # guards the loaded graph against a writer's in-place changes
        self._load_lock = threading.Lock()
        self._summaries = _SummaryCache(store)

    # ------------------------------------------------------- DerivedIndex
    @property
    def applied_seq(self) -> int:
        return self._applied_seq

    def refresh(self) -> bool:
        """Adopt graph rows another process committed: re-read ``applied_seq`` and drop this
        process's in-memory views of the tables (reloaded on use). Without this a long-lived
        reader saw the graph as behind after every write elsewhere and re-extracted the writer's
        chunks in its query path, holding the write lock. Not while changes are pending here."""
        if self._pending_add or self._pending_del:
            return False
        stored = int(fs.read_meta(self.store, "applied_seq") or 0)
        if stored == self._applied_seq:
            return False
        with self._rw.write():
            self._applied_seq = stored
            self._graph = None
        return True

    @property
    def extractor_changed(self) -> bool:
        """True when the stored rows came from another extractor (reset() and catch up to redo them)."""
        stored = fs.read_meta(self.store, "extractor")
        return stored is not None and stored != self.extractor.name

    def before_catch_up(self) -> None:
        if self.extractor_changed:  # the rows came from another extractor (rule -> llm): redo them all
            log.warning("graph extractor changed to %s; re-extracting every chunk", self.extractor.name)
            self.reset()

    def prefetch(self, added: Sequence[Chunk]) -> None:
        """Start extracting the next batch in the workers; ``catch_up`` calls this before committing
        the current one, so extraction and the parent's writes overlap."""
        self._drop_prefetched()
        if runs_in_processes(self.extractor, len(added), self.workers):
            self._prefetched = self._extraction_pool().submit(added)

    def end_catch_up(self) -> None:
        """Stop the workers (after a catch-up, finished or not)."""
        self._drop_prefetched()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _drop_prefetched(self) -> None:
        if self._prefetched is not None:
            self._prefetched.cancel()
            self._prefetched = None

    def _extraction_pool(self) -> ExtractionPool:
        if self._pool is None:
            self._pool = ExtractionPool(self.extractor, self.workers, _table_rows)
        return self._pool

    def _extract(self, added: Sequence[Chunk]) -> dict[int, object]:
        pending = self._prefetched
        if pending is not None and pending.chunk_ids == tuple(c.chunk_id for c in added):
            self._prefetched = None
            return pending.result()
        self._drop_prefetched()
        if self._pool is not None and runs_in_processes(self.extractor, len(added), self.workers):
            return self._pool.submit(added).result()
        return extract_chunks(self.extractor, added, self.workers, finish=_table_rows)

    def apply(self, added: Sequence[Chunk], deleted: Sequence[int]) -> None:
        for cid in deleted:
            self._pending_add.pop(int(cid), None)
            self._pending_del.add(int(cid))
        if added:
            t0 = time.perf_counter()
            results = self._extract(added)
            self.extract_seconds += time.perf_counter() - t0
            for c in added:
                self._pending_add[c.chunk_id] = results.get(c.chunk_id) or _table_rows(c, Extraction())

    def commit(self, seq: int) -> None:
        """Write the pending rows; the in-memory graph is updated only when it is loaded (a server),
        so a one-shot ingest into a large store never reads the whole graph."""
        with self._rw.write():
            self._commit(seq)

    def _commit(self, seq: int) -> None:
        graph = self._graph
        now = time.time()
        try:
            with self.store.transaction() as cur:
                # ids are never reused, but an id applied twice must replace its rows, not duplicate them
                dels = sorted(self._pending_del | fs.existing_chunks(cur, list(self._pending_add)))
                labels: set[str] = set()
                if dels:
                    labels |= fs.touched_labels(cur, dels)
                    touched = fs.delete_chunks(cur, dels)
                    if graph is not None:
                        graph.remove_chunks(dels, touched, fs.mentions_of(cur, touched), fs.facts_touching(cur, touched))
                db_chunks, db_mentions, db_facts = [], [], []
                for cid, (chunk_row, mentions, facts) in self._pending_add.items():
                    db_chunks.append((*chunk_row, self.extractor.name, now))
                    db_mentions.extend(mentions)
                    db_facts.extend(facts)
                fs.insert_rows(cur, db_chunks, db_mentions, db_facts)
                if graph is not None:
                    graph.add([fs._chunk_row(c[:4] + c[5:]) for c in db_chunks],
                              [fs.MentionRow._make(m[:5]) for m in db_mentions],
                              [fs._fact_row(f) for f in db_facts])
                labels.update(c[2][:10] for c in db_chunks if c[2])  # the day of each new chunk
                labels.update(f[15] for f in db_facts if f[15])  # the time node of each new fact
                # time nodes are re-summarised once per catch-up (finish_catch_up), not per batch: a
                # bulk ingest touches most days in every batch. Until then the touched labels are
                # recorded with the rows, so a crash in between loses no summary work.
                pending = set(_read_pending(cur)).union(*(lineage(lab) for lab in labels))
                fs.write_meta(cur, "pending_summaries", json.dumps(sorted(pending)))
                fs.write_meta(cur, "applied_seq", str(int(seq)))
                fs.write_meta(cur, "extractor", self.extractor.name)
        except BaseException:
            self._graph = None  # the in-memory graph may be ahead of the rolled-back tables: reload lazily
            raise
        self._pending_add.clear()
        self._pending_del.clear()
        self._applied_seq = int(seq)

    def finish_catch_up(self) -> None:
        """Re-summarise the time nodes the batches since the last call touched (from the tables)."""
        with self._rw.write():
            self._resummarise()

    def _resummarise(self) -> None:
        try:
            with self.store.transaction() as cur:
                pending = _read_pending(cur)
                if not pending:
                    return
                rows = resummarise(cur, pending, self.summariser)
                fs.write_summaries(cur, rows)
                fs.write_meta(cur, "pending_summaries", "[]")
        except BaseException:
            self._graph = None
            raise
        self._summaries.clear()
        if self._graph is not None:
            timeline = self._graph.timeline
            timeline.restore({r[0]: dict(zip(("period", "level", "summary", "top_items", "n_facts", "n_chunks"), r))
                              for r in rows if r[4] or r[5]})
            for r in rows:
                if not (r[4] or r[5]):
                    timeline.drop(r[0])

    def reset(self) -> None:
        with self._rw.write():
            with self.store.transaction() as cur:
                fs.clear_all(cur)
            self._pending_add.clear()
            self._pending_del.clear()
            self._graph = None  # empty tables: loads (empty) on first use
            self._applied_seq = 0

    # ----------------------------------------------------------- the graph
    @property
    def graph(self) -> TemporalGraph:
        """The networkx-backed graph, rebuilt from the tables on first use (once, however many
        threads ask)."""
        graph = self._graph
        if graph is None:
            with self._load_lock, self._rw.write():
                if self._graph is None:
                    self._graph = self.rebuild_from_tables()
                graph = self._graph
        return graph

    def rebuild_from_tables(self) -> TemporalGraph:
        g = TemporalGraph()
        g.load(*fs.all_rows(self.store))
        g.timeline.restore(fs.read_summaries(self.store))
        return g

    @property
    def retriever(self) -> GraphRetriever:
        return GraphRetriever(self.graph)

    def load(self) -> TemporalGraph:
        """Load the whole graph now (a long-running server does this once; one-shot CLI calls
        are served from partial subgraphs read straight from the tables instead)."""
        return self.graph

    def subgraph(self, keys: Iterable[str] = (), period: str | None = None, period_rows: int | None = None) -> TemporalGraph:
        """A graph holding the facts touching ``keys`` (plus the facts their validity depends on)
        and/or the facts of a period, read from the tables without loading everything.

        ``period_rows`` bounds the period's fact rows (retrieval only needs what the period's and its
        children's summaries rank first, which is always added, plus some to fill up candidates).
        """
        keys = set(keys)
        facts = fs.facts_touching(self.store, keys) if keys else []
        summaries = self._cached_summaries()
        if period:
            facts += fs.facts_in_period(self.store, period, limit=period_rows)
            if period_rows is not None:
                facts += fs.facts_by_key(self.store, _summary_fact_keys(summaries, period))
        anchors = {f.object_key if FUNCTIONAL_RELATIONS[f.relation] == "object" else f.subject_key
                   for f in facts if f.relation in FUNCTIONAL_RELATIONS} - keys
        if anchors:
            facts += fs.functional_rows_of(self.store, anchors)
        facts = list({(r.chunk_id, r.fact_key): r for r in facts}.values())
        mentions = fs.mentions_of(self.store, keys) if keys else []
        chunk_ids = {r.chunk_id for r in facts} | {m.chunk_id for m in mentions}
        seen = {(m.chunk_id, m.entity_key, m.name) for m in mentions}
        ent_keys = keys | {r.subject_key for r in facts} | {r.object_key for r in facts}
        for m in fs.mentions_in_chunks(self.store, {r.chunk_id for r in facts}):
            if m.entity_key in ent_keys and (m.chunk_id, m.entity_key, m.name) not in seen:
                mentions.append(m)
        g = TemporalGraph()
        g.load(fs.chunks_by_id(self.store, chunk_ids), mentions, facts)
        if period:
            for label in summaries:
                if label.startswith(period[:4]):
                    g.timeline._node(label)
        g.timeline.restore(summaries)
        return g

    def _cached_summaries(self) -> dict:
        return self._summaries.get()

    def _partial_retriever(self, question: str, now: datetime) -> GraphRetriever:
        found = fs.keys_for_aliases(self.store, surface_candidates(question))
        keys = set().union(*found.values()) if found else set()
        period = None
        if not keys:
            scope = parse_time_scope(question, now)
            if scope.start is not None:
                period = GraphRetriever.period_label(scope)
        return GraphRetriever(self.subgraph(keys, period, period_rows=PERIOD_QUERY_ROWS))

    @contextmanager
    def _question_graph(self, question: str, now: datetime) -> Iterator[tuple[GraphRetriever, bool]]:
        """The graph to serve one question from, held for reading: the loaded graph when there
        is one (shared), else a subgraph read from the tables for this question alone."""
        if self._graph is None and self.partial_queries:
            yield self._partial_retriever(question, now), False
            return
        graph = self.graph
        with self._rw.read():
            yield GraphRetriever(self._graph or graph), True

    # ------------------------------------------------------------- queries
    def read_question(self, text: str, now: datetime | None = None) -> GraphReading:
        """The graph's part of query analysis (:class:`chronorag.query.QuestionReader`): the time
        scope with event anchors dated from the facts, the entities named, the relations asked,
        and whether a fact of an asked relation holds in that scope."""
        now = now or datetime.now(timezone.utc)
        with self._question_graph(text, now) as (retriever, shared):
            parsed = retriever.parse(text, now)
            evidence = retriever.has_relation_evidence(parsed)
        return GraphReading(parsed.scope, tuple(parsed.entities), tuple(parsed.relations), parsed.broad,
                            evidence, view=_QuestionView(retriever, parsed, shared))

    def _retrieve_read(self, reading: GraphReading, k: int) -> GraphResult:
        view = reading.view
        if not isinstance(view, _QuestionView):
            raise ValueError("this question was read by another graph")
        if not view.shared:
            return view.retriever.retrieve_parsed(view.parsed, k)
        graph = self.graph
        with self._rw.read():  # the loaded graph may have been replaced since the question was read
            return GraphRetriever(self._graph or graph).retrieve_parsed(view.parsed, k)

    def retrieve(self, question: str | Query, k: int = 100, now: datetime | None = None) -> GraphResult:
        """Ranked (chunk_id, score) candidates from the temporal subgraph, plus facts and summaries."""
        if isinstance(question, Query):
            reading = question.graph or self.read_question(question.text, question.now)
        else:
            reading = self.read_question(question, now)
        return self._retrieve_read(reading, k)

    def search(self, query: Query, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The Searcher interface of chronorag.retrieval.hybrid, so fusion can use the graph directly."""
        cands = self.retrieve(query, k=max(k * 4, k) if allowed is not None else k).candidates
        if allowed is not None:
            ok = set(int(x) for x in allowed)
            cands = [(c, s) for c, s in cands if c in ok]
        cands = cands[:k]
        return (np.array([c for c, _ in cands], dtype=np.int64), np.array([s for _, s in cands], dtype=np.float32))

    def entity_timeline(self, name: str) -> list[dict]:
        """Facts about one entity, oldest first (``chronorag graph entity NAME``)."""
        if not isinstance(name, str):
            raise ValueError(f"entity name must be a string, got {type(name).__name__}")
        if self._graph is None and self.partial_queries:
            found = fs.keys_for_aliases(self.store, [name.strip(), entity_key(name)])
            keys = set().union(*found.values()) if found else set()
            if not keys:  # suggest from the aliases sharing the first two characters typed
                raise unknown_entity(name, fs.names_by_alias_prefix(self.store, name.strip()[:2]))
            return GraphRetriever(self.subgraph(keys)).entity_timeline(name)
        graph = self.graph
        with self._rw.read():
            return GraphRetriever(self._graph or graph).entity_timeline(name)

    def period_summary(self, period: str, top: int = 10) -> dict:
        """Summary and top facts of '2023', '2023-Q3', '2023-08' or '2023-08-11' (``chronorag graph period``)."""
        if not isinstance(period, str):
            raise ValueError(f"period must be a string such as '2023-Q3', got {type(period).__name__}")
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise ValueError(f"top must be an integer >= 0, got {top!r}")
        if self._graph is None and self.partial_queries:
            sub = self.subgraph(period=period.strip()) if PERIOD_LABEL.match(period.strip()) else TemporalGraph()
            return GraphRetriever(sub).period_summary(period, top)
        graph = self.graph
        with self._rw.read():
            return GraphRetriever(self._graph or graph).period_summary(period, top)

    def stats(self) -> dict:
        rows = self.store.query("SELECT (SELECT COUNT(*) FROM graph_facts), (SELECT COUNT(*) FROM graph_mentions), (SELECT COUNT(*) FROM graph_chunks)")[0]
        out = {"fact_rows": rows[0], "mention_rows": rows[1], "chunks_extracted": rows[2], "extractor": self.extractor.name}
        graph = self._graph
        if graph is not None:
            with self._rw.read():
                out.update(graph.stats())
        else:  # the same counts from the tables, without loading the graph
            ents, facts, nodes = self.store.query(
                "SELECT (SELECT COUNT(DISTINCT entity_key) FROM graph_mentions),"
                " (SELECT COUNT(DISTINCT fact_key) FROM graph_facts), (SELECT COUNT(*) FROM graph_summaries)")[0]
            out.update({"entities": ents, "facts": facts, "time_nodes": nodes})
        return out


class _SummaryCache:
    """The period summaries as of the graph's last commit, read once per committed version
    (every period question reads them). Safe across threads: the version and its rows are
    swapped together, and two threads reading one new version at once both read the same rows."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._entry: tuple[str | None, dict] | None = None
        self._lock = threading.Lock()

    def get(self) -> dict:
        version = fs.read_meta(self.store, "applied_seq")
        entry = self._entry
        if entry is None or entry[0] != version:
            rows = fs.read_summaries(self.store)
            with self._lock:
                self._entry = entry = (version, rows)
        return entry[1]

    def clear(self) -> None:
        """New summaries under the same version (they are written after the rows they cover)."""
        with self._lock:
            self._entry = None
