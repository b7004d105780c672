"""`--format ect`: ECT-QA's raw earnings-call lines as dated documents, never with an invented date."""

import gzip
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chronorag.ingest.loaders import guess_format, load, load_ect
from chronorag.types import Document, LoadError

UTC = timezone.utc
REPO = Path(__file__).resolve().parents[1]
# Where benchmarks/common.py looks: $CHRONORAG_DATASETS, else ../shared/datasets beside the repository.
ECT_DIR = Path(os.environ.get("CHRONORAG_DATASETS", REPO.parent / "shared" / "datasets")) / "ect_qa"
ECT_CORPUS = ECT_DIR / "corpus_2024.jsonl.gz"
needs_ect = pytest.mark.skipif(not ECT_CORPUS.is_file(), reason=f"ECT-QA corpus not found at {ECT_CORPUS}")


def _split(records):
    records = list(records)
    return ([r for r in records if isinstance(r, Document)], [r for r in records if isinstance(r, LoadError)])


def _record(code="CROX", quarter="q1", header="Q1 2024 Earnings Call\nMay 07, 2024\n,\n8:30 a.m. ET\n", **over):
    rec = {"company_name": "Crocs, Inc.", "stock_code": code, "sector": "consumer_discretionary",
           "year": "2024", "quarter": quarter, "URL": f"https://example.com/{code}/{quarter}",
           "raw_content": "Image source: The Motley Fool.\nCrocs\n(\nCROX\n1.26%\n)\n" + header
                          + "Contents:\nPrepared Remarks\nOperator\nGood day.",
           "cleaned_content": f"Operator: Good day, and welcome to the {quarter} call.", "token_count": 9}
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not None}


def _write(path: Path, lines: list) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for item in lines:
            fh.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
    return path


@pytest.fixture
def small(tmp_path):
    return _write(tmp_path / "corpus_2024.jsonl.gz", [
        _record(),  # the real header shape: day, then time and zone on the next lines
        _record(code="HD US", quarter="q2", header="Q2 2024 Earnings Call\n13 August 2024\n"),  # day-first, no time
        _record(code="JD US", quarter="q3", header="Q3 2024 Earnings Call\nThird quarter results\n"),  # no date
        _record(code="SKX", quarter="q4", cleaned_content=None),  # no transcript
        "[1, 2]",  # not an object
    ])


def test_records_get_the_evidence_file_id_the_transcript_a_titled_fiscal_period_and_metadata(small):
    docs, errors = _split(load(small, "ect"))
    assert [d.doc_id for d in docs] == ["consumer_discretionary-CROX-2024-q1", "consumer_discretionary-HD_US-2024-q2",
                                        "consumer_discretionary-JD_US-2024-q3"]
    crox = docs[0]
    assert crox.text == "Operator: Good day, and welcome to the q1 call."
    assert crox.title == "Crocs, Inc. (CROX) Q1 2024 earnings call" and crox.source == "ect_qa"
    assert crox.metadata == {"company_name": "Crocs, Inc.", "stock_code": "CROX", "sector": "consumer_discretionary",
                             "year": "2024", "quarter": "q1", "URL": "https://example.com/CROX/q1",
                             "date_from": "call_date+time"}
    assert docs[1].metadata["stock_code"] == "HD US"  # the id replaces the space, the metadata keeps the code


def test_a_call_date_with_time_and_zone_is_that_instant_otherwise_the_day_at_utc_midnight(small):
    docs, _ = _split(load(small, "ect"))
    assert docs[0].published_at == datetime(2024, 5, 7, 8, 30, tzinfo=ZoneInfo("America/New_York"))
    assert docs[0].published_at.astimezone(UTC) == datetime(2024, 5, 7, 12, 30, tzinfo=UTC)  # EDT in May
    assert docs[1].published_at == datetime(2024, 8, 13, tzinfo=UTC) and docs[1].published_at.utcoffset().total_seconds() == 0
    assert docs[1].metadata["date_from"] == "call_date"


def test_a_record_without_a_readable_call_date_stays_undated_and_says_why(small):
    docs, _ = _split(load(small, "ect"))
    undated = docs[2]
    assert undated.published_at is None
    assert undated.metadata["date_from"] == "none" and "no month-name date" in undated.metadata["undated_reason"]


def test_missing_cleaned_content_or_a_non_object_is_a_load_error_with_file_and_line(small):
    _, errors = _split(load(small, "ect"))
    assert [(e.source, e.line) for e in errors] == [(str(small), 4), (str(small), 5)]
    assert errors[0].doc_id == "consumer_discretionary-SKX-2024-q4" and "missing 'cleaned_content'" in errors[0].message
    assert "expected a JSON object" in errors[1].message


