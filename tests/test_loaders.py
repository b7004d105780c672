import contextlib
import gzip
import json
import os
import signal
import tracemalloc
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from chronorag.ingest.loaders import guess_format, load, load_crud, load_directory, load_jsonl
from chronorag.types import Document, LoadError

UTC = timezone.utc
SAMPLES = Path(__file__).resolve().parents[1] / "chronorag" / "samples"


def _split(records):
    records = list(records)
    return ([r for r in records if isinstance(r, Document)], [r for r in records if isinstance(r, LoadError)])


def _write_lines(path: Path, lines: list) -> Path:
    """Each item is a dict (JSON-encoded), str (written as is) or bytes (raw)."""
    out = b""
    for item in lines:
        if isinstance(item, dict):
            item = json.dumps(item, ensure_ascii=False)
        out += (item.encode("utf-8") if isinstance(item, str) else item) + b"\n"
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(out)
    return path


# --- JSONL ---------------------------------------------------------------------------------------

def test_jsonl_good_records(tmp_path):
    path = _write_lines(tmp_path / "news.jsonl", [
        {"id": "a", "text": "Alpha.", "published_at": "2023-08-11", "title": " A ", "metadata": {"k": 1}},
        {"id": "b", "text": "Beta.", "published_at": "2023-08-11T15:10:00+02:00", "source": "wire"},
        {"id": "c", "text": "Gamma.", "published_at": None},
        {"id": 7, "text": "Numeric id.", "published_at": ""},
    ])
    docs, errors = _split(load_jsonl(path))
    assert errors == []
    a, b, c, d = docs
    assert a == Document("a", "Alpha.", datetime(2023, 8, 11, tzinfo=UTC), "A", "news", {"k": 1})
    assert b.published_at.isoformat() == "2023-08-11T15:10:00+02:00" and b.source == "wire"
    assert c.published_at is None and d.published_at is None and d.doc_id == "7"


def test_jsonl_default_zone_applies_to_naive_values_only(tmp_path):
    path = _write_lines(tmp_path / "x.jsonl", [
        {"id": "a", "text": "t", "published_at": "2023-08-11 15:10"},
        {"id": "b", "text": "t", "published_at": "2023-08-11T15:10Z"},
    ])
    a, b = load_jsonl(path, "Asia/Shanghai")
    assert a.published_at.isoformat() == "2023-08-11T15:10:00+08:00"
    assert b.published_at.isoformat() == "2023-08-11T15:10:00+00:00"


def test_jsonl_every_bad_record_is_reported_with_its_line(tmp_path):
    path = _write_lines(tmp_path / "bad.jsonl", [
        b"\xef\xbb\xbf" + json.dumps({"id": "ok1", "text": "BOM before me is fine."}).encode(),  # 1
        "{broken json",                                                        # 2
        "[1, 2]",                                                              # 3
        {"text": "no id"},                                                     # 4
        {"id": "  ", "text": "blank id"},                                      # 5
        {"id": ["x"], "text": "list id"},                                      # 6
        {"id": "e1", "text": ""},                                              # 7
        {"id": "e2", "text": " \n\t "},                                        # 8
        {"id": "e3", "text": 42},                                              # 9
        {"id": "e4"},                                                          # 10
        {"id": "d1", "text": "bad date", "published_at": "2023-13-45"},        # 11
        {"id": "d2", "text": "date as number", "published_at": 20230811},      # 12
        {"id": "t1", "text": "title", "title": ["x"]},                         # 13
        {"id": "m1", "text": "meta", "metadata": "not an object"},             # 14
        b'{"id": "u1", "text": "caf\xe9"}',                                    # 15: latin-1 byte
        "",                                                                    # 16: blank, skipped
        "   ",                                                                 # 17: blank, skipped
        {"id": "ok2", "text": "still loads"},                                  # 18
        {"id": "ok1", "text": "duplicate of line 1"},                          # 19
        "true",                                                                # 20
        {"id": "a\nb", "text": "newline in id"},                             # 21
        {"id": "nul\u0000", "text": "NUL in id"},                             # 22
        {"id": "x" * 1025, "text": "very long id"},                            # 23
        {"id": "odd/\\id é中 #?", "text": "odd but printable id loads"},       # 24
    ])
    docs, errors = _split(load_jsonl(path))
    assert [d.doc_id for d in docs] == ["ok1", "ok2", "odd/\\id é中 #?"]
    assert docs[0].text == "BOM before me is fine."
    got = {e.line: (e.doc_id, e.message) for e in errors}
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20, 21, 22, 23]
    assert all(e.source == str(path) for e in errors)
    expect = {
        2: (None, "malformed JSON"), 3: (None, "expected a JSON object, got an array"),
        4: (None, "missing 'id'"), 5: (None, "empty 'id'"), 6: (None, "'id' must be a string"),
        7: ("e1", "empty 'text'"), 8: ("e2", "empty 'text'"), 9: ("e3", "'text' must be a string"),
        10: ("e4", "missing 'text'"), 11: ("d1", "bad 'published_at'"), 12: ("d2", "'published_at' must be a string"),
        13: ("t1", "'title' must be a string"), 14: ("m1", "'metadata' must be an object"),
        15: ("u1", "not valid UTF-8: byte 0xe9"), 19: ("ok1", "duplicate id (first seen on line 1"),
        20: (None, "got a boolean"), 21: (None, "control character"), 22: (None, "control character"),
        23: (None, "longer than 1024"),
    }
    for line, (doc_id, fragment) in expect.items():
        assert got[line][0] == doc_id, line
        assert fragment in got[line][1], (line, got[line][1])
    assert "month must be in 1..12" in got[11][1]
    assert str(errors[0]).startswith(f"{path}:2: malformed JSON")


