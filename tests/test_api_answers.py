"""Answers over REST: /v1/query (budget, planner, SSE), the OpenAI-compatible chat (plain and
streamed, ``data: [DONE]``), the generation queue bound and time limit, generation metrics."""

from __future__ import annotations

import json
import threading
import time

from test_api_support import ANSWER_WORDS, FakeGenerator, api, api_factory, loaded, wait_ready  # noqa: F401

QUESTION = "Who runs Northwind Energy?"


def _events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event; pings (comments) left out."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name = next((line[len("event: "):] for line in lines if line.startswith("event: ")), None)
        data = "\n".join(line[len("data: "):] for line in lines if line.startswith("data: "))
        out.append((name, data))
    return out


def _error(r, status: int, kind: str | None = None) -> str:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    if kind:
        assert r.json()["error"]["type"] == kind, r.text
    return r.json()["error"]["message"]


# ------------------------------------------------------------------ /v1/query
def test_query_answers_with_citations_of_every_chunk_in_the_context_cost_and_timings(loaded):
    r = loaded.post("/v1/query", "read", json={"question": QUESTION, "top_k": 2})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["answer"] == "".join(ANSWER_WORDS) and out["planner"] == "topk"
    assert [c["n"] for c in out["citations"]] == [1, 2]
    assert [c["chunk_id"] for c in out["citations"]] == [s["chunk_id"] for s in out["sources"]]
    assert out["cost"]["budget"] is None and out["cost"]["tokens"] > 0
    assert out["timings"]["total_ms"] >= out["timings"]["retrieve_ms"] and out["finish_reason"] == "stop"
    request = loaded.generator.requests[-1]
    assert [cid for cid, _ in request.chunks] == [c["chunk_id"] for c in out["citations"]]


def test_budget_drops_the_lowest_ranked_chunks_counted_with_the_generators_tokenizer(loaded):
    full = loaded.post("/v1/query", json={"question": QUESTION, "top_k": 2}).json()
    words = [len(s["text"].split()) for s in full["sources"]]  # the fake tokenizer: one token per word
    r = loaded.post("/v1/query", json={"question": QUESTION, "top_k": 2, "budget": words[0] + words[1] - 1})
    out = r.json()
    assert [s["chunk_id"] for s in out["sources"]] == [full["sources"][0]["chunk_id"]]
    assert out["cost"] == {"tokens": words[0], "budget": words[0] + words[1] - 1}
    fits = loaded.post("/v1/query", json={"question": QUESTION, "top_k": 2, "budget": sum(words)}).json()
    assert len(fits["citations"]) == 2 and fits["cost"]["tokens"] == sum(words)


def test_a_budget_that_fits_no_chunk_answers_without_generating(loaded):
    before = len(loaded.generator.requests)
    out = loaded.post("/v1/query", json={"question": QUESTION, "budget": 1}).json()
    assert out["answer"] is None and out["citations"] == [] and "budget of 1 tokens fits none" in out["reason"]
    assert len(loaded.generator.requests) == before


def test_planners_other_than_topk_and_budget_ms_are_400_not_available_yet(loaded):
    for body in ({"planner": "mcts"}, {"planner": "greedy"}, {"budget_ms": 50}):
        assert "not available yet" in _error(loaded.post("/v1/query", json={"question": QUESTION, **body}), 400,
                                             "not_available")
    _error(loaded.post("/v1/query", json={"question": QUESTION, "planner": "oracle"}), 422)
    _error(loaded.post("/v1/query", json={"question": QUESTION, "budget": 0}), 422)
    assert "since" in _error(loaded.post("/v1/query", json={"question": QUESTION, "since": "soon"}), 400)


def test_nothing_retrieved_means_no_generation_and_a_reason(loaded):
    out = loaded.post("/v1/query", json={"question": QUESTION, "since": "2030"}).json()
    assert out["answer"] is None and out["sources"] == [] and "no documents matched" in out["reason"]
    assert loaded.generator.requests == []


