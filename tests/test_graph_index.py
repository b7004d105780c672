"""The temporal graph as a DerivedIndex over the store: facts, validity, deletes, persistence, retrieval."""

import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from chronorag.graph import facts_store as fs
from chronorag.graph.extract import RuleExtractor
from chronorag.graph.index import GraphIndex
from chronorag.graph.model import entity_key
from chronorag.graph.retrieve import UnknownEntity, UnknownPeriod
from chronorag.graph.temporal_graph import entity_node
from chronorag.graph.timeline import ExtractiveSummariser
from chronorag.indexing import catch_up
from chronorag.store import DocumentWrite, Store
from chronorag.types import ChunkDraft, Document

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.temporal_corpus import generate  # noqa: E402

UTC = timezone.utc
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def put(store, doc_id, text, y, m, d, version="1"):
    doc = Document(doc_id, text, datetime(y, m, d, 9, tzinfo=UTC), source="test")
    sentences = [s.strip() + "." for s in text.split(". ") if s.strip()]
    drafts, pos = [], 0
    for i, s in enumerate(sentences):  # one chunk per sentence, so docs have several chunks
        drafts.append(ChunkDraft(i, s, pos, pos + len(s), len(s.split())))
        pos += len(s) + 1
    store.write_documents([DocumentWrite(doc, f"{doc_id}:{version}:{text}", drafts)])


def ceo_facts(index, org):
    return [f for f in index.graph.facts_of(entity_key(org)) if f.relation == "chief executive of"]


CORPUS = [
    ("a1", "Northwind Energy appointed Maria Chen as its new chief executive on Monday.", (2019, 3, 5)),
    ("a2", "Maria Chen, chief executive of Northwind Energy, told analysts demand was strong.", (2020, 6, 1)),
    ("a3", "Northwind Energy named Tom Berg chief executive, replacing Maria Chen.", (2022, 1, 10)),
    ("h1", "Northwind Energy is based in Denver. It employs 3,000 people.", (2018, 2, 1)),
    ("h2", "Northwind Energy moved its headquarters to Austin.", (2021, 5, 5)),
    ("r1", "Northwind Energy reported revenue of $3.1 billion for the second quarter of 2021.", (2021, 7, 20)),
    ("r2", "Northwind Energy reported revenue of $3.4 billion for the third quarter of 2021.", (2021, 10, 21)),
]


@pytest.fixture
def built(store):
    for doc_id, text, ymd in CORPUS:
        put(store, doc_id, text, *ymd)
    index = GraphIndex(store)
    catch_up(store, index)
    return index


def test_same_relation_at_two_times_is_two_edges(built):
    g = built.graph
    edges = g.g.get_edge_data(entity_node("maria chen"), entity_node("northwind energy"))
    ceo = [k for k, d in edges.items() if d["relation"] == "chief executive of"]
    assert len(ceo) == 2  # announced in 2019, restated in 2020: never one overwritten edge
    times = sorted(g.facts[k].t_start.date().isoformat() for k in ceo)
    assert times == ["2019-03-04", "2020-06-01"]  # 'on Monday' resolved against 2019-03-05


def test_contradiction_closes_validity_instead_of_deleting(built):
    facts = {(f.subject, f.t_start.year): f for f in ceo_facts(built, "Northwind Energy")}
    tom = facts[("tom berg", 2022)]
    for year in (2019, 2020):
        maria = facts[("maria chen", year)]
        assert maria.valid_to == tom.t_start
        assert maria.invalidated_by == tom.key and maria.invalidated_at == tom.recorded_at
    assert tom.valid_to is None
    hq = {f.object: f for f in built.graph.facts_of("northwind energy") if f.relation == "headquartered in"}
    assert hq["denver"].valid_to == hq["austin"].valid_from
    assert hq["denver"].valid_at(datetime(2020, 1, 1, tzinfo=UTC))
    assert not hq["denver"].valid_at(datetime(2022, 1, 1, tzinfo=UTC))
    # a quarterly figure is an event over its fiscal quarter, not over the report date
    rev = [f for f in built.graph.facts_of("northwind energy") if f.relation == "revenue"]
    assert sorted((f.granularity, f.valid_from.month, f.valid_to.month) for f in rev) == [
        ("quarter", 4, 7), ("quarter", 7, 10)]