def test_jsonl_fields_it_does_not_read_are_named_once_with_a_hint(tmp_path, caplog):
    path = _write_lines(tmp_path / "x.jsonl", [
        {"id": "a", "text": "t", "date": "2021-03-01", "url": "http://x"},  # 1: both named
        {"id": "b", "text": "t", "date": "2021-03-02"},                     # 2: nothing new
        {"doc_id": "c", "content": "t"},                                     # 3: misnamed id and text
        {"id": "d", "body": "t"},                                            # 4
    ])
    with caplog.at_level("WARNING", logger="chronorag.ingest.loaders"):
        docs, errors = _split(load_jsonl(path))
    assert [d.doc_id for d in docs] == ["a", "b"] and docs[0].published_at is None  # never guessed
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3
    assert warnings[0].startswith(f"{path}:1: ignoring field(s) 'date' (did you mean 'published_at'?), 'url':")
    assert "put other fields under 'metadata'" in warnings[0]
    assert f"{path}:3:" in warnings[1] and "'doc_id' (did you mean 'id'?)" in warnings[1]
    assert f"{path}:4:" in warnings[2] and "'body' (did you mean 'text'?)" in warnings[2]
    got = {e.line: e.message for e in errors}
    assert got == {3: "missing 'id' (the record has 'doc_id'; rename it to 'id')",
                   4: "missing 'text' (the record has 'body'; rename it to 'text')"}


def test_jsonl_gz_and_crlf(tmp_path):
    path = tmp_path / "news.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'{"id": "a", "text": "one", "published_at": "2022-01-02"}\r\n{"id": "b", "text": "two"}\r\n')
    docs, errors = _split(load_jsonl(path))
    assert errors == [] and [d.doc_id for d in docs] == ["a", "b"]
    assert docs[0].published_at == datetime(2022, 1, 2, tzinfo=UTC) and docs[0].source == "news"


def test_truncated_gz_keeps_what_was_read_and_reports_the_rest(tmp_path):
    whole = b"".join(json.dumps({"id": f"d{i}", "text": "x" * 200}).encode() + b"\n" for i in range(400))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(whole)[:-40])
    docs, errors = _split(load_jsonl(path))
    assert len(docs) > 300 and len(errors) == 1
    assert "cannot read past this point" in errors[0].message


def test_utf16_file_is_one_clear_error(tmp_path):
    path = tmp_path / "u16.jsonl"
    path.write_bytes('{"id": "a", "text": "x"}\n'.encode("utf-16"))
    docs, errors = _split(load_jsonl(path))
    assert docs == [] and len(errors) == 1 and "UTF-16" in errors[0].message and errors[0].line == 1


