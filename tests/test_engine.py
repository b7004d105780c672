from datetime import datetime, timezone

import pytest
from fakes import HashingEmbedder

from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.types import Document

UTC = timezone.utc
WORDS = "river harbor copper lantern orchard meadow falcon glacier canyon prairie".split()


def _docs():
    docs = []
    for i, w in enumerate(WORDS):
        text = (f"The {w} report number {i}. " * 3) + f"Officials discussed the {w} budget in detail."
        docs.append(Document(f"doc-{i}", text, datetime(2020 + i % 4, 1 + i, 5, tzinfo=UTC),
                             source="even" if i % 2 == 0 else "odd"))
    return docs


@pytest.fixture
def rag(tmp_path):
    settings = load_settings(env={}, data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8)
    engine = ChronoRAG(settings, embedder=HashingEmbedder())
    yield engine
    engine.close()


def _index_ids(rag):
    bm25_ids, _ = rag.bm25.search(" ".join(WORDS + ["report", "budget", "new", "words"]), k=10_000)
    dense_ids, _ = rag.dense.search("report budget", k=10_000)
    return set(map(int, bm25_ids)), set(map(int, dense_ids))


def test_insert_retrieve_and_fields(rag):
    report = rag.insert(_docs())
    assert (report.new, report.changed, report.unchanged, report.failed) == (10, 0, 0, 0)
    hits = rag.retrieve("glacier budget", top_k=3)
    assert hits[0].doc_id == "doc-7"
    h = hits[0]
    assert h.chunk_id > 0 and h.published_at == datetime(2023, 8, 5, tzinfo=UTC)
    assert "glacier" in h.text and set(h.scores) == {"bm25", "dense"}
    for mode in (["bm25"], ["dense"]):
        assert rag.retrieve("glacier budget", top_k=1, retrievers=mode)[0].doc_id == "doc-7"


def test_reingest_is_noop_and_indexes_agree_with_store(rag):
    rag.insert(_docs())
    seq = rag.store.max_seq()
    embedded = rag.embedder.encoded
    report = rag.insert(_docs())
    assert report.unchanged == 10 and report.new == report.changed == 0
    assert rag.store.max_seq() == seq and rag.embedder.encoded == embedded
    live = set(rag.store.live_chunk_ids().tolist())
    assert _index_ids(rag) == (live, live)


def test_update_replaces_and_delete_removes_everywhere(rag):
    rag.insert(_docs())
    changed = Document("doc-3", "A completely new text about volcanoes and lava.", datetime(2024, 1, 1, tzinfo=UTC))
    assert rag.insert([changed]).changed == 1
    assert rag.retrieve("volcanoes lava", top_k=1)[0].doc_id == "doc-3"
    assert all("lantern" not in h.text for h in rag.retrieve("lantern report", top_k=10))
    assert rag.retrieve("lantern", top_k=10, retrievers=["bm25"]) == []
    assert rag.delete(["doc-3", "nope"]) == ["doc-3"]
    assert all(h.doc_id != "doc-3" for h in rag.retrieve("volcanoes lava", top_k=10))
    live = set(rag.store.live_chunk_ids().tolist())
    assert _index_ids(rag) == (live, live)


def test_metadata_change_reindexes_without_re_embedding(rag):
    rag.insert(_docs())
    embedded = rag.embedder.encoded
    old = _docs()[4]
    redated = Document(old.doc_id, old.text, datetime(2019, 2, 2, tzinfo=UTC), source="fixed")
    assert rag.insert([redated]).changed == 1
    assert rag.embedder.encoded == embedded  # same chunk texts: stored vectors carried over
    hit = rag.retrieve(old.text, top_k=1, retrievers=["dense"])[0]
    assert hit.doc_id == old.doc_id and hit.published_at == datetime(2019, 2, 2, tzinfo=UTC)
    live = set(rag.store.live_chunk_ids().tolist())
    assert _index_ids(rag) == (live, live)
    long_text = " ".join(f"Section {i} covers the {w} accounts of the orchard cooperative." for i, w in enumerate(WORDS * 3))
    rag.insert([Document("long", long_text, redated.published_at)])
    n_chunks, embedded = len(rag.store.doc_chunk_ids("long")), rag.embedder.encoded
    rag.insert([Document("long", long_text + " A closing note on irrigation pumps.", redated.published_at)])
    assert n_chunks >= 3 and 1 <= rag.embedder.encoded - embedded <= 2  # only the tail chunk(s)