def test_delete_reopens_closed_fact_and_removes_only_its_facts(store, built):
    before = set(built.graph.facts)
    a3_chunks = set(store.doc_chunk_ids("a3"))
    a3_facts = {k for k, f in built.graph.facts.items() if f.sources <= a3_chunks}
    assert a3_facts
    store.delete_documents(["a3"])
    catch_up(store, built)
    assert set(built.graph.facts) == before - a3_facts
    assert "tom berg" not in built.graph.entities
    assert all(f.valid_to is None for f in ceo_facts(built, "Northwind Energy"))
    assert store.query("SELECT COUNT(*) FROM graph_facts WHERE chunk_id IN (%s)" % ",".join(map(str, a3_chunks)))[0][0] == 0


def test_fact_with_two_sources_survives_deleting_one(store):
    text = "Acme Robotics moved its headquarters to Denver."
    put(store, "x1", text, 2021, 5, 5)
    put(store, "x2", text + " The move took a year.", 2021, 5, 5)
    index = GraphIndex(store)
    catch_up(store, index)
    (fact,) = [f for f in index.graph.facts.values() if f.relation == "headquartered in"]
    assert len(fact.sources) == 2
    store.delete_documents(["x1"])
    catch_up(store, index)
    (after,) = [f for f in index.graph.facts.values() if f.relation == "headquartered in"]
    assert after.key == fact.key and after.sources == {store.doc_chunk_ids("x2")[0]}
    store.delete_documents(["x2"])
    catch_up(store, index)
    assert not index.graph.facts and "acme robotics" not in index.graph.entities


def test_changed_document_replaces_its_facts(store, built):
    put(store, "h2", "Northwind Energy moved its headquarters to Seattle.", 2021, 5, 5, version="2")
    catch_up(store, built)
    hq = sorted(f.object for f in built.graph.facts_of("northwind energy") if f.relation == "headquartered in")
    assert hq == ["denver", "seattle"]
    assert "austin" not in built.graph.entities


def test_graph_is_rebuilt_from_tables_identically(store, built):
    built.load()  # a server's graph: kept in step incrementally, must equal a fresh load
    store.delete_documents(["a2"])
    put(store, "n1", "Tom Berg, chief executive of Northwind Energy, opened a plant in Boston.", 2023, 2, 2)
    catch_up(store, built)
    live = built.graph
    reopened = GraphIndex(store)  # a new process: applied_seq and rows come from SQLite
    assert reopened.applied_seq == built.applied_seq == store.max_seq()
    fresh = reopened.graph
    assert set(fresh.facts) == set(live.facts)
    for k, f in live.facts.items():
        g = fresh.facts[k]
        assert (g.sources, g.valid_from, g.valid_to, g.invalidated_by, g.description) == (
            f.sources, f.valid_from, f.valid_to, f.invalidated_by, f.description)
    assert {k: (e.name, e.type, e.aliases, e.first_seen, e.last_seen) for k, e in fresh.entities.items()} == {
        k: (e.name, e.type, e.aliases, e.first_seen, e.last_seen) for k, e in live.entities.items()}
    assert {k: n.summary for k, n in fresh.timeline.nodes.items()} == {
        k: n.summary for k, n in live.timeline.nodes.items() if n.n_facts or n.n_chunks}
    assert fresh.g.number_of_edges() > 0 and fs.read_meta(store, "pending_summaries") == "[]"


def test_failed_commit_leaves_tables_and_seq_untouched(store, built, monkeypatch):
    seq, n = built.applied_seq, store.query("SELECT COUNT(*) FROM graph_facts")[0][0]
    put(store, "z1", "Bluepeak Bank moved its headquarters to Oslo.", 2022, 3, 3)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("chronorag.graph.facts_store.insert_rows", boom)
    with pytest.raises(RuntimeError):
        catch_up(store, built)
    assert built.applied_seq == seq and store.query("SELECT COUNT(*) FROM graph_facts")[0][0] == n
    assert GraphIndex(store).applied_seq == seq
    monkeypatch.undo()
    catch_up(store, built)  # the retry applies it once
    assert "bluepeak bank" in built.graph.entities
    assert len([f for f in built.graph.facts.values() if f.object == "oslo"]) == 1


