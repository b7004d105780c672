"""Reads never do unbounded index work, and `chronorag sync` is what catches vectors up, resumably.

Through the CLI in subprocesses, on ECT-QA's 2024 transcripts ingested without vectors: the first
`retrieve` with the default embedder answers from BM25 and the graph at once and says the dense
index is behind; `sync` then embeds, and a sync killed with SIGKILL half-way and run again ends with
one stored vector per chunk, re-using the ones the killed run stored.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# Where benchmarks/common.py looks: $CHRONORAG_DATASETS, else ../shared/datasets beside the repository.
ECT_CORPUS = Path(os.environ.get("CHRONORAG_DATASETS", REPO.parent / "shared" / "datasets")) / "ect_qa" / "corpus_2024.jsonl.gz"
needs_ect = pytest.mark.skipif(not ECT_CORPUS.is_file(), reason=f"ECT-QA corpus not found at {ECT_CORPUS}")
QUESTION = "What did Apple say about services revenue in Q2 2024?"
FIRST_READ_BUDGET_S = 20.0
# ~650 chunks: enough for the kill to land between two stored batches of 256, few enough that the
# two syncs together embed in ~15 s on 2 cores.
SYNC_TRANSCRIPTS = 40

pytestmark = pytest.mark.slow


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment without the caller's chronorag settings (the default embedder is
    the point of these tests), plus the data directory; the test model cache stays."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONORAG_") or k == "CHRONORAG_MODEL_CACHE"}
    env.update(CHRONORAG_DATA_DIR=str(data_dir), **extra)
    return env


def _cli(cwd: Path, env: dict[str, str], *argv: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess, float]:
    """(finished process, wall seconds) of ``python -m chronorag.cli ARGV``; cwd keeps a stray
    ./chronorag.toml out."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "chronorag.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def _ok(result: tuple[subprocess.CompletedProcess, float]) -> subprocess.CompletedProcess:
    proc, _ = result
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    return proc


def _generated_corpus(path: Path, docs: int = 40, words: int = 1600) -> Path:
    """A seeded English-like corpus of ~600 chunks, for when ECT-QA is absent: the kill test must
    still find the sync half-way, never pass without killing it."""
    rng = random.Random(11)
    vocab = [f"{a}{b}" for a in ("re", "con", "pro", "ex", "in", "de", "trans", "sub")
             for b in ("port", "tract", "venue", "duct", "sign", "form", "press", "vest", "tain", "mit")]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(docs):
            sentences = []
            while sum(len(s.split()) for s in sentences) < words:
                sentences.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 20))).capitalize() + ".")
            fh.write(json.dumps({"id": f"gen-{i:03d}", "text": " ".join(sentences),
                                 "published_at": f"2024-{i % 12 + 1:02d}-15"}) + "\n")
    return path


def _ingest_vectorless(tmp: Path, data: Path, *args: str) -> int:
    """Ingest with CHRONORAG_EMBEDDER=none; returns the store's chunk count."""
    env = _env(data, CHRONORAG_EMBEDDER="none")
    _ok(_cli(tmp, env, "ingest", *args, "--quiet"))
    stats = json.loads(_ok(_cli(tmp, env, "stats", "--json")).stdout)
    assert stats["embeddings"] == 0 and stats["chunks"] > 0
    return stats["chunks"]


def _embedding_counts(store: Path) -> tuple[int, int]:
    """(rows, distinct chunks) in the embeddings table, read-only: never a writer beside sync."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT chunk_id) FROM embeddings").fetchone()
    finally:
        conn.close()


@needs_ect
def test_first_retrieve_of_a_vectorless_store_answers_at_once_and_reports_dense_behind(tmp_path):
    data = tmp_path / "data"
    chunks = _ingest_vectorless(tmp_path, data, str(ECT_CORPUS), "--format", "ect")
    env = _env(data)  # the default embedder (minilm-int8) now has every chunk to embed

    result = _cli(tmp_path, env, "retrieve", QUESTION, "--json", timeout=120)
    proc, wall = result
    out = json.loads(_ok(result).stdout)
    assert wall < FIRST_READ_BUDGET_S, f"first retrieve took {wall:.1f} s: a read did index work"
    assert out["results"] and out["stale"] == {"dense": chunks}
    assert all("dense" not in r["scores"] for r in out["results"])

    proc = _ok(_cli(tmp_path, env, "retrieve", QUESTION, timeout=120))
    assert proc.stdout.strip()
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "behind" in warnings[0] and "dense" in warnings[0], proc.stderr


def test_sync_killed_midway_then_rerun_finishes_without_duplicates_reusing_stored_vectors(tmp_path):
    data = tmp_path / "data"
    if ECT_CORPUS.is_file():
        chunks = _ingest_vectorless(tmp_path, data, str(ECT_CORPUS), "--format", "ect", "--limit", str(SYNC_TRANSCRIPTS))
    else:
        chunks = _ingest_vectorless(tmp_path, data, str(_generated_corpus(tmp_path / "gen.jsonl")))
    assert chunks > 300, "too few chunks for a sync to be caught between two stored batches"
    store, env = data / "store.sqlite3", _env(data)

    with open(tmp_path / "killed.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "chronorag.cli", "sync"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline, seen = time.monotonic() + 150, (0, 0)
            while time.monotonic() < deadline and proc.poll() is None:
                seen = _embedding_counts(store)
                if 0 < seen[0] < chunks:
                    break
                time.sleep(0.2)
            running = proc.poll() is None
            if running:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()  # no-op when already dead; never leave a sync running past the test
            proc.wait(timeout=30)
    assert running and proc.returncode == -signal.SIGKILL, \
        f"sync was not caught half-way (embeddings {seen} of {chunks}); stderr: {(tmp_path / 'killed.err').read_text()[-1500:]}"
    rows, distinct = _embedding_counts(store)
    assert 0 < rows == distinct < chunks, f"killed too late: {rows} of {chunks} vectors stored"

    # Mark one vector the killed run stored: if the re-run keeps it, stored vectors were re-used.
    conn = sqlite3.connect(store, timeout=30)
    with conn:
        kept_id, vec = conn.execute("SELECT chunk_id, vec FROM embeddings ORDER BY chunk_id LIMIT 1").fetchone()
        marker = np.zeros(len(vec) // 4, dtype=np.float32)
        marker[0] = 1.0
        conn.execute("UPDATE embeddings SET vec = ? WHERE chunk_id = ?", (marker.tobytes(), kept_id))
    conn.close()

    proc = _ok(_cli(tmp_path, env, "sync"))
    assert "sync dense" in proc.stderr

    assert _embedding_counts(store) == (chunks, chunks)
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        (after,) = conn.execute("SELECT vec FROM embeddings WHERE chunk_id = ?", (kept_id,)).fetchone()
    finally:
        conn.close()
    assert after == marker.tobytes(), "the re-run re-embedded a chunk whose vector was already stored"

    stats = json.loads(_ok(_cli(tmp_path, env, "stats", "--json")).stdout)
    assert stats["stale"] == {} and stats["chunks"] == chunks and stats["embeddings"] == chunks
    assert stats["indexes"]["dense"]["vectors"] == chunks

    out = json.loads(_ok(_cli(tmp_path, env, "retrieve", QUESTION, "--json")).stdout)
    assert out["stale"] == {} and any("dense" in r["scores"] for r in out["results"])

    again = _ok(_cli(tmp_path, env, "sync"))
    assert "nothing to do" in again.stdout, again.stdout
