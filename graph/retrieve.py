"""Query side: question -> (time scope, entities) -> temporal subgraph -> ranked chunks and summaries.

The ranked ``(chunk_id, score)`` list is meant as a third RRF source beside BM25 and dense. For
point-in-time questions facts whose validity interval holds the asked time rank first; broad period
questions ('what happened in August 2023?') also get the period nodes' summaries.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from chronorag.graph.model import Fact, entity_key
from chronorag.graph.temporal_graph import TemporalGraph
from chronorag.graph.timescope import parse_time_scope
from chronorag.periods import Period, TimeScope, level_of

RELATION_HINTS: dict[str, re.Pattern] = {
    "chief executive of": re.compile(
        r"chief executive|\bceo\b|\blead|\bled\b|\bhead(?:ed|s|ing)?\b|\bran\b|\brun|\bboss|helm|top job|in charge"
        r"|首席执行官|总裁|掌门|负责人", re.I),
    "headquartered in": re.compile(r"headquarter|\bhq\b|\bbased\b|head office|located|\bwhere\b.*\b(?:office|base)|总部|位于", re.I),
    "revenue": re.compile(r"revenue|\bsales\b|turnover|top line|take in|took in|营收|收入|营业额", re.I),
    "net income": re.compile(r"net income|profit|earnings|净利润|利润", re.I),
}
_ENDING = re.compile(r"\b(?:left|leave|leaving|stepped down|step down|resign\w*|depart\w*|ousted|retire\w*|quit|exit\w*)\b|离任|卸任|辞职|离职", re.I)
_EN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9&'’.\-]*")
_POSSESSIVE = re.compile(r"(?:'s|’s|'|’)$")
_CJK_RUN = re.compile(r"[\u4e00-\u9fffA-Za-z0-9]+")


def surface_candidates(text: str, max_words: int = 6) -> set[str]:
    """Every word n-gram and CJK substring that could name an entity (for alias look-ups)."""
    out: set[str] = set()
    words = [_POSSESSIVE.sub("", m.group(0).rstrip(".,")) for m in _EN_WORD.finditer(text)]
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + max_words) + 1):
            phrase = " ".join(words[i:j])
            out.add(phrase.casefold())
            out.add(entity_key(phrase))
    for run in _CJK_RUN.finditer(text):
        s = run.group(0)
        for i in range(len(s) - 1):
            for j in range(i + 2, min(len(s), i + 12) + 1):
                out.add(s[i:j].casefold())
    return out


class UnknownEntity(ValueError):
    """No entity of that name in the graph (message lists close names)."""


SUGGESTIONS = 5


def unknown_entity(name: str, known: dict[str, str]) -> UnknownEntity:
    """The error for a name the graph does not know, with the names the user may have meant.

    ``known`` maps casefolded surface forms to display names. Names that extend what was typed come
    first ('Helen' -> 'Helen Marsh', shortest first: a partial name is the likeliest slip), then close
    spellings ('Nothwind Energy' -> 'Northwind Energy').
    """
    typed = name.strip().casefold()
    longer = sorted((a for a in known if a.startswith(typed) and a != typed), key=lambda a: (len(a), a)) if typed else []
    close = difflib.get_close_matches(typed, list(known), n=SUGGESTIONS, cutoff=0.75)
    shown_names = list(dict.fromkeys(known[a] for a in longer[:SUGGESTIONS] + close))[:SUGGESTIONS]
    hint = f"; did you mean: {', '.join(shown_names)}" if shown_names else ""
    shown = name if len(name) <= 80 else name[:80] + "..."
    return UnknownEntity(f"no entity named {shown!r} in the graph{hint}")


class UnknownPeriod(ValueError):
    """Not a period label the time hierarchy knows."""


@dataclass
class QuestionParse:
    scope: TimeScope
    entities: list[str]  # entity keys
    relations: list[str]  # relation labels the question hints at
    broad: bool


@dataclass
class GraphResult:
    scope: TimeScope
    entities: list[str]
    candidates: list[tuple[int, float]]  # (chunk_id, score), best first
    facts: list[dict] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "scope": self.scope.to_dict(),
            "entities": self.entities,
            "candidates": [[c, round(s, 6)] for c, s in self.candidates],
            "facts": self.facts,
            "summaries": self.summaries,
        }


def _decay(days: float, scale: float = 365.0) -> float:
    return 1.0 / (1.0 + max(0.0, days) / scale)


def _days(a: datetime, b: datetime) -> float:
    return abs((a - b).total_seconds()) / 86400.0


def time_score(f: Fact, scope: TimeScope, newest: datetime | None = None) -> float | None:
    """How well a fact's validity fits the scope; None means outside it."""
    if scope.mode == "any":
        if f.valid_from is None or newest is None:
            return 0.5
        return 0.5 + 0.5 * _decay(_days(newest, f.valid_from), 180.0)
    if f.valid_from is None:
        return None
    if scope.mode == "latest":
        base = 0.5 * _decay(_days(newest, f.valid_from), 90.0) if newest else 0.25
        return base + (0.5 if f.functional and f.valid_to is None else 0.0)
    if scope.mode == "in":
        if not f.overlaps(scope.start, scope.end):
            return None
        inside = (scope.start is None or f.valid_from >= scope.start) and (scope.end is None or f.valid_from < scope.end)
        return 1.0 + (0.2 if inside else 0.0)
    if scope.mode in ("as_of", "before"):
        p = scope.point
        if p is None or f.valid_from > p:
            return None
        if f.valid_at(p):
            return 1.0
        return 0.4 * _decay(_days(p, f.valid_to or f.valid_from))
    if scope.mode == "after":
        p = scope.start
        if p is None:
            return 0.5
        if f.valid_from >= p:
            return _decay(_days(f.valid_from, p))
        if f.valid_at(p):
            return 0.6
        return None
    return None


