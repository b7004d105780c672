"""The LLM extractor and summariser with fake ``complete`` callables (no model is loaded)."""

import json
from datetime import datetime, timezone

from chronorag.graph.extract import RuleExtractor
from chronorag.graph.index import GraphIndex
from chronorag.graph.llm_extract import LLMExtractor, LLMSummariser, parse_quadruples
from chronorag.graph.timeline import SummaryItem
from chronorag.indexing import catch_up
from chronorag.store import DocumentWrite, Store
from chronorag.types import Chunk, ChunkDraft, Document

UTC = timezone.utc
PUB = datetime(2021, 3, 16, 9, tzinfo=UTC)
TEXT = "Northwind Energy appointed Maria Chen as chief executive yesterday. Revenue rose in Q3 2020."
GOOD = json.dumps([
    {"subject": "Maria Chen", "relation": "CEO of", "object": "Northwind Energy", "time": "yesterday"},
    {"subject": "Northwind Energy", "relation": "revenue", "object": "$2 billion", "time": "2020-Q3"},
    {"subject": "", "relation": "x", "object": "y", "time": None},  # invalid item: skipped
    {"subject": "A", "relation": ["not", "a", "string"], "object": "B"},  # invalid item: skipped
])


class Fake:
    def __init__(self, *replies):
        self.replies = list(replies)
        self.prompts = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        reply = self.replies[min(len(self.prompts), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_good_json_gives_validated_canonical_facts():
    fake = Fake("Here you go:\n```json\n" + GOOD + "\n```")
    ext = LLMExtractor(fake).extract(TEXT, PUB)
    assert len(fake.prompts) == 1 and "2021-03-16" in fake.prompts[0]
    facts = {(f.subject, f.relation, f.object): f for f in ext.facts}
    assert set(facts) == {("Maria Chen", "chief executive of", "Northwind Energy"),
                          ("Northwind Energy", "revenue", "$2 billion")}
    ceo = facts[("Maria Chen", "chief executive of", "Northwind Energy")]
    assert ceo.time.label() == "2021-03-15" and ceo.time_source == "llm"  # 'yesterday' vs publication
    assert ceo.description.startswith("Northwind Energy appointed Maria Chen")
    assert facts[("Northwind Energy", "revenue", "$2 billion")].time.label() == "2020-Q3"


def test_malformed_then_good_retries_once():
    fake = Fake("I think the facts are: subject Maria", GOOD)
    extractor = LLMExtractor(fake)
    ext = extractor.extract(TEXT, PUB)
    assert len(fake.prompts) == 2 and "not a valid JSON list" in fake.prompts[1]
    assert len(ext.facts) == 2 and extractor.failures == 0


def test_always_malformed_or_raising_gives_no_facts_and_no_crash():
    for bad in (Fake("{{{ nope"), Fake(RuntimeError("model server down")), Fake('[{"subject": 1}]' + "]")):
        extractor = LLMExtractor(bad)
        ext = extractor.extract(TEXT, PUB)
        assert ext.facts == [] and len(bad.prompts) == 2 and extractor.failures == 1
        assert [d.text for d in ext.dates] == ["yesterday", "Q3 2020"]  # dates still come from rules
    # a fallback extractor covers failures
    ext = LLMExtractor(Fake("garbage"), fallback=RuleExtractor()).extract(TEXT, PUB)
    assert any(f.relation == "chief executive of" for f in ext.facts)


def test_parse_quadruples_shapes():
    assert parse_quadruples('{"facts": [{"subject": "a", "relation": "b", "object": "c"}]}')[0]["object"] == "c"
    assert parse_quadruples("no json here") is None
    assert parse_quadruples(None) is None
    assert parse_quadruples("[1, 2, {\"subject\": \"x\"}]") == [{"subject": "x"}]


def test_call_cap_per_document():
    fake = Fake("not json")  # every call fails, so each chunk would use 1 + 1 retry
    extractor = LLMExtractor(fake, max_calls_per_doc=3)
    chunks = [Chunk(i, "d1" if i < 5 else "d2", i, TEXT, 0, 10, 10, PUB, "s") for i in range(7)]
    out = extractor.extract_batch(chunks)
    assert set(out) == set(range(7)) and all(not e.facts for e in out.values())
    assert len(fake.prompts) == 6  # 3 for d1 (five chunks), 3 for d2 (two chunks)


def test_llm_extractor_drives_the_graph_index(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    doc = Document("d1", TEXT, PUB)
    store.write_documents([DocumentWrite(doc, "h", [ChunkDraft(0, TEXT, 0, len(TEXT), 12)])])
    fake = Fake(GOOD)
    index = GraphIndex(store, extractor=LLMExtractor(fake, model_name="fake"))
    catch_up(store, index)
    timeline = index.entity_timeline("Maria Chen")
    assert [(f["relation"], f["object"], f["time"][:10]) for f in timeline] == [
        ("chief executive of", "Northwind Energy", "2021-03-15")]
    assert len(fake.prompts) == 1
    store.close()


def test_llm_summariser_falls_back_to_extractive():
    items = [SummaryItem("Acme moved to Denver.", "fact:1", "2021-05-05", ["acme"], 1.0, 2.0)]
    good = LLMSummariser(Fake("Acme relocated to Denver in May."))
    assert good.summarise("2021-05", items) == "Acme relocated to Denver in May." and good.calls == 1
    broken = LLMSummariser(Fake(RuntimeError("timeout")))
    assert broken.summarise("2021-05", items) == "Acme moved to Denver."


class FakeGenerator:
    """Stands in for the configured generator: answers the extraction prompt with fixed JSON."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.requests = []

    def generate(self, request):
        from chronorag.kvcache import CacheReport, GenerationResult, Timings

        self.requests.append(request)
        return GenerationResult(self.reply, [], "stop", Timings(), CacheReport())


def test_engine_graph_llm_uses_the_configured_generator(tmp_path):
    from fakes import HashingEmbedder

    from chronorag.config import load_settings
    from chronorag.engine import ChronoRAG

    doc = Document("n1", TEXT, PUB, title="Northwind news")
    rule = ChronoRAG(load_settings(env={}, data_dir=tmp_path), embedder=HashingEmbedder())
    rule.insert([doc])
    assert rule.graph.extractor.name.startswith("rule")
    rule.close()

    fake = FakeGenerator(GOOD)
    rag = ChronoRAG(load_settings(env={}, data_dir=tmp_path, graph="llm", graph_llm_calls_per_doc=2),
                    embedder=HashingEmbedder(), generator=fake)
    assert rag.graph.extractor_changed
    rag.sync()  # rows from the rule extractor are redone by the LLM one
    assert not rag.graph.extractor_changed and fake.requests
    assert all(r.mode == "full" and not r.chunks for r in fake.requests)
    timeline = rag.entity_timeline("Maria Chen")
    assert any(f.relation == "chief executive of" and f.valid_from.date().isoformat() == "2021-03-15"
               for f in timeline.facts)
    rag.close()