@pytest.mark.parametrize("header, expected", [
    ("Jul 30, 2024\n,\n4:30 p.m. ET", datetime(2024, 7, 30, 16, 30, tzinfo=ZoneInfo("America/New_York"))),
    ("Sept. 5 2024", datetime(2024, 9, 5, tzinfo=UTC)),
    ("Feb 13, 2025, 8:30 a.m.", datetime(2025, 2, 13, tzinfo=UTC)),  # a time without a zone: the day only
    ("Feb 13, 2025 8:30 a.m. XYZ", datetime(2025, 2, 13, tzinfo=UTC)),  # a zone we do not know: the day only
    ("Feb 30, 2024", None),  # not a real day: undated, not the 1st of March
    ("May 07, 2019", None),  # years from fiscal 2024: some other date, not this call's
])
def test_call_date_forms(tmp_path, header, expected):
    path = _write(tmp_path / "c.jsonl.gz", [_record(header=f"Q1 2024 Earnings Call\n{header}\n")])
    (doc,) = load_ect(path)
    assert doc.published_at == expected
    if expected is None:
        assert doc.metadata["date_from"] == "none" and doc.metadata["undated_reason"]


def test_a_date_far_down_the_page_is_not_the_call_date(tmp_path):
    late = "Q1 2024 Earnings Call\n" + "Operator remarks. " * 40 + "The dividend is payable on May 20, 2024.\n"
    (doc,) = load_ect(_write(tmp_path / "c.jsonl.gz", [_record(header=late)]))
    assert doc.published_at is None


def test_default_tz_sets_the_midnight_of_a_date_only_call(tmp_path):
    path = _write(tmp_path / "c.jsonl.gz", [_record(header="Q1 2024 Earnings Call\nMay 07, 2024\n")])
    (doc,) = load(path, "ect", default_tz="Asia/Shanghai")
    assert doc.published_at.isoformat() == "2024-05-07T00:00:00+08:00"


def test_duplicate_ids_keep_the_first(tmp_path):
    path = _write(tmp_path / "c.jsonl.gz", [_record(), _record(cleaned_content="Other.")])
    docs, errors = _split(load_ect(path))
    assert len(docs) == 1 and "first seen on line 1" in errors[0].message


def test_guess_format_sniffs_ect_lines_and_jsonl_points_at_the_right_format(small, tmp_path):
    assert guess_format(small) == "ect"
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "text": "x", "published_at": "2024-01-01"}) + "\n")
    assert guess_format(plain) == "jsonl"
    broken_first = _write(tmp_path / "broken.jsonl.gz", ["{not json", _record()])
    assert guess_format(broken_first) == "ect"  # a bad first line is the loader's to report
    _, errors = _split(load(small, "jsonl"))
    assert "use --format ect" in errors[0].message
    _, errors = _split(load(plain, "ect"))  # chronorag JSONL given --format ect: one clear error per line
    assert "missing 'cleaned_content'" in errors[0].message or "missing 'sector'" in errors[0].message


@needs_ect
def test_the_real_ect_qa_corpus_loads_every_transcript_dated():
    docs, errors = _split(load(ECT_CORPUS))  # format guessed
    assert len(docs) == 96 and errors == []
    assert all(d.published_at is not None and d.metadata["date_from"] == "call_date+time" for d in docs)
    cited = set()
    with open(ECT_DIR / "questions_2024.jsonl", encoding="utf-8") as fh:
        for line in fh:
            cited |= {e["ect_filename"].removesuffix(".json") for e in json.loads(line).get("evidence_list") or []}
    assert cited and cited <= {d.doc_id for d in docs}
    # A Q4 call comes after the fiscal year it closes: for the companies whose fiscal year is the
    # calendar year (their Q1 2024 call is in 2024) that is 2025. Autodesk, DXC and Western Digital
    # run fiscal 2024 from 2023 (Q1 calls in 2023), so their Q4 2024 calls fall in 2024.
    by_id = {d.doc_id: d for d in docs}
    q4 = [d for d in docs if d.doc_id.endswith("-2024-q4")]
    calendar = [d for d in q4 if by_id[d.doc_id.removesuffix("q4") + "q1"].published_at.year == 2024]
    assert len(q4) == 24 and len(calendar) == 21
    assert all(d.published_at.year == 2025 for d in calendar)
    assert all(d.published_at > by_id[d.doc_id.removesuffix("q4") + "q3"].published_at for d in q4)
