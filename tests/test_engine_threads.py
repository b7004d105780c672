"""One ChronoRAG is shared by the threads of a server: concurrent reads (and a concurrent ingest)
give the rankings one thread gives, and no stage keeps per-question state between calls."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import is_dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources

import pytest
from fakes import HashingEmbedder

from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.ingest.loaders import load
from chronorag.query import GraphReading, Query
from chronorag.types import Document

UTC = timezone.utc
UNTIL = "2023-12-31"  # every sample article; the concurrent ingest adds later ones


def _sample_questions() -> list[str]:
    path = resources.files("chronorag") / "samples" / "sample_questions.jsonl"
    questions = [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return questions + ["What happened at Northwind Energy in August 2023?", "Northwind solar capacity",
                        "2022年 Port Aldine 电网"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    data = tmp_path_factory.mktemp("threads") / "data"
    settings = load_settings(env={}, data_dir=data, chunk_size=64, chunk_overlap=8)
    sample = resources.files("chronorag") / "samples" / "sample_news.jsonl"
    with ChronoRAG(settings, embedder=HashingEmbedder()) as rag:
        rag.insert(load(str(sample), "jsonl"))
    return settings


def _ranking(rag: ChronoRAG, question: str) -> list[tuple[int, str]]:
    return [(h.chunk_id, h.doc_id) for h in rag.retrieve(question, top_k=8, until=UNTIL)]


def _later_documents(n: int) -> list[Document]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    # words no sample question uses, so the rankings under test may not move
    return [Document(f"later-{i}", f"The orchard cooperative held harvest festival number {i} with lanterns, "
                     f"cider and a brass band by the millpond. " * 4, start + timedelta(days=i))
            for i in range(n)]


def _hammer(rag: ChronoRAG, questions: list[str], rounds: int = 3) -> dict[str, list]:
    """Every question ``rounds`` times from 8 threads at once; each answer must be the same."""
    tasks = [q for _ in range(rounds) for q in questions]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda q: (q, _ranking(rag, q)), tasks))
    seen: dict[str, list] = {}
    for question, ranking in results:
        assert seen.setdefault(question, ranking) == ranking, question
    return seen


@pytest.mark.parametrize("loaded_graph", [False, True], ids=["subgraph-per-question", "graph-in-memory"])
def test_eight_threads_rank_like_one_thread(corpus, loaded_graph):
    questions = _sample_questions()
    with ChronoRAG(corpus, embedder=HashingEmbedder()) as rag:
        if loaded_graph:
            rag.warm_up(generator=False)
        single = {q: _ranking(rag, q) for q in questions}
        assert all(single.values())
        assert _hammer(rag, questions) == single


BATCHES = 4


def _copy(corpus, target):
    import shutil

    settings = load_settings(env={}, data_dir=target, chunk_size=64, chunk_overlap=8)
    shutil.copytree(corpus.data_dir, settings.data_dir)
    return settings


def test_rankings_hold_while_another_thread_ingests(corpus, tmp_path):
    """Each answer read during an ingest is the one a single thread gets at some state the ingest
    passes through (documents of later dates, filtered out, only move BM25's statistics)."""
    questions = _sample_questions()
    later = _later_documents(BATCHES * 10)
    allowed: dict[str, list] = {q: [] for q in questions}
    with ChronoRAG(_copy(corpus, tmp_path / "sequential"), embedder=HashingEmbedder()) as rag:
        for batch in range(BATCHES + 1):
            for q in questions:
                allowed[q].append(_ranking(rag, q))
            rag.insert(later[batch * 10:(batch + 1) * 10])
    with ChronoRAG(_copy(corpus, tmp_path / "concurrent"), embedder=HashingEmbedder()) as rag:
        rag.warm_up(generator=False)
        errors: list[BaseException] = []
        done = threading.Event()

        def ingest() -> None:
            try:
                for batch in range(BATCHES):
                    rag.insert(later[batch * 10:(batch + 1) * 10])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                done.set()

        writer = threading.Thread(target=ingest)
        writer.start()
        answers = during = 0
        while not done.is_set() or answers < 2 * len(questions):
            ingesting = not done.is_set()
            with ThreadPoolExecutor(max_workers=8) as pool:
                for question, ranking in pool.map(lambda q: (q, _ranking(rag, q)), questions):
                    assert ranking in allowed[question], question
                    answers += 1
                    during += ingesting
        writer.join()
        assert not errors and during
        assert rag.store.counts()["documents"] == 34 + BATCHES * 10
        assert {q: _ranking(rag, q) for q in questions} == {q: r[-1] for q, r in allowed.items()}
        assert rag.retrieve("harvest festival number 7", top_k=1, since="2025")[0].doc_id == "later-7"


def _reachable_state(root, max_depth: int = 10):
    """Every attribute value reachable from ``root`` through chronorag objects (not the store's
    rows or library internals): where a memo of the last question would live."""
    seen: set[int] = set()
    stack = [(root, 0)]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or depth > max_depth:
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, (str, bytes, int, float)):
            continue
        if isinstance(obj, dict):
            children = list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = list(obj)[:1000]
        elif type(obj).__module__.startswith("chronorag") and (hasattr(obj, "__dict__") or is_dataclass(obj)):
            children = list(getattr(obj, "__dict__", {}).values())
        else:
            continue
        stack.extend((c, depth + 1) for c in children)


@pytest.mark.parametrize("loaded_graph", [False, True], ids=["subgraph-per-question", "graph-in-memory"])
def test_no_stage_keeps_the_last_question(corpus, loaded_graph):
    """A memo slot (the engine's or the graph's 'last parse', 'last subgraph') would hold the
    question or what was made of it after the call; nothing may."""
    question = "Who was the chief executive of Northwind Energy in 2021?"
    with ChronoRAG(corpus, embedder=HashingEmbedder()) as rag:
        if loaded_graph:
            rag.warm_up(generator=False)
        hits = rag.retrieve(question, top_k=3)
        assert hits and hits.query.text == question and hits.query.graph is not None
        del hits
        for value in _reachable_state(rag):
            assert not isinstance(value, (Query, GraphReading)), f"a {type(value).__name__} is kept"
            assert not (isinstance(value, str) and question in value), "the question is kept"
            assert not (isinstance(value, tuple) and question in value), "a memo keyed by the question is kept"
