"""chronorag.periods: one half-open Period type, the hierarchy's labels, and user time bounds read in
the configured default_tz by the Python API and the command line alike."""

import json
from datetime import date, datetime, timedelta, timezone
from typing import NamedTuple

import pytest

from chronorag.cli import main
from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.periods import (
    DateParseError, Period, TimeScope, label_at, level_of, lineage, node_for_span, parent_of, parse_period,
)
from chronorag.types import Document

UTC = timezone.utc
CST = timezone(timedelta(hours=8))
MAX_UTC = datetime.max.replace(tzinfo=UTC)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def bounds(p: Period) -> tuple:
    return p.start, p.end, p.granularity


class Raises(NamedTuple):
    error: type
    match: str


CASES = [
    # the hierarchy's labels
    ("year label", lambda: bounds(Period.from_label("2023")), (utc(2023, 1, 1), utc(2024, 1, 1), "year")),
    ("quarter label", lambda: bounds(Period.from_label("2023-Q3")), (utc(2023, 7, 1), utc(2023, 10, 1), "quarter")),
    ("Q4 ends at the new year", lambda: Period.from_label("2023-Q4").end, utc(2024, 1, 1)),
    ("month label", lambda: bounds(Period.from_label("2023-08")), (utc(2023, 8, 1), utc(2023, 9, 1), "month")),
    ("day label", lambda: bounds(Period.from_label("2023-08-11")), (utc(2023, 8, 11), utc(2023, 8, 12), "day")),
    ("leap day", lambda: bounds(Period.from_label("2024-02-29")), (utc(2024, 2, 29), utc(2024, 3, 1), "day")),
    ("leap February", lambda: Period.from_label("2024-02").last, utc(2024, 2, 29, 23, 59, 59, 999999)),
    ("no 29 February in 2023", lambda: Period.from_label("2023-02-29"), Raises(ValueError, "day is out of range")),
    ("month 13", lambda: Period.from_label("2023-13"), Raises(ValueError, "month must be in 1..12")),
    ("quarter Q5", lambda: Period.from_label("2023-Q5"), Raises(ValueError, "not a period label")),
    ("year 0", lambda: level_of("0000"), Raises(ValueError, "year 0 is out of range")),
    ("full-width digits are no label", lambda: Period.from_label("２０２１"), Raises(ValueError, "not a period label")),
    ("Arabic-Indic digits are no label", lambda: level_of("٢٠٢١"), Raises(ValueError, "not a period label")),
    ("a single-digit month is no label", lambda: level_of("2023-8"), Raises(ValueError, "not a period label")),
    # the calendar's end: no exclusive end past 9999, so the last instant is the end, inclusive
    ("year 9999", lambda: (Period.from_label("9999").end, Period.from_label("9999").last), (MAX_UTC, MAX_UTC)),
    ("9999-12-31", lambda: bounds(Period.from_label("9999-12-31")), (utc(9999, 12, 31), MAX_UTC, "day")),
    ("9999-Q4 holds the last instant", lambda: Period.from_label("9999-Q4").contains(MAX_UTC), True),
    ("9999-12 in +08:00", lambda: Period.month(9999, 12, CST).last, datetime.max.replace(tzinfo=CST)),
    # half-open: the end belongs to the next period
    ("end excluded", lambda: Period.day(2023, 8, 11).contains(utc(2023, 8, 12)), False),
    ("last included", lambda: Period.day(2023, 8, 11).contains(utc(2023, 8, 11, 23, 59, 59, 999999)), True),
    ("start included", lambda: Period.day(2023, 8, 11).contains(utc(2023, 8, 11)), True),
    ("adjacent days do not overlap", lambda: Period.day(2023, 8, 11).overlaps(Period.day(2023, 8, 12)), False),
    ("a day overlaps its month", lambda: Period.month(2023, 8).overlaps(Period.day(2023, 8, 31)), True),
    # labels, parents, lineage, the node of a span
    ("week label", lambda: Period.week(2023, 8, 2).label(), "2023-07-31/2023-08-06"),
    ("half label", lambda: Period.half(2023, 2).label(), "2023-07-01/2023-12-31"),
    ("quarter round trip", lambda: Period.quarter(2023, 3, CST).label(), "2023-Q3"),
    ("a year below 1000 is four digits", lambda: lineage(Period.month(999, 1).label()), ("0999-01", "0999-Q1", "0999")),
    ("parent of a day", lambda: parent_of("2023-08-11"), "2023-08"),
    ("parent of a month", lambda: parent_of("2023-08"), "2023-Q3"),
    ("a year has no parent", lambda: parent_of("2023"), None),
    ("lineage", lambda: lineage("2023-08-11"), ("2023-08-11", "2023-08", "2023-Q3", "2023")),
    ("node of a month span", lambda: node_for_span(utc(2023, 8, 1), utc(2023, 9, 1), "month"), "2023-08"),
    ("node of a span across months", lambda: node_for_span(utc(2023, 7, 20), utc(2023, 8, 3), "range"), "2023-Q3"),
    ("node of a span across years", lambda: node_for_span(utc(2023, 12, 20), utc(2024, 1, 3), "range"), None),
    ("labels read the wall clock of t's own offset",
     lambda: label_at(datetime(2022, 1, 1, 2, tzinfo=CST), "day"), "2022-01-01"),
    # a user's time bounds
    ("user month, one digit", lambda: bounds(parse_period("2023-8")), (utc(2023, 8, 1), utc(2023, 9, 1), "month")),
    ("user quarter", lambda: bounds(parse_period("2023-Q3")), (utc(2023, 7, 1), utc(2023, 10, 1), "quarter")),
    ("user quarter Q5", lambda: parse_period("2023-Q5"), Raises(DateParseError, "quarter must be in 1..4")),
    ("user month 13", lambda: parse_period("2021-13"), Raises(DateParseError, "'2021-13' is not a valid date")),
    ("user 30 February", lambda: parse_period("2024-02-30"), Raises(DateParseError, "day is out of range")),
    ("user full-width year, folded as timestamps are", lambda: bounds(parse_period("２０２１")),
     (utc(2021, 1, 1), utc(2022, 1, 1), "year")),
    ("ISO timestamp with an offset is an instant", lambda: (lambda p: (p.start, p.last, p.granularity))(
        parse_period("2023-08-11T15:10:00+08:00", UTC)), (datetime(2023, 8, 11, 15, 10, tzinfo=CST),) * 2 + ("instant",)),
    ("ISO timestamp in Z", lambda: parse_period("2023-08-11T07:10:00Z", CST).start, utc(2023, 8, 11, 7, 10)),
    ("naive timestamp read in default_tz", lambda: parse_period("2023-08-11 15:10", "Asia/Shanghai").start.utcoffset(),
     timedelta(hours=8)),
    ("the last instant of the calendar is an instant", lambda: parse_period("9999-12-31T23:59:59.999999Z").last, MAX_UTC),
    ("words are no bound", lambda: parse_period("yesterday"), Raises(DateParseError, "cannot read 'yesterday'")),
    # the same day in +08:00 and in UTC
    ("a +08:00 day starts at 16:00 UTC the day before", lambda: parse_period("2021-12-31", CST).start,
     utc(2021, 12, 30, 16)),
    ("a +08:00 day ends at 16:00 UTC", lambda: parse_period("2021-12-31", CST).end, utc(2021, 12, 31, 16)),
    ("02:00 +08:00 on New Year is outside the +08:00 old-year day",
     lambda: parse_period("2021-12-31", CST).contains(datetime(2022, 1, 1, 2, tzinfo=CST)), False),
    ("... and inside the UTC one", lambda: parse_period("2021-12-31", UTC).contains(datetime(2022, 1, 1, 2, tzinfo=CST)),
     True),
    # a question's scope is half-open too
    ("scope last", lambda: TimeScope.of_period(Period.month(2021, 3), "in").last, utc(2021, 3, 31, 23, 59, 59, 999999)),
    ("as-of point is the period's last instant", lambda: TimeScope.of_period(Period.year(2021), "as_of").point,
     utc(2021, 12, 31, 23, 59, 59, 999999)),
    ("scope label of a half year is its year", lambda: TimeScope.of_period(Period.half(2021, 2), "in").period_label(),
     "2021"),
    ("naive periods are refused", lambda: Period(datetime(2021, 1, 1), datetime(2021, 1, 2), "day"),
     Raises(ValueError, "timezone-aware")),
]