def test_loading_streams(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(3000):
            fh.write(json.dumps({"id": f"d{i}", "text": "word " * 300}) + "\n")  # ~4.5 MB
    records = load_jsonl(path)
    assert isinstance(records, types.GeneratorType)
    assert next(records).doc_id == "d0"
    tracemalloc.start()
    count = 1
    for _ in records:
        count += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 3000
    assert peak < 1_000_000, peak  # the file is 4.5 MB; only a line or two is ever held


# --- CRUD-RAG --------------------------------------------------------------------------------------

def test_load_crud(tmp_path):
    path = _write_lines(tmp_path / "corpus.jsonl.gz", [
        {"id": "f:0", "text": "[ 2023-07-28 16：40 ] ，正文：人民网柏林7月28日电 招待会举行。"},
        {"id": "f:1", "text": "，正文：2023年7月26日，会议召开。"},
        {"id": "f:2", "text": "7-20 16:03，正文：中新网7月20日电 某地发生事故。"},
        {"id": "f:3", "text": "2023-08-11 15:10，正文：   "},
        {"id": "f:4", "text": "，正文：2023年7月26日，会议召开。"},  # same text, distinct id: fine
        {"id": "f:0", "text": "2023-07-29，正文：重复的编号。"},
        {"text": "2023-07-29，正文：没有编号。"},
    ])
    docs, errors = _split(load_crud(path))
    assert [d.doc_id for d in docs] == ["f:0", "f:1", "f:2", "f:4"]
    d0, d1, d2, _ = docs
    assert d0.text == "人民网柏林7月28日电 招待会举行。" and d0.source == "crud_rag"
    assert d0.published_at.isoformat() == "2023-07-28T16:40:00+08:00" and d0.metadata == {"date_from": "header"}
    assert d1.published_at.isoformat() == "2023-07-26T00:00:00+08:00" and d1.metadata == {"date_from": "body"}
    # a year-less header day takes the one year the feed's header dates (2023-07-28, 2023-07-29) allow
    assert d2.published_at.isoformat() == "2023-07-20T16:03:00+08:00" and d2.metadata == {"date_from": "header+feed-year"}
    assert [(e.line, e.doc_id) for e in errors] == [(4, "f:3"), (6, "f:0"), (7, None)]
    assert "empty body" in errors[0].message


def test_crud_body_dates_must_fall_within_their_feeds_header_span(tmp_path):
    """A body's first full date is often a cited one (an anniversary's event, a rule's start, a
    release): it stands only within a month of the dates the same feed's headers carry."""
    path = _write_lines(tmp_path / "corpus.jsonl.gz", [
        {"id": "news.txt:0", "text": "，正文：1953年7月27日，朝鲜停战协定签字。今年是胜利70周年。"},
        {"id": "news.txt:1", "text": "2023-07-20 10:00，正文：会议召开。"},
        {"id": "news.txt:2", "text": "，正文：2023年6月25日，某市召开会议。"},         # 25 days before: kept
        {"id": "news.txt:3", "text": "，正文：2024年8月9日，电影将上映。"},           # a release date
        {"id": "news.txt:4", "text": "2023-08-19 09:00，正文：又一次会议。"},
        {"id": "news.txt:5", "text": "，正文：2023年9月18日，展会开幕。"},           # 30 days after: kept
        {"id": "old.txt:0", "text": "，正文：2015年1月28日，司法解释公布。"},        # a feed without headers
        {"id": "old.txt:1", "text": "7-20 16:03，正文：某地发生事故。"},              # ... has no year to lend
    ])
    dated = {d.doc_id: (d.published_at and d.published_at.date().isoformat(), d.metadata.get("date_from"))
             for d in load_crud(path)}
    assert dated == {
        "news.txt:0": (None, None), "news.txt:1": ("2023-07-20", "header"), "news.txt:2": ("2023-06-25", "body"),
        "news.txt:3": (None, None), "news.txt:4": ("2023-08-19", "header"), "news.txt:5": ("2023-09-18", "body"),
        "old.txt:0": ("2015-01-28", "body"), "old.txt:1": (None, None),
    }
    assert {d.doc_id: d.published_at for d in load_crud(path, body_dates=False)}["news.txt:2"] is None


def test_crud_format_refuses_chronorag_jsonl_records(tmp_path):
    """Our own JSONL read with --format crud would lose its dates (and replace the stored, dated
    documents with undated ones): such records are refused, each with its line, and nothing lands."""
    path = _write_lines(tmp_path / "mine.jsonl", [
        {"id": "a", "text": "Northwind named a new chief executive.", "published_at": "2021-03-01"},
        {"id": "b", "text": "2023-07-27，正文：正文内容。", "title": "T"},
        {"id": "c", "text": "2023-07-27，正文：真正的原始行。"},
    ])
    docs, errors = _split(load(path, "crud"))
    assert [d.doc_id for d in docs] == ["c"]
    assert [(e.line, e.doc_id) for e in errors] == [(1, "a"), (2, "b")]
    assert "published_at" in errors[0].message and "--format jsonl" in errors[0].message
    assert "title" in errors[1].message

def test_load_dispatch_and_guessing(tmp_path):
    crud = _write_lines(tmp_path / "corpus.jsonl", [{"id": "x:1", "text": "2023-07-27，正文：正文内容。"}])
    plain = _write_lines(tmp_path / "plain.jsonl",
                         [{"id": "a", "text": "正文：not a header here", "published_at": "2023-01-01"}])
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "2023-08-11-a.md").write_text("# A\nbody")
    assert guess_format(crud) == "crud" and guess_format(plain) == "jsonl" and guess_format(folder) == "dir"
    (crud_doc,) = load(crud)
    assert crud_doc.source == "crud_rag" and crud_doc.published_at.utcoffset() == timedelta(hours=8)
    (plain_doc,) = load(plain)
    assert plain_doc.published_at == datetime(2023, 1, 1, tzinfo=UTC)
    (dir_doc,) = load(folder)
    assert dir_doc.doc_id == "dir/2023-08-11-a.md"  # scoped by the folder's name
    (forced,) = load(crud, "jsonl")
    assert forced.text.startswith("2023-07-27，正文：")  # raw line kept as text when told it is plain JSONL
    (utc_crud,) = load(crud, "crud", default_tz="UTC")
    assert utc_crud.published_at.utcoffset() == timedelta(0)


