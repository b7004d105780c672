"""ECT-QA earnings-call transcripts (one raw JSON object per line) as Documents.

A line carries ``company_name``, ``stock_code``, ``sector``, ``year`` and ``quarter`` (the fiscal
period the call discusses), ``URL``, ``raw_content`` (the page text, which names the call date near
its top: ``Q1 2024 Earnings Call\\nMay 07, 2024\\n,\\n8:30 a.m. ET``) and ``cleaned_content`` (the
transcript). The fiscal period and the call date are different times (a Q4 2024 call is held in
2025, and some fiscal years start months before the calendar year), so the date is only ever read
from the page header, never derived from the period: a record whose header names no readable day
stays undated and says why in its metadata.

This module only parses one record; :mod:`chronorag.ingest.loaders` reads the file and reports.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from typing import Any

from chronorag.ingest.checks import doc_id_problem
from chronorag.ingest.dates import UTC, DateParseError, build_datetime, resolve_tz
from chronorag.periods import MONTH_NAME, MONTHS, fold_text
from chronorag.types import Document

SOURCE = "ect_qa"
# Fields that make a line an ECT-QA record (for guess_format); chronorag JSONL has none of them.
SIGNATURE = frozenset({"cleaned_content", "stock_code", "quarter", "year"})
ID_FIELDS = ("sector", "stock_code", "year", "quarter")
# The call date sits in the page header, about 100 characters in on every real page; further down
# a date is something the speakers mention (a dividend date, last year's call), not when they spoke.
HEADER_CHARS = 400
# A call about fiscal year Y is held between Y-1 (a fiscal year that starts in the spring) and Y+1
# (the Q4 call): a date outside that is not this call's, and taking it would be inventing one.
MAX_YEARS_FROM_FISCAL = 1

_DAY = r"(?P<d>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<y>\d{4})(?!\d)"
# "May 07, 2024", "July 30, 2024", "Sept. 5 2024" and the day-first "30 Jul 2024"; then, optionally,
# the time the page gives after a comma or line break ("\n,\n8:30 a.m. ET") with its zone.
_DATE_FORMS = [
    re.compile(r"(?<![A-Za-z])" + MONTH_NAME + r"\s+" + _DAY + r",?\s+" + _YEAR, re.I),
    re.compile(r"(?<!\d)" + _DAY + r"\s+" + MONTH_NAME + r",?\s+" + _YEAR, re.I),
]
_TIME = re.compile(r"[\s,]*(?P<H>\d{1,2}):(?P<M>\d{2})\s*(?P<ampm>[ap])\.?\s*m\.?(?![a-z])\s*(?P<zone>[A-Za-z]{1,4})?"
                   r"(?![A-Za-z])", re.I)
# The zones US call pages name. EST/EDT both map to the Eastern zone's rules: pages write "ET" all
# year, and a stray "EST" in July still means the New York clock.
_ZONES = {
    **dict.fromkeys(("ET", "EST", "EDT"), "America/New_York"),
    **dict.fromkeys(("CT", "CST", "CDT"), "America/Chicago"),
    **dict.fromkeys(("MT", "MST", "MDT"), "America/Denver"),
    **dict.fromkeys(("PT", "PST", "PDT"), "America/Los_Angeles"),
    **dict.fromkeys(("UTC", "GMT", "Z"), "UTC"),
}


class ECTRecordError(ValueError):
    """The record cannot become a Document (the loader turns it into a LoadError)."""


def looks_like_ect(obj: Any) -> bool:
    """Whether a parsed JSON line has the fields of an ECT-QA transcript record."""
    return isinstance(obj, dict) and SIGNATURE <= obj.keys() and "text" not in obj


def ect_id(obj: dict[str, Any]) -> str:
    """``{sector}-{stock_code}-{year}-{quarter}`` with the code's spaces as '_': the dataset's evidence
    file name without ``.json`` (questions cite it as ``ect_filename``)."""
    parts = []
    for key in ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a year written as a number names the same file
        if not isinstance(value, str) or not value.strip():
            raise ECTRecordError(f"missing '{key}' (an ECT-QA id is {'-'.join('{' + k + '}' for k in ID_FIELDS)})"
                                 if value is None or value == "" else f"'{key}' must be a string")
        parts.append(value.strip())
    parts[1] = parts[1].replace(" ", "_")
    doc_id = "-".join(parts)
    problem = doc_id_problem(doc_id)
    if problem:
        raise ECTRecordError(problem)
    return doc_id


def call_date(raw_content: Any, default_tz: tzinfo = UTC, fiscal_year: int | None = None
              ) -> tuple[datetime | None, dict[str, str]]:
    """(published_at, metadata saying how) from the header of a page's text.

    A day with a time and a known zone is that instant; a day alone is 00:00 in ``default_tz``
    (UTC unless configured). The first month-name date in the header decides: if it is not a real
    day, or lies more than a year from the fiscal year, the record stays undated (None) and the
    metadata gives the reason; a later date in the header is not tried, it is some other date.
    """
    if not isinstance(raw_content, str) or not raw_content.strip():
        return None, {"date_from": "none", "undated_reason": "no 'raw_content' to read the call date from"}
    header = fold_text(raw_content[:HEADER_CHARS])
    found = [m for m in (form.search(header) for form in _DATE_FORMS) if m]
    if not found:
        return None, {"date_from": "none",
                      "undated_reason": f"no month-name date in the first {HEADER_CHARS} characters of 'raw_content'"}
    m = min(found, key=lambda hit: hit.start())
    shown = " ".join(m.group().split())
    year, month, day = int(m.group("y")), MONTHS[m.group("mon").lower().rstrip(".")], int(m.group("d"))
    if fiscal_year is not None and abs(year - fiscal_year) > MAX_YEARS_FROM_FISCAL:
        return None, {"date_from": "none",
                      "undated_reason": f"header date {shown!r} is not within a year of fiscal {fiscal_year}"}
    t = _TIME.match(header, m.end())
    zone = _ZONES.get((t.group("zone") or "").upper()) if t else None
    try:
        if t and zone:
            hour = int(t.group("H"))
            if not 1 <= hour <= 12:
                raise DateParseError(f"hour {hour} cannot take a.m./p.m.")
            hour = hour % 12 + (12 if t.group("ampm").lower() == "p" else 0)
            when = build_datetime(year, month, day, hour, int(t.group("M")), tz=resolve_tz(zone))
            return when, {"date_from": "call_date+time"}
        # A time without a zone we know says nothing certain about the instant: keep the day only.
        return build_datetime(year, month, day, tz=default_tz), {"date_from": "call_date"}
    except DateParseError as exc:
        return None, {"date_from": "none", "undated_reason": f"header date {shown!r} is not a real day: {exc}"}


def _fiscal_year(value: Any) -> int | None:
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() and len(text) == 4 else None


def _optional(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ECTRecordError(f"'{key}' must be a string")
    return value.strip() or None


def ect_document(obj: dict[str, Any], default_tz: tzinfo = UTC) -> Document:
    """One ECT-QA record as a Document, or ECTRecordError saying why it cannot be one."""
    doc_id = ect_id(obj)
    text = obj.get("cleaned_content")
    if text is None:
        hint = " (this looks like chronorag JSONL; use --format jsonl)" if {"id", "text"} <= obj.keys() else ""
        raise ECTRecordError("missing 'cleaned_content'" + hint)
    if not isinstance(text, str):
        raise ECTRecordError("'cleaned_content' must be a string")
    if not text.strip():
        raise ECTRecordError("empty 'cleaned_content'")
    meta = {key: value for key in ("company_name", "stock_code", "sector", "year", "quarter", "URL")
            if (value := _optional(obj, key)) is not None}
    published_at, how = call_date(obj.get("raw_content"), default_tz, _fiscal_year(obj.get("year")))
    meta.update(how)
    # The title heads every chunk, so a passage from the middle of a call still names the company and
    # the fiscal period it discusses; the call date lives in published_at only.
    who = meta.get("company_name")
    code = meta["stock_code"]
    title = f"{who} ({code})" if who else code
    title += f" {meta['quarter'].upper()} {meta['year']} earnings call"
    return Document(doc_id=doc_id, text=text, published_at=published_at, title=title, source=SOURCE, metadata=meta)
