"""Keeps chunk KV caches in step with the store's change log (a DerivedIndex, like BM25 and FAISS).

Deleted chunk ids are dropped from the chunk store; added chunks are optionally precomputed. Chunk
ids are never reused by the store and an edited document arrives as delete + add, so dropping by id
is enough: a cache entry can never outlive the text it was computed from. Only ``applied_seq`` is
persisted here (the KV files themselves live in the generator's disk tier). The state is derived: an
unreadable state file means it is unknown which cached chunks were deleted since, so every entry is
dropped and the index starts again from sequence 0 (recomputing is slow, never wrong).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from chronorag.indexing import DerivedIndex
from chronorag.kvcache.generator import DEFAULT_SYSTEM_PROMPT, Generator
from chronorag.kvcache.kv_file import write_atomic
from chronorag.types import Chunk

log = logging.getLogger(__name__)


def read_seq(path: Path) -> int | None:
    """The state file's ``applied_seq``; None when there is no file; ValueError when it is invalid."""
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # a folder, garbage, no permission
        raise ValueError(str(exc)) from None
    seq = state.get("applied_seq") if isinstance(state, dict) else None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"no valid applied_seq (got {seq!r})")
    return seq


class ChunkKVIndex(DerivedIndex):
    name = "kvcache"
    read_backlog = 100_000  # only deletions apply (files dropped), unless warm_added

    def __init__(self, generator: Generator, state_path: str | Path, warm_added: bool = False,
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> None:
        self.generator = generator
        self.state_path = Path(state_path)
        self.warm_added = warm_added
        self.system_prompt = system_prompt
        self._seq = 0
        self._warned_commit = False
        try:
            self._seq = read_seq(self.state_path) or 0
        except ValueError as exc:
            log.warning("KV cache state %s is unreadable (%s): dropping cached chunk KV and starting from scratch",
                        self.state_path, exc)
            if self.state_path.is_dir():
                self._remove_dir()
            self.reset()

    @property
    def applied_seq(self) -> int:
        return self._seq

    @property
    def wants_added(self) -> bool:
        """Whether added chunks matter (warmed on ingest); else only deletions do."""
        return self.warm_added

    def refresh(self) -> bool:
        """Adopt a later ``applied_seq`` another process saved (it dropped the deleted chunks'
        files; entries this process still holds in memory are for ids that never come back)."""
        try:
            seq = read_seq(self.state_path)
        except ValueError:
            return False
        if seq is None or seq <= self._seq:
            return False
        self._seq = seq
        return True

    def apply(self, added: Sequence[Chunk], deleted: Sequence[int]) -> None:
        if deleted:
            self.generator.drop(deleted)
        if self.warm_added and added:
            self.generator.warm([(c.chunk_id, c.text) for c in added], self.system_prompt)

    def commit(self, seq: int) -> None:
        """Persist ``seq``; a failed write (full disk) is a warning: the next start replays the log."""
        self._seq = int(seq)
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state_path, json.dumps({"applied_seq": int(seq)}).encode())
        except OSError as exc:
            if not self._warned_commit:
                self._warned_commit = True
                log.warning("cannot save KV cache state to %s: %s", self.state_path, exc)

    def reset(self) -> None:
        store = getattr(self.generator, "store", None)
        if store is not None:
            store.drop(store.chunk_ids())  # every chunk the store knows, both tiers
        self._seq = 0

    def _remove_dir(self) -> None:
        """A folder where the state file belongs: removed when empty, else commit warns about it."""
        try:
            self.state_path.rmdir()
        except OSError:
            pass