def test_summaries_missed_by_a_crash_are_written_by_the_next_catch_up(store, built, monkeypatch):
    put(store, "z2", "Bluepeak Bank opened an office in Oslo.", 2024, 6, 6)

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr("chronorag.graph.facts_store.write_summaries", boom)
    with pytest.raises(RuntimeError):
        catch_up(store, built)  # rows committed, summaries not yet
    assert built.applied_seq == store.max_seq()
    assert "2024-06-06" not in fs.read_summaries(store)
    monkeypatch.undo()
    restarted = GraphIndex(store)  # a new process finds the pending labels in the tables
    catch_up(store, restarted)
    summaries = fs.read_summaries(store)
    assert {"2024-06-06", "2024-06", "2024-Q2", "2024"} <= set(summaries)
    assert "Bluepeak Bank" in summaries["2024-06-06"]["summary"]
    assert fs.read_meta(store, "pending_summaries") == "[]"


def test_only_touched_time_nodes_are_resummarised(store, built):
    counting = ExtractiveSummariser()
    built.summariser = counting
    put(store, "n2", "Northwind Energy opened a lab with Corvane Systems in Austin.", 2023, 8, 11)
    catch_up(store, built)
    # one new day: the day, its month, quarter and year - nothing from 2019-2022
    assert counting.calls == 4
    summaries = {r[0]: r[1] for r in store.query("SELECT period, updated_ts FROM graph_summaries")}
    assert {"2023-08-11", "2023-08", "2023-Q3", "2023"} <= set(summaries)
    counting.calls = 0
    store.delete_documents(["r1"])
    catch_up(store, built)
    stamp = max(summaries.values())
    touched = {r[0] for r in store.query("SELECT period FROM graph_summaries WHERE updated_ts > ?", (stamp,))}
    # r1's report day with its ancestors, plus the fiscal-quarter node its revenue fact sits on;
    # July 2021 held nothing else, so its day and month nodes are dropped rather than summarised
    assert touched == {"2021-Q3", "2021", "2021-Q2"}
    left = {r[0] for r in store.query("SELECT period FROM graph_summaries")}
    assert "2021-07" not in left and "2021-07-20" not in left and "2021-10" in left
    assert counting.calls == 3


def test_period_summary_and_entity_timeline(built):
    out = built.period_summary("2021")
    assert out["n_facts"] >= 3 and "Austin" in out["summary"]
    assert {c["period"] for c in out["children"]} >= {"2021-Q2", "2021-Q3", "2021-Q4"}
    assert any(f["relation"] == "revenue" for f in out["top_facts"])
    assert built.period_summary("1999-01")["n_facts"] == 0
    with pytest.raises(UnknownPeriod):
        built.period_summary("August")
    tl = built.entity_timeline("northwind energy")
    assert [f["time"] for f in tl] == sorted(f["time"] for f in tl)
    assert {f["object"] for f in tl if f["relation"] == "headquartered in"} == {"Denver", "Austin"}
    with pytest.raises(UnknownEntity, match="Northwind Energi"):
        built.entity_timeline("Northwind Energi")


@pytest.mark.parametrize("label, says", [
    ("2021-Q3-05", "2021-Q3-05' (use"), ("2021-13", "month must be in 1..12"),
    ("2021-02-30", "day is out of range"), ("0000", "year 0 is out of range"),
    ("２０２１", "'２０２１' (use"), ("٢٠٢١-٠٨", "(use 2023, 2023-Q3"),  # were read as empty periods
])
def test_bad_period_labels_name_themselves_and_the_forms(built, label, says):
    for graph in (built, _partial(built)):
        with pytest.raises(UnknownPeriod, match="not a period label") as err:
            graph.period_summary(label)
        assert says in str(err.value)


def test_graph_queries_refuse_wrong_types_with_value_errors(built):
    for call in (lambda: built.entity_timeline(None), lambda: built.entity_timeline(123),
                 lambda: built.period_summary(None), lambda: built.period_summary(2021),
                 lambda: built.period_summary("2021", top=-1), lambda: built.period_summary("2021", top="3")):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(UnknownEntity) as err:
        built.entity_timeline("x" * 5000)
    assert len(str(err.value)) < 200  # a huge name is not echoed in full


