from datetime import datetime, timedelta, timezone

import pytest

from chronorag.ingest.dates import (
    SHANGHAI, DateParseError, body_date, crud_header_date, parse_datetime, resolve_tz, split_crud_line,
)

UTC = timezone.utc
CST = timezone(timedelta(hours=8))


def _cst(*args):
    return datetime(*args, tzinfo=CST)


# --- parse_datetime ----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("2023-08-11", "2023-08-11T00:00:00+08:00"),
    ("2023-8-1", "2023-08-01T00:00:00+08:00"),
    ("2023-08-11T15:10", "2023-08-11T15:10:00+08:00"),
    ("2023-08-11 15:10:05", "2023-08-11T15:10:05+08:00"),
    ("2023-08-11T15:10:05.25", "2023-08-11T15:10:05.250000+08:00"),
    ("2023-08-11T15:10:00Z", "2023-08-11T15:10:00+00:00"),
    ("2023-08-11t15:10z", "2023-08-11T15:10:00+00:00"),
    ("2023-08-11T15:10:00+02:00", "2023-08-11T15:10:00+02:00"),
    ("2023-08-11T15:10:00-0530", "2023-08-11T15:10:00-05:30"),
    ("2023-08-11 15:10 +08", "2023-08-11T15:10:00+08:00"),
    ("2023-08-11 15:10 UTC", "2023-08-11T15:10:00+00:00"),
    ("20230811T151000Z", "2023-08-11T15:10:00+00:00"),
    ("2023/08/11", "2023-08-11T00:00:00+08:00"),
    ("2023/08/11 09:05", "2023-08-11T09:05:00+08:00"),
    ("2023.08.11", "2023-08-11T00:00:00+08:00"),
    ("20230811", "2023-08-11T00:00:00+08:00"),
    ("2023年8月11日", "2023-08-11T00:00:00+08:00"),
    ("2023年8月11日 15:10", "2023-08-11T15:10:00+08:00"),
    ("2023年08月11日15:10:30", "2023-08-11T15:10:30+08:00"),
    ("2023年8月11日15时10分", "2023-08-11T15:10:00+08:00"),
    ("2023年8月11号 9点", "2023-08-11T09:00:00+08:00"),
    ("２０２３年８月１１日　１５：１０", "2023-08-11T15:10:00+08:00"),  # full-width digits, space, colon
    ("2023-08-11 15：10", "2023-08-11T15:10:00+08:00"),
    ("  2023-08-11\u00a015:10 ", "2023-08-11T15:10:00+08:00"),
    ("11 Aug 2023", "2023-08-11T00:00:00+08:00"),
    ("August 11, 2023 3:10 pm", "2023-08-11T15:10:00+08:00"),
    ("Sept. 1, 2023 12:05 AM", "2023-09-01T00:05:00+08:00"),
    ("Fri, 11 Aug 2023 15:10:00 +0000", "2023-08-11T15:10:00+00:00"),
])
def test_parse_datetime_formats(value, expected):
    got = parse_datetime(value, CST)
    assert got.tzinfo is not None
    assert got.isoformat() == expected


def test_naive_values_take_the_default_zone_and_aware_ones_keep_theirs():
    assert parse_datetime("2023-08-11 15:10", UTC).isoformat() == "2023-08-11T15:10:00+00:00"
    assert parse_datetime("2023-08-11 15:10", SHANGHAI).utcoffset() == timedelta(hours=8)
    aware = parse_datetime("2023-08-11T15:10:00-04:00", SHANGHAI)
    assert aware.utcoffset() == timedelta(hours=-4)
    assert parse_datetime("2023-08-11", UTC) == datetime(2023, 8, 11, tzinfo=UTC)


@pytest.mark.parametrize("value, fragment", [
    ("2023-13-01", "month must be in 1..12"),
    ("2023-02-30", "day is out of range"),
    ("2023-08-11 25:00", "hour must be in 0..23"),
    ("2023-08-11 12:61", "minute must be in 0..59"),
    ("2023年13月1日", "month"),
    ("20231301", "month"),
    ("hello", "cannot read 'hello'"),
    ("", "empty"),
    ("   ", "empty"),
    ("2023-08-11 tomorrow", "unexpected 'tomorrow'"),
    ("7月28日", "cannot read"),          # no year: never guessed
    ("08-11", "cannot read"),
    ("2023-08", "names a year or month but no day, and no day is invented"),  # parse_period reads periods
    ("2023", "no day is invented"),
    ("2023年8月", "no day is invented"),
    ("2023-08-11 13:00 pm", "am/pm"),
    ("2023-08-11T10:00+25:00", "out of range"),
])
def test_parse_datetime_rejects(value, fragment):
    with pytest.raises(DateParseError) as info:
        parse_datetime(value, UTC)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_datetime_rejects_non_strings():
    with pytest.raises(DateParseError, match="got int"):
        parse_datetime(20230811, UTC)  # type: ignore[arg-type]


