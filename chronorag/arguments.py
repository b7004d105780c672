"""Checks and normalises what Python callers pass to ``ChronoRAG``'s verbs, so a bad argument fails
at the door with a ValueError that names it, instead of a TypeError deep inside an index."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from datetime import date, datetime, time, timezone, tzinfo

MAX_QUESTION_CHARS = 10_000  # time-expression parsing grows faster than linearly with length


def question_text(question: object) -> str:
    if not isinstance(question, str):
        raise ValueError(f"question must be a string, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("question is empty")
    if not any(ch.isalnum() for ch in question):  # every retriever would return noise for it
        raise ValueError("question has no words to search for")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"question is {len(question):,} characters long; the limit is {MAX_QUESTION_CHARS:,}")
    return question


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy integers are fine
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def id_list(value: object, name: str) -> list[str] | None:
    """None stays None ("no restriction"); one string is one id, not its characters; an empty
    collection stays empty (it restricts to nothing)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, dict)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a string or a collection of strings, got {type(value).__name__}")
    items = list(value)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{name} must hold strings, got {bad[0]!r}")
    return items


def time_bound(value: object, name: str, tz: tzinfo, end: bool = False) -> datetime | None:
    """An aware datetime for a since/until argument. A naive datetime is read in ``tz`` (the
    settings' default_tz, as the loaders read naive timestamps); a date stands for its whole day."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=tz)
    elif isinstance(value, date):
        value = datetime.combine(value, time.max if end else time.min, tzinfo=tz)
    else:
        raise ValueError(f"{name} must be a datetime or a date, got {type(value).__name__}")
    try:
        value.astimezone(timezone.utc).timestamp()
    except (OverflowError, ValueError):  # datetime.min/max shifted past the calendar's ends: unbounded
        return None
    return value
