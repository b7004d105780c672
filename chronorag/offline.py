"""Keep every library this package touches from reaching the network at run time.

Model hubs and llama-index defaults (OpenAI, tiktoken) would otherwise try to download on first
use; chronorag ships or installs everything it needs, so a download attempt is always a bug.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def enforce_offline() -> None:
    """Set the hub libraries' offline switches unless the user has set them explicitly."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def package_dirs(package: str) -> list[Path]:
    """Folders of an installed package, found without importing it (model packages ship files,
    and some would pull heavy dependencies if imported). Empty when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]
