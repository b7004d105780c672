"""Helpers shared by the benchmark scripts: where the datasets are, memory and disk figures."""

from __future__ import annotations

import os
import resource
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    """``$CHRONORAG_DATASETS`` or ``../shared/datasets`` beside the repository."""
    return Path(os.environ.get("CHRONORAG_DATASETS", REPO.parent / "shared" / "datasets"))


def crud_dir() -> Path:
    path = datasets_dir() / "crud_rag"
    if not (path / "corpus.jsonl.gz").is_file():
        raise SystemExit(f"CRUD-RAG data not found at {path} (set CHRONORAG_DATASETS)")
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
