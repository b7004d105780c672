"""Time, one convention everywhere: a :class:`Period` is ``[start, end)``, tz-aware, end exclusive.

Also here, because the core, the loaders and the graph all read them: the year > quarter > month >
day labels the graph's time hierarchy stores ('2023', '2023-Q3', '2023-08', '2023-08-11'), a
question's :class:`TimeScope`, and reading date strings, strictly (:func:`parse_datetime`, for a
value meant to be a date) or as a user's time bound (:func:`parse_period`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import MAXYEAR, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chronorag.types import SearchFilters

UTC = timezone.utc
EPS = timedelta(microseconds=1)  # datetime's resolution: a period's last instant is end - EPS
GRANULARITIES = ("day", "week", "month", "quarter", "half", "year", "instant", "range")
LEVELS = ("year", "quarter", "month", "day")  # the graph's hierarchy, coarsest first

# --- month names (the loaders' date strings and the graph's date expressions) ----------------------
MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
    "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
    "sep": 9, "sept": 9, "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
}
# Every form it matches (group 'mon', without the trailing dot) is a key of MONTHS, lower-cased.
MONTH_NAME = (r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
              r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")


# --- time zones and date strings ----------------------------------------------------------------
class DateParseError(ValueError):
    """A value that should be a date is not one (or names an impossible day or time)."""


_FIXED_ZONES = {"UTC": UTC, "Z": UTC, "GMT": UTC, "Asia/Shanghai": timezone(timedelta(hours=8), "CST")}
_TZ_OFFSET = re.compile(r"[+-]\d{1,2}(?::?\d{2})?")


def resolve_tz(tz: str | tzinfo) -> tzinfo:
    """A tzinfo from an IANA name ('Asia/Shanghai'), 'UTC', '+08:00', or a tzinfo itself."""
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise ValueError(f"a time zone must be a name or a tzinfo, not {type(tz).__name__}")
    name = tz.strip()
    if _TZ_OFFSET.fullmatch(name):
        return _offset_tz(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name in _FIXED_ZONES:  # a system without a tz database still knows these
            return _FIXED_ZONES[name]
        raise ValueError(f"unknown time zone {tz!r} "
                         "(use an IANA name like 'Asia/Shanghai' or an offset like '+08:00')") from None


def _offset_tz(text: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = (int(digits[:-2]), int(digits[-2:])) if len(digits) > 2 else (int(digits), 0)
    if hours > 23 or minutes > 59:
        raise DateParseError(f"time zone offset {text!r} is out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def fold_text(value: str) -> str:
    """Full-width digits/colons and odd spaces (NBSP, ideographic) to ASCII, runs of spaces to one."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", value)).strip()


def build_datetime(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, us: int = 0,
                   tz: tzinfo | None = None) -> datetime:
    """A datetime, or DateParseError naming what is out of range (month 13, 31 June, 25:00)."""
    try:
        return datetime(y, m, d, hh, mm, ss, us, tzinfo=tz)
    except ValueError as exc:
        raise DateParseError(str(exc)) from None


_WEEKDAY = r"(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+)?"
# The date part of a whole-string value; each alternative names y/m/d (or mon).
_DATE_FORMS = [
    re.compile(r"(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})(?!\d)"),
    re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})(?=$|[Tt\s])"),
    re.compile(r"(?P<y>\d{4})\s*年\s*(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]"),
    re.compile(_WEEKDAY + r"(?P<d>\d{1,2})(?:st|nd|rd|th)?\s+" + MONTH_NAME + r",?\s+(?P<y>\d{4})", re.I),
    re.compile(_WEEKDAY + MONTH_NAME + r"\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y>\d{4})", re.I),
]
_TIME_FORMS = [
    re.compile(r"(?:[T\s]|,\s*)?\s*(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<f>\d{1,9}))?)?"
               r"(?:\s*(?P<ampm>[ap])\.?m\.?(?![a-z]))?", re.I),
    re.compile(r"T(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})?(?:[.,](?P<f>\d{1,9}))?", re.I),
    re.compile(r"\s*(?P<H>\d{1,2})\s*[时点](?:\s*(?P<M>\d{1,2})\s*分(?:\s*(?P<S>\d{1,2})\s*秒)?)?"),
]
_YEAR_OR_MONTH = re.compile(r"\d{4}(?:[-/.]\d{1,2})?|\d{4}\s*年(?:\s*\d{1,2}\s*月)?")
_TZ_SUFFIX = re.compile(r"\s*(?:(?P<utc>Z|UTC|GMT)|(?:UTC|GMT)?\s*(?P<off>[+-]\d{1,2}(?::?\d{2})?))$", re.I)


