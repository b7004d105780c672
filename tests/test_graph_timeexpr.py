"""Date expressions (English, Chinese, relative) and question time scopes."""

from datetime import datetime, timedelta, timezone

import pytest

from chronorag.graph.timeexpr import find_dates, normalise
from chronorag.graph.timescope import parse_time_scope

UTC = timezone.utc
CST = timezone(timedelta(hours=8))
REF = datetime(2023, 8, 17, 10, tzinfo=CST)  # a Thursday


def label(expr, ref=REF):
    span = normalise(expr, ref)
    return None if span is None else (span.label(), span.granularity)


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("Q3 2020", ("2020-Q3", "quarter")),
        ("revenue for the third quarter of 2023", ("2023-Q3", "quarter")),
        ("2022 Q4 results", ("2022-Q4", "quarter")),
        ("in March 2021", ("2021-03", "month")),
        ("on March 11, 2021", ("2021-03-11", "day")),
        ("5 May 2020", ("2020-05-05", "day")),
        ("2023-08-11", ("2023-08-11", "day")),
        ("during 2022", ("2022", "year")),
        ("yesterday", ("2023-08-16", "day")),
        ("last Tuesday", ("2023-08-15", "day")),
        ("last month", ("2023-07", "month")),
        ("two weeks ago", ("2023-07-31/2023-08-06", "week")),
        ("2023年8月", ("2023-08", "month")),
        ("8月11日", ("2023-08-11", "day")),
        ("2023年8月11日", ("2023-08-11", "day")),
        ("昨天", ("2023-08-16", "day")),
        ("上周二", ("2023-08-08", "day")),
        ("去年", ("2022", "year")),
        ("2023年第三季度", ("2023-Q3", "quarter")),
        ("二〇二一年", ("2021", "year")),
    ],
)
def test_normalise(expr, expected):
    assert label(expr) == expected


def test_spans_are_tz_aware_in_the_reference_zone_with_exclusive_end():
    span = normalise("8月11日", REF)
    assert span.start == datetime(2023, 8, 11, tzinfo=CST)
    assert span.end == datetime(2023, 8, 12, tzinfo=CST)
    assert span.contains(datetime(2023, 8, 11, 23, 59, tzinfo=CST))
    assert not span.contains(span.end)


def test_year_from_publication_date_wraps_back_for_late_months():
    # a January article speaking of '12月30日' means last December, not next
    assert label("12月30日", datetime(2024, 1, 3, tzinfo=CST)) == ("2023-12-30", "day")
    assert label("December 30", datetime(2024, 1, 3, tzinfo=UTC)) == ("2023-12-30", "day")


def test_relative_expressions_need_a_reference():
    assert normalise("yesterday", None) is None
    assert normalise("Q3 2020", None).label() == "2020-Q3"  # absolute expressions still work
    assert normalise("Q3 2020", None).start.tzinfo is UTC


def test_money_and_counts_are_not_years():
    assert find_dates("revenue of $2023 million", REF) == []
    assert find_dates("sales of 2023 million units", REF) == []
    assert [d.text for d in find_dates("It grew 2021% in 2019.", REF)] == ["2019"]


def test_several_mentions_in_order_without_overlap():
    found = find_dates("2023年8月11日，昨天，2023年第三季度", REF)
    assert [d.text for d in found] == ["2023年8月11日", "昨天", "2023年第三季度"]


NOW = datetime(2024, 1, 1, tzinfo=UTC)


def test_scope_in_period():
    s = parse_time_scope("Who led Acme in March 2021?", NOW)
    assert (s.mode, s.start, s.end) == ("in", datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 4, 1, tzinfo=UTC))
    assert s.last.date().isoformat() == "2021-03-31"
    assert parse_time_scope("What happened during 2022?", NOW).granularity == "year"
    assert parse_time_scope("revenue in Q3 2020", NOW).start == datetime(2020, 7, 1, tzinfo=UTC)
    zh = parse_time_scope("2023年8月发生了什么？", NOW)
    assert zh.mode == "in" and zh.start.month == 8 and zh.last.day == 31 and zh.end.month == 9


