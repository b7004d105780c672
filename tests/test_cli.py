import json
import os
import subprocess
import sys

import pytest

from chronorag.cli import main
from chronorag.config import load_settings
from chronorag.engine import ChronoRAG


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CHRONORAG_EMBEDDER", "none")  # BM25 only: no model load in these tests
    monkeypatch.setenv("CHRONORAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "docs.jsonl"
    lines = [
        {"id": "a", "text": "Northwind Energy appointed Maria Lopez as chief executive.", "published_at": "2021-03-01"},
        {"id": "b", "text": "Northwind Energy moved its headquarters to Riverton.", "published_at": "2022-06-15T09:00:00+02:00"},
        {"id": "c", "text": "The city council approved a new tram line.", "title": "Tram"},
    ]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken json\n")
    return tmp_path


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_retrieve_stats_delete(env, capsys):
    code, out, err = _run(capsys, "ingest", "docs.jsonl", "--quiet")
    assert code == 3  # the good records landed, the bad line was skipped: not a clean success
    assert "new=3" in out and "failed=1" in out
    assert "docs.jsonl:4" in err  # the bad line is named with its line number
    code, out, _ = _run(capsys, "retrieve", "Northwind headquarters", "--json", "--top-k", "2")
    res = json.loads(out)["results"]
    assert code == 0 and res[0]["doc_id"] == "b"
    assert {"chunk_id", "doc_id", "published_at", "score", "text"} <= set(res[0])
    assert res[0]["published_at"] == "2022-06-15T09:00:00+02:00"
    code, out, _ = _run(capsys, "retrieve", "Northwind", "--until", "2021", "--json")
    assert [r["doc_id"] for r in json.loads(out)["results"]] == ["a"]
    code, out, _ = _run(capsys, "retrieve", "Northwind headquarters")
    assert code == 0 and "1. [2022-06-15] b" in out
    code, out, _ = _run(capsys, "stats", "--json")
    assert json.loads(out)["documents"] == 3
    code, out, _ = _run(capsys, "ingest", "docs.jsonl", "--quiet")
    assert code == 3 and "unchanged=3" in out
    code, out, _ = _run(capsys, "delete", "a", "zzz", "--json")
    assert code == 3 and json.loads(out) == {"deleted": ["a"], "not_found": ["zzz"]}
    code, out, _ = _run(capsys, "retrieve", "Maria Lopez chief executive", "--json")
    assert "a" not in [r["doc_id"] for r in json.loads(out)["results"]]
    code, out, err = _run(capsys, "delete", "a", "b", "a")  # 'a' is gone now; named once
    assert code == 3 and out.strip() == "deleted 1 document(s)" and err.strip() == "not found: a"
    code, out, err = _run(capsys, "delete", "c", "--json")
    assert code == 0 and json.loads(out) == {"deleted": ["c"], "not_found": []} and not err


def test_questions_file(env, capsys):
    _run(capsys, "ingest", "docs.jsonl", "--quiet")
    qf = env / "q.txt"
    qf.write_text('tram line\n{"question": "Riverton headquarters", "id": 7}\n{"nope": 1}\n')
    code, out, err = _run(capsys, "retrieve", "--questions", str(qf), "--top-k", "1")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["results"][0]["doc_id"] == "c"
    assert rows[1]["id"] == 7 and rows[1]["results"][0]["doc_id"] == "b"
    assert "error" in rows[2] and code == 3  # answered what it could, then says one line failed
    assert err.strip() == "chronorag: 1 of 3 question line(s) failed; their output lines carry an 'error'"
    qf.write_text('{"question": "  "}\n')
    code, out, err = _run(capsys, "retrieve", "--questions", str(qf))
    assert code == 3 and json.loads(out)["error"] == "line 1: empty 'question'"
    qf.write_text("\n  \n")
    code, out, err = _run(capsys, "retrieve", "--questions", str(qf))
    assert code == 2 and out == "" and f"no questions in {qf}" in err


def test_questions_file_bytes_are_never_guessed(env, capsys):
    _run(capsys, "ingest", "docs.jsonl", "--quiet")
    qf = env / "q.txt"
    qf.write_bytes(b"\xef\xbb\xbf{\"question\": \"tram line\"}\ncaf\xe9 tram\n")  # BOM, then latin-1
    code, out, err = _run(capsys, "retrieve", "--questions", str(qf), "--top-k", "1")
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["question"] == "tram line" and first["results"][0]["doc_id"] == "c"
    assert second == {"line": 2, "error": "line 2: not valid UTF-8 (byte 0xe9)"} and code == 3


def test_warnings_are_one_prefixed_line_on_stderr(env, capsys):
    (env / "dated.jsonl").write_text(json.dumps({"id": "d", "text": "Tram news.", "date": "2021-01-01"}) + "\n")
    code, out, err = _run(capsys, "ingest", "dated.jsonl", "--quiet")
    assert code == 0 and "new=1" in out
    assert err.splitlines() == [
        "chronorag: warning: dated.jsonl:1: ignoring field(s) 'date' (did you mean 'published_at'?): "
        "chronorag JSONL reads id, text, published_at, title, metadata, source; put other fields under "
        "'metadata' to keep them"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ingest", "missing.jsonl"], "no such file"),
        (["retrieve", "x", "--since", "2021-13-40"], "--since: '2021-13-40' is not a valid date: month must be in 1..12"),
        (["retrieve", "x", "--since", "2022", "--until", "2021"], "after"),
        (["retrieve"], "either a question"),
        (["retrieve", "x", "--questions", "q.txt"], "not both"),
        (["retrieve", "x", "--top-k", "0"], "--top-k must be >= 1"),
        (["frobnicate"], "invalid choice"),
        (["retrieve", "   "], "empty"),
        (["stats", "--data-dir", ""], "empty path"),
        (["delete", "a", " "], "empty document id"),
        (["kv", "warm", ""], "empty document id"),
        (["retrieve", "x", "--retriever", "graph", "--no-graph"], "contradict"),
        ([], "give a command: ingest, delete"),
        (["retrieve", "?!.,;"], "no words"),
    ],
)
def test_bad_usage_is_one_line_exit_2(env, capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_console_script_runs(env):
    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "chronorag.cli", *argv], capture_output=True, text=True, timeout=120)

    proc = cli("stats", "--json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no chronorag store" in proc.stderr
    assert cli("ingest", "docs.jsonl", "--quiet").returncode == 3  # the broken line was skipped
    proc = cli("stats", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["documents"] == 3


@pytest.mark.parametrize("argv", [["retrieve", "tram"], ["stats"], ["delete", "a"], ["merge"], ["graph", "entity", "X"]])
def test_commands_other_than_ingest_need_a_store(env, capsys, argv):
    code, _, err = _run(capsys, *argv, "--data-dir", "typo-dir")
    assert code == 2 and "no chronorag store in typo-dir" in err and len(err.strip().splitlines()) == 1
    assert not (env / "typo-dir").exists()  # a mistyped --data-dir leaves nothing behind


def test_data_dir_that_is_a_file_is_refused(env, capsys):
    (env / "afile").write_text("keep me")
    code, _, err = _run(capsys, "ingest", "docs.jsonl", "--quiet", "--data-dir", "afile")
    assert code == 2 and "is a file, not a directory" in err
    assert (env / "afile").read_text() == "keep me"


@pytest.mark.parametrize("kind", ["garbage", "foreign", "newer"])
def test_a_store_file_we_cannot_own_is_refused_untouched(env, capsys, kind):
    import sqlite3

    data = env / "data"
    data.mkdir()
    path = data / "store.sqlite3"
    if kind == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    else:
        con = sqlite3.connect(path)
        if kind == "foreign":
            con.execute("CREATE TABLE invoices (id INTEGER)")
        else:
            con.close()
            _run(capsys, "ingest", "docs.jsonl", "--quiet")
            con = sqlite3.connect(path)
            con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        con.commit()
        con.close()
    before = path.read_bytes()
    for argv in (["stats"], ["ingest", "docs.jsonl", "--quiet"]):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "is not a chronorag store" in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before


@pytest.mark.parametrize("argv", [["stats"], ["retrieve", "tram"], ["merge"], ["delete", "a"]])
def test_read_commands_do_not_turn_an_empty_file_into_a_store(env, capsys, argv):
    data = env / "odd dir #1"  # a name that needs quoting in an SQLite URI
    data.mkdir()
    (data / "store.sqlite3").write_bytes(b"")
    code, _, err = _run(capsys, *argv, "--data-dir", str(data))
    assert code == 2 and "is not a chronorag store" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in data.iterdir()) == ["store.sqlite3"]
    assert (data / "store.sqlite3").read_bytes() == b""
    assert _run(capsys, "ingest", "docs.jsonl", "--quiet", "--data-dir", str(data))[0] == 3  # ingest may
    assert _run(capsys, *argv, "--data-dir", str(data))[0] == 0


def test_graph_commands_and_graph_flag(env, capsys):
    _run(capsys, "ingest", "docs.jsonl", "--quiet")
    code, out, _ = _run(capsys, "graph", "entity", "Northwind Energy", "--json")
    facts = json.loads(out)
    assert code == 0 and any(f["object"] == "Riverton" or f["subject"] == "Maria Lopez" for f in facts)
    code, out, _ = _run(capsys, "graph", "period", "2022-06", "--json")
    assert code == 0 and json.loads(out)["n_chunks"] >= 1
    code, _, err = _run(capsys, "graph", "entity", "Nobody Atall")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "graph", "entity", "Northwind Enrgy")  # the CLI reads a partial graph
    assert code == 2 and "did you mean: Northwind Energy" in err and len(err.strip().splitlines()) == 1
    code, out, _ = _run(capsys, "retrieve", "Northwind headquarters", "--no-graph", "--json")
    assert all("graph" not in r["scores"] for r in json.loads(out)["results"])
    code, out, _ = _run(capsys, "retrieve", "Northwind headquarters", "--retriever", "graph", "--json")
    assert code == 0 and {r["doc_id"] for r in json.loads(out)["results"]} <= {"a", "b"}


