"""The BM25 manifest: which segments and which tombstones file make up the index, at which seq.

``manifest.json`` is the only mutable file of the index and is replaced atomically; segment
directories and tombstone files are immutable and named by it. Whatever it does not name is
garbage (a crash between writing a segment and writing the manifest leaves such files behind).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from chronorag.retrieval.index_files import atomic_write, file_stamp

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class ManifestError(RuntimeError):
    """The manifest exists but cannot be read or parsed."""


@dataclass(frozen=True)
class Manifest:
    generation: int
    applied_seq: int
    segments: tuple[str, ...]
    tombstones: str | None
    tokenizer: str
    k1: float
    b: float
    method: str = "lucene"
    format: int = MANIFEST_FORMAT
    stamp: tuple | None = field(default=None, compare=False)

    @property
    def files(self) -> set[str]:
        """Every directory entry this manifest keeps alive."""
        return set(self.segments) | ({self.tombstones} if self.tombstones else set())

    def matches(self, tokenizer: str, k1: float, b: float) -> bool:
        """Built the way this process would build it? Otherwise stored scores/terms are unusable."""
        return (self.format, self.tokenizer, self.k1, self.b, self.method) == (
            MANIFEST_FORMAT, tokenizer, k1, b, "lucene",
        )


def read_manifest(directory: Path) -> Manifest | None:
    """The current manifest, or None if the index was never committed."""
    path = directory / MANIFEST
    try:
        stamp = file_stamp(path)
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Manifest(
            generation=int(raw["generation"]),
            applied_seq=int(raw["applied_seq"]),
            segments=tuple(raw["segments"]),
            tombstones=raw.get("tombstones"),
            tokenizer=str(raw["tokenizer"]),
            k1=float(raw["k1"]),
            b=float(raw["b"]),
            method=str(raw.get("method", "lucene")),
            format=int(raw.get("format", 0)),
            stamp=stamp,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"BM25 manifest {path} is unreadable: {exc}") from exc


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """Replace the manifest atomically; returns it with its new file stamp."""
    body = asdict(manifest)
    body.pop("stamp")
    body["segments"] = list(manifest.segments)
    payload = json.dumps(body, indent=1).encode("utf-8")
    atomic_write(directory / MANIFEST, lambda f: f.write(payload))
    return Manifest(**{**asdict(manifest), "segments": manifest.segments, "stamp": file_stamp(directory / MANIFEST)})


def write_tombstones(directory: Path, generation: int, dead: np.ndarray) -> str | None:
    """Persist the deleted chunk ids as a new immutable file; None when there are none."""
    if dead.size == 0:
        return None
    name = f"tomb-{generation:08d}.npy"
    atomic_write(directory / name, lambda f: np.save(f, np.asarray(dead, dtype=np.int64)))
    return name


def read_tombstones(directory: Path, name: str | None) -> np.ndarray:
    if not name:
        return np.empty(0, dtype=np.int64)
    return np.asarray(np.load(directory / name), dtype=np.int64)