def parse_datetime(value: str, default_tz: tzinfo | str = UTC) -> datetime:
    """A tz-aware datetime from one date(-time) string; naive values are taken as ``default_tz``.

    Accepts ISO-8601 (date, date-time, 'Z' or offset, basic ``20230811T151000``), ``YYYY/MM/DD``,
    ``YYYY.MM.DD``, ``YYYYMMDD``, Chinese ``2023年8月11日 15:10`` / ``15时10分``, English
    ``11 Aug 2023`` / ``August 11, 2023`` (optionally RFC-2822 style with weekday and offset), with
    full-width digits, colons or spaces. The whole string must be a date: trailing words are an error.
    """
    if not isinstance(value, str):
        raise DateParseError(f"expected a date string, got {type(value).__name__}")
    text = fold_text(value)
    if not text:
        raise DateParseError("empty date")
    for form in _DATE_FORMS:
        m = form.match(text)
        if m:
            break
    else:
        if _YEAR_OR_MONTH.fullmatch(text):  # picking the 1st would invent a day the source never gave
            raise DateParseError(f"cannot read {value!r} as a date: it names a year or month but no day, "
                                 "and no day is invented (give the full date, e.g. 2023-08-11)")
        raise DateParseError(
            f"cannot read {value!r} as a date (expected e.g. 2023-08-11, 2023-08-11T15:10:00+08:00, "
            "2023/08/11, 20230811, 2023年8月11日 15:10 or 11 Aug 2023)")
    g = m.groupdict()
    month = MONTHS[g["mon"].lower()] if g.get("mon") else int(g["m"])
    year, day = int(g["y"]), int(g["d"])
    rest = text[m.end():]
    hh = mm = ss = us = 0
    for form in _TIME_FORMS:
        t = form.match(rest)
        if t and t.group("H") is not None:
            tg = t.groupdict()
            hh, mm, ss = int(tg["H"]), int(tg["M"] or 0), int(tg["S"] or 0)
            us = int((tg.get("f") or "0")[:6].ljust(6, "0"))
            ampm = tg.get("ampm")
            if ampm:
                if not 1 <= hh <= 12:
                    raise DateParseError(f"{value!r}: hour {hh} cannot take am/pm")
                hh = hh % 12 + (12 if ampm.lower() == "p" else 0)
            rest = rest[t.end():]
            break
    tz = resolve_tz(default_tz)
    if rest.strip():
        z = _TZ_SUFFIX.fullmatch(rest)
        if not z:
            raise DateParseError(f"cannot read {value!r} as a date: unexpected {rest.strip()!r} after the date")
        tz = UTC if z.group("utc") else _offset_tz(z.group("off"))
    try:
        return build_datetime(year, month, day, hh, mm, ss, us, tz)
    except DateParseError as exc:
        raise DateParseError(f"{value!r} is not a valid date: {exc}") from None


# --- periods --------------------------------------------------------------------------------------
def _calendar_end(tz: tzinfo | None) -> datetime:
    return datetime.max.replace(tzinfo=tz)


def last_instant(end: datetime) -> datetime:
    """The last instant before an exclusive ``end``. Past year 9999 there is no exclusive end to
    write down, so a period running to the calendar's end ends at ``datetime.max``, inclusive."""
    if end.year == MAXYEAR and end.replace(tzinfo=None) == datetime.max:
        return end
    return end - EPS