def test_scope_as_of_latest_any():
    s = parse_time_scope("As of June 2022, where was Acme based?", NOW)
    assert s.mode == "as_of" and s.start is None and s.last.date().isoformat() == "2022-06-30"
    assert s.end == datetime(2022, 7, 1, tzinfo=UTC) and s.point == s.last
    assert parse_time_scope("Who is the CEO now?", NOW).mode == "latest"
    assert parse_time_scope("Who currently runs Acme?", NOW).mode == "latest"
    assert parse_time_scope("目前谁是总裁？", NOW).mode == "latest"
    assert parse_time_scope("Who runs Acme?", NOW).mode == "any"


def test_scope_before_after_with_dates_and_anchors():
    s = parse_time_scope("Who ran Acme before 2020?", NOW)
    assert s.mode == "before" and s.end == datetime(2020, 1, 1, tzinfo=UTC) and s.start is None
    assert s.point == s.last < datetime(2020, 1, 1, tzinfo=UTC)
    s = parse_time_scope("What changed after 2020?", NOW)
    assert s.mode == "after" and s.start == datetime(2021, 1, 1, tzinfo=UTC)
    s = parse_time_scope("What changed since March 2021?", NOW)
    assert s.start == datetime(2021, 3, 1, tzinfo=UTC)
    anchor_time = datetime(2021, 5, 4, tzinfo=UTC)
    seen = []

    def resolver(anchor, mode):
        seen.append((anchor, mode))
        return anchor_time

    s = parse_time_scope("Who was CEO of Acme before Jane Doe became CEO?", NOW, resolver)
    assert seen == [("Jane Doe became CEO", "before")]
    assert s.mode == "before" and s.end == anchor_time and s.point == anchor_time - timedelta(microseconds=1)
    s = parse_time_scope("After Jane Doe stepped down, who led Acme?", NOW, resolver)
    assert seen[-1] == ("Jane Doe stepped down", "after") and s.start == anchor_time
    # an anchor nobody can resolve leaves the scope unbounded instead of guessing
    assert parse_time_scope("Who led Acme before the merger?", NOW, lambda a, m: None).mode == "any"


def test_publication_filter_only_bounds_what_is_safe():
    s = parse_time_scope("Who led Acme in March 2021?", NOW)
    f = s.publication_filter()
    # a period's reports come out after it: the window runs on by the period's length (capped)
    assert f.since == s.start and f.until == s.last + (s.last - s.start)
    q4 = parse_time_scope("What did Acme report for the fourth quarter of 2024?", NOW).publication_filter()
    assert q4.since == datetime(2024, 10, 1, tzinfo=timezone.utc)
    assert datetime(2025, 2, 5, tzinfo=timezone.utc) <= q4.until < datetime(2025, 4, 3, tzinfo=timezone.utc)
    year = parse_time_scope("What happened to Acme in 2021?", NOW)
    assert year.publication_filter().until == year.last + timedelta(days=92)
    s = parse_time_scope("As of June 2022, where was Acme based?", NOW)
    assert s.publication_filter().since is None and s.publication_filter().until == s.last
    assert parse_time_scope("Who is the CEO now?", NOW).publication_filter() is None


def test_naive_now_is_rejected():
    with pytest.raises(ValueError):
        parse_time_scope("in 2020", datetime(2024, 1, 1))


def test_year_head_and_literal_shortcuts_match_a_full_scan(monkeypatch):
    from dataclasses import replace
    from datetime import datetime, timezone

    from chronorag.graph import timeexpr

    ref = datetime(2018, 6, 1, tzinfo=timezone.utc)
    texts = ["二〇二三年八月十一日发布", "2023 年 8 月和2024年第三季度", "12345年5月", "2019年上半年，2020年第三季度",
             "1999年代的2000年", "2023年2024年", "据报道，3月5日至2021年4月", "上周三和下个月，第二季度营收",
             "今年下半年，星期五", "华为 2023Q3 财报与 Q4 2022 对比，日期 2023-08-11"]
    fast = [timeexpr.find_dates(t, ref) for t in texts]
    # every rule scans the whole text, even without the literals it needs
    plain = lambda rules: [replace(r, needs=(), year_led=False) for r in rules]  # noqa: E731
    for name in ("_ZH_RULES", "_EN_RULES", "_EN_NUMERIC"):
        monkeypatch.setattr(timeexpr, name, plain(getattr(timeexpr, name)))
    assert [timeexpr.find_dates(t, ref) for t in texts] == fast
    assert sum(map(len, fast)) >= 18