def test_resolve_tz():
    assert resolve_tz("UTC").utcoffset(datetime(2023, 1, 1)) == timedelta(0)
    assert resolve_tz("Asia/Shanghai").utcoffset(datetime(2023, 7, 1)) == timedelta(hours=8)
    assert resolve_tz("+05:30").utcoffset(None) == timedelta(hours=5, minutes=30)
    assert resolve_tz(CST) is CST
    with pytest.raises(ValueError, match="unknown time zone"):
        resolve_tz("Mars/Olympus")


# --- CRUD-RAG headers: one literal line per header shape found in the real corpus ----------------

BODY = "人民网北京8月10日电 记者报道，有关部门当日发布通知。"


@pytest.mark.parametrize("header, expected", [
    ("2023-08-11 15:10，", _cst(2023, 8, 11, 15, 10)),
    ("2023-07-29 11:49:25，", _cst(2023, 7, 29, 11, 49, 25)),
    ("2023-07-27，", _cst(2023, 7, 27)),
    ("2023-07-20  19:08，", _cst(2023, 7, 20, 19, 8)),
    ("2023-07-27 08:09 \xa0\xa0\xa0\xa0        ，", _cst(2023, 7, 27, 8, 9)),
    ("2023-07-26        ，", _cst(2023, 7, 26)),
    ("[ 2023-07-28 16：40 ] ，", _cst(2023, 7, 28, 16, 40)),
    ("2023/07/26 ，", _cst(2023, 7, 26)),
    ("[2023/07/20  16:52]，", _cst(2023, 7, 20, 16, 52)),
    ("[              2023/07/20  16:08              ]，", _cst(2023, 7, 20, 16, 8)),
    ("202307/25 05:01:02，", _cst(2023, 7, 25, 5, 1, 2)),
    ("202307/1915:55:52，", _cst(2023, 7, 19, 15, 55, 52)),
    ("202307/2609:10:20，", _cst(2023, 7, 26, 9, 10, 20)),
    ("23-07-26 22:00，", _cst(2023, 7, 26, 22, 0)),
    ("2023年07月19日，", _cst(2023, 7, 19)),
    ("[2023年07月20日]，", _cst(2023, 7, 20)),
    ("2023年07月26日 16:47:36，", _cst(2023, 7, 26, 16, 47, 36)),
    ("2023年07月20日 18:14:59 来自北京市，", _cst(2023, 7, 20, 18, 14, 59)),
    ("2023年07月21日 11:48:47 来自海外 美国，", _cst(2023, 7, 21, 11, 48, 47)),
    ("来源：新华网  |  2023年07月19日 20:27:42，", _cst(2023, 7, 19, 20, 27, 42)),
    ("来源：光明网-《光明日报》  |  2023年07月22日 06:50:26，", _cst(2023, 7, 22, 6, 50, 26)),
    ("http://www.gd.chinanews.com\xa0\xa0\xa0\xa02023年05月22日 10:33\xa0\xa0\xa0\xa0来源：中新网广东，",
     _cst(2023, 5, 22, 10, 33)),
    ("华夏经纬网 > 新闻 > 大陆新闻 > 社会综合\xa0\xa0\xa0\xa0\xa0\xa02023-07-26 18:00:49  ，", _cst(2023, 7, 26, 18, 0, 49)),
    ("时间：2023-07-26 19:29:00，", _cst(2023, 7, 26, 19, 29)),
    ("发布时间：2023-07-26 08:46:02，", _cst(2023, 7, 26, 8, 46, 2)),
    ("发表时间：2023-07-25 06:34，", _cst(2023, 7, 25, 6, 34)),
    ("发稿时间：2023-07-26 18:09:00作者：赵安琪" + " " * 72 + "来源：" + " " * 24 + "中国青年报客户端" + " " * 23 + "，",
     _cst(2023, 7, 26, 18, 9)),
    ("2023-07-24 22:32:56来源: 北京日报客户端              \t北京                举报            ，",
     _cst(2023, 7, 24, 22, 32, 56)),
    ("2023-07-26 10:29 \xa0来源：" + " " * 48 + "红星新闻网" + " " * 120 + "\xa0" + " " * 28 + "，",
     _cst(2023, 7, 26, 10, 29)),
    ("新华网                                    2023-08-04 08:40            ，", _cst(2023, 8, 4, 8, 40)),
    ("椰网/海拔新闻                记者吴英艳                                  2023-08-09 21:50            ，",
     _cst(2023, 8, 9, 21, 50)),
    # no year in the header (and none usable in BODY): undated, never a guessed year
    ("7-20 16:03，", None),
    ("07-20 22:43，", None),
    ("8-1 14:13，", None),
    ("08/16  13:50，", None),
    ("08/05，", None),
    ("[\t\t\t\t07/19\t\t\t\t]，", None),
    ("07月27日 08:23，", None),
    # no date at all
    ("，", None),
    ("/，", None),
    ("来源：中国青年报客户端，", None),
    ("记者：韩轩 方非，", None),
    ("3.工作人员镜头一组； 4.采访卢栋才 5.采访游煜根。     ", None),
    # impossible dates are not dates
    ("2023-13-11 15:10，", None),
    ("2023-02-30，", None),
    ("2023-07-28 25:10，", None),
])
def test_crud_header_shapes(header, expected):
    published_at, body, how = crud_header_date(header + "正文：" + BODY)
    assert body == BODY
    assert published_at == expected
    assert how == ("header" if expected else None)
    if expected is not None:
        assert published_at.utcoffset() == timedelta(hours=8)


