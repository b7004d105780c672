"""One chunk's KV as a safetensors file: a checksum in the header, atomic writes, stale temp clean-up.

The disk tier is shared by every process on a data directory and outlives crashes, full disks and
hand edits, so a file is trusted only when its header says this format and a CRC32 of its tensor
bytes matches (cheap next to a chunk's recompute; a non-finite check would cost more and catches
nothing a checksum misses: docs/figures.md). Files are written under unique temp
names, so concurrent writers of the same key never touch each other's half-written files, and
start-up clean-up removes only temp files old enough that no live writer can own them.
"""

from __future__ import annotations

import os
import tempfile
import time
import zlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

FORMAT = "2"  # 1 (unversioned) had no checksum: such files are dropped on open and recomputed
TEMP_PREFIX = ".tmp"  # our temp files (and safetensors' own, where a version leaves any)
STALE_TEMP_S = 3600.0


class DamagedKV(ValueError):
    """A KV file whose contents are not what was written."""


def _raw(t: torch.Tensor) -> memoryview:
    return memoryview(t.contiguous().view(torch.uint8).numpy())


def tensor_crc(k: torch.Tensor, v: torch.Tensor) -> str:
    """CRC32 of the keys' then the values' raw bytes, as 8 hex digits."""
    return f"{zlib.crc32(_raw(v), zlib.crc32(_raw(k))):08x}"


def encode(k: torch.Tensor, v: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """The file's bytes: tensors plus ``metadata`` with the format version and checksum added."""
    k, v = k.detach().contiguous().cpu(), v.detach().contiguous().cpu()
    return save({"k": k, "v": v}, metadata={**metadata, "format": FORMAT, "crc32": tensor_crc(k, v)})


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a unique temp file in the same directory, then rename.

    Raises OSError (read-only directory, full disk). A temp file that vanished before the rename
    (another process's clean-up) counts as success when ``path`` exists: the name is a content
    address, so whoever stored it stored the same tensors.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".kv")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except FileNotFoundError:
        if not path.exists():
            raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metadata(path: Path) -> dict[str, str]:
    """Header metadata only (cheap: the tensors are not read)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def read(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """Keys, values and metadata; DamagedKV when the format or checksum does not match."""
    with safe_open(str(path), framework="pt") as f:  # mmap-backed reads
        md = dict(f.metadata() or {})
        if md.get("format") != FORMAT:
            raise DamagedKV(f"format {md.get('format', '1')!r}, expected {FORMAT}")
        if set(f.keys()) != {"k", "v"}:
            raise DamagedKV(f"tensors {sorted(f.keys())}, expected k and v")
        k, v = f.get_tensor("k"), f.get_tensor("v")
    if tensor_crc(k, v) != md.get("crc32"):
        raise DamagedKV("checksum mismatch")
    return k, v, md


def remove_stale_temps(directory: Path, max_age_s: float = STALE_TEMP_S) -> int:
    """Delete temp files left by crashed writers (older than ``max_age_s``); returns how many."""
    removed, cutoff = 0, time.time() - max_age_s
    for tmp in {*directory.glob(f"{TEMP_PREFIX}*"), *directory.glob("*.tmp")}:
        try:
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or a read-only directory: nothing to do
            continue
    return removed
