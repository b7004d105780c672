"""Optional LLM extraction of (subject, relation, object, time) quadruples, and LLM period summaries.

Any ``complete(prompt) -> str`` callable works (the CPU SmolLM2 generator, an OpenAI-compatible
client). Output is validated item by item; an unparseable reply is retried once, and a reply that
still fails yields no facts (or the fallback extractor's) - ingestion never fails because of it.
LLM calls are capped per document, since one long document must not stall an ingest.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from chronorag.graph.extraction import EntityMention, Extraction, Extractor, FactDraft, split_sentences
from chronorag.graph.timeexpr import TimeSpan, day_span, find_dates, month_span, quarter_span, span_of_day, year_span
from chronorag.graph.timeline import ExtractiveSummariser, SummaryItem
from chronorag.types import Chunk

log = logging.getLogger(__name__)

Complete = Callable[[str], str]

PROMPT = """Extract facts from the news text below as a JSON list. Each item is an object:
{{"subject": "...", "relation": "...", "object": "...", "time": "YYYY-MM-DD or YYYY-MM or YYYY-Qn or YYYY or null"}}
Use short relation phrases such as "chief executive of", "headquartered in", "revenue", "acquired".
"time" is when the fact happened or started; resolve words like "yesterday" against the
publication date {date}. Answer with the JSON list only.

Text:
{text}

JSON:"""

RETRY = "\nYour previous answer was not a valid JSON list. Answer ONLY with a JSON list of objects with keys subject, relation, object, time.\nJSON:"

_RELATION_ALIASES = {
    "chief executive of": re.compile(r"^(?:is |was |became |named |appointed )?(?:the )?(?:new )?(?:ceo|chief executive(?: officer)?)(?: of| at)?$"),
    "headquartered in": re.compile(r"^(?:is |was )?(?:headquartered|headquarters|based|hq)(?: is| are)?(?: in| at)?$|^moved (?:its )?headquarters to$"),
    "revenue": re.compile(r"^(?:reported |had |posted )?(?:quarterly )?(?:revenue|sales)(?: of)?$"),
}
_PERIOD = re.compile(r"^\s*(\d{4})(?:-(?:Q([1-4])|(\d{1,2}))(?:-(\d{1,2}))?)?\s*$", re.I)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def canonical_relation(relation: str) -> str:
    rel = re.sub(r"\s+", " ", relation.strip().lower().replace("_", " "))
    for label, rx in _RELATION_ALIASES.items():
        if rx.match(rel):
            return label
    return rel


def parse_time(value, published_at: datetime | None) -> tuple[TimeSpan | None, str]:
    """An LLM's time string -> span; falls back to the publication day."""
    if isinstance(value, str) and value.strip() and value.strip().lower() not in ("null", "none", "unknown"):
        zone = published_at.tzinfo if published_at else timezone.utc
        m = _PERIOD.match(value)
        try:
            if m:
                y = int(m.group(1))
                if m.group(2):
                    return quarter_span(y, int(m.group(2)), zone), "llm"
                if m.group(4):
                    return day_span(y, int(m.group(3)), int(m.group(4)), zone), "llm"
                if m.group(3):
                    return month_span(y, int(m.group(3)), zone), "llm"
                return year_span(y, zone), "llm"
        except ValueError:
            pass
        found = find_dates(value, published_at)
        if found:
            return found[0].span, "llm"
    if published_at is not None:
        return span_of_day(published_at), "document"
    return None, "none"


def parse_quadruples(reply: str) -> list[dict] | None:
    """The JSON list in a reply, or None when there is none (malformed)."""
    if not isinstance(reply, str):
        return None
    fenced = _FENCE.search(reply)
    body = fenced.group(1) if fenced else reply
    start, end = body.find("["), body.rfind("]")
    candidates = [body[start : end + 1]] if 0 <= start < end else []
    if body.strip().startswith("{"):
        candidates.append(body.strip())
    for cand in candidates:
        try:
            data = json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(data, dict):
            data = data.get("facts") if isinstance(data.get("facts"), list) else [data]
        if isinstance(data, list):
            return [d for d in data if isinstance(d, dict)]
    return None


def _clean(value) -> str | None:
    if not isinstance(value, str):
        return None
    value = re.sub(r"\s+", " ", value).strip()
    return value if 0 < len(value) <= 200 else None


