"""`answer` and `kv` through the CLI, with a tiny seeded model standing in for SmolLM2 (fast)."""

import json

import pytest

import chronorag.kvcache as kvcache
from chronorag.cli import main
from chronorag.kvcache import kv_file
from chronorag.kvcache.hf_backend import HFGenerator
from chronorag.kvcache.testing import CharTokenizer, tiny_model

REAL_LOAD_GENERATOR = kvcache.load_generator

DOCS = [
    {"id": "a", "text": "Northwind Energy appointed Maria Lopez as chief executive.", "published_at": "2021-03-01"},
    {"id": "b", "text": "Northwind Energy moved its headquarters to Riverton.", "published_at": "2022-06-15"},
    {"id": "c", "text": "The city council approved a new tram line for Riverton.", "published_at": "2022-07-01"},
]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CHRONORAG_EMBEDDER", "none")
    monkeypatch.setenv("CHRONORAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    built = []

    def fake_load_generator(backend="hf", model=None, **opts):
        assert backend == "hf"
        gen = HFGenerator.from_model(tiny_model(seed=1), CharTokenizer(), model_id="tiny", **opts)
        built.append(gen)
        return gen

    monkeypatch.setattr(kvcache, "load_generator", fake_load_generator)
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    assert main(["ingest", "docs.jsonl", "--quiet"]) == 0
    return built


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_answer_json_then_reuses_disk_kv_in_a_new_process(env, capsys):
    code, out, _ = _run(capsys, "answer", "Who leads Northwind Energy?", "--top-k", "2", "--json",
                        "--max-new-tokens", "4")
    assert code == 0
    first = json.loads(out)
    assert isinstance(first["answer"], str) and len(first["sources"]) == 2
    assert first["cache"]["chunk_misses"] == 2 and first["cache"]["mode"].startswith("blend")
    assert first["timings"]["ttft_ms"] > 0 and first["timings"]["generation"]["ttft_s"] > 0
    assert [c["n"] for c in first["citations"]] == [1, 2] and first["citations"][0]["doc_id"] == first["sources"][0]["doc_id"]
    # a new engine (as a new process would) finds the chunks' KV on the disk tier
    code, out, _ = _run(capsys, "answer", "Who leads Northwind Energy?", "--top-k", "2", "--json",
                        "--max-new-tokens", "4")
    again = json.loads(out)
    assert (again["cache"]["chunk_hits"], again["cache"]["chunk_misses"]) == (2, 0)
    assert again["answer"] == first["answer"]
    assert len(env) == 2


def test_nothing_retrieved_means_no_generation(env, capsys):
    code, out, _ = _run(capsys, "answer", "Who leads Northwind Energy?", "--since", "2030", "--json")
    assert code == 0 and json.loads(out)["answer"] is None and json.loads(out)["sources"] == []
    code, out, _ = _run(capsys, "answer", "Who leads Northwind Energy?", "--since", "2030")
    assert code == 0 and "no documents matched" in out
    assert env == []  # the model was never loaded


def test_human_output_and_modes(env, capsys):
    code, out, _ = _run(capsys, "answer", "Where is Northwind based?", "--top-k", "2", "--mode", "full",
                        "--max-new-tokens", "3")
    assert code == 0 and "mode full" in out and "[1] " in out and "TTFT" in out


def test_kv_warm_stats_and_delete_drops_entries(env, capsys):
    code, out, _ = _run(capsys, "kv", "warm", "a", "b", "--quiet")
    assert code == 0 and out.startswith("computed KV for 2 chunk(s); the cache holds 2 chunk(s) in memory")
    assert "{" not in out
    code, out, _ = _run(capsys, "kv", "warm", "c", "--quiet", "--json")
    assert code == 0 and json.loads(out)["computed"] == 1 and json.loads(out)["cache"]["disk_entries"] == 3
    code, out, _ = _run(capsys, "kv", "stats", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["disk_entries"] == 3
    code, out, _ = _run(capsys, "kv", "stats")
    assert code == 0 and "3 on disk" in out and "this process: 0 memory hit(s)" in out and "{" not in out
    assert _run(capsys, "delete", "a")[0] == 0
    code, out, _ = _run(capsys, "kv", "stats", "--json")
    assert json.loads(out)["disk_entries"] == 2  # the deleted document's chunk KV is gone


@pytest.mark.parametrize("argv, message", [
    (["answer", "q", "--ratio", "2"], "ratio must be in [0, 1]"),
    (["answer", "q", "--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
    (["answer", "   "], "question"),
    (["kv", "warm", "nope"], "unknown document id(s): nope"),
    (["kv"], "kv needs a subcommand"),
])
def test_bad_input_is_one_line_exit_2(env, capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["answer", "Who leads Northwind Energy?"], ["kv", "warm", "--quiet"]])
def test_a_missing_model_is_a_one_line_error(env, capsys, monkeypatch, tmp_path, argv):
    monkeypatch.setattr(kvcache, "load_generator", REAL_LOAD_GENERATOR)
    monkeypatch.setenv("CHRONORAG_MODEL", str(tmp_path / "no-such-model.gguf"))
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "no-such-model.gguf not found" in err and len(err.strip().splitlines()) == 1


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("chronorag: warning:")]


def test_an_unwritable_kv_cache_answers_with_one_warning_and_warm_fails(env, capsys, monkeypatch):
    def denied(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(kv_file, "write_atomic", denied)  # what a read-only kvcache/ folder does
    code, out, err = _run(capsys, "answer", "Who leads Northwind Energy?", "--top-k", "2", "--json",
                          "--max-new-tokens", "4")
    assert code == 0 and json.loads(out)["cache"]["chunk_misses"] == 2
    assert len(_warnings(err)) == 1 and "cannot store chunk KV" in err and "Permission denied" in err
    code, _, err = _run(capsys, "kv", "warm", "--quiet")
    assert code == 2 and err.strip().splitlines() == [
        f"chronorag: error: cannot store chunk KV in {env[-1].store.disk.dir}: Permission denied"]


def test_a_corrupt_state_file_or_a_kvcache_file_are_handled(env, capsys, tmp_path):
    argv = ["answer", "Who leads Northwind Energy?", "--top-k", "2", "--max-new-tokens", "2", "--json"]
    assert _run(capsys, *argv)[0] == 0
    (tmp_path / "data" / "kvcache-state.json").write_text("{}")
    code, out, err = _run(capsys, *argv)
    assert code == 0 and json.loads(out)["cache"]["chunk_misses"] == 2  # dropped, recomputed
    assert _warnings(err) and "kvcache-state.json" in err
    assert _run(capsys, *argv)[2] == ""  # the state was rewritten: no warning the next time
    kv_dir = tmp_path / "data" / "kvcache"
    for path in kv_dir.iterdir():
        path.unlink()
    kv_dir.rmdir()
    kv_dir.write_text("not a folder")
    for command in (argv, ["kv", "warm", "--quiet"], ["kv", "stats"]):
        code, _, err = _run(capsys, *command)
        assert code == 2 and err.strip().splitlines() == [
            f"chronorag: error: KV cache path {kv_dir} is not a directory (move it away; chronorag recreates it)"]


def test_too_many_chunks_for_the_context_leave_out_the_lowest_ranked(env, capsys, monkeypatch):
    def small_context(backend="hf", model=None, **opts):
        return HFGenerator.from_model(tiny_model(seed=1, max_position_embeddings=320), CharTokenizer(), **opts)

    monkeypatch.setattr(kvcache, "load_generator", small_context)
    code, out, err = _run(capsys, "answer", "Who leads Northwind Energy in Riverton?", "--top-k", "3", "--json",
                          "--max-new-tokens", "4")
    result = json.loads(out)
    dropped = result["cache"]["dropped_chunks"]
    assert code == 0 and dropped >= 1 and len(result["sources"]) == 3 - dropped
    assert _warnings(err) == [f"chronorag: warning: left out the {dropped} lowest-ranked of 3 chunks: the prompt "
                              "must fit the model's 320 positions with 4 new tokens"]
    code, _, err = _run(capsys, "answer", "Who leads Northwind Energy?", "--max-new-tokens", "300")
    assert code == 2 and "in the model's 320 positions with max_new_tokens=300" in err
    assert len(err.strip().splitlines()) == 1


def test_a_ratio_outside_blend_mode_is_ignored_with_a_warning(env, capsys):
    code, _, err = _run(capsys, "answer", "Who leads Northwind Energy?", "--mode", "full", "--ratio", "0.7",
                        "--max-new-tokens", "2")
    assert code == 0 and _warnings(err) == [
        "chronorag: warning: ratio 0.7 is ignored in full mode (only blend recomputes a share of chunk tokens)"]