def test_load_argument_errors_are_raised_before_iteration(tmp_path):
    good = _write_lines(tmp_path / "a.jsonl", [{"id": "a", "text": "t"}])
    other = tmp_path / "notes.csv"
    other.write_text("id,text\n")
    with pytest.raises(ValueError, match="unknown input format 'xml'"):
        load(good, "xml")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load(other)
    with pytest.raises(ValueError, match="reads a directory"):
        load(good, "dir")
    with pytest.raises(ValueError, match="reads a file"):
        load(tmp_path, "jsonl")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="unknown time zone"):
        load(good, "jsonl", default_tz="Nowhere/Land")


# --- directories -----------------------------------------------------------------------------------

def test_directory_front_matter_file_names_and_titles(tmp_path):
    root = tmp_path / "notes"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "fm.md").write_text("---\ndate: 2023-08-11 09:30\ntitle: \"Front title\"\nauthor: Kim\n"
                                "tags:\n  - a\n---\n# Heading\n\nBody text.\n")
    (root / "2023-08-11-dash.md").write_text("# Dash heading #\nText.")
    (root / "sub" / "20230812_compact.txt").write_text("# not a title in txt\nText.")
    (root / "sub" / "deeper" / "2023_08_13 spaced.TXT").write_text("Text.")
    (root / "nodate.txt").write_text("Just text.")
    (root / "fm-beats-name-2020-01-01.md").write_text("---\npublished_at: 2023-08-14T10:00:00+02:00\n---\nText.")
    (root / "unclosed.md").write_text("---\ndate: 2023-08-15\nno closing fence, so no front matter\n")
    (root / "bad-name-2023-13-40.txt").write_text("Text.")
    (root / ".hidden" / "2023-01-01.txt").write_text("hidden")
    (root / ".dotfile.txt").write_text("hidden")
    (root / "image.png").write_bytes(b"\x89PNG")
    old = datetime(2001, 1, 1).timestamp()
    os.utime(root / "nodate.txt", (old, old))
    docs, errors = _split(load_directory(root))
    assert errors == []
    assert all(d.doc_id.startswith("notes/") for d in docs)
    by_id = {d.doc_id.removeprefix("notes/"): d for d in docs}
    assert sorted(by_id) == [
        "2023-08-11-dash.md", "bad-name-2023-13-40.txt", "fm-beats-name-2020-01-01.md", "fm.md", "nodate.txt",
        "sub/20230812_compact.txt", "sub/deeper/2023_08_13 spaced.TXT", "unclosed.md"]
    fm = by_id["fm.md"]
    assert fm.published_at == datetime(2023, 8, 11, 9, 30, tzinfo=UTC)
    assert fm.title == "Front title" and fm.text == "# Heading\n\nBody text."
    assert fm.metadata == {"author": "Kim", "date_from": "front_matter"} and fm.source == "notes"
    assert by_id["2023-08-11-dash.md"].title == "Dash heading"
    assert by_id["2023-08-11-dash.md"].metadata == {"date_from": "filename"}
    assert by_id["sub/20230812_compact.txt"].published_at == datetime(2023, 8, 12, tzinfo=UTC)
    assert by_id["sub/20230812_compact.txt"].title is None
    assert by_id["sub/deeper/2023_08_13 spaced.TXT"].published_at == datetime(2023, 8, 13, tzinfo=UTC)
    assert by_id["fm-beats-name-2020-01-01.md"].published_at.isoformat() == "2023-08-14T10:00:00+02:00"
    assert by_id["nodate.txt"].published_at is None  # mtime is never a date
    assert by_id["bad-name-2023-13-40.txt"].published_at is None
    assert by_id["unclosed.md"].published_at is None and by_id["unclosed.md"].text.startswith("---\ndate:")