def test_documents_built_in_code_get_the_loaders_checks(rag):
    bad = [Document("a\nb", "text", None), Document("", "text", None), Document("ok", "  ", None),
           Document("x" * 2000, "text", None)]
    report = rag.insert(bad + [Document("fine", "Some text about rivers.", None)])
    assert (report.new, report.failed) == (1, 4)
    assert [e.message.split(":")[0] for e in report.errors] == [
        "'id' contains a control character", "empty 'id'", "empty 'text'", "'id' is longer than 1024 characters"]
    assert rag.store.counts()["documents"] == 1


def test_an_id_with_a_lone_surrogate_fails_alone(rag):
    docs = [Document("bad\udcff.md", "Text about rivers.", None), Document("good", "Text about harbors.", None)]
    report = rag.insert(docs)
    assert (report.new, report.failed) == (1, 1)
    assert report.errors[0].message.startswith("'id' is not valid Unicode: surrogates not allowed")
    assert rag.store.get_document("good") is not None


def test_prune_deletes_a_folder_s_ids_outside_keep(rag):
    ids = ["notes/a.md", "notes/b.md", "notes/closed/c.md", "notes/closed/d/e.md", "notes_x/a.md", "other"]
    rag.insert([Document(i, f"Text about rivers {n}.", None) for n, i in enumerate(ids)])
    assert rag.prune("notes/", {"notes/a.md", "notes/closed/"}) == ["notes/b.md"]
    assert sorted(rag.store.doc_ids_with_prefix("")) == sorted(set(ids) - {"notes/b.md"})
    assert rag.prune("notes/", ["notes/a.md", "notes/closed/", "notes/closed/c.md"]) == []
    with pytest.raises(ValueError, match="non-empty"):
        rag.prune("", [])


def test_index_progress_counts_chunks_per_index(rag):
    seen: dict[str, int] = {}
    rag.insert(_docs(), index_progress=lambda name, n: seen.__setitem__(name, seen.get(name, 0) + n))
    n_chunks = rag.store.counts()["chunks"]
    assert seen and set(seen.values()) == {n_chunks} and {"bm25", "dense"} <= set(seen)


def test_documents_in_other_scripts_are_found_by_bm25(tmp_path):
    settings = load_settings(env={}, data_dir=tmp_path / "data", embedder="none")
    with ChronoRAG(settings) as rag:
        rag.insert([Document("ru", "Компания Газпром назначила нового директора."),
                    Document("de", "Der Vorstand der Müller AG trat zurück."),
                    Document("en", "The mill owner spoke to reporters about the harbor.")])
        assert [h.doc_id for h in rag.retrieve("Газпром", top_k=3)] == ["ru"]
        assert [h.doc_id for h in rag.retrieve("Muller", top_k=3)] == ["de"]


def test_chinese_bm25_terms_follow_the_setting_and_switching_rebuilds(tmp_path):
    """'雷军' is not a dictionary word: as words only, a text with '雷' and '军' apart scores the
    same terms; the default's character bigrams put the text naming him first."""
    docs = [Document("apart", "军对雷表示欢迎。"), Document("name", "小米董事长雷军表示，新品将于下月发布。")]
    settings = load_settings(env={}, data_dir=tmp_path / "data", embedder="none", graph="none")
    with ChronoRAG(settings) as rag:
        rag.insert(docs)
        hits = rag.retrieve("雷军表示", top_k=2)
        assert [h.doc_id for h in hits] == ["name", "apart"] and hits[0].score > hits[1].score
        with_bigrams = rag.bm25.tokenizer.signature
    words = load_settings(env={}, data_dir=tmp_path / "data", embedder="none", graph="none", bm25_chinese="words")
    with ChronoRAG(words) as rag:  # the index was built with other terms: it is rebuilt, not misread
        assert rag.bm25.tokenizer.signature != with_bigrams
        hits = rag.retrieve("雷军表示", top_k=2)
        assert [h.doc_id for h in hits] == ["apart", "name"]  # the shorter text wins on the same terms
        assert hits[0].score > hits[1].score


def test_filters(rag):
    rag.insert(_docs())
    since, until = datetime(2021, 1, 1, tzinfo=UTC), datetime(2021, 12, 31, tzinfo=UTC)
    hits = rag.retrieve("report budget", top_k=10, since=since, until=until)
    assert hits and all(since <= h.published_at <= until for h in hits)
    assert {h.doc_id for h in rag.retrieve("report", top_k=10, doc_ids=["doc-1", "doc-2"])} == {"doc-1", "doc-2"}
    assert {h.source for h in rag.retrieve("report", top_k=10, sources=["odd"])} == {"odd"}
    assert rag.retrieve("report", since=datetime(2030, 1, 1, tzinfo=UTC)) == []
    with pytest.raises(ValueError):
        rag.retrieve("report", since=until, until=since)
    with pytest.raises(ValueError):
        rag.retrieve("   ")


