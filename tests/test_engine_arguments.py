"""What Python callers may pass to ChronoRAG's verbs: bad values fail per document or with a
ValueError naming the argument, never deep inside an index or by blocking the data directory."""

from datetime import date, datetime, timedelta, timezone

import pytest
from fakes import HashingEmbedder

from chronorag.arguments import MAX_QUESTION_CHARS
from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.store import StoreError
from chronorag.types import Document

UTC = timezone.utc
SHANGHAI = timezone(timedelta(hours=8))


@pytest.fixture
def rag(tmp_path):
    settings = load_settings(env={}, data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8)
    engine = ChronoRAG(settings, embedder=HashingEmbedder())
    engine.insert([
        Document("d0", "apples from the north orchard", datetime(2020, 1, 1, tzinfo=UTC), source="s0"),
        Document("d1", "apples from the south orchard", datetime(2020, 1, 2, tzinfo=UTC), source="s1"),
        Document("d2", "apples from the east orchard", datetime(2020, 1, 3, tzinfo=UTC), source="s1"),
    ])
    yield engine
    engine.close()


def _ids(hits):
    return sorted(h.doc_id for h in hits)


@pytest.mark.parametrize("doc, message", [
    (Document("n", "text", datetime(2020, 1, 1, 12)), "'published_at' has no time zone"),
    (Document("m", "text", metadata={"t": datetime(2020, 1, 1)}), "'metadata' is not JSON"),
    (Document("m2", "text", metadata={"s": {1, 2}}), "'metadata' is not JSON"),
    (Document("m3", "text", metadata={1: "a", "1": "b"}), "'metadata' is not JSON"),
    (Document("s", "text", source=None), "'source' must be a string"),
    (Document("t", "text", title=5), "'title' must be a string"),
    (Document("p", "text", published_at="2020-01-01"), "'published_at' must be a datetime"),
    (Document("u", "lone \ud800 surrogate"), "'text' is not valid Unicode"),
    (Document("b", b"abc"), "'text' must be a string, got bytes"),
    ({"id": "x", "text": "a dict"}, "expected a Document, got dict"),
])
def test_a_bad_document_fails_alone_and_blocks_nothing(rag, doc, message):
    report = rag.insert([Document("ok-before", "pears in the market"), doc, Document("ok-after", "plums in the market")])
    assert (report.new, report.failed) == (2, 1) and message in report.errors[0].message
    assert rag.store.counts()["documents"] == 5
    assert _ids(rag.retrieve("pears plums market", top_k=5, retrievers=["bm25"])) == ["ok-after", "ok-before"]
    assert rag.insert([Document("later", "quinces")]).new == 1  # later inserts still work
    live = rag.store.live_chunk_ids().size
    assert all(ix.applied_seq == rag.store.max_seq() for ix in rag.indexes()) and live == 6


def test_duplicate_ids_in_one_insert_keep_the_first_and_say_so(rag):
    report = rag.insert([Document("x", "first text"), Document("y", "other"), Document("x", "second text")])
    assert (report.new, report.failed) == (2, 1) and "duplicate id" in report.errors[0].message
    assert rag.store.get_document("x").text == "first text"


def test_naive_and_date_bounds_are_read_in_default_tz(tmp_path):
    settings = load_settings(env={}, data_dir=tmp_path / "d", default_tz="Asia/Shanghai", embedder="none")
    with ChronoRAG(settings) as rag:
        rag.insert([Document(f"d{i}", "apples", datetime(2020, 1, 1 + i, tzinfo=UTC)) for i in range(3)])
        # d2 is 2020-01-03 08:00 in Shanghai: after a naive 2020-01-03 00:00 read there
        assert _ids(rag.retrieve("apples", until=datetime(2020, 1, 3))) == ["d0", "d1"]
        assert _ids(rag.retrieve("apples", until=date(2020, 1, 3))) == ["d0", "d1", "d2"]  # the whole day
        assert _ids(rag.retrieve("apples", since=datetime(2020, 1, 2, 8), until=datetime(2020, 1, 2, 8, 0, tzinfo=SHANGHAI))) == ["d1"]
        assert _ids(rag.retrieve("apples", since=datetime.min, until=datetime.max)) == ["d0", "d1", "d2"]


