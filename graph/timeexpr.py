"""Find date expressions in English and Chinese text and normalise them to time spans.

Relative expressions ('last Tuesday', '昨天', '8月11日', 'the third quarter') are resolved against a
reference instant, normally the document's publication date, because news text is written relative
to the day it appeared. Every span is tz-aware (the reference's zone, else UTC) with an exclusive end.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import islice

from chronorag.periods import MONTH_NAME, MONTHS, Period

TimeSpan = Period  # the name extractors know a mention's period by


@dataclass(frozen=True)
class DateMention:
    """A date expression found in text: character offsets, surface text and its span."""

    start: int
    end: int
    text: str
    span: Period


# ----------------------------------------------------------------- span builders
day_span = Period.day
month_span = Period.month
quarter_span = Period.quarter
half_span = Period.half
year_span = Period.year


def week_span(day: datetime) -> Period:
    """The Monday-to-Sunday week holding ``day``."""
    return Period.week(day.year, day.month, day.day, day.tzinfo)


def span_of_day(t: datetime) -> Period:
    return Period.day(t.year, t.month, t.day, t.tzinfo or timezone.utc)


def shift_months(y: int, m: int, delta: int) -> tuple[int, int]:
    k = y * 12 + (m - 1) + delta
    return k // 12, k % 12 + 1


# ------------------------------------------------------------------- vocabulary
_WEEKDAYS = {
    "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5, "sunday": 6,
}
_ORDINAL_Q = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "final": 4, "last": 4}
_ZH_DIGIT = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_WEEKDAY = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}

_MON = MONTH_NAME
_YEAR = r"(?P<year>(?:19|20)\d{2})"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_WD = r"(?P<wd>monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_ZHN = r"[0-9〇零一二两三四五六七八九十]"
_WEEK_WORDS = ("周", "星期", "礼拜")


def _zh_int(text: str) -> int:
    """'12', '十二', '二十三', '二〇二三' -> int."""
    if text.isdigit():
        return int(text)
    if "十" in text:
        tens, _, ones = text.partition("十")
        return (_ZH_DIGIT.get(tens, 1) if tens else 1) * 10 + (_ZH_DIGIT.get(ones, 0) if ones else 0)
    value = 0
    for ch in text:
        value = value * 10 + _ZH_DIGIT[ch]
    return value


def _near_year(ref: datetime, month: int, day: int = 1, window_days: int = 183) -> int:
    """Year for a month/day given without one: the reference's, unless that lands far in the future."""
    y = ref.year
    try:
        cand = datetime(y, month, min(day, calendar.monthrange(y, month)[1]), tzinfo=ref.tzinfo)
    except ValueError:
        return y
    if cand - ref > timedelta(days=window_days):
        return y - 1
    if ref - cand > timedelta(days=366 - window_days + 180):
        return y + 1
    return y


def _past_weekday(ref: datetime, wd: int, mode: str) -> datetime:
    """'last'/'on' Tuesday: the most recent such day before ref; 'next': the first after; 'this': this week's."""
    delta = (ref.weekday() - wd) % 7
    if mode == "next":
        return ref + timedelta(days=(wd - ref.weekday()) % 7 or 7)
    if mode == "this":
        return ref - timedelta(days=ref.weekday() - wd)
    if mode == "last" and delta == 0:
        delta = 7
    return ref - timedelta(days=delta)


