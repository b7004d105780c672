"""The openai backend against a fake streaming server on 127.0.0.1, and the vLLM backend up to its guard."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chronorag.kvcache.generator import BackendUnavailable, GenerationError, GenerationRequest, TokenEvent, load_generator
from chronorag.kvcache.prompt import PromptLayout, build_prompt, encode_chunk
from chronorag.kvcache.testing import CharTokenizer
from chronorag.kvcache.vllm_backend import VLLMGenerator, lmcache_env, sampling_kwargs, token_prompt

CHUNKS = [(1, "Alpha fact."), (2, "Beta fact.")]


class _FakeOpenAI(BaseHTTPRequestHandler):
    bodies: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append((self.path, body, self.headers.get("Authorization")))
        if type(self).status != 200:
            self.send_response(type(self).status)
            self.end_headers()
            self.wfile.write(b'{"error": "model not loaded"}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ["Ada", " Park", "."]:
            event = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 42, "completion_tokens": 3}}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _FakeOpenAI.bodies, _FakeOpenAI.status = [], 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_openai_backend_streams_tokens_and_reports(server):
    gen = load_generator("openai", base_url=server, model="m", api_key="sk-test")
    events = list(gen.stream(GenerationRequest("Who is CEO?", CHUNKS, system_prompt="S", max_new_tokens=5)))
    assert [e.text for e in events if isinstance(e, TokenEvent)] == ["Ada", " Park", "."]
    result = events[-1]
    assert result.text == "Ada Park." and result.finish_reason == "stop"
    assert result.cache.prompt_tokens == 42 and result.timings.ttft_s > 0 and result.timings.total_s >= result.timings.ttft_s
    path, body, auth = _FakeOpenAI.bodies[0]
    assert path == "/v1/chat/completions" and body["stream"] is True and body["max_tokens"] == 5
    assert auth == "Bearer sk-test"
    assert body["messages"][0] == {"role": "system", "content": "S"}
    user = body["messages"][1]["content"]
    assert user.index("Alpha fact.") < user.index("Beta fact.") < user.index("Who is CEO?")


def test_openai_backend_errors_are_one_line(server):
    _FakeOpenAI.status = 503
    gen = load_generator("openai", base_url=server)
    with pytest.raises(GenerationError, match="HTTP 503.*model not loaded"):
        gen.generate(GenerationRequest("q"))
    with pytest.raises(GenerationError, match="no KV reuse"):
        gen.generate(GenerationRequest("q", mode="blend"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        load_generator("openai", base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2).generate(GenerationRequest("q"))
    with pytest.raises(GenerationError, match="base_url"):
        load_generator("openai", base_url="localhost:8000")


def test_vllm_guard_gives_install_hint():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    gen = load_generator("vllm", model="some/model")  # constructing is lazy and cheap
    with pytest.raises(BackendUnavailable, match="gpu"):
        gen.generate(GenerationRequest("q", CHUNKS))


def test_vllm_request_construction():
    tok = CharTokenizer()
    req = GenerationRequest("Who?", CHUNKS, system_prompt="S", max_new_tokens=9, seed=4)
    layout = PromptLayout()
    plain = token_prompt(tok, req, layout)
    assert plain == build_prompt(tok, "S", CHUNKS, "Who?").all_ids
    sep = tok.encode(" # # ", add_special_tokens=False)
    blended = token_prompt(tok, req, layout, sep)
    parts = build_prompt(tok, "S", CHUNKS, "Who?")
    expected = parts.prefix_ids + sep + encode_chunk(tok, "Alpha fact.") + sep + encode_chunk(tok, "Beta fact.") + sep + parts.suffix_ids
    assert blended == expected
    assert sampling_kwargs(req) == {"max_tokens": 9, "temperature": 0.0, "seed": 4}
    env = lmcache_env(0.15, check_layers=1, separator=" # # ")
    assert env["LMCACHE_ENABLE_BLENDING"] == "True" and env["LMCACHE_BLEND_RECOMPUTE_RATIOS"] == "0.15"
    with pytest.raises(GenerationError):
        lmcache_env(1.5)
    gen = VLLMGenerator("m", mode="blend", max_model_len=4096)
    args = gen.engine_args()
    assert args["kv_transfer_config"]["kv_connector"] == "LMCacheConnectorV1" and args["enable_prefix_caching"] is False
    assert VLLMGenerator("m").engine_args()["enable_prefix_caching"] is True
    with pytest.raises(GenerationError, match="mode"):
        VLLMGenerator("m", mode="naive")
