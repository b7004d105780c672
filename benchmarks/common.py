"""Helpers shared by the benchmark scripts: where the datasets are, the CPU, memory and disk figures."""

from __future__ import annotations

import os
import resource
import sys
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


# Environment variables that cap each CPU kernel library at AVX2 (no AVX-512, no VNNI), so one
# machine can also give the figures of a plain AVX2 one; read when the libraries load.
AVX2_CAP = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def _avx2_capped() -> bool:
    return all(os.environ.get(k) == v for k, v in AVX2_CAP.items())


def apply_isa(isa: str) -> None:
    """``isa`` 'avx2': re-run this script with :data:`AVX2_CAP` set (torch must not load first)."""
    if isa == "native" or _avx2_capped():
        return
    if isa != "avx2":
        raise SystemExit(f"unknown --isa {isa!r}: native or avx2")
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_CAP})


def cpu_info() -> dict:
    """The processor and the vector instructions that decide int8 speed, for the JSON line."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    import torch

    return {
        "cpu": model,
        "cpu_vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
        "isa": "avx2 (capped)" if _avx2_capped() else torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }
