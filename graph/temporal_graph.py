"""The in-memory temporal graph (networkx MultiDiGraph) derived from the graph tables.

Nodes are ``('entity', key)`` and ``('time', label)`` tuples (never strings split on a separator);
each fact is one edge keyed by its fact key, so the same relation at two times is two edges.
Additions are applied incrementally; deletions rebuild the touched entities from stored rows.
"""

from __future__ import annotations

from datetime import datetime
from collections import defaultdict
from collections.abc import Iterable, Sequence
import networkx as nx

from chronorag.graph.facts_store import ChunkRow, FactRow, MentionRow
from chronorag.graph.model import Entity, Fact, assign_validity, evidence_rank, functional_group, merged_confidence
from chronorag.graph.timeline import Timeline
from chronorag.periods import day_label, level_of, node_for_span


def _same_evidence(a: Fact, b: Fact) -> bool:
    return (a.sources, a.t_start, a.t_end, a.granularity, a.description, a.confidence, a.recorded_at) == (
        b.sources, b.t_start, b.t_end, b.granularity, b.description, b.confidence, b.recorded_at)


def entity_node(key: str) -> tuple[str, str]:
    return ("entity", key)


def time_node(label: str) -> tuple[str, str]:
    return ("time", label)


class TemporalGraph:
    def __init__(self) -> None:
        self._nx: nx.MultiDiGraph | None = None
        self.entities: dict[str, Entity] = {}
        self.facts: dict[str, Fact] = {}
        self.timeline = Timeline()
        self.chunks: dict[int, ChunkRow] = {}
        self.chunk_facts: dict[int, set[str]] = defaultdict(set)
        # counts in plain dicts: a full corpus creates hundreds of thousands, and Counter() costs
        # far more to create than dict()
        self.chunk_entities: dict[int, dict[str, int]] = defaultdict(dict)
        self.entity_facts: dict[str, set[str]] = defaultdict(set)
        self.entity_chunks: dict[str, set[int]] = defaultdict(set)
        self._names: dict[str, dict[str, int]] = defaultdict(dict)
        self._types: dict[str, dict[str, int]] = defaultdict(dict)
        self._fact_rows: dict[str, dict[int, FactRow]] = defaultdict(dict)
        self.alias_index: dict[str, set[str]] = defaultdict(set)  # casefolded surface form -> keys

    # ------------------------------------------------------------ building
    def add(self, chunks: Sequence[ChunkRow], mentions: Sequence[MentionRow], facts: Sequence[FactRow]) -> None:
        """Incrementally add new chunks with their extraction rows."""
        self._nx = None
        for c in chunks:
            self.chunks[c.chunk_id] = c
            if c.published_at is not None:
                label = day_label(c.published_at)
                self.timeline.add_chunk(label, c.chunk_id)
        touched: set[str] = set()
        new_seen: dict[str, list[datetime]] = defaultdict(list)  # dates of the chunks added per entity
        chunks = self.chunks
        for m in mentions:
            self._add_mention(m)
            touched.add(m[1])
            c = chunks.get(m[0])
            if c is not None and c.published_at is not None:
                new_seen[m[1]].append(c.published_at)
        changed_facts: set[str] = set()
        for r in facts:
            self._fact_rows[r.fact_key][r.chunk_id] = r
            changed_facts.add(r.fact_key)
            touched.update((r.subject_key, r.object_key))
        self._refresh_entities(touched, new_seen)
        self._refresh_facts(changed_facts)

    def load(self, chunks: Sequence[ChunkRow], mentions: Sequence[MentionRow], facts: Sequence[FactRow]) -> None:
        """Full rebuild from the tables."""
        self.__init__()
        self.add(chunks, mentions, facts)

    def remove_chunks(self, chunk_ids: Iterable[int], touched: set[str], mentions: Sequence[MentionRow], facts: Sequence[FactRow]) -> None:
        """Drop chunks, then rebuild the ``touched`` entities from their surviving rows."""
        self._nx = None
        for cid in chunk_ids:
            c = self.chunks.pop(cid, None)
            if c is not None and c.published_at is not None:
                label = day_label(c.published_at)
                self.timeline.remove_chunk(label, cid)
            self.chunk_facts.pop(cid, None)
            self.chunk_entities.pop(cid, None)
        old_facts: set[str] = set()
        for k in touched:
            old_facts |= self.entity_facts.get(k, set())
            for cid in self.entity_chunks.pop(k, set()):
                if cid in self.chunk_entities:
                    self.chunk_entities[cid].pop(k, None)
            self._names.pop(k, None)
            self._types.pop(k, None)
        for fk in old_facts:
            self._fact_rows.pop(fk, None)
        for m in mentions:
            self._add_mention(m)
        for r in facts:
            self._fact_rows[r.fact_key][r.chunk_id] = r
        self._refresh_facts(old_facts | {r.fact_key for r in facts})
        self._refresh_entities(touched)

    def _add_mention(self, m: MentionRow) -> None:
        cid, key, name, typ, n = m
        names = self._names[key]
        names[name] = names.get(name, 0) + n
        types = self._types[key]
        types[typ] = types.get(typ, 0) + n
        self.entity_chunks[key].add(cid)
        counts = self.chunk_entities[cid]
        counts[key] = counts.get(key, 0) + n

    def _refresh_entities(self, keys: Iterable[str], new_seen: dict[str, list[datetime]] | None = None) -> None:
        """Rebuild entities from their mention counts. ``new_seen`` (adds only: an entity's chunks
        only grew) extends first/last seen from the new chunks' dates instead of rescanning every
        chunk of the entity, which for common entities made each ingest batch cost O(corpus)."""
        for k in keys:
            names = self._names.get(k)
            if not names:
                if k in self.entities:
                    for alias in self.entities[k].aliases:
                        self.alias_index[alias.casefold()].discard(k)
                    del self.entities[k]
                continue
            types = self._types[k]
            typ = max((t for t in types if t != "ENT"), key=lambda t: (types[t], t), default="ENT")
            name = max(names, key=lambda n: (names[n], len(n), n))
            ent = self.entities.get(k)
            if new_seen is not None and ent is not None:
                seen = [d for d in (ent.first_seen, ent.last_seen) if d is not None] + new_seen.get(k, [])
            else:
                seen = [self.chunks[c].published_at for c in self.entity_chunks.get(k, ()) if c in self.chunks and self.chunks[c].published_at]
            if ent is not None:
                for alias in ent.aliases - set(names):
                    self.alias_index[alias.casefold()].discard(k)
            ent = Entity(k, name, typ, set(names), min(seen, default=None), max(seen, default=None))
            self.entities[k] = ent
            for alias in ent.aliases:
                self.alias_index[alias.casefold()].add(k)
            self.alias_index[k].add(k)

    def _refresh_facts(self, keys: Iterable[str]) -> None:
        groups: set[tuple[str, str]] = set()
        for fk in keys:
            rows = self._fact_rows.get(fk)
            fact = self._build_fact(fk, rows) if rows else None
            old = self.facts.get(fk)
            if old is not None and fact is not None and _same_evidence(old, fact):
                continue  # rebuilt unchanged: keep it, and leave its time node's summary alone
            if old is not None:
                del self.facts[fk]
                g = functional_group(old)
                if g:
                    groups.add(g)
                self._unlink(old)
            if fact is None:
                self._fact_rows.pop(fk, None)
                continue
            self.facts[fk] = fact
            self._link(fact)
            g = functional_group(fact)
            if g:
                groups.add(g)
        for relation, key in groups:
            members = [self.facts[f] for f in self.entity_facts.get(key, ()) if functional_group(self.facts[f]) == (relation, key)]
            assign_validity(members)
        for fk in keys:
            f = self.facts.get(fk)
            if f is not None and functional_group(f) is None:
                assign_validity([f])

    def _build_fact(self, fk: str, rows: dict[int, FactRow]) -> Fact:
        best = max(rows.values(), key=lambda r: evidence_rank(r.confidence, r.chunk_id))
        recorded = [self.chunks[c].recorded_at for c in rows if c in self.chunks]
        n = len(rows)
        return Fact(
            key=fk,
            subject=best.subject_key,
            relation=best.relation,
            object=best.object_key,
            t_start=best.t_start,
            t_end=best.t_end,
            granularity=best.granularity,
            description=best.description,
            sources=set(rows),
            confidence=merged_confidence(best.confidence, n),
            recorded_at=min(recorded, default=None),
        )

    def _link(self, f: Fact) -> None:
        self.entity_facts[f.subject].add(f.key)
        self.entity_facts[f.object].add(f.key)
        for cid in f.sources:
            self.chunk_facts[cid].add(f.key)
        label = node_for_span(f.t_start, f.t_end, f.granularity)
        if label:
            self.timeline.add_fact(label, f.key)

    def _unlink(self, f: Fact) -> None:
        for k in (f.subject, f.object):
            if k in self.entity_facts:
                self.entity_facts[k].discard(f.key)
        for cid in f.sources:
            if cid in self.chunk_facts:
                self.chunk_facts[cid].discard(f.key)
        label = node_for_span(f.t_start, f.t_end, f.granularity)
        if label:
            self.timeline.remove_fact(label, f.key)


    # ----------------------------------------------------------- networkx
    @property
    def g(self) -> nx.MultiDiGraph:
        """The graph as a networkx MultiDiGraph, built on first use after a change.

        Entity nodes carry name/type/aliases; each fact is an entity->entity edge keyed by its fact
        key; time nodes form year->quarter->month->day 'contains' edges, link to the chunks
        published that day ('published') and to the subject of each fact of their period
        (key ('fact', fact_key)).
        """
        if self._nx is None:
            g = nx.MultiDiGraph()
            g.add_nodes_from(
                (entity_node(k), {"kind": "entity", "name": e.name, "type": e.type, "aliases": sorted(e.aliases),
                                  "first_seen": e.first_seen, "last_seen": e.last_seen})
                for k, e in self.entities.items()
            )
            g.add_nodes_from(
                (time_node(label), {"kind": "time", "level": level_of(label), "summary": n.summary})
                for label, n in self.timeline.nodes.items()
            )
            g.add_edges_from(
                (entity_node(f.subject), entity_node(f.object), f.key,
                 {"relation": f.relation, "time": f.t_start, "valid_from": f.valid_from, "valid_to": f.valid_to,
                  "recorded_at": f.recorded_at, "sources": sorted(f.sources), "fact": f})
                for f in self.facts.values()
            )
            for label, n in self.timeline.nodes.items():
                g.add_edges_from((time_node(label), time_node(c), "contains") for c in n.children)
                g.add_edges_from((time_node(label), ("chunk", c), "published") for c in n.chunks)
                g.add_edges_from(
                    (time_node(label), entity_node(self.facts[fk].subject), ("fact", fk))
                    for fk in n.facts if fk in self.facts
                )
            self._nx = g
        return self._nx

    # -------------------------------------------------------------- lookup
    def name(self, key: str) -> str:
        ent = self.entities.get(key)
        return ent.name if ent else key

    def names(self) -> dict[str, str]:
        return {k: e.name for k, e in self.entities.items()}

    def stats(self) -> dict[str, int]:
        return {
            "entities": len(self.entities),
            "facts": len(self.facts),
            "fact_sources": sum(len(f.sources) for f in self.facts.values()),
            "time_nodes": len(self.timeline.nodes),
            "chunks": len(self.chunks),
        }

    def facts_of(self, key: str) -> list[Fact]:
        return sorted(
            (self.facts[f] for f in self.entity_facts.get(key, ())),
            key=lambda f: (f.t_start is None, f.t_start.timestamp() if f.t_start else 0.0, f.key),
        )