def test_crud_default_zone_is_configurable():
    published_at, _, _ = crud_header_date("2023-08-11 15:10，正文：正文内容", UTC)
    assert published_at == datetime(2023, 8, 11, 15, 10, tzinfo=UTC)


def test_split_at_the_first_mark_only():
    header, body = split_crud_line("2023-08-11，正文：  第一段。正文：第二段。  ")
    assert header == "2023-08-11，"
    assert body == "第一段。正文：第二段。"
    assert split_crud_line("没有标记的一段文字。") == (None, "没有标记的一段文字。")


def test_body_date_when_the_header_has_none():
    published_at, body, how = crud_header_date("，正文：2023年7月28日，某市召开会议。")
    assert (published_at, how) == (_cst(2023, 7, 28), "body")
    assert body == "2023年7月28日，某市召开会议。"
    # also a line with no header mark at all
    assert crud_header_date("北京时间2023年7月23日10时50分，卫星发射升空。")[2] == "body"


def test_body_date_must_agree_with_a_yearless_header_and_keeps_its_time():
    line = "7-25 09:23，正文：中新网7月25日电 消息，2023年7月25日，法院公开宣判。"
    assert crud_header_date(line) == (_cst(2023, 7, 25, 9, 23), line.split("正文：")[1], "body")
    other_day = "7-25 09:23，正文：中新网7月25日电 该案发生于2016年3月22日。"
    assert crud_header_date(other_day)[0] is None


def test_body_date_cited_after_an_earlier_yearless_day_is_not_the_publication_date():
    line = "，正文：7月26日，记者获悉，《条例》已审议通过，自2023年10月1日起施行。"
    assert crud_header_date(line)[0] is None
    # the same cited date with no earlier day mention is taken (the fallback the corpus needs)
    assert crud_header_date("，正文：《条例》自2023年10月1日起施行。")[0] == _cst(2023, 10, 1)


@pytest.mark.parametrize("line", [
    "，正文：中新网7月28日电 记者从有关部门获悉。",  # day without a year: never completed
    "，正文：" + "文" * 300 + "2023年7月28日，会议召开。",  # full date, but beyond the window
    "，正文：2023年13月28日，会议召开。",  # impossible
    "，正文：2015年上海海关促成14项产品关税调整。",  # a year alone is not a day
    "，正文：",
])
def test_no_body_date(line):
    assert crud_header_date(line)[0] is None and crud_header_date(line)[2] is None


def test_body_fallback_can_be_switched_off():
    assert crud_header_date("，正文：2023年7月28日，会议召开。", body_fallback=False)[0] is None
    assert crud_header_date("2023-07-28，正文：会议召开。", body_fallback=False)[2] == "header"


