"""The REST API in-process (fastapi.testclient): documents and jobs, reads, keys and scopes, limits,
error bodies, probes and metrics. Answers and the OpenAI shape: test_api_answers.py."""

from __future__ import annotations

import gzip
import io
import json
import time

import pytest
from test_api_support import DOCS, api, api_factory, loaded, wait_ready  # noqa: F401 - fixtures

from chronorag.config import ConfigError, load_settings
from chronorag.keys import KeyStore


def _error(r, status: int, kind: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type"}, body
    if kind is not None:
        assert body["error"]["type"] == kind, body
    assert "Traceback" not in body["error"]["message"]
    return body["error"]["message"]


# ------------------------------------------------------------------ probes, docs
def test_healthz_needs_no_key_and_readyz_turns_ready_after_warm_up(api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    r = wait_ready(api)
    assert r.status_code == 200 and r.json() == {"ready": True, "missing": [], "writer": True}
    assert api.generator.loaded.is_set()  # warm-up loaded the answer model


def test_readyz_is_503_naming_the_indexes_behind_the_store(api, monkeypatch):
    wait_ready(api)
    monkeypatch.setattr(api.engine, "read_state", lambda: {"dense": 1200})
    r = api.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["ready"] is False and r.json()["missing"] == ["index dense is 1,200 change(s) behind the store"]


def test_openapi_schema_and_docs_are_served(api):
    schema = api.client.get("/openapi.json").json()
    assert {"/v1/documents", "/v1/query", "/v1/chat/completions", "/v1/retrieve", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/v1/documents"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "DocumentsIn" in schema["components"]["schemas"] and "DocumentIn" in schema["components"]["schemas"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    assert api.client.get("/docs").status_code == 200


def test_unknown_route_and_wrong_method_answer_json_errors(api):
    _error(api.get("/v1/nothing-here"), 404, "not_found")
    _error(api.client.put("/v1/retrieve", headers=api.headers()), 405, "method_not_allowed")


# ------------------------------------------------------------------ keys and scopes
def test_missing_malformed_unknown_and_revoked_keys_are_401(api):
    assert "API key is required" in _error(api.client.get("/v1/stats"), 401, "unauthorized")
    _error(api.client.get("/v1/stats", headers={"Authorization": "Basic dXNlcjpwdw=="}), 401)
    _error(api.client.get("/v1/stats", headers={"Authorization": "Bearer crag_000000000000_nope"}), 401)
    _error(api.client.get("/v1/stats", headers={"X-API-Key": "garbage"}), 401)
    assert api.client.get("/v1/stats", headers={"X-API-Key": api.keys["read"]}).status_code == 200
    key_id = api.keys["read"].split("_")[1]
    KeyStore(api.engine.store).revoke(key_id)
    assert "revoked" in _error(api.get("/v1/stats", "read"), 401)


def test_read_scope_reads_write_scope_also_writes_admin_does_everything(loaded):
    api = loaded
    doc = {"documents": [{"id": "z", "text": "Zebra crossings painted in Riverton."}]}
    for scope in ("read", "write", "admin"):
        assert api.get("/v1/stats", scope).status_code == 200
        assert api.get("/v1/documents/a", scope).status_code == 200
        assert api.get("/metrics", scope).status_code == 200
        assert api.post("/v1/retrieve", scope, json={"question": "Riverton tram"}).status_code == 200
    assert "needs 'write'" in _error(api.post("/v1/documents", "read", json=doc), 403, "forbidden")
    _error(api.delete("/v1/documents/a", "read"), 403)
    assert api.post("/v1/documents?wait=true", "write", json=doc).status_code == 200
    assert api.delete("/v1/documents/z", "write").status_code == 200
    assert api.post("/v1/documents?wait=true", "admin", json=doc).status_code == 200


def test_auth_off_needs_no_key_anywhere(api_factory):
    api = api_factory(auth=False)
    assert api.client.post("/v1/documents?wait=true", json={"documents": DOCS}).json()["state"] == "done"
    assert api.client.get("/v1/stats").json()["documents"] == 3
    assert api.client.get("/metrics").status_code == 200


# ------------------------------------------------------------------ documents and jobs
def test_post_documents_answers_202_and_the_job_finishes(api):
    r = api.post("/v1/documents", json={"documents": DOCS})
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    assert r.json()["state"] in ("queued", "running", "done")
    deadline = time.monotonic() + 30
    while (job := api.get(f"/v1/jobs/{job_id}", "read").json())["state"] != "done":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["counts"] == {"new": 3, "changed": 0, "unchanged": 0, "deleted": 0, "failed": 0}
    assert job["done"] == job["total"] == 3 and job["errors"] == [] and job["source"] == "api"
    again = api.ingest()["job"]
    assert again["counts"]["unchanged"] == 3


def test_per_document_problems_are_job_errors_never_request_failures(api):
    docs = DOCS + [{"id": "late", "text": "Some text.", "published_at": "the 32nd of Smarch"},
                   {"id": "blank", "text": "   "}, {"id": "a", "text": "a second 'a'"}, {"id": 7, "text": "numeric id"}]
    job = api.ingest(docs)["job"]
    assert job["counts"]["new"] == 4 and job["counts"]["failed"] == 3
    errors = {e["doc_id"]: e for e in job["errors"]}
    assert "published_at" in errors["late"]["error"] and errors["late"]["line"] == 4
    assert errors["blank"]["error"] == "empty 'text'"
    assert "duplicate" in errors["a"]["error"]
    assert api.get("/v1/documents/7").json()["text"] == "numeric id"
    doc = api.get("/v1/documents/a").json()
    assert doc == {"id": "a", "text": DOCS[0]["text"], "published_at": "2021-03-01T00:00:00+00:00", "title": None,
                   "source": "wire", "metadata": {}, "chunks": 1}
    assert api.get("/v1/documents/c").json()["source"] == "api"


def test_text_that_is_not_valid_unicode_fails_only_its_document(api):
    body = (b'{"documents": [{"id": "x\\ud800", "text": "t"}, {"id": "y", "text": "a\\udfff"},'
            b' {"id": "z", "text": "t", "metadata": {"k": "\\udc00"}}, {"id": "ok", "text": "fine"}]}')
    r = api.post("/v1/documents?wait=true", content=body, headers={"Content-Type": "application/json"})
    job = r.json()["job"]
    assert r.status_code == 200 and job["counts"]["new"] == 1 and job["counts"]["failed"] == 3, r.text
    assert all("not valid Unicode" in e["error"] for e in job["errors"])


def _upload(api, name: str, data: bytes, **form):
    return api.post("/v1/documents?wait=true", files={"file": (name, io.BytesIO(data))}, data=form)


def test_uploads_jsonl_gz_notes_and_crud_lines(api):
    lines = "\n".join(json.dumps(d) for d in DOCS).encode()
    assert _upload(api, "news.jsonl", lines).json()["job"]["counts"]["new"] == 3
    assert _upload(api, "news.jsonl.gz", gzip.compress(lines)).json()["job"]["counts"]["unchanged"] == 3
    note = b"---\ndate: 2023-08-11\ntitle: Harbour notes\n---\nThe harbour opened a ferry terminal.\n"
    r = _upload(api, "harbour.md", note, folder="notes")
    assert r.json()["job"]["counts"]["new"] == 1, r.text
    doc = api.get("/v1/documents/notes/harbour.md").json()
    assert doc["published_at"].startswith("2023-08-11") and doc["title"] == "Harbour notes"
    assert _upload(api, "plain.txt", b"A plain note.").json()["job"]["counts"]["new"] == 1
    assert api.get("/v1/documents/uploads/plain.txt").status_code == 200
    crud = json.dumps({"id": "feed.txt:1", "text": "2023-07-20 16:03 新闻 正文：雷军发布了新手机。"}, ensure_ascii=False)
    r = _upload(api, "crud.jsonl", crud.encode(), format="crud")
    assert r.json()["job"]["counts"]["new"] == 1, r.text
    assert api.get("/v1/documents/feed.txt:1").json()["text"].startswith("雷军")


def test_upload_problems_are_reported_in_the_job_with_the_file_name(api):
    r = _upload(api, "mixed.jsonl", b'{"id": "ok", "text": "fine"}\nnot json\n{"id": "x", "text": ""}\n')
    job = r.json()["job"]
    assert job["counts"]["new"] == 1 and job["counts"]["failed"] == 2
    assert any(e["line"] == 2 and "mixed.jsonl" in e["error"] for e in job["errors"]), job["errors"]


def test_unsupported_media_types_are_415(api):
    _error(_upload(api, "report.pdf", b"%PDF-1.4"), 415, "unsupported_media_type")
    _error(api.post("/v1/documents", content=b"id,text\n1,x", headers={"Content-Type": "text/csv"}), 415)
    _error(api.post("/v1/documents", content=b'{"documents": []}'), 415)
    _error(api.post("/v1/retrieve", content=b'{"question": "x"}', headers={"Content-Type": "text/plain"}), 415)


def test_malformed_json_wrong_types_and_missing_fields_are_4xx_json(api):
    bad = {"Content-Type": "application/json"}
    assert "malformed JSON" in _error(api.post("/v1/documents", content=b'{"documents": [', headers=bad), 400,
                                      "invalid_json")
    _error(api.post("/v1/retrieve", content=b"{nope", headers=bad), 400, "invalid_json")
    _error(api.post("/v1/documents", json={"documents": [{"id": "a", "text": 5}]}), 422, "validation_error")
    _error(api.post("/v1/documents", json={"documents": [{"text": "no id"}]}), 422)
    assert "date" in _error(api.post("/v1/documents", json={"documents": [{"id": "a", "text": "t", "date": "2021"}]}),
                            422)
    _error(api.post("/v1/documents", json={"documents": []}), 422)
    _error(api.post("/v1/documents", json=[1, 2]), 422)
    _error(api.post("/v1/retrieve", json={"question": ["a"]}), 422)
    _error(api.post("/v1/retrieve", json={}), 422)
    _error(api.post("/v1/retrieve", json={"question": "x", "top_k": 0}), 422)
    _error(api.get("/v1/jobs?limit=abc"), 422)


def test_bodies_over_the_size_limit_are_413_before_and_while_streaming(api_factory):
    api = api_factory(api_max_body_mb=0.001)  # 1,048 bytes
    big = {"documents": [{"id": "big", "text": "word " * 400}]}
    assert "larger than the limit" in _error(api.post("/v1/documents", json=big), 413, "too_large")

    def chunks():  # no Content-Length: the cap counts what streams in
        for _ in range(10):
            yield b" " * 200
    r = api.post("/v1/documents", content=chunks(), headers={"Content-Type": "application/json"})
    _error(r, 413, "too_large")
    _error(api.post("/v1/documents", files={"file": ("a.jsonl", io.BytesIO(b"x" * 5000))}), 413)
    assert api.post("/v1/retrieve", json={"question": "small"}).status_code == 200


def test_too_many_documents_is_413(api_factory):
    api = api_factory(api_max_documents=2)
    assert "limit is 2" in _error(api.post("/v1/documents", json={"documents": DOCS}), 413, "too_many_documents")
    lines = "\n".join(json.dumps(d) for d in DOCS).encode()
    _error(_upload(api, "three.jsonl", lines), 413, "too_many_documents")
    assert api.post("/v1/documents?wait=true", json={"documents": DOCS[:2]}).status_code == 200


def test_delete_removes_the_document_from_every_index(loaded):
    api = loaded
    hits = api.post("/v1/retrieve", json={"question": "Maria Lopez chief executive"}).json()["results"]
    assert "a" in {h["doc_id"] for h in hits}
    assert api.delete("/v1/documents/a").json() == {"deleted": "a"}
    hits = api.post("/v1/retrieve", json={"question": "Maria Lopez chief executive"}).json()["results"]
    assert "a" not in {h["doc_id"] for h in hits}
    stats = api.get("/v1/stats").json()
    assert stats["documents"] == 2 and all(ix["behind"] == 0 for ix in stats["indexes"].values())
    _error(api.get("/v1/documents/a"), 404, "not_found")
    _error(api.delete("/v1/documents/a"), 404, "not_found")


def test_unknown_jobs_are_404_and_jobs_are_listed_newest_first_in_pages(api):
    _error(api.get("/v1/jobs/nope"), 404, "not_found")
    ids = [api.ingest([d])["job_id"] for d in DOCS]
    page = api.get("/v1/jobs?limit=2", "read").json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2] and page["next_offset"] == 2
    rest = api.get("/v1/jobs?offset=2&limit=2", "read").json()
    assert [j["id"] for j in rest["jobs"]] == ids[:1] and rest["next_offset"] is None
    _error(api.get("/v1/jobs?limit=0"), 422)


# ------------------------------------------------------------------ reads
def test_retrieve_answers_ranked_hits_under_filters(loaded):
    api = loaded
    r = api.post("/v1/retrieve", json={"question": "Northwind Energy", "top_k": 5}).json()
    assert {h["doc_id"] for h in r["results"]} == {"a", "b"} and r["stale"] == {}
    hit = r["results"][0]
    assert set(hit) >= {"chunk_id", "doc_id", "published_at", "score", "scores", "text"}
    since = api.post("/v1/retrieve", json={"question": "Northwind Energy", "since": "2022"}).json()["results"]
    assert [h["doc_id"] for h in since] == ["b"]
    only = api.post("/v1/retrieve", json={"question": "Riverton", "doc_ids": ["c"]}).json()["results"]
    assert [h["doc_id"] for h in only] == ["c"]
    assert api.post("/v1/retrieve", json={"question": "Riverton", "sources": []}).json()["results"] == []


def test_bad_dates_and_questions_are_400_naming_the_argument(loaded):
    api = loaded
    assert "since" in _error(api.post("/v1/retrieve", json={"question": "x y", "since": "last week"}), 400)
    assert "after" in _error(api.post("/v1/retrieve", json={"question": "x y", "since": "2023", "until": "2021"}), 400)
    assert "no words" in _error(api.post("/v1/retrieve", json={"question": "?!"}), 400)


def test_stats_counts_indexes_lag_and_queue_depth(loaded):
    stats = loaded.get("/v1/stats", "read").json()
    assert stats["documents"] == 3 and stats["chunks"] == 3 and stats["queue"] == {"depth": 0}
    assert {"bm25", "graph"} <= set(stats["indexes"]) and stats["stale"] == {}
    assert all({"applied_seq", "behind"} <= set(ix) for ix in stats["indexes"].values())
    assert "data_dir" not in stats


def test_graph_entity_timeline_unknown_entity_and_periods(loaded):
    api = loaded
    timeline = api.get("/v1/graph/entities/Northwind Energy", "read").json()
    assert timeline["name"] == "Northwind Energy" and timeline["facts"]
    assert "Northwind Energy" in _error(api.get("/v1/graph/entities/Northwind Enrgy"), 404, "unknown_entity")
    period = api.get("/v1/graph/periods/2021", "read").json()
    assert period["period"] == "2021" and period["level"] == "year"
    assert "period" in _error(api.get("/v1/graph/periods/20x1"), 400, "bad_period")


def test_metrics_are_prometheus_text_with_latency_queue_and_lag(loaded):
    api = loaded
    _error(api.client.get("/metrics"), 401)
    api.post("/v1/retrieve", json={"question": "Riverton"})
    text = api.get("/metrics", "read").text
    assert 'chronorag_http_request_duration_seconds_count{method="POST",route="/v1/retrieve",status="200"} 1.0' in text
    assert 'route="/v1/documents",status="200"' in text
    assert "chronorag_ingest_queue_depth 0.0" in text
    assert 'chronorag_index_lag_changes{index="bm25"} 0.0' in text
    assert "chronorag_ingest_documents_per_second" in text and "chronorag_kv_cache_hit_rate" in text
    api.get("/v1/no/such/route")
    assert 'route="unmatched",status="404"' in api.get("/metrics", "read").text


def test_two_apps_in_one_process_keep_their_own_metrics(api_factory):
    first, second = api_factory(sub="first"), api_factory(sub="second")
    first.get("/v1/stats")
    assert 'route="/v1/stats"' in first.get("/metrics").text
    assert 'route="/v1/stats"' not in second.get("/metrics").text


def test_limit_settings_are_validated_and_read_from_the_environment(tmp_path):
    for name, bad in (("api_max_documents", 0), ("api_max_body_mb", 0), ("api_generation_queue", 0),
                      ("api_generation_timeout_s", -1), ("api_wait_timeout_s", 0)):
        with pytest.raises(ConfigError, match=name):
            load_settings(env={}, data_dir=tmp_path, **{name: bad})
    env = {"CHRONORAG_API_MAX_BODY_MB": "1.5", "CHRONORAG_API_MAX_DOCUMENTS": "10"}
    settings = load_settings(env=env, data_dir=tmp_path)
    assert (settings.api_max_body_mb, settings.api_max_documents) == (1.5, 10)
