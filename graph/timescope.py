"""A question's time scope: 'in March 2021', 'as of June 2022', 'before X became CEO', 'latest'.

The scope is a :class:`chronorag.periods.TimeScope` (half-open, like every period), which the engine
also turns into a retrieval time filter or a recency decay. Anchors that are events ('before X became
CEO') are resolved by a callback into the graph (the time of that fact); without a resolver such a
scope stays unbounded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone

from chronorag.graph.timeexpr import find_dates
from chronorag.periods import TimeScope

ANY = TimeScope(None, None, "any")

_LATEST = re.compile(
    r"\b(?:latest|currently|current|now|nowadays|at present|presently|most recent(?:ly)?|these days|today)\b"
    r"|目前|现在|当前|最新|如今|现任|眼下",
    re.IGNORECASE,
)
_AS_OF = re.compile(r"\b(?:as of|as at|at the end of|by the end of|by)\b|截至|截止", re.IGNORECASE)
_BEFORE = re.compile(r"\b(?:before|prior to|until|preceding|ahead of)\b", re.IGNORECASE)
_AFTER = re.compile(r"\b(?:after|since|following|subsequent to|once)\b", re.IGNORECASE)
_ZH_BEFORE = re.compile(r"(之前|以前|前夕)")
_ZH_AFTER = re.compile(r"(之后|以后|后来|以来)")
_BETWEEN = re.compile(r"\bbetween\b(.+?)\band\b(.+)", re.IGNORECASE)

AnchorResolver = Callable[[str, str], "datetime | None"]  # (anchor phrase, 'before'|'after') -> time


def parse_time_scope(
    question: str,
    now: datetime | None = None,
    resolve_anchor: AnchorResolver | None = None,
) -> TimeScope:
    """Read the time scope of a question. ``now`` anchors relative phrases ('last year')."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    q = question.strip()
    m = _BETWEEN.search(q)
    if m:
        a, b = find_dates(m.group(1), now), find_dates(m.group(2), now)
        if a and b:
            return TimeScope(a[0].span.start, b[0].span.end, "in", m.group(0), a[0].span.granularity)
    for rx, zh, mode in ((_BEFORE, _ZH_BEFORE, "before"), (_AFTER, _ZH_AFTER, "after")):
        hit = rx.search(q)
        anchor = None
        if hit:
            anchor = re.split(r"[,，;；?？]", q[hit.end():])[0].strip(" .")
        else:
            zh_hit = zh.search(q)
            if zh_hit:
                anchor = re.split(r"[，,。？?]", q[: zh_hit.start()])[-1].strip()
                anchor = re.sub(r"^(?:在|于|自从|自)", "", anchor)
        if anchor is None:
            continue
        dates = find_dates(anchor, now)
        t: datetime | None = None
        if dates and dates[0].start < 4:
            t = dates[0].span.start if mode == "before" else dates[0].span.end
        if t is None and resolve_anchor is not None and anchor:
            t = resolve_anchor(anchor, mode)
        if t is None and dates:
            t = dates[0].span.start if mode == "before" else dates[0].span.end
        if t is None:
            return TimeScope(None, None, "any", anchor)
        if mode == "before":
            return TimeScope(None, t, "before", anchor)  # end exclusive: t itself is not before t
        if dates and dates[0].start < 4 and (hit is None or hit.group(0).lower() == "since"):
            t = dates[0].span.start  # 'since March 2021' / '2021年以来' include the period itself
        return TimeScope(t, None, "after", anchor)
    dates = [d for d in find_dates(q, now) if d.text.lower() not in ("today", "tonight", "今天", "今日")]
    if dates:
        d = dates[0]
        before_text = q[: d.start]
        if _AS_OF.search(before_text[-20:]):
            return TimeScope(None, d.span.end, "as_of", d.text, d.span.granularity)
        return TimeScope.of_period(d.span, "in", d.text)
    if _LATEST.search(q):
        return TimeScope(None, None, "latest", _LATEST.search(q).group(0))
    return ANY