def test_body_date_iso_form_and_year_range():
    assert body_date("截至2023-07-28，共有", SHANGHAI) == _cst(2023, 7, 28)
    assert body_date("编号1234-05-06的文件", SHANGHAI) is None


@pytest.mark.parametrize("value, first, last", [
    ("2024", datetime(2024, 1, 1), datetime(2024, 12, 31, 23, 59, 59, 999999)),
    ("2024-02", datetime(2024, 2, 1), datetime(2024, 2, 29, 23, 59, 59, 999999)),
    ("2023-12-31", datetime(2023, 12, 31), datetime(2023, 12, 31, 23, 59, 59, 999999)),
    ("9999", datetime(9999, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)),  # no overflow at the end
    ("9999-12-31", datetime(9999, 12, 31), datetime(9999, 12, 31, 23, 59, 59, 999999)),
    ("0001-01", datetime(1, 1, 1), datetime(1, 1, 31, 23, 59, 59, 999999)),
])
def test_period_bounds_whole_periods(value, first, last):
    from chronorag.periods import parse_period

    period = parse_period(value)
    assert (period.start, period.last) == (first.replace(tzinfo=UTC), last.replace(tzinfo=UTC))


@pytest.mark.parametrize("label, start, end", [
    ("2023-Q4", datetime(2023, 10, 1), datetime(2024, 1, 1)),
    ("2024-02", datetime(2024, 2, 1), datetime(2024, 3, 1)),
    ("9999", datetime(9999, 1, 1), datetime.max),
    ("9999-Q4", datetime(9999, 10, 1), datetime.max),
    ("9999-12", datetime(9999, 12, 1), datetime.max),
    ("9999-12-31", datetime(9999, 12, 31), datetime.max),
])
def test_period_span_ends_at_the_calendar_limit(label, start, end):
    from chronorag.periods import Period

    period = Period.from_label(label)
    assert (period.start, period.end) == (start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))


JULY_AUGUST_2023 = (datetime(2023, 7, 19, 8, tzinfo=SHANGHAI), datetime(2023, 8, 19, 20, tzinfo=SHANGHAI))


@pytest.mark.parametrize("line, expected, how", [
    ("7-20 16:03，正文：某地发生事故。", (2023, 7, 20, 16, 3), "header+feed-year"),
    ("08/16 13:50，正文：会议召开。", (2023, 8, 16, 13, 50), "header+feed-year"),
    ("，正文：中新网北京7月28日电 (记者 某某)会议召开。", (2023, 7, 28), "body+feed-year"),
    ("，正文：1953年7月27日，停战协定签字。8月1日，纪念活动举行。", (2023, 8, 1), "body+feed-year"),
    ("，正文：2024年8月9日，电影将上映。", None, None),        # a cited date, and no year-less day
    ("，正文：2023年6月25日，会议召开。", (2023, 6, 25), "body"),   # within the month of slack
    ("，正文：12月1日起施行。", None, None),                    # no year puts 1 December near the feed
])
def test_feed_span_rejects_cited_body_dates_and_lends_its_year_to_yearless_days(line, expected, how):
    found, _, got_how = crud_header_date(line, feed_span=JULY_AUGUST_2023)
    assert (found, got_how) == ((_cst(*expected), how) if expected else (None, None))


def test_a_feed_spanning_years_leaves_yearless_days_undated():
    span = (datetime(2021, 1, 5, tzinfo=SHANGHAI), datetime(2023, 8, 19, tzinfo=SHANGHAI))
    assert crud_header_date("7-20 16:03，正文：某地发生事故。", feed_span=span)[0] is None
    assert crud_header_date("7-20 16:03，正文：某地发生事故。")[0] is None  # no feed: no year either
    assert crud_header_date("7-20 16:03，正文：某地发生事故。", body_fallback=False, feed_span=JULY_AUGUST_2023)[0] is None


def test_yearless_29_february_takes_only_a_leap_year():
    def span(y):
        return datetime(y, 2, 1, tzinfo=SHANGHAI), datetime(y, 3, 20, tzinfo=SHANGHAI)

    assert crud_header_date("2-29 10:00，正文：闰日。", feed_span=span(2024))[0] == _cst(2024, 2, 29, 10, 0)
    assert crud_header_date("2-29 10:00，正文：闰日。", feed_span=span(2023))[0] is None
