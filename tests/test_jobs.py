"""Durable ingestion jobs in one process: the queue's interface, exactly-once bookkeeping, deletes,
restarts, the writer role, and `chronorag watch --once` over a folder across passes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from fakes import HashingEmbedder

from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.jobs import COUNT_KEYS, Job, JobQueue
from chronorag.store import StoreError
from chronorag.types import Document, LoadError
from chronorag.worker import IngestWorker

UTC = timezone.utc
WORDS = "river harbor copper lantern orchard meadow falcon glacier canyon prairie".split()


def _docs(n: int = 10, tag: str = "") -> list[Document]:
    return [Document(f"doc-{i}", f"The {WORDS[i % 10]} report {i}{tag}. Officials noted its {WORDS[i % 10]} budget.",
                     datetime(2021, 1 + i % 12, 5, tzinfo=UTC), source="test") for i in range(n)]


def _engine(data_dir, **settings) -> ChronoRAG:
    values = dict(chunk_size=64, chunk_overlap=8, ingest_batch=2, graph="none", **settings)
    return ChronoRAG(load_settings(env={}, data_dir=data_dir, **values), embedder=HashingEmbedder())


@pytest.fixture
def rag(tmp_path):
    engine = _engine(tmp_path / "data")
    yield engine
    engine.close()


def _sums_to_total(job: Job) -> bool:
    return sum(job.counts[k] for k in COUNT_KEYS) == job.done == job.total


def _index_ids(rag):
    bm25, _ = rag.bm25.search(" ".join(WORDS + ["report", "budget"]), k=10_000)
    dense, _ = rag.dense.search("report budget", k=10_000)
    return set(map(int, bm25)), set(map(int, dense))


def test_submit_get_list_depth_and_wait(rag):
    queue = JobQueue(rag.store)
    first = queue.submit(_docs(5))
    second = queue.submit(_docs(3, tag=" revised"), source="cli")
    assert first.state == "queued" and (first.done, first.total) == (0, 5) and first.finished_at is None
    assert len(first.id) >= 12 and first.id.replace("-", "").replace("_", "").isalnum()
    assert [j.id for j in queue.list()] == [second.id, first.id]
    assert [j.id for j in queue.list(offset=1, limit=5)] == [first.id] and queue.list(limit=0) == []
    assert queue.get(first.id) == first and queue.get("nope") is None
    assert queue.depth() == 2
    assert queue.wait(first.id, timeout=0.05).state == "queued"  # no worker: as it stands
    with pytest.raises(KeyError):
        queue.wait("nope", timeout=0.05)
    with pytest.raises(ValueError):
        queue.list(offset=-1)

    assert IngestWorker(rag, queue).run_once() == 2
    done = queue.wait(first.id)
    assert done.state == "done" and done.counts == {"new": 5, "changed": 0, "unchanged": 0, "deleted": 0, "failed": 0}
    assert _sums_to_total(done) and done.finished_at >= done.created_at
    again = queue.get(second.id)
    assert again.source == "cli" and again.counts["changed"] == 3 and _sums_to_total(again)
    assert queue.depth() == 0
    d = done.to_dict()
    assert list(d) == ["id", "state", "done", "total", "counts", "errors", "created_at", "finished_at"]
    assert datetime.fromisoformat(d["created_at"]) == done.created_at and json.dumps(d)
    live = set(rag.store.live_chunk_ids().tolist())
    assert _index_ids(rag) == (live, live)


def test_resending_unchanged_documents_is_a_no_op_counted_unchanged(rag):
    queue, worker = JobQueue(rag.store), IngestWorker(rag)
    queue.submit(_docs(6))
    worker.run_once()
    seq, embedded = rag.store.max_seq(), rag.embedder.encoded
    docs = _docs(6)
    docs[2] = Document("doc-2", "A corrected copper report.", docs[2].published_at, source="test")
    job = queue.submit(docs)
    worker.run_once()
    job = queue.get(job.id)
    assert job.counts == {"new": 0, "changed": 1, "unchanged": 5, "deleted": 0, "failed": 0} and _sums_to_total(job)
    resent = queue.submit(docs)
    worker.run_once()
    assert queue.get(resent.id).counts["unchanged"] == 6
    assert rag.store.max_seq() > seq and rag.embedder.encoded - embedded == 1  # only the changed chunk


def test_bad_records_are_errors_of_the_job_and_never_fail_the_batch(rag):
    queue = JobQueue(rag.store)
    good = _docs(3)
    records = [
        good[0],
        LoadError("feed.jsonl", 7, "x-7", "bad JSON (Expecting value)"),
        LoadError("notes/bad\\xff.md", None, None, "file name is not valid UTF-8; rename the file"),
        Document("empty", "   ", None),
        Document("naive", "Text.", datetime(2021, 1, 1)),
        Document("meta", "Text.", None, metadata={"when": datetime(2021, 1, 1)}),
        good[1],
        Document("doc-0", "a second doc-0", None),
        good[2],
    ]
    job = queue.submit(records)
    assert job.state == "queued" and job.total == 9 and job.done == job.counts["failed"] == 6
    by_id = {e.doc_id: e for e in job.errors}
    assert by_id["x-7"].line == 7 and "bad JSON" in by_id["x-7"].error
    assert by_id[None].error.startswith("notes/bad") and by_id["empty"].error == "empty 'text'"
    assert "time zone" in by_id["naive"].error and "not JSON" in by_id["meta"].error
    assert "duplicate id" in by_id["doc-0"].error
    IngestWorker(rag, queue).run_once()
    job = queue.get(job.id)
    assert job.state == "done" and job.counts["new"] == 3 and _sums_to_total(job)
    assert rag.store.get_document("doc-0").text == good[0].text and rag.store.get_document("empty") is None


def test_deletes_remove_documents_everywhere_and_unknown_ids_are_not_found(rag):
    queue, worker = JobQueue(rag.store), IngestWorker(rag)
    queue.submit(_docs(6))
    worker.run_once()
    job = queue.submit([], deletes=["doc-1", "doc-4", "ghost", "doc-4", ""])
    assert job.counts["failed"] == 2  # the repeated id and the empty one, at once
    worker.run_once()
    job = queue.get(job.id)
    assert job.state == "done" and _sums_to_total(job)
    assert job.counts == {"new": 0, "changed": 0, "unchanged": 0, "deleted": 2, "failed": 3}
    assert [e.error for e in job.errors if e.doc_id == "ghost"] == ["not found"]
    assert rag.store.get_document("doc-1") is None and rag.store.get_document("doc-0") is not None
    live = set(rag.store.live_chunk_ids().tolist())
    assert _index_ids(rag) == (live, live) and len(live) == 4
    both = queue.submit(_docs(1), deletes=["doc-0"])
    assert both.errors[0].error.startswith("delete: both written and deleted")


def test_a_job_survives_closing_and_reopening_the_store(tmp_path):
    data = tmp_path / "data"
    rag = _engine(data)
    job = JobQueue(rag.store).submit(_docs(7), deletes=["doc-9"])
    rag.close()
    rag = _engine(data)
    try:
        queue = JobQueue(rag.store)
        assert queue.get(job.id).state == "queued" and queue.depth() == 1
        assert IngestWorker(rag, queue).run_once() == 1
        job = queue.get(job.id)
        assert job.state == "done" and job.counts["new"] == 7 and job.counts["failed"] == 1 and _sums_to_total(job)
        assert rag.store.query("SELECT COUNT(*) FROM job_items")[0][0] == 0  # a finished job keeps no items
    finally:
        rag.close()


def test_a_stopped_job_resumes_from_its_last_committed_batch_counting_each_document_once(rag, monkeypatch):
    import chronorag.worker as worker_module

    queue = JobQueue(rag.store)
    job = queue.submit(_docs(9))
    first = IngestWorker(rag, queue)
    real_hook = worker_module._batch_hook

    def stop_after_two_batches(job_n, cur, counts, errors):
        real_hook(job_n, cur, counts, errors)
        if cur.execute("SELECT applied FROM jobs WHERE n = ?", (job_n,)).fetchone()[0] >= 4:
            first.stop(timeout=0)

    monkeypatch.setattr(worker_module, "_batch_hook", stop_after_two_batches)
    assert first.run_once() == 0
    half = queue.get(job.id)
    assert half.state == "running" and 4 <= half.done < 9 and half.counts["new"] == half.done
    assert rag.store.counts()["documents"] == half.done
    monkeypatch.setattr(worker_module, "_batch_hook", real_hook)
    assert IngestWorker(rag, queue).run_once() == 1
    job = queue.get(job.id)
    assert job.counts["new"] == 9 and job.counts["unchanged"] == 0 and _sums_to_total(job)


def test_a_delete_done_before_a_crash_is_counted_once_on_the_rerun(rag, monkeypatch):
    queue, worker = JobQueue(rag.store), IngestWorker(rag)
    queue.submit(_docs(3))
    worker.run_once()
    job = queue.submit([], deletes=["doc-0", "doc-2"])
    real_delete = rag.delete

    def delete_then_die(ids):
        real_delete(ids)
        raise KeyboardInterrupt  # as a kill between the delete and its bookkeeping

    monkeypatch.setattr(rag, "delete", delete_then_die)
    with pytest.raises(KeyboardInterrupt):
        IngestWorker(rag, queue).run_once()
    assert queue.get(job.id).state == "running" and rag.store.get_document("doc-0") is None
    monkeypatch.setattr(rag, "delete", real_delete)
    IngestWorker(rag, queue).run_once()
    job = queue.get(job.id)
    assert job.counts["deleted"] == 2 and job.counts["failed"] == 0 and not job.errors and _sums_to_total(job)


def test_a_store_that_refuses_writes_fails_the_job_with_a_message(rag, monkeypatch):
    queue = JobQueue(rag.store)
    job = queue.submit(_docs(2))

    def refuse(*args, **kwargs):
        raise StoreError("database or disk is full")

    monkeypatch.setattr(rag, "insert", refuse)
    assert IngestWorker(rag, queue).run_once() == 1
    job = queue.get(job.id)
    assert job.state == "failed" and job.finished_at is not None
    assert job.errors[-1].doc_id is None and "disk is full" in job.errors[-1].error
    assert queue.depth() == 0


def test_the_writer_role_is_held_by_one_worker_and_freed_by_stop(rag):
    queue = JobQueue(rag.store)
    first, second = IngestWorker(rag, queue), IngestWorker(rag, queue)
    assert first.start() and first.is_writer
    assert not second.start() and not second.is_writer and second.run_once() == 0
    assert rag.data_dir.writer_role() is None
    job = queue.submit(_docs(4))
    assert queue.wait(job.id, timeout=20).state == "done"  # the background thread ran it
    first.stop()
    assert not first.is_writer
    role = rag.data_dir.writer_role()
    assert role is not None and (rag.settings.data_dir / ".writer.lock").read_text().strip().isdigit()
    role.release()
    assert second.start()
    second.stop()


def test_batch_must_be_positive(rag):
    with pytest.raises(ValueError):
        IngestWorker(rag, batch=0)


# ------------------------------------------------------------------------ watch --once
def _run_cli(argv, capsys) -> tuple[int, str, str]:
    from chronorag.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _stored(data_dir) -> dict[str, tuple]:
    from chronorag.store import Store

    store = Store(data_dir / "store.sqlite3", create=False)
    try:
        rows = store.query("SELECT doc_id, content_hash, published_at, title FROM documents ORDER BY doc_id")
    finally:
        store.close()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_watch_once_follows_added_changed_and_deleted_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHRONORAG_EMBEDDER", "none")
    monkeypatch.setenv("CHRONORAG_GRAPH", "none")
    monkeypatch.setenv("CHRONORAG_INGEST_BATCH", "2")
    notes, data = tmp_path / "notes", tmp_path / "data"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.md").write_text("---\ndate: 2023-08-11\n---\n# Alpha\nThe harbour opened.\n")
    (notes / "2022-03-04-b.txt").write_text("Copper prices rose.\n")
    (notes / "sub" / "c.md").write_text("Lantern festival notes.\n")
    watch = ["watch", str(notes), "--once", "--data-dir", str(data)]

    code, out, err = _run_cli(watch, capsys)
    assert code == 0, err
    assert "3 file(s) to write, 0 to delete" in out and "new=3" in out
    first = _stored(data)
    assert set(first) == {"notes/a.md", "notes/2022-03-04-b.txt", "notes/sub/c.md"}
    # the same ids, dates and content hashes as `chronorag ingest --format dir`
    assert _run_cli(["ingest", str(notes), "--format", "dir", "--quiet", "--data-dir", str(tmp_path / "ref")],
                    capsys)[0] == 0
    assert _stored(tmp_path / "ref") == first
    assert first["notes/a.md"][1].startswith("2023-08-11") and first["notes/a.md"][2] == "Alpha"

    code, out, _ = _run_cli(watch, capsys)
    assert code == 0 and "nothing to do" in out

    (notes / "a.md").write_text("---\ndate: 2023-08-12\n---\n# Alpha\nThe harbour opened again.\n")
    (notes / "2022-03-04-b.txt").unlink()
    (notes / "d.txt").write_text("Falcon sightings.\n")
    (notes / "bad.md").write_bytes(b"caf\xe9\n")
    code, out, err = _run_cli(watch, capsys)
    assert code == 3, err  # a file that cannot be read is a failed record, as with ingest
    assert "2 file(s) to write, 1 to delete, 1 unreadable" in out
    assert "new=1 changed=1 unchanged=0 deleted=1 failed=1" in out and "bad.md" in err
    second = _stored(data)
    assert set(second) == {"notes/a.md", "notes/sub/c.md", "notes/d.txt"}
    assert second["notes/a.md"][1].startswith("2023-08-12") and second["notes/sub/c.md"] == first["notes/sub/c.md"]

    (notes / "sub" / "c.md").unlink()
    (notes / "sub").rmdir()
    code, out, _ = _run_cli(watch, capsys)
    assert code == 0 and "0 file(s) to write, 1 to delete" in out  # bad.md is not reported again
    assert set(_stored(data)) == {"notes/a.md", "notes/d.txt"}
    queue_jobs = json.loads(json.dumps([j.to_dict() for j in _jobs(data)]))
    assert len(queue_jobs) == 3 and all(j["state"] == "done" for j in queue_jobs)


def _jobs(data_dir) -> list[Job]:
    from chronorag.store import Store

    store = Store(data_dir / "store.sqlite3", create=False)
    try:
        return JobQueue(store).list()
    finally:
        store.close()


def test_watch_once_without_a_worker_only_queues(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHRONORAG_EMBEDDER", "none")
    notes, data = tmp_path / "notes", tmp_path / "data"
    notes.mkdir()
    (notes / "a.txt").write_text("Meadow report.\n")
    code, out, _ = _run_cli(["watch", str(notes), "--once", "--no-worker", "--data-dir", str(data)], capsys)
    assert code == 0 and "1 file(s) to write" in out
    (job,) = _jobs(data)
    assert job.state == "queued" and job.total == 1
    code, out, _ = _run_cli(["worker", "--once", "--data-dir", str(data)], capsys)
    assert code == 0 and f"job {job.id} done: 1/1 new=1" in out
    assert _run_cli(["watch", str(tmp_path / "missing"), "--once", "--data-dir", str(data)], capsys)[0] == 2


def test_a_lone_surrogate_in_source_or_metadata_fails_that_document_only(tmp_path):
    from chronorag.jobs import JobQueue
    from chronorag.store import Store

    store = Store(tmp_path / "s.sqlite3")
    queue = JobQueue(store)
    docs = [Document("ok", "fine text"), Document("bad-source", "text", source="x\udcff"),
            Document("bad-meta", "text", metadata={"k": "v\udcff"})]
    job = queue.submit(docs)
    assert job.counts["failed"] == 2 and {e.doc_id for e in job.errors} == {"bad-source", "bad-meta"}
    assert all("not valid Unicode" in e.error for e in job.errors)
    store.close()