def test_directory_bad_files(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "a_ok.txt").write_text("fine")
    (root / "b_latin1.txt").write_bytes("line one\nline two caf\xe9\n".encode("latin-1"))
    (root / "c_empty.txt").write_text("")
    (root / "d_blank.md").write_text(" \n\n")
    (root / "e_only_fm.md").write_text("---\ntitle: x\n---\n\n")
    (root / "f_bad_date.md").write_text("---\ntitle: x\ndate: 2023-02-30\n---\ntext")
    (root / "g_bom.txt").write_bytes(b"\xef\xbb\xbf2023 text with BOM")
    docs, errors = _split(load_directory(root, "Asia/Shanghai"))
    assert [d.doc_id for d in docs] == ["d/a_ok.txt", "d/g_bom.txt"] and docs[1].text == "2023 text with BOM"
    got = {e.doc_id.removeprefix("d/"): e for e in errors}
    assert got["b_latin1.txt"].line == 2 and "not valid UTF-8: byte 0xe9" in got["b_latin1.txt"].message
    assert got["c_empty.txt"].message == "empty file" and got["d_blank.md"].message == "empty file"
    assert "no text after the front matter" in got["e_only_fm.md"].message
    assert got["f_bad_date.md"].line == 3 and "day is out of range" in got["f_bad_date.md"].message
    assert got["f_bad_date.md"].source == str(root / "f_bad_date.md")


