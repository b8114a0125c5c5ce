"""``headlab bench mechanisms``: every attention mechanism and kernel of headlab side by side, in the manner of
CAB (Zhang et al., "CAB: Comprehensive Attention Benchmarking on Long Sequence Modeling", ICML 2023,
arXiv 2210.07661): speed and peak memory against length under CAB's four attention patterns, the
*efficiency length* against dense SDPA (the first length from which a mechanism is faster), and quality on
small synthetic tasks at one training budget for all (:mod:`headlab.bench.mechanism_quality`).

The four patterns (``PATTERNS``):
- ``noncausal-self``: T queries, the same T keys, no mask;
- ``causal-self``: query i sees keys j <= i;
- ``noncausal-cross``: T queries, a separate memory of S = 2T keys, no mask;
- ``causal-cross``: the same memory, suffix-aligned (query i sees keys j <= S − T + i, as a decoder reading a
  longer, streaming source).

Two levels of entries (:func:`entries`):
- ``kernel``: a function of (q, k, v) (B=1, H=4, d=64, fp32) — dense SDPA (the baseline), eager softmax, sigmoid,
  the Deconstructing-Attention forms, linear attention (parallel and O(T)), the selective SSM, the Miras memories,
  no mixing and the block-sparse kernels;
- ``module``: the forward pass x (1, T, 256) -> y of every registered mechanism (:data:`headlab.modules.MECHANISMS`)
  and the other modules (their baseline: the ``softmax`` module, whose core is SDPA).
An entry that cannot run a pattern says why (``support[pattern]`` is the reason; "" = supported).

Timing: one untimed warm-up, then the median of ``repeats`` calls under ``torch.no_grad``.  Peak memory: the
rise of the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` after
``malloc_trim``) over one call.  A (entry, pattern) stops growing its length when a call exceeds ``time_cap``
seconds or 4x its last peak memory would exceed ``mem_cap_gib`` (the reason is recorded).
"""

from __future__ import annotations

import ctypes
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import patterns as P
from ..kernels import sparse_attend
from ..modules import MECHANISMS, make_mechanism
from ..modules._heads import causal_mask
from ..modules.deconstruct import relu_len_weights, taylor_weights
from ..modules.linear import FEATURE_MAPS, linear_attention_parallel
from ..modules.miras import VARIANTS as MIRAS
from ..modules.miras import miras_chunked
from ..modules.sigmoid import sigmoid_attention
from ..modules.softmax import softmax_weights
from ..modules.ssm import linear_chunked, ssm_recurrent
from ..timing import alternate

PATTERNS = ("noncausal-self", "causal-self", "noncausal-cross", "causal-cross")
H, D_HEAD, D_MODEL = 4, 64, 256
BASELINE = {"kernel": "sdpa", "module": "softmax"}
OK = ""

Call = Callable[[], torch.Tensor]


@dataclass
class Entry:
    name: str
    level: str  # "kernel" | "module"
    what: str  # one line: the formula / paper
    make: Callable[[str, int], Call] | None  # (pattern, T) -> a zero-argument call
    support: dict[str, str] = field(default_factory=dict)  # pattern -> "" or why it is not supported

    def supports(self, pattern: str) -> bool:
        return self.support.get(pattern, "not supported") == OK


def is_causal(pattern: str) -> bool:
    return pattern.startswith("causal")


def memory_len(pattern: str, t: int) -> int:
    return 2 * t if pattern.endswith("cross") else t


def qkv(pattern: str, t: int, seed: int = 0):
    """q (1,H,T,d), k, v (1,H,S,d) with S = memory_len(pattern, T)."""
    g = torch.Generator().manual_seed(seed)
    s = memory_len(pattern, t)
    return (
        torch.randn(1, H, t, D_HEAD, generator=g),
        torch.randn(1, H, s, D_HEAD, generator=g) / 2,
        torch.randn(1, H, s, D_HEAD, generator=g),
    )


def _sdpa(q, k, v, causal):
    t, s = q.shape[-2], k.shape[-2]
    if not causal:
        return F.scaled_dot_product_attention(q, k, v)
    if s == t:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(s)[s - t :])


def linear_global(q, k, v):
    """Non-causal normalised linear attention in O(T d²): φ(q) (φ(k)^T v) / φ(q)·Σ φ(k), φ = elu + 1."""
    phi = FEATURE_MAPS["elu1"]
    fq, fk = phi(q), phi(k)
    return (fq @ (fk.transpose(-1, -2) @ v)) / ((fq * fk.sum(-2, keepdim=True)).sum(-1, keepdim=True) + 1e-6)