@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": 2.5}, "top_k must be an integer"),
    ({"top_k": True}, "top_k must be an integer"),
    ({"top_k": "3"}, "top_k must be an integer"),
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"since": 20200101}, "since must be a datetime, a date or a string"),
    ({"since": "2020-13"}, "since: '2020-13' is not a valid date: month must be in 1..12"),
    ({"until": "tomorrow"}, "until: cannot read 'tomorrow' as a date"),
    ({"since": datetime(2021, 1, 1, tzinfo=UTC), "until": datetime(2020, 1, 1)}, "is after until"),
    ({"retrievers": []}, "retrievers is empty"),
    ({"retrievers": [None]}, "retrievers must hold strings"),
    ({"doc_ids": 5}, "doc_ids must be a string or a collection"),
])
def test_bad_retrieve_arguments_name_themselves(rag, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rag.retrieve("apples", **kwargs)


@pytest.mark.parametrize("question, message", [
    (123, "question must be a string"), (b"apples", "question must be a string"), ("   ", "question is empty"),
    ("?!.,;", "no words to search for"),
    ("apples " * (MAX_QUESTION_CHARS // 7 + 1), "the limit is"),
])
def test_bad_questions(rag, question, message):
    with pytest.raises(ValueError, match=message):
        rag.retrieve(question)


def test_numpy_integers_and_strings_are_welcome(rag):
    import numpy as np

    assert len(rag.retrieve("apples", top_k=np.int64(2))) == 2
    assert _ids(rag.retrieve("apples", doc_ids=np.array(["d0", "d2"]))) == ["d0", "d2"]


def test_one_string_is_one_id_and_an_empty_collection_matches_nothing(rag):
    assert _ids(rag.retrieve("apples", doc_ids="d1")) == ["d1"]
    assert _ids(rag.retrieve("apples", sources="s1")) == ["d1", "d2"]
    assert _ids(rag.retrieve("apples", retrievers="bm25")) == ["d0", "d1", "d2"]
    assert rag.retrieve("apples", doc_ids=[]) == [] and rag.retrieve("apples", sources=iter(())) == []
    assert rag.delete("d2") == ["d2"]
    with pytest.raises(ValueError, match="got None"):
        rag.delete(None)
    assert rag.warm_kv([]) == 0  # nothing asked for: the model is not even loaded
    assert rag._parts.built("generator") is None


def test_insert_takes_one_document_and_refuses_other_things(rag):
    assert rag.insert(Document("single", "one document on its own")).new == 1
    for bad in ("text", {"id": "x"}, 42):
        with pytest.raises(ValueError, match="records must be Documents"):
            rag.insert(bad)


def test_answer_checks_max_new_tokens_before_loading_anything(rag):
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="max_new_tokens must be"):
            rag.answer("apples?", max_new_tokens=bad)
    assert rag._parts.built("generator") is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="bogus"), "mode must be one of blend, full, prefix, naive, got 'bogus'"),
    (dict(ratio=1.5), r"ratio must be in \[0, 1\], got 1.5"),
    (dict(ratio="0.3"), "ratio must be a number in"),
    (dict(ratio=True), "ratio must be a number in"),
])
def test_answer_refuses_a_bad_mode_or_ratio_with_a_value_error(rag, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rag.answer("apples?", **kwargs)
    assert rag._parts.built("generator") is None


def test_settings_built_by_hand_and_bad_data_dirs(tmp_path):
    from chronorag.config import Settings

    with ChronoRAG(Settings(data_dir=str(tmp_path / "s"), embedder="none")) as rag:  # a str path works
        assert rag.insert(Document("a", "text")).new == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create data directory"):
        ChronoRAG(Settings(data_dir=tmp_path / "file" / "sub", embedder="none"))


def test_a_closed_engine_says_so_and_lets_go_of_its_files(tmp_path):
    import os

    settings = load_settings(env={}, data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8)
    with ChronoRAG(settings, embedder=HashingEmbedder()) as first:
        first.insert([Document(f"d{i}", f"apples number {i}") for i in range(5)])
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        rag = ChronoRAG(settings, embedder=HashingEmbedder())
        assert rag.retrieve("apples", top_k=1)
        bm25 = rag.bm25
        rag.close()
        assert bm25.stats()["segments"] == 0  # segment files unmapped, not only the store closed
    assert len(os.listdir("/proc/self/fd")) <= fds + 1
    for call in (lambda: rag.retrieve("apples"), lambda: rag.insert([]), lambda: rag.stats(), lambda: rag.bm25):
        with pytest.raises(StoreError, match="is closed"):
            call()
    rag.close()  # twice is fine