def _relative_unit(ref: datetime, unit: str, offset: int, tz: tzinfo) -> Period:
    if unit in ("day", "days"):
        return span_of_day(ref + timedelta(days=offset))
    if unit in ("week", "weeks"):
        return week_span(ref + timedelta(days=7 * offset))
    if unit in ("month", "months"):
        y, m = shift_months(ref.year, ref.month, offset)
        return month_span(y, m, tz)
    if unit in ("quarter", "quarters"):
        q = (ref.month - 1) // 3 + offset
        return quarter_span(ref.year + q // 4, q % 4 + 1, tz)
    return year_span(ref.year + offset, tz)


# ----------------------------------------------------------------------- rules
Handler = Callable[[dict, datetime, tzinfo], "Period | None"]


@dataclass(frozen=True)
class Rule:
    """A date pattern, the handler that turns its match into a period, and what lets
    :func:`find_dates` skip or narrow its scan.

    ``needs``: literals the pattern cannot match without (any one of them); a substring test is far
    cheaper than a regex scan, and most chunks lack 季度, 半年 or a week word. ``year_led``: every
    match begins with a Chinese year head ('2023年'), so the pattern is tried only where one occurs.
    ``numeric``: worth running on Chinese text too ('2023-08-11', 'Q3 2023').
    """

    pattern: re.Pattern
    handler: Handler
    needs: tuple[str, ...] = ()
    year_led: bool = False
    numeric: bool = False


def _rule_collector(flags: int = 0):
    """A list and a ``@rule(pattern, ...)`` decorator that appends a Rule to it, in order (earlier
    rules win overlaps)."""
    rules: list[Rule] = []

    def rule(pattern: str, needs: tuple[str, ...] = (), year_led: bool = False, numeric: bool = False):
        def deco(fn: Handler) -> Handler:
            rules.append(Rule(re.compile(pattern, flags), fn, needs, year_led, numeric))
            return fn
        return deco

    return rules, rule


# --------------------------------------------------------------------- English
def _en_rules() -> list[Rule]:
    rules, rule = _rule_collector(re.IGNORECASE)

    @rule(r"\b(?P<y>(?:19|20)\d{2})[-/.](?P<m>[01]?\d)[-/.](?P<d>[0-3]?\d)\b", numeric=True)
    def _iso(g, ref, tz):
        return day_span(int(g["y"]), int(g["m"]), int(g["d"]), tz)

    @rule(r"\b" + _MON + r"\s+" + _DAY + r"\b(?:,?\s+" + _YEAR + r"\b)?")
    def _mdy(g, ref, tz):
        m, d = MONTHS[g["mon"].lower()], int(g["day"])
        y = int(g["year"]) if g["year"] else _near_year(ref, m, d)
        return day_span(y, m, d, tz)

    @rule(r"\b" + _DAY + r"\s+(?:of\s+)?" + _MON + r"(?:,?\s+" + _YEAR + r")?\b")
    def _dmy(g, ref, tz):
        m, d = MONTHS[g["mon"].lower()], int(g["day"])
        y = int(g["year"]) if g["year"] else _near_year(ref, m, d)
        return day_span(y, m, d, tz)

    @rule(r"\b" + _MON + r",?\s+(?:of\s+)?" + _YEAR + r"\b")
    def _my(g, ref, tz):
        return month_span(int(g["year"]), MONTHS[g["mon"].lower()], tz)

    @rule(r"\b(?:q(?P<q>[1-4])|(?P<q2>[1-4])q)\s*(?:of\s+)?(?:fy|fiscal\s+(?:year\s+)?)?'?\s*(?P<year>(?:19|20)?\d{2})\b",
          needs=("q", "Q"), numeric=True)
    def _qy(g, ref, tz):
        y = int(g["year"])
        y = y + 2000 if y < 100 else y
        return quarter_span(y, int(g["q"] or g["q2"]), tz)

    @rule(r"\b" + _YEAR + r"\s*[-/ ]?\s*q(?P<q>[1-4])\b", needs=("q", "Q"), numeric=True)
    def _yq(g, ref, tz):
        return quarter_span(int(g["year"]), int(g["q"]), tz)

    @rule(r"\b(?P<ord>first|second|third|fourth|final|1st|2nd|3rd|4th)[\s-]+(?:fiscal\s+)?quarter(?:\s+(?:of|in)\s+(?:fiscal\s+(?:year\s+)?)?" + _YEAR + r"|,?\s+(?P<year2>(?:19|20)\d{2}))?\b")
    def _ordq(g, ref, tz):
        q = _ORDINAL_Q[g["ord"].lower()]
        year = g["year"] or g["year2"]
        if year:
            return quarter_span(int(year), q, tz)
        # 'the third quarter' in a text from early next year usually means last year's
        cur_q = (ref.month - 1) // 3 + 1
        return quarter_span(ref.year if q <= cur_q else ref.year - 1, q, tz)

    @rule(r"\b(?:h(?P<h>[12])\s*(?:fy)?\s*" + _YEAR + r"|(?P<hw>first|second)\s+half\s+of\s+" + r"(?P<year2>(?:19|20)\d{2}))\b")
    def _half(g, ref, tz):
        h = int(g["h"]) if g["h"] else (1 if g["hw"].lower() == "first" else 2)
        return half_span(int(g["year"] or g["year2"]), h, tz)

    @rule(r"\b(?P<w>yesterday|today|tonight|tomorrow)\b")
    def _ytd(g, ref, tz):
        offset = {"yesterday": -1, "today": 0, "tonight": 0, "tomorrow": 1}[g["w"].lower()]
        return span_of_day(ref + timedelta(days=offset))

    @rule(r"\b(?P<rel>last|this|next|past|previous|earlier\s+this|later\s+this)\s+(?P<unit>week|month|quarter|year)\b")
    def _rel_unit(g, ref, tz):
        rel = g["rel"].lower().split()[0]
        offset = {"last": -1, "past": -1, "previous": -1, "this": 0, "earlier": 0, "later": 0, "next": 1}[rel]
        return _relative_unit(ref, g["unit"].lower(), offset, tz)

    @rule(r"\b(?P<n>\d{1,3}|a|an|one|two|three|four|five|six|seven|eight|nine|ten)\s+(?P<unit>days?|weeks?|months?|years?)\s+ago\b")
    def _ago(g, ref, tz):
        words = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                 "seven": 7, "eight": 8, "nine": 9, "ten": 10}
        n = words.get(g["n"].lower()) or int(g["n"])
        return _relative_unit(ref, g["unit"].lower(), -n, tz)

    @rule(r"\b(?:(?P<rel>last|this|next|on|past)\s+)?" + _WD + r"\b")
    def _weekday(g, ref, tz):
        rel = (g["rel"] or "on").lower()
        return span_of_day(_past_weekday(ref, _WEEKDAYS[g["wd"].lower()], "last" if rel == "past" else rel))

    @rule(r"\b(?:in|during|since|by|until|through|before|after|early|late|mid|end\s+of|beginning\s+of)[\s-]+(?:early\s+|late\s+|mid-?)?" + _MON + r"(?![\w-])")
    def _in_month(g, ref, tz):
        m = MONTHS[g["mon"].lower()]
        return month_span(_near_year(ref, m), m, tz)

    @rule(r"(?<![$£€\d.,])\b(?:fy\s*|fiscal\s+(?:year\s+)?)?" + _YEAR + r"\b(?![-/.,]?\d|%|\s*(?:million|billion|bn|m\b))")
    def _year(g, ref, tz):
        return year_span(int(g["year"]), tz)

    return rules


