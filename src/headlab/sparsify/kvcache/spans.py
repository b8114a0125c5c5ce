"""What a compressed KV cache keeps per (layer, KV head): a plan's patterns as span keys.

A head that a per-head plan makes *full* (``causal``) keeps every key. A *streaming* head keeps
the first ``sink`` keys plus the last ``w(n)`` keys at length n (StreamingLLM, arXiv 2309.17453;
DuoAttention-style full/streaming split):
  * ``sink_window(sink, size)``  -> w(n) = size
  * ``window(size)``             -> sink 0, w(n) = size
  * one-head ``moa([[a, b]], sink)`` (MoA, arXiv 2406.14909) -> w(n) = round(a + b * n)
A span key is a hashable tuple: ("full",) | ("window", sink, size) | ("moa", sink, alpha, beta).
Heads with equal keys keep the same positions, so a cache can store them in one buffer. When the
query heads that share a KV head (GQA) follow different rules, the KV head keeps the union of their
needs, ("union", (key of each query head of the group)): every key if one of them is full, else
the largest sink and the largest window (the sets are nested); each query head then masks the kept
keys down to its own span.

Evicting is exact for these rules: the decode query at position n-1 (n keys) sees exactly
{j < sink} ∪ {j >= n - w(n)}, and since 0 <= b <= 1 makes w(n+1) <= w(n) + 1, the lower edge
n - w(n) never moves back, so a key that leaves the window is never needed again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...patterns import make
from ...patterns.base import Pattern
from ...patterns.causal import Causal
from ...patterns.compose import PerHead
from ...patterns.moa import MoA
from ...patterns.window import SinkWindow, Window

FULL = ("full",)
SUPPORTED = "causal, sink_window, window and one-head moa"


def window_at(key: tuple, n: int) -> int | None:
    """Band width w(n) of a span key at n keys; None for a full head."""
    if key[0] == "full":
        return None
    if key[0] == "union":
        ws = [window_at(k, n) for k in key[1]]
        return None if None in ws else max(ws)
    if key[0] == "window":
        return key[2]
    w = round(key[2] + key[3] * n)  # float64 and half-to-even, like MoA.widths
    if w <= 0:
        raise ValueError(f"moa span (alpha={key[2]}, beta={key[3]}) has band width {w} <= 0 at length {n}")
    return w


def kept_positions(key: tuple, n: int) -> tuple[int, int]:
    """(sinks kept, first kept window position) at n keys: keeps [0, sinks) ∪ [lo, n)."""
    w = window_at(key, n)
    if w is None:
        return n, n
    sink = sink_of(key)
    return min(sink, n), min(n, max(sink, n - w))


def sink_of(key: tuple) -> int:
    """Sink length of a streaming span key."""
    return max(sink_of(k) for k in key[1]) if key[0] == "union" else key[1]


def is_full(key: tuple) -> bool:
    """Whether a KV head with this key keeps every key."""
    return window_at(key, 1) is None


def kept_count(key: tuple, n: int) -> int:
    s, lo = kept_positions(key, n)
    return n if is_full(key) else s + (n - lo)


def _entry(p) -> Pattern:
    if isinstance(p, Mapping) and "pattern" in p:
        return make(p["pattern"], **dict(p.get("args") or {}))
    if not isinstance(p, Pattern):
        raise ValueError(f"plan entry must be a Pattern or {{'pattern': name, 'args': {{...}}}}, got {p!r}")
    return p


def head_key(p) -> tuple:
    """Span key of one single-head pattern (or plan entry dict)."""
    p = _entry(p)
    if isinstance(p, Causal):
        return FULL
    if isinstance(p, SinkWindow):
        return ("window", p.sink, p.size)
    if isinstance(p, Window):
        return ("window", 0, p.size)
    if isinstance(p, MoA) and p.n_heads == 1:
        return ("moa", p.sink, float(p.alpha[0]), float(p.beta[0]))
    if isinstance(p, PerHead) and p.n_heads == 1:
        return head_key(p.patterns[0])
    raise ValueError(f"a compressed KV cache cannot serve pattern {p.describe()}: it supports {SUPPORTED} heads")


def layer_keys(pattern, layer: int, n_heads: int, n_kv: int) -> list[tuple]:
    """One span key per KV head for a layer's pattern (None = dense layer: every head full).

    Accepts what ``attach(model, pattern=...)`` accepts for one layer: a Pattern, a per-head
    pattern (``per_head`` / multi-head ``moa``, per KV head or per query head) or a list of
    entries. Query heads that share a KV head must keep the same span.
    """
    if pattern is None:
        return [FULL] * n_kv
    if isinstance(pattern, Sequence) and not isinstance(pattern, str):
        heads, per_kv = [head_key(p) for p in pattern], len(pattern) == n_kv
    elif isinstance(pattern, PerHead):
        heads, per_kv = [head_key(p) for p in pattern.patterns], pattern.kv_per_head or n_heads == n_kv
    elif isinstance(pattern, MoA) and pattern.n_heads > 1:
        heads = [("moa", pattern.sink, float(a), float(b)) for a, b in zip(pattern.alpha, pattern.beta)]
        per_kv = pattern.kv_per_head or n_heads == n_kv
    else:
        return [head_key(pattern)] * n_kv
    want = n_kv if per_kv else n_heads
    if len(heads) != want:
        raise ValueError(
            f"layer {layer}: the plan gives {len(heads)} head entries, but the model has {n_kv} KV heads ({n_heads} query heads)"
        )
    if per_kv:
        return heads
    g = n_heads // n_kv
    out = []
    for h in range(n_kv):
        group = tuple(heads[h * g : (h + 1) * g])
        out.append(group[0] if len(set(group)) == 1 else ("union", group))
    return out


def plan_keys(plan, n_layers: int, n_heads: int, n_kv: int) -> list[list[tuple]]:
    """Span keys [layer][kv head] for a whole plan: a HeadPlan / {layer: pattern} mapping or one Pattern."""
    if isinstance(plan, Pattern):
        return [layer_keys(plan, i, n_heads, n_kv) for i in range(n_layers)]
    if not isinstance(plan, Mapping):
        raise ValueError(f"plan must be a HeadPlan, a {{layer: pattern}} mapping or a Pattern, got {type(plan).__name__}")
    for layer in plan:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise ValueError(f"plan layer {layer!r} out of range: the model has layers 0..{n_layers - 1}")
    return [layer_keys(plan.get(i), i, n_heads, n_kv) for i in range(n_layers)]
