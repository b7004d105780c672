"""Keeps chunk KV caches in step with the store's change log (a DerivedIndex, like BM25 and FAISS).

Deleted chunk ids are dropped from the chunk store; added chunks are optionally precomputed. Chunk
ids are never reused by the store and an edited document arrives as delete + add, so dropping by id
is enough: a cache entry can never outlive the text it was computed from. Only ``applied_seq`` is
persisted here (the KV files themselves live in the generator's disk tier).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from chronorag.kvcache.generator import DEFAULT_SYSTEM_PROMPT, Generator
from chronorag.types import Chunk


class ChunkKVIndex:
    name = "kvcache"

    def __init__(self, generator: Generator, state_path: str | Path, warm_added: bool = False,
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> None:
        self.generator = generator
        self.state_path = Path(state_path)
        self.warm_added = warm_added
        self.system_prompt = system_prompt
        self._seq = 0
        if self.state_path.is_file():
            self._seq = int(json.loads(self.state_path.read_text())["applied_seq"])

    @property
    def applied_seq(self) -> int:
        return self._seq

    def apply(self, added: Sequence[Chunk], deleted: Sequence[int]) -> None:
        if deleted:
            self.generator.drop(deleted)
        if self.warm_added and added:
            self.generator.warm([(c.chunk_id, c.text) for c in added], self.system_prompt)

    def commit(self, seq: int) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"applied_seq": int(seq)}))
        os.replace(tmp, self.state_path)
        self._seq = int(seq)

    def reset(self) -> None:
        store = getattr(self.generator, "store", None)
        if store is not None:
            store.drop(store.chunk_ids())  # every chunk the store knows, both tiers
        self._seq = 0