def test_data_dir_before_or_after_the_subcommand(env, capsys, monkeypatch):
    monkeypatch.delenv("CHRONORAG_DATA_DIR")
    store = str(env / "elsewhere")
    assert _run(capsys, "--data-dir", store, "ingest", "docs.jsonl", "--quiet")[0] == 3
    code, out, _ = _run(capsys, "--data-dir", store, "stats", "--json")
    assert code == 0 and json.loads(out)["documents"] == 3
    # the subcommand's own option wins over the global one
    code, out, _ = _run(capsys, "--data-dir", str(env / "missing"), "stats", "--data-dir", store, "--json")
    assert code == 0 and json.loads(out)["documents"] == 3
    code, _, err = _run(capsys, "--data-dir", str(env / "missing"), "stats")
    assert code == 2 and "no chronorag store in" in err and "missing" in err
    assert not (env / "missing").exists()
    # a group command given only options still says what it needs
    code, _, err = _run(capsys, "graph", "--data-dir", store)
    assert code == 2 and "graph needs a subcommand" in err
    code, _, err = _run(capsys, "kv", "--data-dir", store)
    assert code == 2 and "kv needs a subcommand" in err


def test_merge_reports_readably_or_as_json(env, capsys):
    many = [{"id": f"m{i}", "text": f"Report {i} on the harbour works."} for i in range(40)]
    (env / "many.jsonl").write_text("\n".join(json.dumps(r) for r in many) + "\n")
    _run(capsys, "ingest", "many.jsonl", "--quiet")
    _run(capsys, "ingest", "docs.jsonl", "--quiet")  # a small delta segment next to the main one
    _run(capsys, "delete", "c")
    code, out, _ = _run(capsys, "merge")
    assert code == 0 and out.startswith("merged 2 BM25 segment(s) into 1, dropping 1 deleted chunk(s): 42 chunk(s)")
    code, out, _ = _run(capsys, "merge")
    assert code == 0 and out.startswith("nothing to merge: the BM25 index is one segment (42 chunk(s)")
    code, out, _ = _run(capsys, "merge", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["segments"] == 1 and stats["live_docs"] == 42 and stats["deleted"] == 0


def test_stats_reads_as_sentences(env, capsys):
    _run(capsys, "ingest", "docs.jsonl", "--quiet")
    _run(capsys, "delete", "c")
    code, out, _ = _run(capsys, "stats")
    lines = {line.split()[1] if line.startswith("index ") else line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and lines["documents"].split()[1] == "2"
    assert "2 live chunks in 1 segment(s)" in lines["bm25"] and "0 pending" in lines["bm25"]
    assert "entities" in lines["graph"] and "from 2 chunks" in lines["graph"]
    assert lines["change"] == "change log   at 4; 0 entries kept for indexes behind"  # 3 added, 1 deleted
    assert "=" not in lines["bm25"] + lines["graph"]  # no raw key=value dumps


def test_raw_crud_lines_as_jsonl_warn(env, capsys):
    raw = {"id": "n1", "text": "2023-08-01 10:00:00 来源：新华社 正文：北方能源公司发布了半年报。"}
    (env / "raw.jsonl").write_text(json.dumps(raw, ensure_ascii=False) + "\n")
    code, _, err = _run(capsys, "ingest", "raw.jsonl", "--format", "jsonl", "--quiet")
    assert code == 0 and "looks like raw CRUD-RAG lines" in err and "--format crud" in err
    (env / "notes.txt").write_text(json.dumps({"id": "t", "text": "plain"}) + "\n")
    code, _, err = _run(capsys, "ingest", "notes.txt", "--format", "jsonl", "--quiet")
    assert code == 0 and "warning" not in err  # any file name is fine with an explicit format
    code, _, err = _run(capsys, "ingest", "docs.jsonl", "--format", "jsonl", "--quiet")
    assert "warning" not in err


def test_bounds_at_the_end_of_the_calendar(env, capsys):
    _run(capsys, "ingest", "docs.jsonl", "--quiet")
    code, out, err = _run(capsys, "retrieve", "Northwind", "--until", "9999-12-31", "--json")
    assert code == 0, err
    assert {r["doc_id"] for r in json.loads(out)["results"]} == {"a", "b"}
    code, out, err = _run(capsys, "retrieve", "Northwind", "--since", "9999", "--json")
    assert code == 0 and json.loads(out)["results"] == []
    code, out, err = _run(capsys, "graph", "period", "9999", "--json")
    assert code == 0 and json.loads(out)["n_facts"] == 0, err


def test_folder_with_an_undecodable_file_name_loses_only_that_file(env, capsys):
    notes = env / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("Tram news from the council.")
    with open(os.path.join(os.fsencode(notes), b"bad\xff.md"), "wb") as fh:
        fh.write(b"Harbor news.")
    code, out, err = _run(capsys, "ingest", "notes", "--quiet")
    assert code == 3 and "new=1" in out and "failed=1" in out
    assert err.splitlines() == ["skipped notes/bad\\xff.md: file name is not valid UTF-8; rename the file"]


def test_folder_that_cannot_be_read_exits_2_with_one_line(env, capsys, monkeypatch):
    (env / "notes").mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.fsdecode(path) == "notes":
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, out, err = _run(capsys, "ingest", "notes", "--format", "dir", "--quiet")
    assert code == 2 and err == "chronorag: error: cannot read folder notes: Permission denied\n"


def test_ingest_prune_deletes_what_the_folder_no_longer_holds(env, capsys):
    notes = env / "notes"
    (notes / "sub").mkdir(parents=True)
    for name in ("keep.md", "gone.md", "broken.md", "sub/gone-too.md"):
        (notes / name).write_text(f"Tram news, {name}.")
    (env / "others.jsonl").write_text("\n".join(json.dumps({"id": i, "text": "Harbor news."}) for i in (
        "notes_old/x.md", "notesXgone.md", "notes")) + "\n")  # look alike, but not the folder's ids
    assert _run(capsys, "ingest", "others.jsonl", "--quiet")[0] == 0
    code, out, _ = _run(capsys, "ingest", "notes", "--quiet")
    assert code == 0 and "new=4" in out and "pruned" not in out
    (notes / "gone.md").unlink()
    (notes / "sub" / "gone-too.md").unlink()
    (notes / "broken.md").write_bytes(b"caf\xe9")  # fails to load: its stored version stays
    code, out, err = _run(capsys, "ingest", "notes", "--prune", "--json")
    report = json.loads(out)
    assert code == 3 and (report["unchanged"], report["failed"], report["pruned"]) == (1, 1, 2)
    with ChronoRAG(load_settings(), create=False) as rag:
        assert rag.store.doc_ids_with_prefix("") == [
            "notes", "notes/broken.md", "notes/keep.md", "notesXgone.md", "notes_old/x.md"]
    code, out, _ = _run(capsys, "ingest", "notes", "--format", "dir", "--prune", "--quiet")
    assert code == 3 and out.strip().endswith("pruned=0")


@pytest.mark.parametrize("argv, message", [
    (["docs.jsonl", "--prune"], "--prune only applies to a folder"),
    (["notes", "--prune", "--limit", "5"], "--prune cannot be combined with --limit"),
])
def test_ingest_prune_refuses_what_it_cannot_do_safely(env, capsys, argv, message):
    (env / "notes").mkdir()
    code, out, err = _run(capsys, "ingest", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err
    assert not (env / "data").exists()  # refused before anything was written
