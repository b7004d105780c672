"""Crash-safe files of the dense index: a generation of data files named by a small JSON manifest.

A commit writes new data files (fsynced), then atomically replaces ``manifest.json`` (write a temp
file, fsync, ``os.replace``, fsync the directory), then deletes every data file the new manifest no
longer names. Whatever instant a crash hits, the manifest on disk names complete files.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from chronorag.retrieval.index_files import atomic_write, fsync_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_DATA_SUFFIXES = (".faiss", ".npy", ".tmp")


@dataclass(frozen=True)
class Loaded:
    """What a manifest names, read back: the FAISS index, tombstone ids and the manifest itself."""

    manifest: dict
    index: faiss.Index
    tombstones: np.ndarray


def manifest_mtime(directory: Path) -> int | None:
    try:
        return (directory / MANIFEST).stat().st_mtime_ns
    except FileNotFoundError:
        return None


def read_manifest(directory: Path) -> dict | None:
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("dense index manifest unreadable (%s); it will be rebuilt", exc)
        return None
    return data if isinstance(data, dict) else None


def load(directory: Path, manifest: dict) -> Loaded | None:
    """The files ``manifest`` names, or None (logged) if any is missing or unreadable."""
    try:
        index = faiss.read_index(str(directory / manifest["file"]))
        tomb = manifest.get("tombstones")
        tombstones = np.load(directory / tomb) if tomb else np.empty(0, np.int64)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        log.warning("dense index files unreadable (%s); it will be rebuilt", exc)
        return None
    return Loaded(manifest, index, np.asarray(tombstones, dtype=np.int64))


def commit(
    directory: Path,
    seq: int,
    meta: dict,
    index: faiss.Index | None,
    current_file: str | None,
    tombstones: np.ndarray,
) -> str:
    """Persist a generation; ``index`` None reuses ``current_file`` (nothing changed). Returns its name."""
    generation = f"{seq:012d}-{uuid.uuid4().hex[:8]}"
    file_name = current_file
    if index is not None or file_name is None:
        file_name = f"dense-{generation}.faiss"
        faiss.write_index(index, str(directory / file_name))
        fsync_dir(directory / file_name)
    tomb_name = None
    if len(tombstones):
        tomb_name = f"tombstones-{generation}.npy"
        np.save(directory / tomb_name, np.asarray(tombstones, dtype=np.int64))
        fsync_dir(directory / tomb_name)
    manifest = {
        "version": FORMAT_VERSION,
        **meta,
        "file": file_name,
        "tombstones": tomb_name,
        "applied_seq": int(seq),
    }
    atomic_write(directory / MANIFEST, lambda fh: fh.write(json.dumps(manifest).encode("utf-8")))
    keep = {MANIFEST, file_name, tomb_name}
    for path in directory.iterdir():
        if path.name not in keep and path.suffix in _DATA_SUFFIXES:
            try:
                path.unlink()
            except OSError:
                pass
    return file_name
