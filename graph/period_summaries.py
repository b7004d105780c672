"""Time-node summaries computed from the graph tables, so an ingest never needs the graph in memory.

Adding one document to a large store used to load the whole graph (seconds, a gigabyte) only to
re-summarise the few time nodes it touched. Here each touched node reads what sits directly on it
(its facts; a day's chunk leads) plus its children's stored best items, finest level first; the
scores and choices are the same as for a node of the in-memory graph.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable

from chronorag.graph import facts_store as fs
from chronorag.graph.model import evidence_rank, merged_confidence
from chronorag.graph.timeline import SummaryItem, Summariser, rank_items
from chronorag.periods import LEVELS, level_of, parent_of, quarter_months

KEEP_ITEMS = 8  # best items a node keeps (and hands to its parent)
LEAD_ENTITIES = 5  # entities of a chunk lead that count for its centrality


def _fact_items(cur: sqlite3.Cursor, label: str) -> list[SummaryItem]:
    groups: dict[str, list[tuple]] = {}
    for row in cur.execute(
        "SELECT fact_key, chunk_id, subject_key, object_key, t_start, description, confidence"
        " FROM graph_facts WHERE period = ?", (label,)
    ):
        groups.setdefault(row[0], []).append(row)
    items = []
    for fk in sorted(groups):
        rows = groups[fk]
        best = max(rows, key=lambda r: evidence_rank(r[6], r[1]))
        n = len({r[1] for r in rows})
        items.append(SummaryItem(
            text=best[5], ref=f"fact:{fk}", time=best[4], entities=[best[2], best[3]],
            weight=math.log1p(n) + merged_confidence(best[6], n),
        ))
    return items


def _chunk_items(cur: sqlite3.Cursor, day: str) -> tuple[list[SummaryItem], int]:
    chunks = cur.execute(
        "SELECT chunk_id, published_at, lead FROM graph_chunks WHERE substr(published_at, 1, 10) = ?"
        " ORDER BY chunk_id", (day,)
    ).fetchall()
    with_lead = [c for c in chunks if c[2]]
    entities: dict[int, set[str]] = {}
    for m in fs.mentions_in_chunks(cur, [c[0] for c in with_lead]):
        entities.setdefault(m.chunk_id, set()).add(m.entity_key)
    items = [
        SummaryItem(text=lead, ref=f"chunk:{cid}", time=published,
                    entities=sorted(entities.get(cid, ()))[:LEAD_ENTITIES], weight=0.5)
        for cid, published, lead in with_lead
    ]
    return items, len(chunks)


def _children(cur: sqlite3.Cursor, label: str, fresh: dict[str, tuple]) -> list[tuple]:
    """(label, top item dicts, n_facts, n_chunks) of the label's non-empty children, by label."""
    level = level_of(label)
    if level == "year":
        sql, args = "level = 'quarter' AND period LIKE ?", [label + "-Q%"]
    elif level == "quarter":
        sql, args = "level = 'month' AND period IN (?,?,?)", quarter_months(label)
    elif level == "month":
        sql, args = "level = 'day' AND period LIKE ?", [label + "-%"]
    else:
        return []
    kids = {r[0]: (r[0], json.loads(r[1]), r[2], r[3]) for r in cur.execute(
        f"SELECT period, top_items, n_facts, n_chunks FROM graph_summaries WHERE {sql}", args)}
    child_level = LEVELS[LEVELS.index(level) + 1]
    for lab, row in fresh.items():
        if level_of(lab) == child_level and parent_of(lab) == label:
            kids[lab] = (lab, row[3], row[4], row[5])
    return [kids[k] for k in sorted(kids) if kids[k][2] or kids[k][3]]


def resummarise(cur: sqlite3.Cursor, labels: Iterable[str], summariser: Summariser) -> list[tuple]:
    """Rows for ``facts_store.write_summaries`` of ``labels``, finest level first (a parent reads its
    children's new best items); a node left with nothing gets a zero row, which deletes it."""
    order = {lvl: i for i, lvl in enumerate(LEVELS)}
    fresh: dict[str, tuple] = {}
    now = time.time()
    for label in sorted(set(labels), key=lambda lab: (-order[level_of(lab)], lab)):
        items = _fact_items(cur, label)
        n_facts = len(items)
        n_chunks = 0
        if level_of(label) == "day":
            leads, n_chunks = _chunk_items(cur, label)
            items += leads
        for _, top, kid_facts, kid_chunks in _children(cur, label, fresh):
            n_facts += kid_facts
            n_chunks += kid_chunks
            items.extend(SummaryItem(it["text"], it["ref"], it["time"], list(it["entities"]), it["weight"]) for it in top)
        top_items = rank_items(items, KEEP_ITEMS)
        summary = summariser.summarise(label, top_items) if top_items else ""
        fresh[label] = (label, level_of(label), summary, [dict(vars(it)) for it in top_items], n_facts, n_chunks, now)
    return list(fresh.values())