def _plus(start: datetime, delta: timedelta) -> datetime:
    try:
        return start + delta
    except OverflowError:
        return _calendar_end(start.tzinfo)


def _month_start(y: int, m: int, tz: tzinfo) -> datetime:
    """First instant of month ``m`` of year ``y`` (13 = next January), or the calendar's end."""
    y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
    return datetime(y, m, 1, tzinfo=tz) if y <= MAXYEAR else _calendar_end(tz)


@dataclass(frozen=True)
class Period:
    """``[start, end)``, tz-aware, with the granularity it was named at (one of GRANULARITIES).

    Periods are wall-clock periods of their zone: ``Period.day(2023, 8, 11, tz)`` runs from that
    midnight to the next one there. Constructors raise ValueError for days the calendar lacks.
    """

    start: datetime
    end: datetime
    granularity: str

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a period's start and end must be timezone-aware")

    @property
    def last(self) -> datetime:
        """The last instant inside (for inclusive bounds such as SearchFilters.until)."""
        return last_instant(self.end)

    @property
    def reaches_calendar_end(self) -> bool:
        return self.last == self.end

    def contains(self, t: datetime) -> bool:
        return self.start <= t <= self.last

    def overlaps(self, other: Period) -> bool:
        return self.start <= other.last and other.start <= self.last

    def label(self) -> str:
        """The hierarchy label ('2023-Q3'), else 'first day/last day' ('2023-07-31/2023-08-06')."""
        if self.granularity in LEVELS:
            return label_at(self.start, self.granularity)
        return f"{self.start.date().isoformat()}/{self.last.date().isoformat()}"

    # ---- constructors
    @classmethod
    def day(cls, y: int, m: int, d: int, tz: tzinfo = UTC) -> Period:
        s = datetime(y, m, d, tzinfo=tz)
        return cls(s, _plus(s, timedelta(days=1)), "day")

    @classmethod
    def week(cls, y: int, m: int, d: int, tz: tzinfo = UTC) -> Period:
        """The Monday-to-Sunday week holding that day."""
        day = datetime(y, m, d, tzinfo=tz)
        s = day - timedelta(days=day.weekday())
        return cls(s, _plus(s, timedelta(days=7)), "week")

    @classmethod
    def month(cls, y: int, m: int, tz: tzinfo = UTC) -> Period:
        return cls(datetime(y, m, 1, tzinfo=tz), _month_start(y, m + 1, tz), "month")

    @classmethod
    def quarter(cls, y: int, q: int, tz: tzinfo = UTC) -> Period:
        if not 1 <= q <= 4:
            raise ValueError(f"quarter must be in 1..4, got {q}")
        return cls(datetime(y, 3 * q - 2, 1, tzinfo=tz), _month_start(y, 3 * q + 1, tz), "quarter")

    @classmethod
    def half(cls, y: int, h: int, tz: tzinfo = UTC) -> Period:
        if h not in (1, 2):
            raise ValueError(f"half must be 1 or 2, got {h}")
        return cls(datetime(y, 6 * h - 5, 1, tzinfo=tz), _month_start(y, 6 * h + 1, tz), "half")

    @classmethod
    def year(cls, y: int, tz: tzinfo = UTC) -> Period:
        return cls(datetime(y, 1, 1, tzinfo=tz), _month_start(y, 13, tz), "year")

    @classmethod
    def instant(cls, t: datetime) -> Period:
        return cls(t, _plus(t, EPS), "instant")

    @classmethod
    def from_label(cls, label: str, tz: tzinfo = UTC) -> Period:
        """The period a hierarchy label names, in ``tz``; ValueError for anything else."""
        level = level_of(label)
        y = int(label[:4])
        if level == "year":
            return cls.year(y, tz)
        if level == "quarter":
            return cls.quarter(y, int(label[6]), tz)
        if level == "month":
            return cls.month(y, int(label[5:7]), tz)
        return cls.day(y, int(label[5:7]), int(label[8:10]), tz)


