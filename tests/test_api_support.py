"""Shared pieces of the REST API tests (no tests here): a tiny store, a fast fake generator, an app
with keys of each scope, and a client for it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from fakes import HashingEmbedder

from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.keys import KeyStore
from chronorag.kvcache import CacheReport, GenerationResult, Generator, Timings, TokenEvent

DOCS = [
    {"id": "a", "text": "Northwind Energy appointed Maria Lopez as chief executive.", "published_at": "2021-03-01",
     "source": "wire"},
    {"id": "b", "text": "Northwind Energy moved its headquarters to Riverton.", "published_at": "2022-06-15",
     "source": "wire"},
    {"id": "c", "text": "The city council approved a new tram line for Riverton.", "published_at": "2022-07-01"},
]
ANSWER_WORDS = ["Maria", " Lopez", " runs", " Northwind", "."]


class WordTokenizer:
    """One token per whitespace-separated word: budgets become easy to reason about."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(range(len(text.split())))


class FakeGenerator(Generator):
    """Answers with ANSWER_WORDS, one token event each (``delay`` seconds apart); records requests."""

    backend = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests = []
        self.tokenizer = WordTokenizer()
        self.loaded = threading.Event()

    def load(self) -> None:
        self.loaded.set()

    def stream(self, request):
        request.validate()
        self.requests.append(request)
        t0 = time.perf_counter()
        words = ANSWER_WORDS[: request.max_new_tokens]
        for word in words:
            if self.delay:
                time.sleep(self.delay)
            yield TokenEvent(word)
        n = len(request.chunks)
        yield GenerationResult("".join(words), list(range(len(words))),
                               "stop" if len(words) == len(ANSWER_WORDS) else "length",
                               Timings(ttft_s=0.001, decode_tokens_per_s=500.0, total_s=time.perf_counter() - t0),
                               CacheReport(mode="fake", prompt_tokens=10 * n, chunk_hits=max(n - 1, 0),
                                           chunk_misses=min(n, 1)))


def api_settings(data_dir, **extra):
    values = dict(chunk_size=64, chunk_overlap=8, embedder="none")
    values.update(extra)
    return load_settings(env={}, data_dir=data_dir, **values)


@dataclass
class Api:
    client: object
    engine: ChronoRAG
    generator: FakeGenerator
    keys: dict[str, str]

    def headers(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def get(self, url, scope="admin", **kw):
        return self.client.get(url, headers={**self.headers(scope), **kw.pop("headers", {})}, **kw)

    def post(self, url, scope="admin", **kw):
        return self.client.post(url, headers={**self.headers(scope), **kw.pop("headers", {})}, **kw)

    def delete(self, url, scope="admin", **kw):
        return self.client.delete(url, headers={**self.headers(scope), **kw.pop("headers", {})}, **kw)

    def ingest(self, docs=DOCS):
        r = self.post("/v1/documents?wait=true", json={"documents": docs})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "done", r.text
        return r.json()


def make_keys(engine: ChronoRAG) -> dict[str, str]:
    store = KeyStore(engine.store)
    return {scope: store.create(scope, f"test {scope}")[0] for scope in ("read", "write", "admin")}


def build_api(tmp_path, auth: bool = True, generator: FakeGenerator | None = None, embedder=None, **settings):
    """(app, Api-without-client): an engine on a new store with a fake generator, keys of each scope."""
    from chronorag.api.app import create_app

    generator = generator or FakeGenerator()
    engine = ChronoRAG(api_settings(tmp_path / "data", **settings), embedder=embedder or HashingEmbedder(),
                       generator=generator)
    keys = make_keys(engine)
    app = create_app(engine.settings, auth=auth, engine=engine)
    return app, Api(None, engine, generator, keys)


@pytest.fixture
def api_factory(tmp_path):
    """Builds an app (settings overrides as keywords) and opens a TestClient on it (lifespan run)."""
    from fastapi.testclient import TestClient

    opened = []

    def build(auth: bool = True, generator: FakeGenerator | None = None, sub: str = "one", **settings) -> Api:
        app, api = build_api(tmp_path / sub, auth=auth, generator=generator, **settings)
        client = TestClient(app, raise_server_exceptions=True)
        client.__enter__()
        opened.append((client, api.engine))
        api.client = client
        return api

    yield build
    for client, engine in opened:
        client.__exit__(None, None, None)
        engine.close()


@pytest.fixture
def api(api_factory) -> Api:
    return api_factory()


@pytest.fixture
def loaded(api) -> Api:
    wait_ready(api)
    api.ingest()
    return api


def wait_ready(api: Api, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        r = api.client.get("/readyz")
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)
