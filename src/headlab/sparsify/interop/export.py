"""A headlab plan as a kvpress press spec (``headlab-press/1``, read by ``interop/press.py`` in kvpress's venv):
for every (layer, KV head), null (a full head: every key kept) or the sink and window bands it keeps
(StreamingLLM's sink + window, arXiv 2309.17453; DuoAttention's streaming heads, arXiv 2410.10819; MoA's elastic
spans, arXiv 2406.14909, keep a window alpha + beta * n).

    spec = press_spec(load_plan("duo-0.35-4096.json"))
    folder = write_press(plan, "out/")      # out/plan.press.json + out/headlab_press.py (the press class)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..kvcache.spans import plan_keys
from .press import FORMAT, check_spec

#: the press class file (torch and kvpress only), copied next to a written spec
PRESS_FILE = Path(__file__).with_name("press.py")


def _entry(key: tuple) -> dict | None:
    """Span key (``kvcache.spans``) -> press entry."""
    if key[0] == "full":
        return None
    if key[0] == "window":
        return {"sink": int(key[1]), "bands": [[float(key[2]), 0.0]]}
    if key[0] == "moa":
        return {"sink": int(key[1]), "bands": [[float(key[2]), float(key[3])]]}
    if key[0] == "union":  # query heads of one KV head with different spans: the KV head keeps the union
        parts = [_entry(k) for k in key[1]]
        if any(p is None for p in parts):
            return None
        return {"sink": max(p["sink"] for p in parts), "bands": [b for p in parts for b in p["bands"]]}  # type: ignore[index]
    raise ValueError(f"unknown span key {key!r}")


def press_spec(plan, n_heads: int | None = None, n_kv_heads: int | None = None, n_layers: int | None = None) -> dict:
    """The press spec of ``plan`` (a HeadPlan; or a {layer: pattern} mapping with the model's shape given)."""
    meta = getattr(plan, "meta", None)
    if meta is not None:
        n_layers, n_heads, n_kv_heads = plan.n_layers, plan.n_heads, plan.n_kv_heads
    if n_layers is None or n_heads is None or n_kv_heads is None:
        raise ValueError("a plan that is not a HeadPlan needs n_layers, n_heads and n_kv_heads")
    keys = plan_keys(plan, n_layers, n_heads, n_kv_heads)
    spec = {
        "format": FORMAT,
        "n_layers": n_layers,
        "n_kv_heads": n_kv_heads,
        "heads": [[_entry(k) for k in row] for row in keys],
        "plan": {k: (meta or {}).get(k) for k in ("name", "method", "budget", "kv_fraction", "length")},
        "model": (meta or {}).get("model"),
    }
    return check_spec(spec)


def write_press(plan, folder, name: str = "plan") -> Path:
    """``folder/NAME.press.json`` (the spec) and ``folder/headlab_press.py`` (the press class); returns the spec path."""
    from ...io import atomic_write_bytes, atomic_write_json

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = atomic_write_json(out / f"{name}.press.json", press_spec(plan))
    atomic_write_bytes(out / "headlab_press.py", PRESS_FILE.read_bytes())
    return path


def copy_press_class(dest) -> Path:
    """Copy the press class file to ``dest`` (a file or a folder)."""
    d = Path(dest)
    return Path(shutil.copy(PRESS_FILE, d / "headlab_press.py" if d.is_dir() else d))