def linear_scan(q, k, v, chunk: int = 64):
    """Causal normalised linear attention in O(T) memory: the chunked Λ = 1 form (DSF), with values [v, 1] giving
    the numerator and the normaliser in one pass."""
    phi = FEATURE_MAPS["elu1"]
    y = linear_chunked(phi(q), phi(k), torch.cat([v, torch.ones_like(v[..., :1])], -1), None, chunk)
    return y[..., :-1] / (y[..., -1:] + 1e-6)


def _kernel(fn: Callable, support: dict[str, str]) -> Callable[[str, int], Call]:
    def make(pattern: str, t: int) -> Call:
        q, k, v = qkv(pattern, t)
        causal = is_causal(pattern)
        return lambda: fn(q, k, v, causal)

    return make


def _ssm_call(q, k, v, causal):
    g = torch.Generator().manual_seed(1)
    n = 16
    b, c = q[..., :n], k[..., :n]
    delta = F.softplus(torch.randn(v.shape, generator=g))
    a = -torch.arange(1, n + 1, dtype=torch.float).expand(H, D_HEAD, n)
    return ssm_recurrent(v, delta, b, c, a)


def _miras_call(variant: str):
    bias, ret = MIRAS[variant]

    def call(q, k, v, causal):
        gates = torch.full(q.shape[:3], 0.9)
        return miras_chunked(F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, gates, gates, bias, ret, 16)

    return call


def _sparse(pattern_obj):
    return lambda q, k, v, causal: sparse_attend(q, k, v, pattern_obj)


ALL = {p: OK for p in PATTERNS}
SELF_ONLY = {
    "noncausal-self": OK,
    "causal-self": OK,
    "noncausal-cross": "no token mixing: there is no memory to read",
    "causal-cross": "no token mixing: there is no memory to read",
}
RECURRENT = "a recurrence over the query sequence: it has no bidirectional form and no separate memory input"
CAUSAL_ONLY = {p: (OK if p == "causal-self" else RECURRENT) for p in PATTERNS}
SPARSE = {p: (OK if p == "causal-self" else "the block-sparse patterns are causal self-attention masks") for p in PATTERNS}


def kernel_entries() -> list[Entry]:
    k = [
        Entry("sdpa", "kernel", "dense softmax attention, torch SDPA (baseline)", _kernel(_sdpa, ALL), dict(ALL)),
        Entry(
            "softmax-eager",
            "kernel",
            "softmax(qk^T/√d) materialised, then @ v (headlab reference form)",
            _kernel(lambda q, k, v, c: softmax_weights(q, k, c) @ v, ALL),
            dict(ALL),
        ),
        Entry(
            "sigmoid",
            "kernel",
            "σ(qk^T/√d) v, no normalisation (arXiv 2410.10781)",
            _kernel(lambda q, k, v, c: sigmoid_attention(q, k, v, c), ALL),
            dict(ALL),
        ),
        Entry(
            "taylor",
            "kernel",
            "(1 + s + s²/2)-normalised weights (Deconstructing Attention, approximate form)",
            _kernel(lambda q, k, v, c: taylor_weights(q, k, c) @ v, ALL),
            dict(ALL),
        ),
        Entry(
            "relu-len",
            "kernel",
            "relu(s)/(#keys) (Deconstructing Attention, non-approximate form)",
            _kernel(lambda q, k, v, c: relu_len_weights(q, k, c) @ v, ALL),
            dict(ALL),
        ),
        Entry(
            "linear-parallel",
            "kernel",
            "φ(q)φ(k)^T masked and normalised, then @ v: O(T²) (arXiv 2006.16236)",
            _kernel(lambda q, k, v, c: linear_attention_parallel(q, k, v, causal=c), ALL),
            {**ALL, "causal-cross": "the parallel form's mask is square (queries = keys)"},
        ),
        Entry(
            "linear-O(T)",
            "kernel",
            "φ(q)(φ(k)^T v) non-causal; chunked Λ=1 form causal: O(T) (arXiv 2006.16236, 2405.15731)",
            _kernel(lambda q, k, v, c: linear_scan(q, k, v) if c else linear_global(q, k, v), ALL),
            {**ALL, "causal-cross": "the scan has no suffix-aligned memory prefix"},
        ),
        Entry(
            "ssm",
            "kernel",
            "selective SSM (S6) per-token scan, n=16 (arXiv 2312.00752, 2405.15731)",
            _kernel(_ssm_call, CAUSAL_ONLY),
            dict(CAUSAL_ONLY),
        ),
    ]
    k += [
        Entry(
            f"miras-{v}",
            "kernel",
            f"Miras {v} online memory, chunk 16 (arXiv 2504.13173)",
            _kernel(_miras_call(v), CAUSAL_ONLY),
            dict(CAUSAL_ONLY),
        )
        for v in MIRAS
    ]
    k += [
        Entry(
            "no-mix",
            "kernel",
            "o = v (no token mixing; Deconstructing Attention control)",
            _kernel(lambda q, k, v, c: v * 1.0, SELF_ONLY),
            dict(SELF_ONLY),
        ),
        Entry(
            "window(256)",
            "kernel",
            "block-sparse sliding window, headlab.kernels.sparse_attend",
            _kernel(_sparse(P.window(256)), SPARSE),
            dict(SPARSE),
        ),
        Entry(
            "sink_window(64,256)",
            "kernel",
            "block-sparse sink + window (StreamingLLM), headlab.kernels.sparse_attend",
            _kernel(_sparse(P.sink_window(64, 256)), SPARSE),
            dict(SPARSE),
        ),
    ]
    return k