# --------------------------------------------------------------------- Chinese
def _zh_rules() -> list[Rule]:
    rules, rule = _rule_collector()

    @rule(r"(?P<y>\d{4}|[〇零一二三四五六七八九]{4})\s*年\s*(?P<m>" + _ZHN + r"{1,2})\s*月\s*(?P<d>" + _ZHN + r"{1,3})\s*[日号]", needs=("月",), year_led=True)
    def _ymd(g, ref, tz):
        return day_span(_zh_int(g["y"]), _zh_int(g["m"]), _zh_int(g["d"]), tz)

    @rule(r"(?P<y>\d{4}|[〇零一二三四五六七八九]{4})\s*年\s*(?:第\s*)?(?P<q>[1-4一二三四])\s*季度", needs=("季度",), year_led=True)
    def _yq(g, ref, tz):
        return quarter_span(_zh_int(g["y"]), _zh_int(g["q"]), tz)

    @rule(r"(?P<y>\d{4}|[〇零一二三四五六七八九]{4})\s*年\s*(?P<h>上|下)半年", needs=("半年",), year_led=True)
    def _yh(g, ref, tz):
        return half_span(_zh_int(g["y"]), 1 if g["h"] == "上" else 2, tz)

    @rule(r"(?P<y>\d{4}|[〇零一二三四五六七八九]{4})\s*年\s*(?P<m>" + _ZHN + r"{1,2})\s*月(?:份)?", needs=("月",), year_led=True)
    def _ym(g, ref, tz):
        return month_span(_zh_int(g["y"]), _zh_int(g["m"]), tz)

    @rule(r"(?P<y>(?:19|20)\d{2}|[一二][〇零一二三四五六七八九]{3})\s*年(?![代前后])", needs=("年",), year_led=True)
    def _y(g, ref, tz):
        return year_span(_zh_int(g["y"]), tz)

    @rule(r"(?<![\d年])(?P<m>1[0-2]|0?[1-9]|十[一二]?|[一二三四五六七八九])\s*月\s*(?P<d>[0-3]?\d|[一二三]?十[一二三四五六七八九]?|[一二三四五六七八九])\s*[日号]", needs=("月",))
    def _md(g, ref, tz):
        m, d = _zh_int(g["m"]), _zh_int(g["d"])
        return day_span(_near_year(ref, m, d), m, d, tz)

    @rule(r"(?:第\s*)?(?P<q>[1-4一二三四])\s*季度", needs=("季度",))
    def _q(g, ref, tz):
        q = _zh_int(g["q"])
        cur_q = (ref.month - 1) // 3 + 1
        return quarter_span(ref.year if q <= cur_q else ref.year - 1, q, tz)

    @rule(r"(?<![\d年个])(?P<m>1[0-2]|0?[1-9]|十[一二]?)\s*月(?:份)?(?![\d一二三四五六七八九十]|底前)", needs=("月",))
    def _m(g, ref, tz):
        m = _zh_int(g["m"])
        return month_span(_near_year(ref, m), m, tz)

    @rule(r"(?P<w>前天|昨天|昨日|今天|今日|明天|明日|后天)")
    def _rel_day(g, ref, tz):
        off = {"前天": -2, "昨天": -1, "昨日": -1, "今天": 0, "今日": 0, "明天": 1, "明日": 1, "后天": 2}[g["w"]]
        return span_of_day(ref + timedelta(days=off))

    @rule(r"(?P<rel>上|本|这|下)(?:个)?(?:周|星期|礼拜)(?P<wd>[一二三四五六日天])?", needs=_WEEK_WORDS)
    def _rel_week(g, ref, tz):
        off = {"上": -1, "本": 0, "这": 0, "下": 1}[g["rel"]]
        if g["wd"]:
            wk = week_span(ref + timedelta(days=7 * off))
            return span_of_day(wk.start + timedelta(days=_ZH_WEEKDAY[g["wd"]]))
        return week_span(ref + timedelta(days=7 * off))

    @rule(r"(?:周|星期|礼拜)(?P<wd>[一二三四五六日天])", needs=_WEEK_WORDS)
    def _weekday(g, ref, tz):
        return span_of_day(_past_weekday(ref, _ZH_WEEKDAY[g["wd"]], "on"))

    @rule(r"(?P<rel>上|本|这|下)(?:个)?月", needs=("月",))
    def _rel_month(g, ref, tz):
        return _relative_unit(ref, "month", {"上": -1, "本": 0, "这": 0, "下": 1}[g["rel"]], tz)

    @rule(r"(?P<w>前年|去年|今年|明年)(?:(?P<h>上|下)半年)?", needs=("年",))
    def _rel_year(g, ref, tz):
        y = ref.year + {"前年": -2, "去年": -1, "今年": 0, "明年": 1}[g["w"]]
        return half_span(y, 1 if g["h"] == "上" else 2, tz) if g["h"] else year_span(y, tz)

    @rule(r"(?P<h>上|下)半年", needs=("半年",))
    def _half(g, ref, tz):
        return half_span(ref.year, 1 if g["h"] == "上" else 2, tz)

    return rules