def test_unknown_entity_suggests_longer_and_close_names_with_or_without_the_whole_graph(built):
    built.load()
    for graph in (built, _partial(built)):
        for typed, meant in (("Maria", "Maria Chen"), ("Nothwind Energy", "Northwind Energy"),
                             ("northwind energ", "Northwind Energy")):
            with pytest.raises(UnknownEntity, match="did you mean: ") as err:
                graph.entity_timeline(typed)
            assert meant in str(err.value).split("did you mean: ", 1)[1].split(", ")
        with pytest.raises(UnknownEntity) as err:
            graph.entity_timeline("Zebra Holdings")
        assert "did you mean" not in str(err.value)
    assert built._graph is not None and _partial(built)._graph is None


def test_unknown_entity_lists_extensions_shortest_first_then_close_spellings():
    from chronorag.graph.retrieve import unknown_entity

    known = {"acme": "Acme", "acme corp": "Acme Corp", "acme corporation ltd": "Acme Corporation Ltd",
             "acne": "Acne", "zeta": "Zeta"}
    assert str(unknown_entity("ACM", known)).endswith("did you mean: Acme, Acme Corp, Acme Corporation Ltd")
    assert str(unknown_entity("Acmr", known)).endswith("did you mean: Acme")
    assert "did you mean" not in str(unknown_entity("  ", known))


def _partial(built):
    from chronorag.graph.index import GraphIndex

    return GraphIndex(built.store)  # never loads the whole graph: answers from partial subgraphs


def doc_ids(store, result, k=3):
    chunks = store.get_chunks([c for c, _ in result.candidates[:k]])
    return [chunks[c].doc_id for c, _ in result.candidates[:k]]


def test_point_in_time_before_after_latest(store, built):
    r = built.retrieve("Who led Northwind Energy in March 2021?", now=NOW)
    assert r.scope.mode == "in" and doc_ids(store, r, 2) == ["a1", "a2"]
    r = built.retrieve("Who was the chief executive of Northwind Energy in 2023?", now=NOW)
    assert doc_ids(store, r, 1) == ["a3"]
    r = built.retrieve("Who ran Northwind Energy before Tom Berg became CEO?", now=NOW)
    assert r.scope.mode == "before" and r.scope.last < datetime(2022, 1, 10, tzinfo=UTC)
    assert set(doc_ids(store, r, 2)) == {"a1", "a2"}
    r = built.retrieve("After Maria Chen stepped down, who led Northwind Energy?", now=NOW)
    assert doc_ids(store, r, 1) == ["a3"]
    r = built.retrieve("Who is the current CEO of Northwind Energy?", now=NOW)
    assert doc_ids(store, r, 1) == ["a3"]
    r = built.retrieve("As of June 2020, where was Northwind Energy headquartered?", now=NOW)
    assert doc_ids(store, r, 1) == ["h1"]
    r = built.retrieve("Where was Northwind Energy headquartered in 2022?", now=NOW)
    assert doc_ids(store, r, 1) == ["h2"]


def test_period_questions(store, built):
    r = built.retrieve("What was Northwind Energy's revenue in the third quarter of 2021?", now=NOW)
    assert doc_ids(store, r, 1) == ["r2"]  # the fiscal quarter, not the report's publication date
    r = built.retrieve("What happened in October 2021?", now=NOW)
    assert r.summaries and r.summaries[0]["period"] == "2021-10" and "3.4 billion" in r.summaries[0]["summary"]
    assert doc_ids(store, r, 1) == ["r2"]


def test_search_interface_respects_allowed(store, built):
    ids, scores = built.search("Who led Northwind Energy in March 2021?", 5)
    assert len(ids) == len(scores) > 0 and list(scores) == sorted(scores, reverse=True)
    allowed = set(store.doc_chunk_ids("a2"))
    ids2, _ = built.search("Who led Northwind Energy in March 2021?", 5, allowed=__import__("numpy").array(sorted(allowed)))
    assert set(ids2.tolist()) <= allowed and len(ids2) > 0


