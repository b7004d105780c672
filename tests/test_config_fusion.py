from pathlib import Path

import pytest

from chronorag.config import ConfigError, load_settings
from chronorag.retrieval.fusion import rrf_fuse


def test_precedence_flag_env_file_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[chronorag]\nchunk_size = 128\nrrf_k = 10\ndata_dir = "from-file"\n')
    s = load_settings(config_file=cfg, env={})
    assert (s.chunk_size, s.rrf_k, s.data_dir) == (128, 10, Path("from-file"))
    s = load_settings(config_file=cfg, env={"CHRONORAG_RRF_K": "20"})
    assert s.rrf_k == 20 and s.chunk_size == 128
    s = load_settings(config_file=cfg, env={"CHRONORAG_RRF_K": "20"}, rrf_k=30, chunk_size=None)
    assert s.rrf_k == 30 and s.chunk_size == 128
    assert load_settings(env={}).chunk_size == 256


def test_config_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(config_file=tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("chunk_size = [")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(config_file=bad, env={})
    bad.write_text("chunk_sise = 3\n")
    with pytest.raises(ConfigError, match="unknown"):
        load_settings(config_file=bad, env={})
    with pytest.raises(ConfigError, match="chunk_overlap"):
        load_settings(env={}, chunk_size=64, chunk_overlap=64)
    with pytest.raises(ConfigError, match="cannot use"):
        load_settings(env={"CHRONORAG_CHUNK_SIZE": "big"})
    with pytest.raises(ConfigError, match="embedder must be one of minilm-int8, minilm-fp32, e5-small, e5-small-int8 or none"):
        load_settings(env={"CHRONORAG_EMBEDDER": "bert-huge"})
    with pytest.raises(ConfigError, match="kv_store_dtype must be"):
        load_settings(env={"CHRONORAG_KV_STORE_DTYPE": "int4"})
    assert load_settings(env={"CHRONORAG_EMBEDDER": "E5"}).embedder == "E5"
    assert not load_settings(env={"CHRONORAG_EMBEDDER": "none"}).dense_enabled


@pytest.mark.parametrize("env, message", [
    ({"CHRONORAG_GRAPH_TIME_WEIGHT": "nan"}, "not a finite number"),  # NaN scores made invalid JSON
    ({"CHRONORAG_GRAPH_TIME_WEIGHT": "inf"}, "not a finite number"),
    ({"CHRONORAG_GRAPH_TIME_WEIGHT": "-5"}, "graph_time_weight must be >= 0"),
    ({"CHRONORAG_GRAPH_MENTION_WEIGHT": "-0.5"}, "graph_mention_weight must be >= 0"),
    ({"CHRONORAG_KV_MEMORY_MB": "-1"}, "kv_memory_mb must be >= 0, got -1"),
    ({"CHRONORAG_WORKERS": "0"}, "workers must be >= 1"),  # names the setting
    ({"CHRONORAG_BM25_CHINESE": "bigrams"}, "bm25_chinese must be one of words\\+bigrams, words"),
    ({"CHRONORAG_CHUNK_SIZE": "200.9"}, "cannot use"),
    ({"CHRONORAG_DATA_DIR": ""}, "empty path"),  # would write the store into the current directory
    ({"CHRONORAG_CONFIG": ""}, "config file name .* is empty"),
])
def test_bad_setting_values(tmp_path, monkeypatch, env, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


@pytest.mark.parametrize("toml, message", [
    ("chunk_size = true\n", "cannot use True"),
    ("chunk_size = 200.9\n", "not a whole number"),
    ("graph_time_weight = nan\n", "not a finite number"),
])
def test_bad_toml_values(tmp_path, monkeypatch, toml, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=tmp_path / "c.toml", env={})


def test_binary_config_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read config file .*c.toml"):
        load_settings(config_file=tmp_path / "c.toml", env={})
    assert load_settings(env={}, chunk_size=200.0, data_dir="d").chunk_size == 200  # whole floats are fine


def test_rrf_formula_and_ties():
    fused = rrf_fuse({"a": [1, 2, 3], "b": [3, 1]}, k=60)
    scores = dict(fused)
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[2] == pytest.approx(1 / 62)
    assert [d for d, _ in fused] == [1, 3, 2]


def test_rrf_weights_duplicates_and_bad_k():
    fused = dict(rrf_fuse({"a": [1, 1, 2], "b": [2]}, k=1, weights={"b": 0.0}))
    assert fused == {1: pytest.approx(1 / 2), 2: pytest.approx(1 / 3)}
    with pytest.raises(ValueError):
        rrf_fuse({"a": [1]}, k=0)


def test_rrf_scales_weaken_low_scored_candidates():
    plain = dict(rrf_fuse({"g": [1, 2], "b": [2, 1]}, k=60))
    assert plain[1] == pytest.approx(plain[2])
    scaled = dict(rrf_fuse({"g": [1, 2], "b": [2, 1]}, k=60, scales={"g": {1: 1.0, 2: 0.25}}))
    assert scaled[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scaled[2] == pytest.approx(0.25 / 62 + 1 / 61)
    assert scaled[1] > scaled[2]


def test_rrf_equal_own_scores_share_their_mean_rank():
    """A retriever that scores candidates alike (graph mentions) gives none of them a better rank
    for where it happened to list them; untied scores keep plain ranks."""
    rankings = {"bm25": [5, 6, 7], "graph": [9, 8, 7, 4]}
    own = {"graph": {9: 0.15, 8: 0.15, 7: 0.15, 4: 0.1}, "bm25": {5: 9.0, 6: 8.0, 7: 7.0}}
    plain = dict(rrf_fuse(rankings, k=60))
    assert plain[9] > plain[8]  # list order alone decided
    shared = rrf_fuse(rankings, k=60, scores=own)
    fused = dict(shared)
    assert fused[9] == pytest.approx(1 / 62) and fused[8] == pytest.approx(1 / 62)
    assert fused[7] == pytest.approx(1 / 63 + 1 / 62)
    assert fused[4] == pytest.approx(1 / 64)
    assert fused[5] == pytest.approx(1 / 61) and fused[6] == pytest.approx(1 / 62)
    assert [d for d, _ in shared][:2] == [7, 5]
    # the fused-score tie between 9, 8 and 6 is broken by best single position, then id
    assert [d for d, _ in shared][2:5] == [9, 6, 8]


def test_hybrid_search_passes_each_retrievers_scores_for_shared_ranks(tmp_path):
    from datetime import datetime, timezone

    import numpy as np

    from chronorag.retrieval.hybrid import HybridRetriever
    from chronorag.store import DocumentWrite, Store
    from chronorag.types import ChunkDraft, Document

    store = Store(tmp_path / "s.sqlite3")
    drafts = [ChunkDraft(i, f"chunk {i}", 0, 7, 2) for i in range(4)]
    store.write_documents([DocumentWrite(Document("d", "x", datetime(2024, 1, 1, tzinfo=timezone.utc)), "h", drafts)])
    ids = sorted(store.live_chunk_ids().tolist())

    class Fixed:
        def __init__(self, order, scores):
            self.order, self.scores = order, scores

        def search(self, query, k, allowed=None):
            return np.array(self.order[:k]), np.array(self.scores[:k], dtype=np.float32)

    from chronorag.periods import TimeScope
    from chronorag.query import Query
    from chronorag.types import SearchFilters

    searchers = {"a": Fixed([ids[3], ids[2]], [2.0, 1.0]), "g": Fixed([ids[0], ids[1], ids[2]], [0.5, 0.5, 0.5])}
    query = Query("q", "en", TimeScope(None, None, "any"), "open", SearchFilters(), ("a", "g"), top_k=4)
    hits = HybridRetriever(store, searchers).search(query)
    by_id = {h.chunk_id: h.score for h in hits}
    assert by_id[ids[0]] == pytest.approx(by_id[ids[1]]) == pytest.approx(1 / 62)
    assert hits[0].chunk_id == ids[2]  # 1/62 + 1/62 beats 1/61
    store.close()


def test_rrf_ids_without_a_score_tie_with_nothing():
    fused = dict(rrf_fuse({"g": [1, 2, 3]}, k=60, scores={"g": {3: 0.5}}))
    assert fused == {1: pytest.approx(1 / 61), 2: pytest.approx(1 / 62), 3: pytest.approx(1 / 63)}