# --- the hierarchy's labels -----------------------------------------------------------------------
# ASCII digits only ('\d' also matches '２０２１' and '٢٠٢١', which then named no period at all);
# a day only after a month.
PERIOD_LABEL = re.compile(r"^([0-9]{4})(?:-Q([1-4])|-([0-9]{2})(?:-([0-9]{2}))?)?$")
_LABEL_FORMS = "use 2023, 2023-Q3, 2023-08 or 2023-08-11"


def _shown(label: str, limit: int = 40) -> str:
    return repr(label if len(label) <= limit else label[:limit] + "...")


def level_of(label: str) -> str:
    m = PERIOD_LABEL.match(label)
    if not m:
        raise ValueError(f"not a period label: {_shown(label)} ({_LABEL_FORMS})")
    try:  # a real calendar period: not month 13, not 30 February, not year 0
        datetime(int(m.group(1)), int(m.group(3) or 1), int(m.group(4) or 1))
    except ValueError as exc:
        raise ValueError(f"not a period label: {_shown(label)}: {exc} ({_LABEL_FORMS})") from None
    if m.group(4):
        return "day"
    if m.group(3):
        return "month"
    if m.group(2):
        return "quarter"
    return "year"


def parent_of(label: str) -> str | None:
    level = level_of(label)
    if level == "day":
        return label[:7]
    if level == "month":
        return f"{label[:4]}-Q{(int(label[5:7]) - 1) // 3 + 1}"
    if level == "quarter":
        return label[:4]
    return None


@lru_cache(maxsize=65536)  # a bulk ingest asks for the same few thousand days a million times
def lineage(label: str) -> tuple[str, ...]:
    """The label and its ancestors, finest first: '2023-08-11' -> (.., '2023-08', '2023-Q3', '2023')."""
    out = [label]
    while (p := parent_of(out[-1])) is not None:
        out.append(p)
    return tuple(out)


def quarter_months(label: str) -> list[str]:
    """The month labels of a quarter label ('2023-Q3' -> ['2023-07', '2023-08', '2023-09'])."""
    if level_of(label) != "quarter":
        raise ValueError(f"not a quarter label: {_shown(label)}")
    q = int(label[6])
    return [f"{label[:4]}-{m:02d}" for m in range(3 * q - 2, 3 * q + 1)]


def label_at(t: datetime, level: str) -> str:
    """The label of the ``level`` node holding ``t``, read on t's own wall clock. Years are four
    digits, as level_of requires."""
    if level == "day":
        return t.date().isoformat()
    if level == "month":
        return f"{t.year:04d}-{t.month:02d}"
    if level == "quarter":
        return f"{t.year:04d}-Q{(t.month - 1) // 3 + 1}"
    if level == "year":
        return f"{t.year:04d}"
    raise ValueError(f"not a hierarchy level: {level!r} (one of {', '.join(LEVELS)})")


def day_label(t: datetime) -> str:
    return t.date().isoformat()


def node_for_span(start: datetime | None, end: datetime | None, granularity: str | None) -> str | None:
    """The finest hierarchy node whose period holds the whole ``[start, end)`` (None for untimed
    facts, and for spans across a year's end)."""
    if start is None:
        return None
    last = last_instant(end) if end is not None else start
    if granularity == "day" or last.date() == start.date():
        return label_at(start, "day")
    if (start.year, start.month) == (last.year, last.month):
        return label_at(start, "month")
    if start.year == last.year and (start.month - 1) // 3 == (last.month - 1) // 3:
        return label_at(start, "quarter")
    if start.year == last.year:
        return label_at(start, "year")
    return None


# --- a user's time bound --------------------------------------------------------------------------
_USER_PERIOD = re.compile(r"([0-9]{4})(?:-[Qq]([0-9])|-([0-9]{1,2})(?:-([0-9]{1,2}))?)?")