def test_chinese_facts_and_dates(store):
    put(store, "zh1", "2023年8月10日，阿里巴巴集团宣布张勇卸任首席执行官。中国商务部部长王文涛在北京会见了南非贸工部部长帕特尔。", 2023, 8, 11)
    index = GraphIndex(store)
    catch_up(store, index)
    names = {e.name for e in index.graph.entities.values()}
    assert {"阿里巴巴集团", "张勇", "王文涛", "北京"} <= names
    (f,) = [f for f in index.graph.facts.values() if "chief executive" in f.relation]
    assert f.relation == "former chief executive of" and f.t_start.date().isoformat() == "2023-08-10"


def test_synthetic_corpus_questions(store):
    docs, questions = generate(seed=3, n_docs=150)
    assert len(docs) == 150 and generate(seed=3, n_docs=150)[1] == questions
    writes = [DocumentWrite(d, d.doc_id, [ChunkDraft(0, d.text, 0, len(d.text), 9)]) for d in docs]
    store.write_documents(writes)
    index = GraphIndex(store)
    catch_up(store, index)
    kinds = {}
    for q in questions:
        r = index.retrieve(q.text, k=10, now=q.now)
        top = doc_ids(store, r, 1)
        kinds.setdefault(q.kind, []).append(bool(top) and top[0] in q.gold_doc_ids)
    assert set(kinds) == {"point", "as_of", "before", "after", "period", "latest"}
    for kind, hits in kinds.items():
        assert sum(hits) / len(hits) >= 0.8, (kind, hits)


def test_extractor_name_is_recorded(store, built):
    assert not built.extractor_changed
    other = GraphIndex(store, extractor=type("X", (RuleExtractor,), {"name": "rules-v99"})())
    assert other.extractor_changed
    other.reset()
    assert other.applied_seq == 0 and store.query("SELECT COUNT(*) FROM graph_facts")[0][0] == 0
    catch_up(store, other)
    assert not other.extractor_changed and other.graph.facts


def test_partial_queries_match_the_full_graph(store, built):
    """One-shot CLI calls read a subgraph from the tables; answers must equal the loaded graph's."""
    questions = [
        "Who led Northwind Energy in March 2021?",
        "Who ran Northwind Energy before Tom Berg became CEO?",
        "After Maria Chen stepped down, who led Northwind Energy?",
        "What happened in October 2021?",
        "What happened during 2021?",
    ]
    fresh = GraphIndex(store)
    assert fresh._graph is None
    for q in questions:
        full, part = built.retrieve(q, now=NOW), fresh.retrieve(q, now=NOW)
        assert [c for c, _ in part.candidates[:3]] == [c for c, _ in full.candidates[:3]], q
        assert [s["summary"] for s in part.summaries] == [s["summary"] for s in full.summaries], q
    assert fresh.entity_timeline("Maria Chen") == built.entity_timeline("Maria Chen")
    for period in ("2021", "2021-Q3", "2021-10", "2019-03-04"):
        p, f = fresh.period_summary(period), built.period_summary(period)
        assert (p["summary"], p["n_facts"], p["top_facts"]) == (f["summary"], f["n_facts"], f["top_facts"]), period
    assert fresh._graph is None  # nothing loaded the whole graph
    with pytest.raises(UnknownEntity):
        fresh.entity_timeline("Nobody Inparticular")
    with pytest.raises(UnknownPeriod):
        fresh.period_summary("Aug 2023")


