"""Checks and normalises what Python callers pass to ``ChronoRAG``'s verbs, so a bad argument fails
at the door with a ValueError that names it, instead of a TypeError deep inside an index."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timezone, tzinfo

from chronorag.periods import parse_period
from chronorag.types import SearchFilters

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
    """An aware datetime for a since/until argument, the one reading of a bound whoever passes it.

    A naive datetime is read in ``tz`` (the settings' default_tz, as the loaders read naive
    timestamps); a date stands for its whole day there; a string is a period label or a timestamp
    (:func:`~chronorag.periods.parse_period`, in ``tz``): ``since`` is the period's first instant,
    ``until`` (``end=True``) its last. None, or a bound past the calendar's ends, is unbounded."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            period = parse_period(value, tz)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        value = period.last if end else period.start
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=tz)
    elif isinstance(value, date):
        value = datetime.combine(value, time.max if end else time.min, tzinfo=tz)
    else:
        raise ValueError(f"{name} must be a datetime, a date or a string, got {type(value).__name__}")
    try:
        value.astimezone(timezone.utc).timestamp()
    except (OverflowError, ValueError):  # datetime.min/max shifted past the calendar's ends: unbounded
        return None
    return value


@dataclass(frozen=True)
class RetrievalRequest:
    """The checked arguments of a retrieval (``retrieve``, ``answer``, the CLI, the REST API)."""

    question: str | None
    top_k: int
    filters: SearchFilters
    retrievers: list[str] | None


def retrieval_request(question: object, top_k: object = 8, since: object = None, until: object = None,
                      doc_ids: object = None, sources: object = None, retrievers: object = None,
                      tz: tzinfo = timezone.utc, names: Mapping[str, str] | None = None) -> RetrievalRequest:
    """The one check of a retrieval's arguments; naive and period-named bounds are read in ``tz``
    (the settings' default_tz). Needs no store, so a command can refuse bad usage before opening one;
    ``question`` None checks the rest (a command whose questions come one by one from a file).
    ``names`` says what to call an argument in messages (the CLI's ``--top-k`` for ``top_k``)."""
    name = (lambda arg: names.get(arg, arg)) if names else (lambda arg: arg)
    question = question_text(question) if question is not None else None
    top_k = positive_int(top_k, name("top_k"))
    first = time_bound(since, name("since"), tz)
    last = time_bound(until, name("until"), tz, end=True)
    if first and last and first > last:
        shown = [v if isinstance(v, str) else t.isoformat() for v, t in ((since, first), (until, last))]
        raise ValueError(f"{name('since')} {shown[0]} is after {name('until')} {shown[1]}")
    doc_ids, sources = id_list(doc_ids, name("doc_ids")), id_list(sources, name("sources"))
    retrievers = id_list(retrievers, name("retrievers"))
    if retrievers == []:
        raise ValueError(f"{name('retrievers')} is empty (None uses every enabled retriever)")
    filters = SearchFilters(
        since=first, until=last,
        doc_ids=frozenset(doc_ids) if doc_ids is not None else None,
        sources=frozenset(sources) if sources is not None else None,
    )
    return RetrievalRequest(question, top_k, filters, retrievers)
