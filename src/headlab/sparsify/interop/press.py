"""A headlab per-head plan as a kvpress press (NVIDIA's kvpress, github.com/NVIDIA/kvpress): dense prefill, then
full heads keep every key and streaming heads keep their sink + recent window (StreamingLLM, arXiv 2309.17453;
DuoAttention's full/streaming split, arXiv 2410.10819). The press masks the evicted keys head by head the way
kvpress's own ``DuoAttentionPress`` does (``module.masked_key_indices``: kvpress's attention patch turns them
into keys whose weight underflows to zero), so a kvpress user applies a headlab plan like any other press::

    import importlib.util, json
    spec = importlib.util.spec_from_file_location("headlab_press", "press.py")   # this file, copied anywhere
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    press = mod.HeadPlanPress.from_spec("plan.press.json")     # written by ``headlab.sparsify.interop.write_press``
    pipe(context, question=question, press=press)               # kvpress's "kv-press-text-generation" pipeline

This file imports only torch (and kvpress when it is there): it runs in kvpress's own venv without headlab.
The spec (``headlab-press/1``): {"format", "n_layers", "n_kv_heads", "heads": [[null | {"sink": int, "bands":
[[alpha, beta], ...]}] per KV head] per layer}: null keeps every key; otherwise a context of n keys keeps
[0, sink) and its last w(n) = max(round(alpha + beta * n)) keys. Tokens decoded after the prefill are all kept
(a press compresses the prefill only). No ``from __future__ import annotations`` here: a dataclass loaded by path
(not in ``sys.modules``) cannot resolve string annotations.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

try:  # kvpress's venv: a real press
    from kvpress.presses.base_press import BasePress  # pyright: ignore[reportMissingImports]
except ImportError:  # headlab's venv: the same class without kvpress's hooks (the pure part stays testable)
    BasePress = object  # type: ignore[assignment,misc]

FORMAT = "headlab-press/1"


def band(entry: dict | None, n: int) -> int | None:
    """Window w(n) of a head entry at n context keys (None: a full head)."""
    if entry is None:
        return None
    w = max(round(float(a) + float(b) * n) for a, b in entry["bands"])
    if w < 0:
        raise ValueError(f"head entry {entry!r} has window {w} < 0 at {n} keys")
    return w


def kept_range(entry: dict | None, n: int) -> tuple[int, int]:
    """(s, lo): a head keeps keys [0, s) and [lo, n) of an n-key context (a full head: (n, n))."""
    w = band(entry, n)
    if w is None:
        return n, n
    s = min(int(entry["sink"]), n)  # type: ignore[index]
    return s, min(n, max(s, n - w))


def check_spec(spec: dict) -> dict:
    """``spec`` validated (see the module doc); a ValueError names what is wrong."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"a press spec must have format {FORMAT!r}, got {got!r}")
    L, Hkv, heads = spec.get("n_layers"), spec.get("n_kv_heads"), spec.get("heads")
    if not isinstance(heads, list) or len(heads) != L or any(not isinstance(r, list) or len(r) != Hkv for r in heads):
        raise ValueError(f"'heads' must be n_layers={L} lists of n_kv_heads={Hkv} entries")
    for li, row in enumerate(heads):
        for h, e in enumerate(row):
            if e is None:
                continue
            ok = isinstance(e, dict) and isinstance(e.get("sink"), int) and e["sink"] >= 0 and isinstance(e.get("bands"), list)
            if not ok or not e["bands"] or any(len(x) != 2 or float(x[1]) < 0 or float(x[1]) > 1 for x in e["bands"]):
                raise ValueError(
                    f"layer {li} KV head {h}: entry must be null or {{'sink': int >= 0, 'bands': [[alpha, beta in [0, 1]], ...]}}, got {e!r}"
                )
    return spec


@dataclass
class HeadPlanPress(BasePress):  # type: ignore[misc,valid-type]
    """A kvpress press that applies a headlab plan's per-head spans after a dense prefill (see the module doc).
    ``kept_fraction_``: the share of (layer, KV head, key) kept by the last prefill."""

    spec: dict = field(default_factory=dict)
    kept_fraction_: float = field(init=False, default=1.0)
    _kept: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        check_spec(self.spec)

    @classmethod
    def from_spec(cls, spec: "dict | str | Path") -> "HeadPlanPress":
        """The press of a spec dict or of a spec JSON file."""
        if not isinstance(spec, dict):
            spec = json.loads(Path(spec).read_text(encoding="utf-8"))
        return cls(spec=spec)  # type: ignore[arg-type]

    def masked(self, layer: int, n_kv: int, n: int):
        """Bool mask (n_kv, n): the context keys layer ``layer`` evicts (True), per KV head."""
        import torch

        if not 0 <= layer < self.spec["n_layers"]:
            raise ValueError(f"layer {layer} out of range: the press spec has layers 0..{self.spec['n_layers'] - 1}")
        if n_kv != self.spec["n_kv_heads"]:
            raise ValueError(f"the model's layer {layer} has {n_kv} KV heads, the press spec {self.spec['n_kv_heads']}")
        out = torch.zeros(n_kv, n, dtype=torch.bool)
        for h, e in enumerate(self.spec["heads"][layer]):
            s, lo = kept_range(e, n)
            out[h, s:lo] = True
        return out

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        """keys, values (B, Hkv, n, d) stay; the evicted positions go to ``module.masked_key_indices``."""
        B, n_kv, n, _ = keys.shape
        m = self.masked(int(module.layer_idx), n_kv, n).to(keys.device)  # (Hkv, n)
        self._kept[int(module.layer_idx)] = int((~m).sum()) * B
        if bool(m.any()):
            module.masked_key_indices = m.unsqueeze(0).expand(B, n_kv, n).nonzero(as_tuple=True)
        total = B * n_kv * n * max(1, len(self._kept))
        self.kept_fraction_ = sum(self._kept.values()) / total
        return keys, values