def test_query_stream_sends_token_events_then_one_answer_event(loaded):
    r = loaded.post("/v1/query", json={"question": QUESTION, "top_k": 2, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    tokens = [json.loads(d)["text"] for name, d in events if name == "token"]
    assert tokens == ANSWER_WORDS
    assert [name for name, _ in events] == ["token"] * len(ANSWER_WORDS) + ["answer"]
    final = json.loads(events[-1][1])
    assert final["answer"] == "".join(tokens) and len(final["citations"]) == 2 and "ttft_ms" in final["timings"]
    assert final["cost"]["tokens"] > 0


def test_query_stream_checks_arguments_before_the_stream_starts(loaded):
    assert "until" in _error(loaded.post("/v1/query", json={"question": QUESTION, "until": "x", "stream": True}), 400)


# ------------------------------------------------------------------ OpenAI-compatible chat
def test_chat_completion_has_the_openai_shape_and_carries_citations(loaded):
    body = {"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Riverton?"},
        {"role": "assistant", "content": "A city."}, {"role": "user", "content": QUESTION}]}
    r = loaded.post("/v1/chat/completions", "read", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-") and out["model"] == "gpt-4o-mini"
    choice = out["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    cited = out["chronorag"]["citations"]
    assert content.startswith("".join(ANSWER_WORDS)) and "\n\nSources:\n[1] " in content
    assert all(f"[{c['n']}] {c['doc_id']}" in content for c in cited)
    assert out["usage"]["completion_tokens"] == len(ANSWER_WORDS)
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + len(ANSWER_WORDS)
    assert loaded.generator.requests[-1].question == QUESTION  # the last user message


def test_chat_takes_content_parts_retrieval_options_and_max_tokens(loaded):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}], "max_tokens": 2,
            "chronorag": {"top_k": 1, "since": "2022"}}
    out = loaded.post("/v1/chat/completions", json=body).json()
    assert out["choices"][0]["finish_reason"] == "length"
    assert [c["doc_id"] for c in out["chronorag"]["citations"]] == ["b"]
    assert loaded.generator.requests[-1].max_new_tokens == 2


def test_chat_stream_sends_chunks_then_data_done(loaded):
    body = {"model": "chronorag", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    r = loaded.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.rstrip().endswith("data: [DONE]")
    events = _events(r.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.startswith("".join(ANSWER_WORDS)) and "Sources:\n[1] " in text
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["delta"] == {}
    assert [c["n"] for c in last["chronorag"]["citations"]] == [1, 2, 3, 4][: len(last["chronorag"]["citations"])]


def test_chat_without_a_user_message_or_messages_is_4xx(loaded):
    assert "no user message" in _error(loaded.post("/v1/chat/completions",
                                                   json={"messages": [{"role": "system", "content": "hi"}]}), 400)
    _error(loaded.post("/v1/chat/completions", json={"messages": []}), 422)
    _error(loaded.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": 3}]}), 422)


def test_chat_with_nothing_retrieved_says_so(loaded):
    body = {"messages": [{"role": "user", "content": QUESTION}], "chronorag": {"since": "2030"}}
    out = loaded.post("/v1/chat/completions", json=body).json()
    assert out["choices"][0]["message"]["content"].startswith("I found no documents")
    assert out["chronorag"]["citations"] == []


def test_models_lists_chronorag(api):
    out = api.get("/v1/models", "read").json()
    assert out["object"] == "list" and [m["id"] for m in out["data"]] == ["chronorag"]


# ------------------------------------------------------------------ limits
def _ingested(api_factory, **settings):
    api = api_factory(**settings)
    wait_ready(api)
    api.ingest()
    return api


def test_a_full_generation_queue_is_429_with_retry_after(api_factory):
    api = _ingested(api_factory, generator=FakeGenerator(delay=0.1), api_generation_queue=1)
    first = {}
    worker = threading.Thread(target=lambda: first.update(r=api.post("/v1/query", json={"question": QUESTION})))
    worker.start()
    deadline = time.monotonic() + 10
    while not api.generator.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    r = api.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]})
    assert "queue is full" in _error(r, 429, "queue_full") and int(r.headers["Retry-After"]) >= 1
    worker.join(30)
    assert first["r"].status_code == 200
    assert api.post("/v1/query", json={"question": QUESTION}).status_code == 200  # the slot came back
    assert "chronorag_generation_rejected_total 1.0" in api.get("/metrics").text