CROSS_MODULE = "a module mixes one sequence (x -> y); it takes no separate memory input"
POOLING = "a pooling / read-out head, not a token mixer"
OTHER_MODULES = {
    "ponet": (
        "PoNet pooling mixer (arXiv 2110.02442), bidirectional",
        {
            "noncausal-self": OK,
            "causal-self": "bidirectional only (global mean and segment max see the future)",
            "noncausal-cross": CROSS_MODULE,
            "causal-cross": CROSS_MODULE,
        },
    ),
    "attsets": ("AttSets (arXiv 1808.00758)", {p: POOLING for p in PATTERNS}),
    "efficient-probing": ("efficient probing head", {p: POOLING for p in PATTERNS}),
    "mltp": ("multi-layer trainable pooling", {p: POOLING for p in PATTERNS}),
    "pointer": ("pointer-network head (arXiv 1506.03134)", {p: POOLING for p in PATTERNS}),
}


def _module_make(name: str) -> Callable[[str, int], Call]:
    def make(pattern: str, t: int) -> Call:
        torch.manual_seed(0)
        if name == "ponet":  # not in the mechanism registry: bidirectional mixer
            from ..modules import PoNetMixer

            m = PoNetMixer(D_MODEL, H)
        else:
            m = make_mechanism(name, D_MODEL, H)
            m.causal = is_causal(pattern)
        m.eval()
        x = torch.randn(1, t, D_MODEL, generator=torch.Generator().manual_seed(0))
        return lambda: m(x)

    return make


def module_entries(names: list[str] | None = None) -> list[Entry]:
    out = []
    for name in names or MECHANISMS.names():
        probe = make_mechanism(name, D_MODEL, H)
        sup = {
            "causal-self": OK,
            "noncausal-cross": CROSS_MODULE,
            "causal-cross": CROSS_MODULE,
            "noncausal-self": OK if hasattr(probe, "causal") else "causal-only module (no bidirectional form)",
        }
        out.append(Entry(name, "module", type(probe).__name__, _module_make(name), sup))
    if names is None:
        for name, (what, sup) in OTHER_MODULES.items():
            out.append(Entry(name, "module", what, _module_make(name) if name == "ponet" else None, dict(sup)))
    return out


def entries(modules: list[str] | None = None) -> list[Entry]:
    return kernel_entries() + module_entries(modules)


