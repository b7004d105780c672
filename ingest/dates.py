"""Turning the date strings real corpora carry into tz-aware datetimes, without ever guessing.

Two entry points: :func:`parse_datetime` for a value that is meant to be a date (a ``published_at``
field, front matter, a CLI bound) and fails loudly otherwise, and :func:`crud_header_date` for the
free-form header of a CRUD-RAG news line, which finds a date if there is one and returns None if not.
A day without a year (``7-20 16:03``, ``07月27日``) gets one only when the dates of its feed leave a
single candidate; otherwise it stays undated: picking a year would be inventing.

``parse_datetime`` and ``resolve_tz`` live in :mod:`chronorag.periods`, where the core reads a
user's time bounds with them too.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo

from chronorag.periods import (  # noqa: F401  (loaders, engine and config import them from here)
    UTC, DateParseError, build_datetime, fold_text, parse_datetime, resolve_tz,
)

CRUD_BODY_MARK = re.compile(r"正文[：:]")
MAX_CRUD_HEADER_CHARS = 400  # the longest real header is 220 characters
BODY_DATE_WINDOW = 300  # how far into a body an explicit date may serve as the publication date
# A body date must fall within the span of its feed's header dates widened by this much (see loaders).
FEED_SPAN_SLACK = timedelta(days=31)

SHANGHAI = resolve_tz("Asia/Shanghai")  # CRUD-RAG's naive times are Beijing time

# --- CRUD-RAG headers -------------------------------------------------------------------------

_TIME = r"(?:\s*(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?)?"
# In the order tried; each real header shape in the corpus is covered by one (see tests/test_dates.py).
_HEADER_FORMS = [
    # 202307/2609:10:20 and 202307/25 05:01:02: year+month glued, then /day, then the time
    re.compile(r"(?<!\d)(?P<y>\d{4})(?P<m>\d{2})/(?P<d>\d{2})\s*(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?"),
    # 2023-08-11 15:10, 2023/07/28 16:52, 2023.07.28, [ 2023-07-28 16：40 ], 发布时间：2023-07-26 08:46:02
    re.compile(r"(?<!\d)(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})(?!\d)" + _TIME),
    # 2023年07月28日 18:14:59, 来源：新华网 | 2023年07月19日 20:27:42, [2023年07月20日]
    re.compile(r"(?<!\d)(?P<y>\d{4})\s*年\s*(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]" + _TIME),
    # 23-07-26 22:00: an explicit two-digit year, read as 20YY
    re.compile(r"(?<![\d-])(?P<yy>\d{2})-(?P<m>\d{2})-(?P<d>\d{2})(?![\d-])" + _TIME),
]
_BODY_FORMS = [
    re.compile(r"(?<!\d)(?P<y>\d{4})\s*年\s*(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]"),
    re.compile(r"(?<!\d)(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})(?!\d)"),
]
# Headers that name a day but no year (7-20 16:03, 08/16 13:50, 07月27日 08:23, [07/19]).
_YEARLESS_FORMS = [
    re.compile(r"(?<![\d-])(?P<m>\d{1,2})-(?P<d>\d{1,2})(?![\d-])" + _TIME),
    re.compile(r"(?<![\d/])(?P<m>\d{1,2})/(?P<d>\d{1,2})(?![\d/])" + _TIME),
    re.compile(r"(?<!\d)(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]" + _TIME),
]
# A day named without its year in running text; the lookbehind skips the tail of a full date.
_BODY_YEARLESS = re.compile(r"(?<![年\d])(?<!年 )(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]")


def _matches(form: re.Pattern, text: str, tz: tzinfo):
    """(position, datetime) for each match of ``form`` that is a real calendar date and time."""
    for m in form.finditer(text):
        g = m.groupdict()
        year = 2000 + int(g["yy"]) if g.get("yy") else int(g["y"])
        if not 1900 <= year <= 2100:
            continue
        try:
            yield m.start(), build_datetime(year, int(g["m"]), int(g["d"]), int(g.get("H") or 0),
                                    int(g.get("M") or 0), int(g.get("S") or 0), tz=tz)
        except DateParseError:
            continue  # month 13, 2023-02-30, 25:00: not a date, keep looking


def _header_date(header: str, tz: tzinfo) -> datetime | None:
    for form in _HEADER_FORMS:  # form order: the most specific shape wins
        for _, found in _matches(form, header, tz):
            return found
    return None


def _yearless_day(header: str) -> tuple[int, int, int, int, int] | None:
    """(month, day, hour, minute, second) of a header that names a day without its year."""
    for form in _YEARLESS_FORMS:
        for m in form.finditer(header):
            g = m.groupdict()
            parts = tuple(int(g[k] or 0) for k in ("m", "d", "H", "M", "S"))
            if 1 <= parts[0] <= 12 and 1 <= parts[1] <= 31:
                return parts  # type: ignore[return-value]
    return None


def split_crud_line(raw_line: str) -> tuple[str | None, str]:
    """(header, body) at the first ``正文：``; (None, whole line) when there is no header mark."""
    m = CRUD_BODY_MARK.search(raw_line, 0, MAX_CRUD_HEADER_CHARS + 3)
    if m is None:
        return None, raw_line.strip()
    return raw_line[: m.start()], raw_line[m.end():].strip()


def body_date(body: str, default_tz: tzinfo, month_day: tuple[int, int] | None = None) -> datetime | None:
    """An explicit full date (year, month and day) near the start of a body that can stand for the
    publication date, else None.

    The earliest day the text names anchors it: when that is a full date, it is the answer; when it
    is a day without a year (``7月25日电``, or ``month_day`` from a year-less header) only a full
    date on that same day qualifies, so a cited date (``自2023年10月1日起施行``, a 2016 event) is
    never taken for the day the article appeared.
    """
    window = fold_text(body[:BODY_DATE_WINDOW])
    full = sorted((hit for form in _BODY_FORMS for hit in _matches(form, window, default_tz)),
                  key=lambda hit: hit[0])
    if not full:
        return None
    if month_day is None:
        first_day = _BODY_YEARLESS.search(window)
        if first_day is None or first_day.start() > full[0][0]:
            return full[0][1]
        month_day = (int(first_day.group("m")), int(first_day.group("d")))
    for _, dt in full:
        if (dt.month, dt.day) == month_day:
            return dt
    return None


def crud_header_date(raw_line: str, default_tz: tzinfo | None = None, body_fallback: bool = True,
                     feed_span: tuple[datetime, datetime] | None = None) -> tuple[datetime | None, str, str | None]:
    """(published_at, body, how) for one raw CRUD-RAG line; ``how`` says where the date came from.

    The header (text before the first ``正文：``) is searched for a date with a year ('header'). Failing
    that, the first ~300 characters of the body are searched for an explicit full date ('body'); when
    the header gave a day without a year (``7-20 16:03``) the body date must fall on that day, and the
    header's time of day is kept. ``body_fallback=False`` trusts headers only.

    ``feed_span`` (the earliest and latest header dates of the line's feed, its raw source file)
    is the evidence for the rest: a body date outside it, widened by ``FEED_SPAN_SLACK``, is a cited
    date (an anniversary's 1953, a 2024 release) and not taken; and a day named without its year, the
    header's or else the body's first (``中新网7月28日电``), is dated when exactly one year puts it
    inside the widened span ('header+feed-year' / 'body+feed-year'). Anything else is undated: no year
    is guessed, no clock is consulted.
    """
    tz = default_tz or SHANGHAI
    header, body = split_crud_line(raw_line)
    partial = None
    if header:
        header = fold_text(header)
        found = _header_date(header, tz)
        if found is not None:
            return found, body, "header"
        partial = _yearless_day(header)
    if not body_fallback:
        return None, body, None
    found = body_date(body, tz, partial[:2] if partial else None)
    if found is not None and within_feed_span(found, feed_span):
        if partial and _valid_time(*partial[2:]):  # the header's time of day, the body's year
            found = found.replace(hour=partial[2], minute=partial[3], second=partial[4])
        return found, body, "body"
    if feed_span is None:
        return None, body, None
    if partial:
        day, how = partial, "header+feed-year"
    else:
        first = _BODY_YEARLESS.search(fold_text(body[:BODY_DATE_WINDOW]))
        if first is None:
            return None, body, None
        day, how = (int(first.group("m")), int(first.group("d")), 0, 0, 0), "body+feed-year"
    found = _year_from_span(day, feed_span, tz)
    return (found, body, how) if found is not None else (None, body, None)


def within_feed_span(found: datetime, span: tuple[datetime, datetime] | None,
                     slack: timedelta = FEED_SPAN_SLACK) -> bool:
    """Whether a date can be a line's publication date, judged by its feed's header dates (None:
    a feed without any, which has nothing to judge by)."""
    return span is None or span[0] - slack <= found <= span[1] + slack


def _year_from_span(day: tuple[int, int, int, int, int], span: tuple[datetime, datetime], tz: tzinfo
                    ) -> datetime | None:
    """(month, day, hour, minute, second) in the one year that puts it inside the widened span."""
    month, dom, hh, mm, ss = day if _valid_time(*day[2:]) else (*day[:2], 0, 0, 0)
    fits = []
    for year in range(span[0].year - 1, span[1].year + 2):
        try:
            found = build_datetime(year, month, dom, hh, mm, ss, tz=tz)
        except DateParseError:  # 29 February of a common year, 31 June
            continue
        if within_feed_span(found, span):
            fits.append(found)
    return fits[0] if len(fits) == 1 else None


def _valid_time(hour: int, minute: int, second: int) -> bool:
    return hour < 24 and minute < 60 and second < 60