def test_front_matter_comments_toml_and_unclosed_blocks(tmp_path, caplog):
    (tmp_path / "a_comment.md").write_text(
        '---\ndate: 2021-01-01 # when it was written\ntitle: "Issue #4" # quoted\ntag: c#sharp\n---\nText.')
    (tmp_path / "b_toml.md").write_text(
        '+++\ntitle = "Release notes" # comment\ndate = 2022-07-08\ndraft = false\n[params]\ndate = 1999-01-01\n'
        '+++\nBody.')
    (tmp_path / "c_toml_quoted.md").write_text("+++\npublished_at = '2022-07-09T10:00:00+02:00'\n+++\nBody.")
    (tmp_path / "d_unclosed.md").write_text("---\ndate: 2023-08-15\nno closing fence\n")
    (tmp_path / "e_rule.md").write_text("---\nA Markdown rule, then text.\n")
    (tmp_path / "f_year.md").write_text("---\ndate: 2021\n---\nText.")
    with caplog.at_level("WARNING", logger="chronorag.ingest.loaders_dir"):
        docs, errors = _split(load_directory(tmp_path))
    by_name = {d.doc_id.rsplit("/", 1)[1]: d for d in docs}
    a = by_name["a_comment.md"]
    assert a.published_at == datetime(2021, 1, 1, tzinfo=UTC) and a.title == "Issue #4"
    assert a.metadata == {"tag": "c#sharp", "date_from": "front_matter"}
    b = by_name["b_toml.md"]
    assert (b.published_at, b.title, b.text) == (datetime(2022, 7, 8, tzinfo=UTC), "Release notes", "Body.")
    assert b.metadata == {"draft": "false", "date_from": "front_matter"}  # [params] keys are not top-level
    assert by_name["c_toml_quoted.md"].published_at.isoformat() == "2022-07-09T10:00:00+02:00"
    assert by_name["d_unclosed.md"].published_at is None and by_name["d_unclosed.md"].text.startswith("---")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'd_unclosed.md'}: front matter not closed; read as text (its date and title are not used)"]
    (err,) = errors
    assert err.doc_id.endswith("f_year.md") and "names a year or month but no day" in err.message


def test_directory_naive_dates_use_default_zone(tmp_path):
    (tmp_path / "2023-08-11-x.md").write_text("text")
    (doc,) = load_directory(tmp_path, "Asia/Shanghai")
    assert doc.published_at.isoformat() == "2023-08-11T00:00:00+08:00"
    with pytest.raises(NotADirectoryError):
        load_directory(tmp_path / "2023-08-11-x.md")


def test_two_folders_with_the_same_file_names_keep_separate_ids(tmp_path):
    for folder in ("notes", "minutes"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "index.md").write_text(f"{folder} text")
    ids = [d.doc_id for folder in ("notes", "minutes") for d in load_directory(tmp_path / folder)]
    assert ids == ["notes/index.md", "minutes/index.md"]
    (same,) = load_directory(tmp_path / "notes" / ".")  # how the folder is named on the command line
    assert same.doc_id == "notes/index.md"
    (tmp_path / "notes" / "tab\there.md").write_text("text")
    results = list(load_directory(tmp_path / "notes"))
    assert [r.doc_id for r in results] == ["notes/index.md", None]
    assert "control character" in results[1].message


def test_a_load_error_is_one_line_whatever_the_file_name(tmp_path):
    (tmp_path / "line\nbreak\x1b.md").write_text("text")
    (err,) = load_directory(tmp_path)
    shown = str(err)
    assert shown.count("\n") == 0 and "line\\nbreak\\x1b.md" in shown
    assert str(LoadError("a\udcffb.md", 2, "x\ty", "bad\nthing")) == "a\\udcffb.md:2 (doc x\\ty): bad\\nthing"


# --- the shipped sample corpus ------------------------------------------------------------------

def test_sample_corpus_loads_clean_and_dated():
    docs, errors = _split(load(SAMPLES / "sample_news.jsonl"))
    assert errors == []
    assert 30 <= len(docs) <= 40
    assert len({d.doc_id for d in docs}) == len(docs)
    assert all(d.published_at is not None and d.published_at.tzinfo is not None for d in docs)
    assert all(d.title for d in docs)
    assert all(60 <= len(d.text.split()) <= 200 for d in docs)
    assert {d.published_at.year for d in docs} == {2021, 2022, 2023, 2024}
    ids = {d.doc_id for d in docs}
    questions = [json.loads(line) for line in (SAMPLES / "sample_questions.jsonl").read_text().splitlines()]
    assert len(questions) >= 8
    for q in questions:
        assert q["question"].strip() and q["expected_doc_ids"]
        assert set(q["expected_doc_ids"]) <= ids, q


def test_corrupt_gzip_is_a_load_error_not_a_crash(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"this is not gzip data at all\n")
    docs, errors = _split(load(path))
    assert docs == [] and len(errors) == 1 and "cannot read" in errors[0].message


# --- what a folder may hold besides text files ------------------------------------------------------