class GraphRetriever:
    def __init__(self, graph: TemporalGraph) -> None:
        self.graph = graph

    # ------------------------------------------------------------- parsing
    def match_entities(self, text: str, max_words: int = 6) -> list[str]:
        """Known entities named in ``text`` (longest match wins), in order of appearance."""
        g = self.graph
        found: list[tuple[int, int, str]] = []
        words = [(_POSSESSIVE.sub("", m.group(0).rstrip(".,")), m.start(), m.end()) for m in _EN_WORD.finditer(text)]
        for i in range(len(words)):
            for j in range(min(len(words), i + max_words), i, -1):
                phrase = " ".join(w for w, _, _ in words[i:j])
                keys = g.alias_index.get(phrase.casefold()) or ({entity_key(phrase)} & g.entities.keys())
                if keys:
                    found.extend((words[i][1], words[j - 1][2], k) for k in keys if k in g.entities)
                    break
        for run in _CJK_RUN.finditer(text):
            s = run.group(0)
            if not re.search(r"[\u4e00-\u9fff]", s):
                continue
            i = 0
            while i < len(s) - 1:
                for j in range(min(len(s), i + 12), i + 1, -1):
                    keys = g.alias_index.get(s[i:j].casefold())
                    if keys:
                        found.extend((run.start() + i, run.start() + j, k) for k in keys if k in g.entities)
                        i = j - 1
                        break
                i += 1
        found.sort(key=lambda t: (t[0], -(t[1] - t[0])))
        out: list[str] = []
        last_end = -1
        for s, e, k in found:
            if s < last_end and k not in out:
                continue
            if k not in out:
                out.append(k)
            last_end = max(last_end, e)
        return out

    @staticmethod
    def relation_hints(text: str) -> list[str]:
        return [rel for rel, rx in RELATION_HINTS.items() if rx.search(text)]

    def resolve_anchor(self, anchor: str, mode: str, hints: Sequence[str] = ()) -> datetime | None:
        """Time of the event an anchor phrase names, from the graph's facts.

        'X became CEO' -> when X's earliest matching state began; 'X left' / 'stepped down' -> when
        X's state was closed by a successor. ``hints`` are relations named elsewhere in the question.
        """
        keys = self.match_entities(anchor)
        if not keys:
            return None
        rels = self.relation_hints(anchor) or list(hints)
        ending = bool(_ENDING.search(anchor))
        best: tuple | None = None
        chosen: datetime | None = None
        for k in keys:
            for f in self.graph.facts_of(k):
                if f.valid_from is None or (rels and f.relation not in rels):
                    continue
                t = f.valid_to if ending else f.valid_from
                if t is None or (ending and f.functional and f.invalidated_by is None):
                    continue
                n_hit = sum(1 for x in keys if x in (f.subject, f.object))
                # prefer facts naming more anchor entities, then functional states, then the
                # latest end (for 'left') or the earliest start (for 'became')
                rank = (n_hit, f.functional, t.timestamp() if ending else -t.timestamp())
                if best is None or rank > best:
                    best, chosen = rank, t
        return chosen

    def parse(self, question: str, now: datetime | None = None) -> QuestionParse:
        now = now or datetime.now(timezone.utc)
        hints = self.relation_hints(question)
        scope = parse_time_scope(question, now, lambda anchor, mode: self.resolve_anchor(anchor, mode, hints))
        main = question
        if scope.mode in ("before", "after") and scope.text:
            main = question.replace(scope.text, " ")  # the anchor's entities are not the subject
        entities = self.match_entities(main) or (self.match_entities(question) if scope.mode not in ("before", "after") else [])
        relations = self.relation_hints(main)
        broad = not entities and scope.mode == "in" and scope.start is not None
        return QuestionParse(scope, entities, relations, broad)

    # ----------------------------------------------------------- retrieval
    def retrieve(self, question: str, k: int = 100, now: datetime | None = None) -> GraphResult:
        return self.retrieve_parsed(self.parse(question, now), k)

    def retrieve_parsed(self, parsed: QuestionParse, k: int = 100) -> GraphResult:
        """Candidates for a question this graph (or the subgraph read for it) has parsed."""
        if parsed.broad:
            return self._period_result(parsed, k)
        scored = self._score_facts(parsed)
        chunk_scores: dict[int, float] = {}
        for f, s in scored:
            for cid in f.sources:
                prev = chunk_scores.get(cid)
                chunk_scores[cid] = s if prev is None else max(prev, s) + 0.01 * min(prev, s)
        self._add_mention_chunks(parsed, chunk_scores)
        ranked = sorted(chunk_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        names = self.graph.names()
        facts = [dict(f.to_dict(names), score=round(s, 4)) for f, s in scored[:20]]
        return GraphResult(parsed.scope, parsed.entities, ranked, facts, [])

    def has_relation_evidence(self, parsed: QuestionParse) -> bool:
        """Some fact valid in the question's scope has an asked relation (or its 'former' form)."""
        if not parsed.relations:
            return False
        asked = set(parsed.relations)
        return any(f.relation in asked or f.relation.removeprefix("former ") in asked
                   for f, _ in self._score_facts(parsed))

    def _score_facts(self, parsed: QuestionParse) -> list[tuple[Fact, float]]:
        g = self.graph
        cand: dict[str, Fact] = {}
        for key in parsed.entities:
            for fk in g.entity_facts.get(key, ()):
                cand[fk] = g.facts[fk]
        newest = max((f.valid_from for f in cand.values() if f.valid_from), default=None)
        qset = set(parsed.entities)
        out = []
        for f in cand.values():
            ts = time_score(f, parsed.scope, newest)
            if ts is None:
                continue
            rel = 1.0 if not parsed.relations or f.relation in parsed.relations else 0.35
            if f.relation.startswith("former ") and parsed.relations:
                rel = 0.5 if f.relation[7:] in parsed.relations else rel
            n_hit = (f.subject in qset) + (f.object in qset)
            score = ts * rel * (1.0 + 0.3 * (n_hit - 1)) * (0.6 + 0.4 * f.confidence)
            out.append((f, score))
        out.sort(key=lambda fs: (-fs[1], fs[0].key))
        return out

    def _add_mention_chunks(self, parsed: QuestionParse, chunk_scores: dict[int, float]) -> None:
        """Chunks that merely mention a question entity, inside the scope's publication window, rank after fact evidence."""
        g = self.graph
        flt = parsed.scope.publication_filter()
        for key in parsed.entities:
            for cid in g.entity_chunks.get(key, ()):
                if cid in chunk_scores:
                    continue
                c = g.chunks.get(cid)
                if c is None:
                    continue
                t = c.published_at
                if flt is not None:
                    if t is None or (flt.since and t < flt.since) or (flt.until and t > flt.until):
                        continue
                chunk_scores[cid] = 0.1 + 0.05 * len(set(parsed.entities) & set(g.chunk_entities.get(cid, {})))

    def _period_result(self, parsed: QuestionParse, k: int) -> GraphResult:
        scope = parsed.scope
        labels = self.period_labels(scope)
        summaries, chunk_scores = [], {}
        for rank, label in enumerate(labels):
            node = self.graph.timeline.nodes[label]
            summaries.append({"period": label, "level": level_of(label), "summary": node.summary,
                              "n_facts": node.n_facts, "n_chunks": node.n_chunks})
            for it in node.top_items:
                weight = (it.score + 1.0) / (1 + rank)
                kind, _, ref = it.ref.partition(":")
                cids = [int(ref)] if kind == "chunk" else sorted(self.graph.facts[ref].sources) if ref in self.graph.facts else []
                for cid in cids:
                    chunk_scores[cid] = max(chunk_scores.get(cid, 0.0), weight)
        if labels:  # fill up with any chunk behind a fact of the period; a year can hold 10^5 facts,
            for f in self._facts_under(labels[0]):  # so stop once there are enough candidates
                if len(chunk_scores) >= k:
                    break
                for cid in f.sources:
                    chunk_scores.setdefault(cid, 0.2 + 0.1 * f.confidence)
        ranked = sorted(chunk_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return GraphResult(scope, [], ranked, [], summaries[:8])

    def period_labels(self, scope: TimeScope) -> list[str]:
        """The node matching the scope's period first, then its existing children."""
        label = self.period_label(scope)
        nodes = self.graph.timeline.nodes
        if label is None or label not in nodes:
            return []
        return [label] + sorted(c for c in nodes[label].children if c in nodes)

    @staticmethod
    def period_label(scope: TimeScope) -> str | None:
        """The hierarchy label of the period a scope names ('2023-08' for 'in August 2023')."""
        return scope.period_label()

    def _facts_under(self, label: str) -> Iterable[Fact]:
        nodes = self.graph.timeline.nodes
        stack = [label]
        while stack:
            node = nodes.get(stack.pop())
            if node is None:
                continue
            stack.extend(node.children)
            for fk in node.facts:
                f = self.graph.facts.get(fk)
                if f is not None:
                    yield f

    # ---------------------------------------------------------------- CLI
    def find_entity(self, name: str) -> str:
        g = self.graph
        keys = g.alias_index.get(name.strip().casefold()) or ({entity_key(name)} & g.entities.keys())
        keys = {k for k in keys if k in g.entities}
        if keys:
            return max(keys, key=lambda k: len(g.entity_facts.get(k, ())))
        known = {alias: g.entities[k].name for alias, ks in g.alias_index.items() for k in ks if k in g.entities}
        raise unknown_entity(name, known)

    def entity_timeline(self, name: str) -> list[dict]:
        """Every fact about an entity, oldest first, with validity and source chunk ids."""
        key = self.find_entity(name)
        names = self.graph.names()
        return [f.to_dict(names) for f in self.graph.facts_of(key)]

    def period_summary(self, period: str, top: int = 10) -> dict:
        """Summary and top facts of a period label ('2023', '2023-Q3', '2023-08', '2023-08-11')."""
        period = period.strip()
        try:
            span = Period.from_label(period)
        except ValueError as exc:
            raise UnknownPeriod(str(exc)) from None
        node = self.graph.timeline.nodes.get(period)
        # 'end' is the exclusive end's date, as for every period ('2023-08' ends 2023-09-01)
        out = {"period": period, "level": span.granularity, "start": span.start.date().isoformat(),
               "end": span.end.date().isoformat(),
               "summary": "", "n_facts": 0, "n_chunks": 0, "top_facts": [], "children": []}
        if node is None:
            return out
        facts = sorted(self._facts_under(period), key=lambda f: (-(len(f.sources) + f.confidence), f.key))
        names = self.graph.names()
        out.update(
            summary=node.summary, n_facts=node.n_facts, n_chunks=node.n_chunks,
            top_facts=[f.to_dict(names) for f in facts[:top]],
            children=[{"period": c, "summary": self.graph.timeline.nodes[c].summary}
                      for c in sorted(node.children) if c in self.graph.timeline.nodes],
        )
        return out
