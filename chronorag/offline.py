"""Keep every library this package touches from reaching the network at run time.

Model hubs and llama-index defaults (OpenAI, tiktoken) would otherwise try to download on first
use; chronorag ships or installs everything it needs, so a download attempt is always a bug.
"""

from __future__ import annotations

import os

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