class LLMExtractor:
    """Facts from an LLM; ``fallback`` (e.g. RuleExtractor) covers chunks past the call cap or failures."""

    def __init__(
        self,
        complete: Complete,
        max_calls_per_doc: int = 4,
        max_chars: int = 2000,
        retries: int = 1,
        fallback: Extractor | None = None,
        model_name: str = "llm",
    ) -> None:
        if max_calls_per_doc < 1:
            raise ValueError("max_calls_per_doc must be >= 1")
        self.complete = complete
        self.max_calls_per_doc = max_calls_per_doc
        self.max_chars = max_chars
        self.retries = retries
        self.fallback = fallback
        self.name = f"llm-v1:{model_name}" + (f"+{fallback.name}" if fallback else "")
        self.calls = 0
        self.failures = 0

    def extract(self, text: str, published_at: datetime | None) -> Extraction:
        budget = [self.max_calls_per_doc]
        return self._extract(text, published_at, budget)

    def extract_batch(self, chunks: Sequence[Chunk]) -> dict[int, Extraction]:
        budgets: dict[str, list[int]] = {}
        out = {}
        for c in chunks:
            budget = budgets.setdefault(c.doc_id, [self.max_calls_per_doc])
            out[c.chunk_id] = self._extract(c.text, c.published_at, budget)
        return out

    def _extract(self, text: str, published_at: datetime | None, budget: list[int]) -> Extraction:
        items = None
        prompt = PROMPT.format(date=published_at.date().isoformat() if published_at else "unknown", text=text[: self.max_chars])
        attempt = 0
        while items is None and attempt <= self.retries and budget[0] > 0:
            budget[0] -= 1
            self.calls += 1
            try:
                reply = self.complete(prompt if attempt == 0 else prompt + RETRY)
            except Exception as exc:  # a flaky model endpoint must not stop ingestion
                log.warning("LLM extraction call failed: %s", exc)
                reply = None
            items = parse_quadruples(reply) if reply is not None else None
            attempt += 1
        if items is None:
            self.failures += 1
            return self.fallback.extract(text, published_at) if self.fallback else Extraction(dates=find_dates(text, published_at))
        return self._to_extraction(items, text, published_at)

    @staticmethod
    def _to_extraction(items: list[dict], text: str, published_at: datetime | None) -> Extraction:
        out = Extraction(dates=find_dates(text, published_at))
        chinese = sum(1 for ch in text[:200] if "\u4e00" <= ch <= "\u9fff") > 20
        sentences = [text[s:e].strip() for s, e in split_sentences(text, chinese)]
        seen = set()
        for it in items:
            subj, rel, obj = _clean(it.get("subject")), _clean(it.get("relation")), _clean(it.get("object"))
            if not subj or not rel or not obj or subj == obj:
                continue
            rel = canonical_relation(rel)
            span, source = parse_time(it.get("time"), published_at)
            key = (subj, rel, obj, span)
            if key in seen:
                continue
            seen.add(key)
            desc = next((s for s in sentences if subj in s and obj in s), None) or next(
                (s for s in sentences if subj in s), text[:300])
            st, ot = _clean(it.get("subject_type")) or "ENT", _clean(it.get("object_type")) or "ENT"
            out.facts.append(FactDraft(subj, st, rel, obj, ot, span, source, desc[:400], 0.6))
            out.entities.extend((EntityMention(subj, st), EntityMention(obj, ot)))
        return out


SUMMARY_PROMPT = """Summarise the key events of {period} in two or three sentences, using only these notes:
{notes}
Summary:"""


class LLMSummariser:
    """Period summaries written by an LLM; falls back to the extractive summary on any failure."""

    def __init__(self, complete: Complete, max_items: int = 8, max_chars: int = 600) -> None:
        self.complete = complete
        self.max_items = max_items
        self.max_chars = max_chars
        self.fallback = ExtractiveSummariser()
        self.name = "llm-summary-v1"
        self.calls = 0

    def summarise(self, period: str, items: Sequence[SummaryItem]) -> str:
        notes = "\n".join(f"- {it.text.strip()[:300]}" for it in list(items)[: self.max_items])
        self.calls += 1
        try:
            reply = self.complete(SUMMARY_PROMPT.format(period=period, notes=notes))
        except Exception as exc:
            log.warning("LLM summary call failed: %s", exc)
            reply = ""
        reply = reply.strip() if isinstance(reply, str) else ""
        return reply[: self.max_chars] if reply else self.fallback.summarise(period, items)