def test_period_questions_read_a_bounded_sample_of_the_period(store, monkeypatch):
    """A one-shot 'what happened in <period>' reads the summaries' top facts by key plus at most
    PERIOD_QUERY_ROWS others (a year holds ~10^5 facts), and still ranks like the loaded graph."""
    import chronorag.graph.index as gi

    docs, questions = generate(seed=3, n_docs=150)
    store.write_documents([DocumentWrite(d, d.doc_id, [ChunkDraft(0, d.text, 0, len(d.text), 9)]) for d in docs])
    full = GraphIndex(store)
    catch_up(store, full)
    full.load()
    monkeypatch.setattr(gi, "PERIOD_QUERY_ROWS", 1)
    read = []
    real = fs.facts_in_period
    monkeypatch.setattr(fs, "facts_in_period", lambda *a, **kw: read.append(kw) or real(*a, **kw))
    months = sorted(label for label in full.graph.timeline.nodes if len(label) == 7 and "Q" not in label)
    asked = [f"What happened in {m[:4]}?" for m in (months[0], months[-1])]
    asked += [f"What happened in {datetime.strptime(m, '%Y-%m'):%B %Y}?" for m in months[::5]]
    for q in asked:
        part, whole = GraphIndex(store).retrieve(q, k=10, now=NOW), full.retrieve(q, k=10, now=NOW)
        assert part.summaries and part.candidates[:5] == whole.candidates[:5], q
        assert [s["summary"] for s in part.summaries] == [s["summary"] for s in whole.summaries], q
    assert len(read) == len(asked) and all(kw.get("limit") == 1 for kw in read)


def test_analysis_reads_the_graph_only_for_a_time_or_an_anchor(store, built, monkeypatch):
    from chronorag.analysis import QueryAnalyzer
    from chronorag.graph.timescope import parse_time_scope

    questions = ["Who leads Northwind Energy?", "Who led Northwind Energy in March 2021?",
                 "What happened during 2021?", "Who ran Northwind Energy before Tom Berg became CEO?",
                 "2023年上半年营业收入是多少？", "哪个城市发放了消费券？"]
    expected = {q: built.read_question(q, now=NOW).scope.mode != "any" for q in questions}
    assert expected["Who ran Northwind Energy before Tom Berg became CEO?"] and not expected["Who leads Northwind Energy?"]

    def uses_graph(question: str) -> bool:
        analyzer = QueryAnalyzer(parse_time_scope, lambda text: "en", graph=GraphIndex(store))
        return "graph" in analyzer.analyse(question, ("bm25", "graph"), now=NOW).retrievers

    assert {q: uses_graph(q) for q in questions} == expected

    def no_subgraph(*a, **kw):
        raise AssertionError("read the graph for a question without a time")

    monkeypatch.setattr(GraphIndex, "subgraph", no_subgraph)
    assert not uses_graph("Who leads Northwind Energy?")
    assert not uses_graph("哪个城市发放了消费券？")


def test_one_shot_ingest_never_loads_the_graph(store, built, monkeypatch):
    """Adding a document to a big store must not read the whole graph into memory."""
    def no_load(self):
        raise AssertionError("the whole graph was loaded")

    monkeypatch.setattr(GraphIndex, "rebuild_from_tables", no_load)
    index = GraphIndex(store)  # a new CLI process
    put(store, "n3", "Corvane Systems named Ada Park chief executive.", 2023, 9, 4)
    store.delete_documents(["r2"])
    catch_up(store, index)
    summaries = fs.read_summaries(store)
    assert "Corvane Systems" in summaries["2023-09-04"]["summary"] and "2021-10-21" not in summaries
    assert index.stats()["facts"] == len({r[0] for r in store.query("SELECT fact_key FROM graph_facts")})


def test_server_and_one_shot_catch_ups_write_the_same_summaries(tmp_path):
    """A loaded graph (server) and rows-only commits (CLI) leave identical tables and time nodes."""
    results = []
    for loaded in (True, False):
        store = Store(tmp_path / f"{loaded}.sqlite3")
        for doc_id, text, ymd in CORPUS:
            put(store, doc_id, text, *ymd)
        index = GraphIndex(store)
        if loaded:
            index.load()
        catch_up(store, index)
        store.delete_documents(["r1", "a2"])
        put(store, "h2", "Northwind Energy moved its headquarters to Boston.", 2021, 5, 5, version="2")
        catch_up(store, index)
        rows = store.query("SELECT period, level, summary, top_items, n_facts, n_chunks FROM graph_summaries ORDER BY period")
        fresh = GraphIndex(store).graph.timeline.nodes
        if loaded:
            assert {k: (n.summary, n.n_facts, n.n_chunks) for k, n in index.graph.timeline.nodes.items()} == {
                k: (n.summary, n.n_facts, n.n_chunks) for k, n in fresh.items()}
        results.append(rows)
        store.close()
    assert results[0] == results[1] and len(results[0]) > 10
