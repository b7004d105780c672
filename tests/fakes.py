"""Small deterministic stand-ins for models, so engine tests run in milliseconds."""

from __future__ import annotations

import hashlib
import re

import numpy as np


class HashingEmbedder:
    """Bag of hashed lower-case words: texts sharing words get similar vectors."""

    name = "test-hashing-64"
    dim = 64
    languages = frozenset({"en"})

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        self.encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[row, h % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else out[row]
            if not norm:
                out[row, 0] = 1.0
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