def parse_period(value: str, tz: tzinfo | str = UTC) -> Period:
    """What a user means by a time bound: a year, quarter, month or day ('2023', '2023-Q3',
    '2023-08', '2023-8-11') is that whole period in ``tz``; a timestamp (anything
    :func:`parse_datetime` reads, naive ones in ``tz``) is an instant. DateParseError otherwise."""
    if not isinstance(value, str):
        raise DateParseError(f"expected a date string, got {type(value).__name__}")
    zone = resolve_tz(tz)
    m = _USER_PERIOD.fullmatch(fold_text(value))
    if m is None:
        return Period.instant(parse_datetime(value, zone))
    y, q, mo, d = m.groups()
    try:
        if q is not None:
            return Period.quarter(int(y), int(q), zone)
        if mo is None:
            return Period.year(int(y), zone)
        if d is None:
            return Period.month(int(y), int(mo), zone)
        return Period.day(int(y), int(mo), int(d), zone)
    except ValueError as exc:
        raise DateParseError(f"{value!r} is not a valid date: {exc}") from None


# --- a question's time scope ----------------------------------------------------------------------
SCOPE_MODES = ("in", "as_of", "before", "after", "latest", "any")
REPORTING_LAG_MAX = timedelta(days=92)  # about a quarter: earnings calls, annual-report lead times
_SCOPE_LEVEL = {"year": "year", "half": "year", "quarter": "quarter", "day": "day"}  # else its month


@dataclass(frozen=True)
class TimeScope:
    """``[start, end)`` like a Period (tz-aware, None = unbounded) plus how to read it.

    mode: 'in' (facts valid/occurring within the period), 'as_of' (state at the end), 'before' /
    'after' (relative to an anchor time), 'latest' (currently valid), 'any' (no time in question).
    """

    start: datetime | None
    end: datetime | None
    mode: str
    text: str = ""  # the phrase the scope came from
    granularity: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in SCOPE_MODES:
            raise ValueError(f"time scope mode must be one of {', '.join(SCOPE_MODES)}, got {self.mode!r}")

    @classmethod
    def of_period(cls, period: Period, mode: str, text: str = "") -> TimeScope:
        return cls(period.start, period.end, mode, text, period.granularity)

    @property
    def last(self) -> datetime | None:
        """The last instant inside (None when unbounded above)."""
        return None if self.end is None else last_instant(self.end)

    @property
    def point(self) -> datetime | None:
        """The instant a point-in-time question asks about, if any: the last instant of an 'as of'
        period or before an anchor, or the anchor of an 'after' question."""
        if self.mode in ("as_of", "before"):
            return self.last
        if self.mode == "after":
            return self.start
        return None

    def period_label(self) -> str | None:
        """The hierarchy label of the period the scope names ('2023-08' for 'in August 2023'); a
        half year is read as its year, a week or an unnamed granularity as its month."""
        if self.start is None:
            return None
        return label_at(self.start, _SCOPE_LEVEL.get(self.granularity or "", "month"))

    def publication_filter(self) -> SearchFilters | None:
        """A safe publication-date filter: evidence for a state may be published long before the
        asked time, so only period questions bound both sides and state questions bound the end.

        Reports about a period come out after it ends (a quarter's earnings call weeks into the next
        quarter, a month's statistics early the next month), so a period question's window runs on
        past its last instant by the period's own length, at most :data:`REPORTING_LAG_MAX`."""
        last = self.last
        if self.mode == "in" and self.start and last:
            return SearchFilters(since=self.start, until=last + min(last - self.start, REPORTING_LAG_MAX))
        if self.mode in ("as_of", "before") and last is not None:
            return SearchFilters(until=last)
        if self.mode == "after" and self.start is not None:
            return SearchFilters(since=self.start)
        return None

    def to_dict(self) -> dict:
        """``end`` is exclusive, as everywhere; ``last`` is the last instant inside."""
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        return {"start": iso(self.start), "end": iso(self.end), "last": iso(self.last), "mode": self.mode,
                "text": self.text, "granularity": self.granularity}