def test_the_generation_time_limit_is_504_and_ends_a_stream_with_an_error_event(api_factory):
    api = _ingested(api_factory, generator=FakeGenerator(delay=0.2), api_generation_timeout_s=0.3)
    assert "time limit" in _error(api.post("/v1/query", json={"question": QUESTION}), 504, "timeout")
    events = _events(api.post("/v1/query", json={"question": QUESTION, "stream": True}).text)
    assert events[-1][0] == "error" and json.loads(events[-1][1])["error"]["type"] == "timeout"
    assert 0 < sum(name == "token" for name, _ in events) < len(ANSWER_WORDS)
    chat = api.post("/v1/chat/completions", json={"stream": True, "messages": [{"role": "user", "content": QUESTION}]})
    assert chat.text.rstrip().endswith("data: [DONE]") and '"type": "timeout"' in chat.text
    assert api.engine.generator is api.generator and api.post("/v1/retrieve", json={"question": "x y"}).status_code == 200
    deadline = time.monotonic() + 5  # the stopped generations gave their slots back
    while api.client.app.state.service.slots.used and time.monotonic() < deadline:
        time.sleep(0.02)
    assert api.client.app.state.service.slots.used == 0


def test_metrics_after_answers_show_ttft_tokens_per_second_and_kv_hit_rate(loaded):
    loaded.post("/v1/query", json={"question": QUESTION, "top_k": 2})
    loaded.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]})
    text = loaded.get("/metrics", "read").text
    assert "chronorag_ttft_seconds_count 2.0" in text
    assert "chronorag_decode_tokens_per_second_count 2.0" in text
    assert 'chronorag_answers_total{endpoint="query"} 1.0' in text and 'chronorag_answers_total{endpoint="chat"} 1.0' in text
    # the fake reports one miss and the rest hits per answer: 1 + 3 hits of 2 + 4 chunks
    hits = float(next(line.split()[1] for line in text.splitlines() if line.startswith("chronorag_kv_cache_hit_rate ")))
    assert 0 < hits < 1


def test_a_tiny_real_model_answers_over_rest(api_factory):
    from chronorag.kvcache.hf_backend import HFGenerator
    from chronorag.kvcache.testing import CharTokenizer, tiny_model

    gen = HFGenerator.from_model(tiny_model(seed=1), CharTokenizer(), model_id="tiny")
    api = _ingested(api_factory, generator=gen)
    out = api.post("/v1/query", json={"question": QUESTION, "top_k": 2, "max_new_tokens": 4}).json()
    assert isinstance(out["answer"], str) and out["cache"]["chunk_misses"] == 2
    # the budget counts with the model's tokenizer: one token per character here
    first = out["sources"][0]["text"]
    cut = api.post("/v1/query", json={"question": QUESTION, "top_k": 2, "budget": len(first),
                                      "max_new_tokens": 4}).json()
    assert cut["cost"] == {"tokens": len(first), "budget": len(first)} and len(cut["sources"]) == 1
    streamed = _events(api.post("/v1/query", json={"question": QUESTION, "top_k": 2, "max_new_tokens": 4,
                                                   "stream": True}).text)
    assert streamed[-1][0] == "answer" and json.loads(streamed[-1][1])["cache"]["chunk_hits"] == 2