@pytest.mark.parametrize("compute, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_period_edge_cases(compute, expected):
    if isinstance(expected, Raises):
        with pytest.raises(expected.error, match=expected.match):
            compute()
    else:
        assert compute() == expected


# --- the configured default_tz, read the same by the Python API and the command line --------------
QUESTION = "tram budget"
DOCS = [
    Document("late-2021", "The tram budget passed.", datetime(2021, 12, 31, 20, tzinfo=CST)),
    Document("early-2022", "The tram budget was spent.", datetime(2022, 1, 1, 2, tzinfo=CST)),  # 2021-12-31 18:00 UTC
]


@pytest.fixture
def shanghai_store(tmp_path):
    data = tmp_path / "data"
    settings = load_settings(env={}, data_dir=data, embedder="none", graph="none", default_tz="Asia/Shanghai")
    with ChronoRAG(settings) as rag:
        rag.insert(DOCS)
    return data


def _api_ids(data, **bound) -> set[str]:
    settings = load_settings(env={}, data_dir=data, embedder="none", graph="none", default_tz="Asia/Shanghai")
    with ChronoRAG(settings) as rag:
        return {h.doc_id for h in rag.retrieve(QUESTION, **bound)}


def _cli_ids(capsys, data, *argv) -> set[str]:
    code = main(["retrieve", QUESTION, "--data-dir", str(data), "--json", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return {r["doc_id"] for r in json.loads(out)["results"]}


@pytest.fixture(params=["env", "config file"])
def tz_configured(request, tmp_path, monkeypatch):
    """default_tz = Asia/Shanghai for the command line, from the environment or a config file."""
    for name in ("DEFAULT_TZ", "EMBEDDER", "GRAPH", "CONFIG"):
        monkeypatch.delenv("CHRONORAG_" + name, raising=False)
    monkeypatch.chdir(tmp_path)
    if request.param == "env":
        monkeypatch.setenv("CHRONORAG_DEFAULT_TZ", "Asia/Shanghai")
        monkeypatch.setenv("CHRONORAG_EMBEDDER", "none")
        monkeypatch.setenv("CHRONORAG_GRAPH", "none")
    else:
        config = tmp_path / "settings.toml"
        config.write_text('default_tz = "Asia/Shanghai"\nembedder = "none"\ngraph = "none"\n')
        monkeypatch.setenv("CHRONORAG_CONFIG", str(config))


def test_cli_until_a_day_reads_it_in_default_tz(shanghai_store, tz_configured, capsys):
    # 2022-01-01 02:00 +08:00 is still 2021-12-31 in UTC: read in UTC, the day would let it in
    api_date = _api_ids(shanghai_store, until=date(2021, 12, 31))
    api_text = _api_ids(shanghai_store, until="2021-12-31")
    cli = _cli_ids(capsys, shanghai_store, "--until", "2021-12-31")
    assert api_date == api_text == cli == {"late-2021"}


def test_cli_since_a_year_reads_it_in_default_tz(shanghai_store, tz_configured, capsys):
    api_date = _api_ids(shanghai_store, since=date(2022, 1, 1))
    api_text = _api_ids(shanghai_store, since="2022")
    cli = _cli_ids(capsys, shanghai_store, "--since", "2022")
    assert api_date == api_text == cli == {"early-2022"}


def test_cli_timestamp_bounds_keep_their_own_offset(shanghai_store, tz_configured, capsys):
    bound = "2021-12-31T18:00:00Z"  # the instant early-2022 was published
    assert _api_ids(shanghai_store, since=bound) == _cli_ids(capsys, shanghai_store, "--since", bound) == {"early-2022"}
    assert _api_ids(shanghai_store, until=bound) == _cli_ids(capsys, shanghai_store, "--until", bound) == {
        "late-2021", "early-2022"}


@pytest.mark.parametrize("argv, message", [
    (["--until", "2021-02-30"], "--until: '2021-02-30' is not a valid date: day is out of range for month"),
    (["--since", "soon"], "--since: cannot read 'soon' as a date"),
    (["--since", "2022", "--until", "2021-12-31"], "--since 2022 is after --until 2021-12-31"),
])
def test_cli_bad_bound_is_one_line_naming_the_option(shanghai_store, tz_configured, capsys, argv, message):
    code = main(["retrieve", QUESTION, "--data-dir", str(shanghai_store), *argv])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"chronorag: error: {message}")