_EN_RULES = _en_rules()
_ZH_RULES = _zh_rules()
_EN_NUMERIC = [r for r in _EN_RULES if r.numeric]
_LATIN_WORD = re.compile(r"[A-Za-z]{3,}")
_ZH_HINT = re.compile(r"[年月日天周期季]")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_EN_HINT = re.compile(r"\d|day|week|month|quarter|year|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)", re.I)
_ZH_YEAR_HEAD = re.compile(r"(?:\d{4}|[〇零一二三四五六七八九]{4})\s*年")  # where year_led rules begin


def _matches_at(pattern: re.Pattern, text: str, starts: list[int]):
    """What ``pattern.finditer(text)`` yields when every match must begin at one of ``starts``."""
    end = 0
    for pos in starts:
        if pos < end:
            continue
        m = pattern.match(text, pos)
        if m is not None:
            end = max(m.end(), pos + 1)
            yield m


def find_dates(text: str, ref: datetime | None = None, tz: tzinfo | None = None) -> list[DateMention]:
    """All non-overlapping date expressions in ``text``, earliest first.

    ``ref`` (tz-aware) anchors relative and year-less expressions; without it those are skipped.
    Earlier rules win overlaps, so '2023年8月11日' is one day, not a year plus a day.
    """
    if ref is not None and ref.tzinfo is None:
        raise ValueError("ref must be timezone-aware")
    zone = tz or (ref.tzinfo if ref is not None else timezone.utc)
    found: list[DateMention] = []
    taken: list[tuple[int, int]] = []
    rule_sets = []
    chinese = _CJK.search(text) is not None
    if chinese and _ZH_HINT.search(text):
        rule_sets.append(_ZH_RULES)
    if _EN_HINT.search(text):
        english = not chinese or next(islice(_LATIN_WORD.finditer(text), 3, None), None) is not None  # > 3 words
        rule_sets.append(_EN_RULES if english else _EN_NUMERIC)
    year_heads: list[int] | None = None
    for rules in rule_sets:
        for r in rules:
            if r.needs and not any(lit in text for lit in r.needs):
                continue
            if r.year_led:
                # one scan for the year heads serves every such rule; matching only there gives
                # finditer's matches at a third of the cost
                if year_heads is None:
                    year_heads = [h.start() for h in _ZH_YEAR_HEAD.finditer(text)]
                matches = _matches_at(r.pattern, text, year_heads)
            else:
                matches = r.pattern.finditer(text)
            for m in matches:
                s, e = m.span()
                if any(s < te and ts < e for ts, te in taken):
                    continue
                g = m.groupdict()
                needs_ref = not any(g.get(k) for k in ("y", "year", "year2"))
                if needs_ref and ref is None:
                    continue
                try:
                    span = r.handler(g, ref if ref is not None else datetime(1970, 1, 1, tzinfo=zone), zone)
                except (ValueError, KeyError, OverflowError):
                    continue
                # a period running to the calendar's end has no exclusive end: such a "date" is a
                # placeholder (9999-12-31), not a time the text is about
                if span is None or span.reaches_calendar_end:
                    continue
                taken.append((s, e))
                found.append(DateMention(s, e, m.group(0), span))
    found.sort(key=lambda d: d.start)
    return found


def normalise(expression: str, ref: datetime | None = None) -> Period | None:
    """The span of the first date expression in ``expression`` (None if there is none)."""
    mentions = find_dates(expression, ref)
    return mentions[0].span if mentions else None