# ---------------------------------------------------------------- measurement
def _status(field_: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_ + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{field_} not in /proc/self/status")


def peak_bytes(call: Call) -> float:
    """Rise of the peak resident set over one call (bytes); NaN where /proc cannot be reset."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = _status("VmRSS")
        with torch.no_grad():
            call()
        return float(max(0, _status("VmHWM") - base))
    except OSError:
        return float("nan")


def time_call(call: Call, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls after one untimed warm-up (:func:`headlab.timing.alternate`)."""
    with torch.no_grad():
        return alternate({"call": call}, repeats).wall["call"]


@dataclass
class Point:
    entry: str
    level: str
    pattern: str
    length: int
    seconds: float
    spread: tuple[float, float]
    peak_mib: float


def stop_key(level: str, name: str, pattern: str) -> str:
    return f"{level}:{name}|{pattern}"


def measure(
    ents: list[Entry],
    lengths: list[int],
    repeats: int,
    time_cap: float,
    mem_cap_gib: float,
    advance: Callable[[str], None] = lambda s: None,
) -> tuple[list[Point], dict[str, str]]:
    """Time and peak memory for every supported (entry, pattern, length); returns points and, per
    'level:entry|pattern', why it stopped before the last length ("" when it reached it)."""
    points, stops = [], {}
    for e in ents:
        for pat in PATTERNS:
            key = stop_key(e.level, e.name, pat)
            if not e.supports(pat) or e.make is None:
                stops[key] = e.support.get(pat, "not supported") or "not runnable"
                advance(key)
                continue
            stops[key], last_peak = "", 0.0
            for t in lengths:
                advance(f"{key} T={t}")
                if 4 * last_peak > mem_cap_gib * 2**30:
                    stops[key] = f"memory: 4 x {last_peak / 2**20:.0f} MiB would pass the {mem_cap_gib} GiB cap at T={t}"
                    break
                try:
                    call = e.make(pat, t)
                    ts = time_call(call, repeats)
                    peak = peak_bytes(call)
                except (RuntimeError, MemoryError) as err:  # out of memory or an unsupported shape at this size
                    stops[key] = f"failed at T={t}: {str(err).splitlines()[0][:120]}"
                    break
                last_peak = peak if math.isfinite(peak) else last_peak
                med = statistics.median(ts)
                points.append(Point(e.name, e.level, pat, t, med, (min(ts), max(ts)), peak / 2**20))
                if med > time_cap and t != lengths[-1]:
                    stops[key] = f"time: {med:.2f} s > {time_cap} s at T={t}"
                    break
    return points, stops


def fit_power(ls: list[int], ts: list[float]) -> tuple[float, float] | None:
    """Least-squares fit log t = a + b log L over the points with L >= 1024 (all when fewer than 3): (a, b)."""
    pts = [(math.log(l), math.log(t)) for l, t in zip(ls, ts) if t > 0]
    long = [p for p, l in zip(pts, ls) if l >= 1024]
    pts = long if len(long) >= 3 else pts
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return my - b * mx, b


def efficiency(points: list[Point], ents: list[Entry]) -> list[dict]:
    """Per supported (entry, pattern) of a non-baseline entry: measured efficiency length (first length where
    it is faster than the level's baseline at the same pattern), and the length where the two fitted power
    laws cross (None when they never do in the entry's favour, or cross only outside [shortest / 2, 16 x longest]
    length run, where the fit extrapolates: the note then gives the crossing)."""
    by = {}
    for p in points:
        by.setdefault((p.level, p.entry, p.pattern), {})[p.length] = p.seconds
    rows = []
    for e in ents:
        base = BASELINE[e.level]
        if e.name == base:
            continue
        for pat in PATTERNS:
            mine, ref = by.get((e.level, e.name, pat)), by.get((e.level, base, pat))
            if not mine or not ref:
                continue
            common = sorted(set(mine) & set(ref))
            measured = next((l for l in common if mine[l] < ref[l]), None)
            fm = fit_power(sorted(mine), [mine[l] for l in sorted(mine)])
            fr = fit_power(sorted(ref), [ref[l] for l in sorted(ref)])
            fitted, note = None, "too few points"
            if fm and fr:
                (a1, b1), (a2, b2) = fm, fr
                if abs(b1 - b2) < 1e-9:
                    fitted, note = (0.0, "always faster") if a1 < a2 else (None, "never faster (same slope)")
                else:
                    # nearly equal slopes put the crossing astronomically far: clamp so exp() cannot overflow
                    x = math.exp(max(-700.0, min(700.0, (a2 - a1) / (b1 - b2))))
                    lo, hi = min(ref), max(ref)
                    if b1 < b2 and x < lo / 2:
                        fitted, note = None, f"faster beyond {x:.3g}: below the lengths run (extrapolated)"
                    elif b1 < b2 and x > 16 * hi:
                        fitted, note = None, f"faster beyond {x:.3g}: > 16x the longest length run (extrapolated)"
                    elif b1 < b2:
                        fitted, note = x, "faster beyond"
                    elif x >= 1:
                        fitted, note = None, f"grows faster than the baseline: faster only below {x:.0f}"
                    else:
                        fitted, note = None, "never faster (slower and growing faster)"
            rows.append(
                {
                    "entry": e.name,
                    "level": e.level,
                    "pattern": pat,
                    "baseline": base,
                    "measured": measured,
                    "fitted": fitted,
                    "note": note,
                    "slope": fm[1] if fm else None,
                    "baseline_slope": fr[1] if fr else None,
                }
            )
    return rows