def test_indexes_catch_up_after_restart(tmp_path):
    settings = load_settings(env={}, data_dir=tmp_path / "d", chunk_size=64, chunk_overlap=8)
    first = ChronoRAG(settings, embedder=HashingEmbedder())
    first.insert(_docs()[:5])
    first.close()
    # Another writer changes the store without touching the indexes (as a crash mid-sync would).
    second = ChronoRAG(settings, embedder=HashingEmbedder())
    from chronorag.ingest.pipeline import ingest_documents

    ingest_documents(second.store, _docs()[5:], chunk_size=64, chunk_overlap=8)
    second.store.delete_documents(["doc-0"])
    second.close()
    third = ChronoRAG(settings, embedder=HashingEmbedder())
    assert third.retrieve("glacier", top_k=1)[0].doc_id == "doc-7"
    live = set(third.store.live_chunk_ids().tolist())
    assert _index_ids(third) == (live, live)
    third.close()


def test_stats(rag):
    rag.insert(_docs())
    s = rag.stats()
    assert s.documents == 10 and s.chunks >= 10
    states = {ix.name: ix for ix in s.indexes}
    assert states["bm25"].applied_seq == s.change_seq == states["dense"].applied_seq
    assert s.published_from.startswith("2020") and s.disk_bytes > 0 and s.stale == {}
    as_json = s.to_dict()
    assert as_json["indexes"]["dense"]["behind"] == 0 and as_json["documents"] == 10


def test_vectors_only_for_questions_in_the_embedders_languages(tmp_path):
    """An English-only embedder is left out of fusion for Chinese questions, kept for English and
    mixed ones, and still used when asked for explicitly."""
    emb = HashingEmbedder()
    rag = ChronoRAG(load_settings(env={}, data_dir=tmp_path, graph="none"), embedder=emb)
    rag.insert([Document("zh", "北京市政府发布了新的交通规划，地铁线路将延长。", datetime(2023, 8, 1, tzinfo=UTC)),
                Document("en", "The river harbor report discussed the copper budget.", datetime(2023, 8, 2, tzinfo=UTC))])
    before = emb.encoded
    hits = rag.retrieve("北京地铁规划", top_k=2)
    assert hits[0].doc_id == "zh" and "dense" not in hits[0].scores and emb.encoded == before
    hits = rag.retrieve("copper budget", top_k=2)
    assert hits[0].doc_id == "en" and "dense" in hits[0].scores
    hits = rag.retrieve("北京地铁规划", top_k=2, retrievers=["bm25", "dense"])
    assert any("dense" in h.scores for h in hits)
    emb.languages = frozenset({"en", "zh"})  # a multilingual embedder takes part again
    assert any("dense" in h.scores for h in rag.retrieve("北京地铁规划", top_k=2))
    rag.close()


def test_graph_joins_fusion_only_for_questions_that_name_a_time(tmp_path):
    rag = ChronoRAG(load_settings(env={}, data_dir=tmp_path), embedder=HashingEmbedder())
    rag.insert([Document("a", "Northwind Energy appointed Maria Lopez as chief executive.", datetime(2021, 3, 1, tzinfo=UTC)),
                Document("b", "Northwind Energy named Tom Reed chief executive.", datetime(2023, 5, 1, tzinfo=UTC))])
    timeless = rag.retrieve("Northwind Energy chief executive", top_k=2)
    assert all("graph" not in h.scores for h in timeless)
    timed = rag.retrieve("Who was the chief executive of Northwind Energy in 2021?", top_k=2)
    assert any("graph" in h.scores for h in timed) and timed[0].doc_id == "a"
    rag.close()


