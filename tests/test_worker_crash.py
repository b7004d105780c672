"""Ingestion workers as real processes: kill -9 one half-way through a job and restart it; one
writer per data directory across processes; forked pools die with their parent; `watch` live."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from chronorag.store import Store

pytestmark = pytest.mark.slow
N_DOCS = 400


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Without the caller's chronorag settings (the model cache stays): small chunks, batches of 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONORAG_") or k == "CHRONORAG_MODEL_CACHE"}
    env.update(CHRONORAG_DATA_DIR=str(data_dir), CHRONORAG_INGEST_BATCH="2", CHRONORAG_CHUNK_SIZE="32",
               CHRONORAG_CHUNK_OVERLAP="0", **extra)
    return env


def _cli(*args: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chronorag.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _done(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, out, err


def _write_corpus(path: Path) -> None:
    with open(path, "w") as fh:
        for i in range(N_DOCS):
            text = f"Report {i} on harbour {i % 37} and the copper market, said Helen Marsh. " * (1 + i % 4)
            fh.write(json.dumps({"id": f"d{i}", "text": text, "published_at": f"2023-08-{1 + i % 28:02d}"}) + "\n")


def _job_row(db: Path) -> tuple[str, int, int] | None:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT state, done, total FROM jobs ORDER BY n DESC LIMIT 1").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _submit(data: Path, corpus: Path) -> str:
    from chronorag.ingest.loaders import load
    from chronorag.jobs import JobQueue

    data.mkdir(parents=True, exist_ok=True)
    store = Store(data / "store.sqlite3")
    try:
        return JobQueue(store).submit(load(corpus, "jsonl"), source="test").id
    finally:
        store.close()


def _contents(data: Path) -> dict[str, object]:
    """What must agree document for document: the store, and each index against the live chunks."""
    from chronorag.config import load_settings
    from chronorag.engine import ChronoRAG

    rag = ChronoRAG(load_settings(env={}, data_dir=data, chunk_size=32, chunk_overlap=0), create=False)
    try:
        q = rag.store.query
        live = sorted(rag.store.live_chunk_ids().tolist())
        bm25, _ = rag.bm25.search("report harbour copper market", k=100_000)
        vec = np.ones(rag.embedder.dim, dtype=np.float32) / np.sqrt(rag.embedder.dim)  # no model load
        dense, _ = rag.dense.search(vec, k=100_000)
        graph = [r[0] for r in q("SELECT chunk_id FROM graph_chunks ORDER BY chunk_id")]
        assert sorted(map(int, bm25)) == live and sorted(map(int, dense)) == live and graph == live
        assert all(ix.behind == 0 for ix in rag.stats().indexes)
        return {
            "documents": q("SELECT doc_id, content_hash FROM documents ORDER BY doc_id"),
            "chunks": q("SELECT doc_id, ord, text FROM chunks ORDER BY doc_id, ord"),
            "facts": sorted(q("SELECT c.doc_id, c.ord, f.fact_key FROM graph_facts f JOIN chunks c USING (chunk_id)")),
            "vectors": len(dense),
        }
    finally:
        rag.close()


def test_worker_killed_mid_job_resumes_and_matches_a_fresh_ingest(tmp_path):
    corpus, data = tmp_path / "corpus.jsonl", tmp_path / "data"
    _write_corpus(corpus)
    job_id = _submit(data, corpus)
    db, env = data / "store.sqlite3", _env(data)

    proc = _cli("worker", "--quiet", env=env)
    try:
        deadline, row = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            row = _job_row(db)
            if row and row[0] == "running" and 20 <= row[1] < N_DOCS // 2:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        code, _, err = _done(proc, 30)
    assert code == -signal.SIGKILL, f"the worker ended before it was killed: {err[-1500:]}"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    state, done, new, stored = con.execute(
        "SELECT state, done, n_new, (SELECT COUNT(*) FROM documents) FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    con.close()
    assert state == "running" and 0 < done < N_DOCS, (state, done)
    assert new == done == stored  # the job's counts committed with exactly the documents they count

    code, out, err = _done(_cli("worker", "--once", env=env))
    assert code == 0, err[-2000:]
    assert f"job {job_id} done: {N_DOCS}/{N_DOCS} new={N_DOCS} changed=0 unchanged=0 deleted=0 failed=0" in out

    fresh = tmp_path / "fresh"
    code, _, err = _done(_cli("ingest", str(corpus), "--quiet", env=_env(fresh)))
    assert code == 0, err[-2000:]
    resumed, clean = _contents(data), _contents(fresh)
    assert len(resumed["documents"]) == N_DOCS and resumed["vectors"] == len(resumed["chunks"])
    assert resumed == clean


def test_ctrl_c_finishes_the_batch_exits_130_and_the_job_resumes(tmp_path):
    corpus, data = tmp_path / "corpus.jsonl", tmp_path / "data"
    _write_corpus(corpus)
    job_id = _submit(data, corpus)
    db, env = data / "store.sqlite3", _env(data, CHRONORAG_EMBEDDER="none", CHRONORAG_GRAPH="none")
    proc = _cli("worker", env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            row = _job_row(db)
            if row and row[0] == "running" and 20 <= row[1] < N_DOCS // 2:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
    finally:
        code, _, err = _done(proc, 60)
    assert code == 130 and "finishing the batch" in err, err[-1500:]
    state, done, total = _job_row(db)
    assert state == "running" and 0 < done < total == N_DOCS
    code, out, err = _done(_cli("worker", "--once", env=env))
    assert code == 0 and f"job {job_id} done: {N_DOCS}/{N_DOCS} new={N_DOCS} changed=0 unchanged=0" in out, err[-1500:]


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no {text!r} from the process: {proc.stderr.read()[-1500:]}")


def test_a_second_worker_is_not_the_writer_until_the_first_is_killed(tmp_path):
    from chronorag.jobs import JobQueue
    from chronorag.types import Document

    data = tmp_path / "data"
    env = _env(data, CHRONORAG_EMBEDDER="none", CHRONORAG_GRAPH="none")
    data.mkdir()
    Store(data / "store.sqlite3").close()
    first = _cli("worker", env=env)
    try:
        _wait_for_line(first, "worker: running ingestion jobs")
        code, out, err = _done(_cli("worker", "--once", env=env))
        assert code == 2 and err.count("\n") == 1 and f"(pid {first.pid}) is the writer" in err, err
        code, _, err = _done(_cli("worker", env=env))
        assert code == 2 and "is the writer" in err

        store = Store(data / "store.sqlite3")  # a job queued elsewhere is run by the writer
        try:
            queue = JobQueue(store)
            job = queue.submit([Document("a", "Copper rose.")], source="test")
            assert queue.wait(job.id, timeout=30).state == "done"
        finally:
            store.close()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
        first.communicate()
    code, out, err = _done(_cli("worker", "--once", env=env))
    assert code == 0 and "no jobs queued" in out, err


_POOL_SCRIPT = textwrap.dedent("""
    import sys, time
    from datetime import datetime, timezone
    from chronorag.types import Chunk
    day = datetime(2023, 8, 11, tzinfo=timezone.utc)
    if sys.argv[1] == "graph":
        from chronorag.graph.extract import RuleExtractor
        from chronorag.graph.extract_pool import ExtractionPool
        pool = ExtractionPool(RuleExtractor(), 2)
        pool.submit([Chunk(i, "d", 0, "Acme Corp hired Helen Marsh.", 0, 9, 9, day, "t") for i in range(300)]).result()
        pids = pool.worker_pids()
    else:
        from chronorag.ingest.pipeline import _ChunkRunner
        runner = _ChunkRunner(32, 0, 2)
        runner.split([(None, "Copper prices rose in August. " * 20)] * 8)
        pids = sorted(runner._pool._processes)
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("pool", ["graph", "chunker"])
def test_forked_pool_workers_die_with_their_parent(tmp_path, pool):
    parent = subprocess.Popen([sys.executable, "-c", _POOL_SCRIPT, pool], stdout=subprocess.PIPE, text=True,
                              env=_env(tmp_path))
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "pool workers outlived their parent"
    finally:
        parent.kill()
        parent.communicate()


def test_watch_ingests_files_as_they_appear_and_stops_on_ctrl_c(tmp_path):
    notes, data = tmp_path / "notes", tmp_path / "data"
    notes.mkdir()
    (notes / "a.md").write_text("Harbour report.\n")
    env = _env(data, CHRONORAG_EMBEDDER="none", CHRONORAG_GRAPH="none")
    proc = _cli("watch", str(notes), env=env)
    try:
        _wait_for_line(proc, "done: 1/1 new=1")
        (notes / "b.md").write_text("Copper report.\n")
        (notes / "a.md").unlink()
        _wait_for_line(proc, "deleted=1")
        proc.send_signal(signal.SIGINT)
        code, _, err = _done(proc, 30)
    finally:
        proc.kill()
    assert code == 130, err
    store = Store(data / "store.sqlite3", create=False)
    try:
        assert store.doc_ids_with_prefix("notes/") == ["notes/b.md"]
    finally:
        store.close()