def test_a_file_name_that_is_not_utf8_fails_alone(tmp_path):
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.md").write_text("Alpha.")
    with open(os.path.join(os.fsencode(root), b"bad\xff.md"), "wb") as fh:
        fh.write(b"Bravo.")
    docs, errors = _split(load_directory(root))
    assert [d.doc_id for d in docs] == ["notes/a.md"]
    (err,) = errors
    assert err.source == f"{root}/bad\\xff.md" and err.doc_id is None
    assert "file name is not valid UTF-8" in err.message


def test_ids_are_nfc_whatever_form_the_file_name_is_in(tmp_path):
    root = tmp_path / "cafe\u0301"  # decomposed, as macOS writes names
    root.mkdir()
    (root / "re\u0301sume\u0301.md").write_text("text")
    (doc,) = load_directory(root)
    assert doc.doc_id == "caf\u00e9/r\u00e9sum\u00e9.md" and doc.source == "caf\u00e9"


def test_symbolic_links_are_never_followed_and_say_so(tmp_path, caplog):
    root, outside = tmp_path / "notes", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "2023-08-11-real.md").write_text("Real text.")
    (outside / "elsewhere.md").write_text("Outside text.")
    (root / "alias.md").symlink_to(root / "2023-08-11-real.md")
    (root / "linked-dir").symlink_to(outside)
    (root / "sub" / "dangling.txt").symlink_to(tmp_path / "missing.txt")
    (root / "picture.png").symlink_to(root / "2023-08-11-real.md")  # not a text name: not mentioned
    with caplog.at_level("WARNING", logger="chronorag.ingest.loaders_dir"):
        docs, errors = _split(load_directory(root))
    assert [d.doc_id for d in docs] == ["notes/2023-08-11-real.md"] and errors == []
    warned = sorted(r.getMessage() for r in caplog.records)
    assert warned == [f"skipping symbolic link {root / p}: links are not followed"
                      for p in ("alias.md", "linked-dir", "sub/dangling.txt")]


@contextlib.contextmanager
def _fails_after(seconds: float):
    """A hang becomes a TimeoutError (SIGALRM interrupts a blocking open)."""
    def alarm(signum, frame):
        raise TimeoutError("hung")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_with_a_text_name_is_never_opened(tmp_path):
    (tmp_path / "a.md").write_text("Alpha.")
    os.mkfifo(tmp_path / "pipe.md")
    with _fails_after(5):
        docs, errors = _split(load_directory(tmp_path))
    assert len(docs) == 1
    (err,) = errors
    assert err.source == str(tmp_path / "pipe.md") and err.message == "not a regular file"


def _unreadable(monkeypatch, *folders: Path) -> None:
    """os.scandir fails on ``folders`` as it does for a chmod 000 folder (tests run as root, which
    permission bits do not stop)."""
    real = os.scandir

    def scandir(path="."):
        if Path(os.fsdecode(path)) in folders:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_read_is_an_error_not_silence(tmp_path, monkeypatch):
    root = tmp_path / "notes"
    (root / "closed").mkdir(parents=True)
    (root / "open").mkdir()
    (root / "closed" / "x.md").write_text("hidden from us")
    (root / "open" / "y.md").write_text("Readable.")
    _unreadable(monkeypatch, root / "closed")
    docs, errors = _split(load_directory(root))
    assert [d.doc_id for d in docs] == ["notes/open/y.md"]
    (err,) = errors
    assert (err.source, err.message) == (str(root / "closed"), "cannot read folder: Permission denied")
    assert err.doc_id == "notes/closed/"  # what --prune must keep
    _unreadable(monkeypatch, root)
    with pytest.raises(PermissionError, match=f"cannot read folder {root}: Permission denied"):
        load_directory(root)
    monkeypatch.undo()
    records = load_directory(root)
    _unreadable(monkeypatch, root)  # readable when checked, not when walked
    (err,) = records
    assert err.doc_id == "notes/" and err.message == "cannot read folder: Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permission bits")
def test_a_chmod_000_folder_is_an_error(tmp_path):
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "x.md").write_text("text")
    (tmp_path / "closed").chmod(0)
    try:
        (err,) = load_directory(tmp_path)
    finally:
        (tmp_path / "closed").chmod(0o755)
    assert err.message == "cannot read folder: Permission denied"