def test_a_writer_waits_for_the_lock_and_says_so(rag, caplog):
    import fcntl
    import logging
    import os
    import threading
    import time

    rag.insert(_docs())
    fd = os.open(rag.settings.data_dir / ".write.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another writer holds the data directory
    done = []
    with caplog.at_level(logging.WARNING, logger="chronorag.engine"):
        worker = threading.Thread(target=lambda: done.append(rag.delete(["doc-1"])))
        worker.start()
        time.sleep(0.5)
        assert not done and "waiting for another writer to finish with" in caplog.text
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        worker.join(timeout=30)
    assert done == [["doc-1"]]


def test_a_reader_behind_a_busy_writer_answers_and_says_what_is_behind(tmp_path):
    import fcntl
    import os

    settings = load_settings(env={}, data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8)
    with ChronoRAG(settings, embedder=HashingEmbedder()) as writer:
        writer.insert(_docs()[:5])
    reader = ChronoRAG(settings, embedder=HashingEmbedder())
    reader.retrieve("river report", top_k=1)  # indexes loaded and in step
    from chronorag.ingest.pipeline import ingest_documents

    ingest_documents(reader.store, _docs()[5:], chunk_size=64, chunk_overlap=8)  # store ahead of indexes
    fd = os.open(settings.data_dir / ".write.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the writer is still at work
    try:
        for _ in range(3):
            hits = reader.retrieve("glacier budget", top_k=1)  # answers from what is committed
            assert hits and hits.stale == {"bm25": 5, "dense": 5, "graph": 5}  # one chunk per document
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert reader.retrieve("glacier budget", top_k=1)[0].doc_id == "doc-7"  # caught up once free
    reader.close()


def test_a_reader_behind_a_busy_writer_still_finds_documents_being_replaced(tmp_path):
    """The writer has stored new versions (old chunks gone from the store) but its indexes have
    not caught up: the reader's hits are the old chunks its indexes hold, with their text, not
    nothing; once the indexes catch up, the new versions, and the old rows are gone."""
    import fcntl
    import os

    from chronorag.ingest.pipeline import ingest_documents

    settings = load_settings(env={}, data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8)
    with ChronoRAG(settings, embedder=HashingEmbedder()) as writer:
        writer.insert(_docs())
    reader = ChronoRAG(settings, embedder=HashingEmbedder())
    old = reader.retrieve("glacier budget", top_k=3)
    changed = [Document(d.doc_id, d.text.replace("budget", "plan"), d.published_at, source=d.source)
               for d in _docs()]
    ingest_documents(reader.store, changed, chunk_size=64, chunk_overlap=8)  # every document replaced
    fd = os.open(settings.data_dir / ".write.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the writer is still at work
    try:
        during = reader.retrieve("glacier budget", top_k=3)
        filtered = reader.retrieve("glacier budget", top_k=3, since=datetime(2020, 1, 1, tzinfo=UTC))
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert [(h.chunk_id, h.text) for h in during] == [(h.chunk_id, h.text) for h in old]
    assert [h.chunk_id for h in filtered] == [h.chunk_id for h in old if h.published_at.year >= 2020]
    after = reader.retrieve("glacier plan", top_k=1)
    assert after[0].doc_id == "doc-7" and "plan" in after[0].text  # caught up once free
    assert reader.store.get_chunks([h.chunk_id for h in old]) == {}  # retired rows purged
    reader.close()


def test_a_long_lived_reader_adopts_what_a_writer_committed_instead_of_redoing_it(tmp_path):
    """Another process's writes: the reader picks up the BM25, FAISS and graph state the writer
    committed; before, its graph (and FAISS) looked behind after every write elsewhere and redid the
    writer's extraction in the reader's query path, holding the write lock."""
    settings = load_settings(env={}, data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8)
    with ChronoRAG(settings, embedder=HashingEmbedder()) as writer:
        writer.insert(_docs()[:5])
        reader = ChronoRAG(settings, embedder=HashingEmbedder())
        reader.retrieve("river report in 2020", top_k=1)  # indexes loaded, graph included
        writer.insert(_docs()[5:])

        def no_work(*args, **kwargs):
            raise AssertionError("the reader redid the writer's indexing")

        for ix in (reader.bm25, reader.dense, reader.graph):
            ix.apply = no_work
        hits = reader.retrieve("glacier budget in 2023", top_k=1)
        assert hits[0].doc_id == "doc-7"
        assert {ix.name: ix.applied_seq for ix in reader.indexes()} == {
            ix.name: reader.store.max_seq() for ix in reader.indexes()}
        reader.close()


def test_stats_survive_files_a_writer_removes_during_the_walk(rag, monkeypatch):
    import os

    import chronorag.datadir as engine_mod

    rag.insert(_docs())
    real_walk = os.walk

    def walk_with_a_vanished_file(root):
        for dirpath, dirnames, filenames in real_walk(root):
            yield dirpath, dirnames, [*filenames, ".tmp-seg-renamed-meanwhile"]

    monkeypatch.setattr(engine_mod.os, "walk", walk_with_a_vanished_file)
    assert rag.stats().disk_bytes > 0
