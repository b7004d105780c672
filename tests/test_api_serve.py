"""`chronorag serve` as a real uvicorn process on 127.0.0.1 (a free port), driven over HTTP with a
key from `chronorag keys create`; always terminated, every wait bounded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest

from chronorag.datadir import DataDir

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 90
DOCS = [{"id": "a", "text": "Northwind Energy appointed Maria Lopez as chief executive.", "published_at": "2021-03-01"},
        {"id": "b", "text": "Northwind Energy moved its headquarters to Riverton.", "published_at": "2022-06-15"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path):
    values = {k: v for k, v in os.environ.items() if not k.startswith("CHRONORAG_")}
    # no model to load: the openai backend loads nothing until asked, and nothing here asks it
    values.update(CHRONORAG_DATA_DIR=str(tmp_path / "data"), CHRONORAG_EMBEDDER="none",
                  CHRONORAG_GENERATOR="openai", CHRONORAG_MODEL_CACHE=os.environ.get("CHRONORAG_MODEL_CACHE", ""))
    return values


def _cli(env, *argv, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chronorag.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=os.path.dirname(env["CHRONORAG_DATA_DIR"]))


@contextmanager
def _serving(env, tmp_path, *extra):
    port = _free_port()
    log = open(tmp_path / f"serve-{port}.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "chronorag.cli", "serve", "--port", str(port), *extra], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}: {open(log.name).read()}"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"serve did not answer /healthz: {open(log.name).read()}"
            time.sleep(0.2)
        yield base, proc, log.name
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return result


def test_serve_round_trip_with_a_key_from_keys_create(env, tmp_path):
    made = _cli(env, "keys", "create", "--scope", "write", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    with _serving(env, tmp_path) as (base, proc, log):
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/v1/stats").status_code == 401
            r = http.post("/v1/documents?wait=true", json={"documents": DOCS}, headers=auth)
            assert r.status_code == 200 and r.json()["job"]["counts"]["new"] == 2, r.text
            hits = http.post("/v1/retrieve", json={"question": "Who leads Northwind Energy?"}, headers=auth).json()
            assert {h["doc_id"] for h in hits["results"]} == {"a", "b"}
            assert http.get("/v1/stats", headers={"X-API-Key": key}).json()["documents"] == 2
            assert _wait(lambda: http.get("/readyz").status_code == 200)
            assert http.get("/readyz").json()["writer"] is True
            assert http.delete("/v1/documents/a", headers=auth).status_code == 200
            assert http.get("/v1/documents/a", headers=auth).status_code == 404
            assert "chronorag_http_request_duration_seconds" in http.get("/metrics", headers=auth).text
            revoked = _cli(env, "keys", "revoke", json.loads(made.stdout)["id"])
            assert revoked.returncode == 0
            assert http.get("/v1/stats", headers=auth).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    text = open(log).read()
    assert "Application shutdown complete" in text and "Traceback" not in text


def test_serve_next_to_another_writer_serves_reads_and_says_so(env, tmp_path):
    assert _cli(env, "keys", "create", "--scope", "read").returncode == 0
    role = DataDir(tmp_path / "data", create=False).writer_role()  # this test process is "the writer"
    assert role is not None
    try:
        with _serving(env, tmp_path, "--no-auth") as (base, proc, log):
            with httpx.Client(base_url=base, timeout=60) as http:
                r = http.post("/v1/documents", json={"documents": DOCS})
                assert r.status_code == 202 and r.json()["state"] == "queued"
                assert http.get("/v1/stats").json()["queue"]["depth"] == 1
                assert http.get("/readyz").json()["writer"] is False
            assert "another process is the writer" in open(log).read()
    finally:
        role.release()
