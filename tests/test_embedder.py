"""Embedders: shapes, normalisation, semantic sanity, int8 vs fp32 agreement, factory and errors."""

from __future__ import annotations

import numpy as np
import pytest

from chronorag.retrieval.embedder import (
    DIM,
    Embedder,
    EmbedderError,
    QuantizedMiniLMEmbedder,
    SentenceTransformerEmbedder,
    load_embedder,
    minilm_model_dir,
)

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue rose twelve percent on strong demand.",
    "The company's sales grew by 12% this quarter.",
    "国家统计局发布上半年经济数据。",
    "",
]


@pytest.fixture(scope="module")
def int8():
    emb = QuantizedMiniLMEmbedder()
    emb.encode(["warm up"])
    return emb


@pytest.fixture(scope="module")
def fp32():
    return SentenceTransformerEmbedder()


def _check_vectors(vecs: np.ndarray, n: int) -> None:
    assert vecs.shape == (n, DIM) and vecs.dtype == np.float32
    assert np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_model_dir_is_the_packaged_model():
    path = minilm_model_dir()
    assert (path / "tokenizer.json").is_file() and (path / "model.safetensors").is_file()


def test_factory_names_and_caching():
    a = load_embedder("minilm-int8")
    assert a is load_embedder("MiniLM-INT8") and a is load_embedder("all-MiniLM-L6-v2/int8")
    assert a.name == "all-MiniLM-L6-v2/int8" and a.dim == DIM and a.languages == frozenset({"en"})
    b = load_embedder("minilm-fp32")
    assert b.name == "all-MiniLM-L6-v2/fp32" and b is not a
    assert isinstance(a, Embedder) and isinstance(b, Embedder)
    with pytest.raises(EmbedderError, match="unknown embedder 'bert-huge'"):
        load_embedder("bert-huge")


def test_int8_vectors_are_normalised(int8):
    _check_vectors(int8.encode(SENTENCES), len(SENTENCES))
    assert int8.encode([]).shape == (0, DIM)
    q = int8.encode_query("where is the cat?")
    assert q.shape == (DIM,) and abs(float(np.linalg.norm(q)) - 1.0) < 1e-5


def test_int8_semantics(int8):
    v = int8.encode(SENTENCES)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.2 and sims[0, 1] > sims[0, 3] + 0.2
    assert sims[2, 3] > sims[2, 0] + 0.2 and sims[2, 3] > sims[2, 1] + 0.2


def test_int8_batching_barely_changes_vectors(int8):
    batch = int8.encode(SENTENCES)
    single = np.vstack([int8.encode([s]) for s in SENTENCES])
    # dynamic int8 activation scales depend on the whole batch: a small, bounded effect
    cos = np.sum(batch * single, axis=1)
    assert float(cos[:-1].min()) > 0.99 and float(cos[-1]) > 0.95, cos  # last one is ""


def test_long_text_is_truncated_not_rejected(int8):
    _check_vectors(int8.encode(["word " * 3000]), 1)


def test_bad_input_is_a_clear_error(int8):
    with pytest.raises(EmbedderError, match="not one string"):
        int8.encode("a single string")
    with pytest.raises(EmbedderError, match="text #1 is int"):
        int8.encode(["ok", 3])
    with pytest.raises(EmbedderError):
        QuantizedMiniLMEmbedder(max_seq_length=512, max_batch_tokens=100)


def test_compact_forward_matches_sentence_transformers(fp32):
    compact = QuantizedMiniLMEmbedder(quantize=False)
    a = fp32.encode(SENTENCES)
    b = compact.encode(SENTENCES)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.99999


@pytest.mark.slow
def test_fp32_and_int8_agree(fp32, int8):
    a = fp32.encode(SENTENCES)
    _check_vectors(a, len(SENTENCES))
    b = int8.encode(SENTENCES)
    cos = np.sum(a * b, axis=1)
    assert float(cos[:-1].min()) > 0.99 and float(cos[-1]) > 0.95, cos  # last one is ""
    # the same neighbour structure: each sentence's nearest other sentence is the same
    for m in (a @ a.T, b @ b.T):
        np.fill_diagonal(m, -1)
    assert ((a @ a.T).argmax(1) == (b @ b.T).argmax(1)).all()
    sims = a @ a.T
    assert sims[0, 1] > sims[0, 2] + 0.2


def _many_batches() -> list[str]:
    # about 60 tokens each: a 256-token budget holds 4, so 24 texts make 6 batches
    return [f"{s} Item {i} of the list, with some more words to make it longer. " * 3 for i, s in enumerate(SENTENCES * 4)]


def test_worker_threads_give_the_same_vectors_as_one_thread():
    texts = _many_batches()
    one = QuantizedMiniLMEmbedder(max_seq_length=128, max_batch_tokens=256, workers=1)
    two = QuantizedMiniLMEmbedder(max_seq_length=128, max_batch_tokens=256, workers=2)
    a, b = one.encode(texts), two.encode(texts)
    _check_vectors(b, len(texts))
    # the same batches in either case; only fp32 summation order may differ between thread counts
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_worker_threads_run_batches_in_parallel_and_restore_the_thread_default(monkeypatch):
    import threading

    import torch

    emb = QuantizedMiniLMEmbedder(max_seq_length=128, max_batch_tokens=256, workers=2)
    model = emb._load()
    seen: list[tuple[int, int]] = []
    started = threading.Barrier(2, timeout=20)

    class Spy(torch.nn.Module):
        def forward(self, ids, mask):
            seen.append((threading.get_ident(), torch.get_num_threads()))
            if len(seen) <= 2:
                started.wait()  # fails (BrokenBarrierError) unless two batches run at once
            return model(ids, mask)

    monkeypatch.setattr(emb, "_model", Spy())
    before = torch.get_num_threads()
    vecs = emb.encode(_many_batches())
    _check_vectors(vecs, len(_many_batches()))
    assert len({tid for tid, _ in seen}) == 2 and threading.get_ident() not in {tid for tid, _ in seen}
    assert {n for _, n in seen} == {max(1, before // 2)}
    # a thread started afterwards gets the caller's count again, not the workers' one
    after: list[int] = []
    t = threading.Thread(target=lambda: after.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == before and after == [before]


def test_one_batch_runs_in_the_calling_thread(monkeypatch):
    import threading

    emb = QuantizedMiniLMEmbedder(workers=2)
    model = emb._load()
    seen = []
    monkeypatch.setattr(emb, "_model", lambda ids, mask: seen.append(threading.get_ident()) or model(ids, mask))
    emb.encode_query("where is the cat?")
    assert seen == [threading.get_ident()]


def test_bad_workers_is_a_clear_error():
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(EmbedderError, match="workers must be a positive integer"):
            QuantizedMiniLMEmbedder(workers=bad)


def test_int8_packing_leaves_the_process_engine_alone():
    import platform

    import torch

    from chronorag.retrieval.bert_int8 import int8_engine

    before = torch.backends.quantized.engine
    emb = QuantizedMiniLMEmbedder()
    emb.encode(["packed once"])
    assert torch.backends.quantized.engine == before
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert int8_engine() == "onednn"
