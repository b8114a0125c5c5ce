"""The statistics of ``preplan-anchor`` (Li et al., "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm
Enables Fine-Grained Policy Optimization", arXiv 2510.13554), on plain arrays: per-head signals from attention maps,
head groups, peaks, the three coupling lifts against a shuffled-position baseline, and their bootstrap over prompts.

Positions: one text of N tokens, the response rows R = ``start`` .. N - 1.  Maps ``attn`` are (heads, N, N) causal
weights of the selected layers' heads stacked together.

- ``backward_distance``: d_h = mean_{t∈R} Σ_{s≤t} A_h[t, s] (t − s), the grouping key (bottom / top ``frac``: local /
  global heads);
- ``waad_profiles``: WAAD_t = Σ_{s≤t} A_h[t, s] min(t − s, W) for t ∈ R, per head (the local heads' mean is the WAAD
  of their averaged map: the sum is linear in the map);
- ``fai_profiles``: FAI_s = mean_{t∈R, lo ≤ t − s ≤ hi} A_h[t, s] for the keys s ∈ R with at least one such query
  (s ≤ N − 1 − lo), per head;
- ``peaks``: positions that are local maxima (higher than the previous position, not lower than the next) and in
  the top ``q`` fraction of the signal's values;
- the lifts, each summed over prompts as Σ observed / Σ baseline − 1, the baseline being the mean over
  ``permutations`` random shuffles of one peak set's positions within its response (count kept).
"""

from __future__ import annotations

import numpy as np


def _check_map(attn: np.ndarray, start: int) -> int:
    if attn.ndim != 3 or attn.shape[1] != attn.shape[2]:
        raise ValueError(f"attn must be (heads, N, N), got shape {tuple(attn.shape)}")
    n = attn.shape[1]
    if not 0 <= start < n:
        raise ValueError(f"start={start} must be in [0, {n}) (the first response row)")
    return n


def backward_distance(attn: np.ndarray, start: int) -> np.ndarray:
    """(heads,) mean over the rows t >= start of Σ_{s≤t} A[t, s] (t − s)."""
    n = _check_map(attn, start)
    gap = np.clip(np.arange(n)[:, None] - np.arange(n)[None, :], 0, None).astype(np.float64)
    return np.einsum("hts,ts->h", attn[:, start:].astype(np.float64), gap[start:]) / (n - start)


def waad_profiles(attn: np.ndarray, start: int, window: int = 10) -> np.ndarray:
    """(heads, N − start) WAAD_t = Σ_{s≤t} A[t, s] min(t − s, window) for the rows t >= start."""
    n = _check_map(attn, start)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    gap = np.clip(np.arange(n)[:, None] - np.arange(n)[None, :], 0, window).astype(np.float64)
    return np.einsum("hts,ts->ht", attn[:, start:].astype(np.float64), gap[start:])


def fai_profiles(attn: np.ndarray, start: int, lo: int = 10, hi: int = 100) -> np.ndarray:
    """(heads, K) FAI_s for the keys s = start .. start + K − 1 that have a query t >= start with lo <= t − s <= hi
    (K = N − start − lo): the mean of A[t, s] over those queries."""
    n = _check_map(attn, start)
    if lo < 1 or hi < lo:
        raise ValueError(f"FAI horizon [lo, hi] = [{lo}, {hi}] needs 1 <= lo <= hi")
    k = n - start - lo
    if k < 1:
        raise ValueError(f"the response ({n - start} tokens) is too short for the FAI horizon lo = {lo}")
    t = np.arange(n)[:, None]
    s = np.arange(start, start + k)[None, :]
    win = ((t - s >= lo) & (t - s <= hi) & (t >= start)).astype(np.float64)  # (N, K)
    col = np.einsum("hts,ts->hs", attn[:, :, start : start + k].astype(np.float64), win)
    return col / win.sum(0)


def head_groups(d: np.ndarray, frac: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(local, global) index arrays: the round(frac · heads) heads with the smallest and the largest ``d``."""
    if not 0.0 < frac <= 0.5:
        raise ValueError(f"frac must be in (0, 0.5], got {frac}")
    k = max(1, int(round(frac * len(d))))
    order = np.argsort(d, kind="stable")
    return np.sort(order[:k]), np.sort(order[len(d) - k :])


def excess_kurtosis(x: np.ndarray) -> np.ndarray:
    """Excess kurtosis of each row of ``x`` (rows of constant values: −inf)."""
    c = x - x.mean(-1, keepdims=True)
    m2 = (c**2).mean(-1)
    m4 = (c**4).mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m2 > 0, m4 / np.where(m2 > 0, m2, 1.0) ** 2 - 3.0, -np.inf)


def receiver_heads(fai: np.ndarray, exclude: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` heads outside ``exclude`` whose FAI profile (heads, K) has the largest excess kurtosis (attention
    received concentrated on few tokens), sorted."""
    kurt = excess_kurtosis(fai)
    rest = np.setdiff1d(np.arange(len(fai)), exclude)
    if count < 1 or count > len(rest):
        raise ValueError(f"cannot pick {count} receiver heads from the {len(rest)} heads outside the global group")
    order = rest[np.argsort(-kurt[rest], kind="stable")]
    return np.sort(order[:count])


def peaks(x: np.ndarray, q: float = 0.2) -> np.ndarray:
    """(n,) bool: x[t] > x[t − 1] and x[t] >= x[t + 1] (a missing neighbour passes) and x[t] >= the (1 − q) quantile."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) < 1 or not np.isfinite(x).all():
        raise ValueError("peaks need a non-empty 1-d finite signal")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"peak quantile q must be in (0, 1], got {q}")
    left = np.ones(len(x), dtype=bool)
    right = np.ones(len(x), dtype=bool)
    left[1:] = x[1:] > x[:-1]
    right[:-1] = x[:-1] >= x[1:]
    return left & right & (x >= np.quantile(x, 1.0 - q))


def shuffles(mask: np.ndarray, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """(permutations, n) bool: ``mask`` with its positions randomly permuted, independently per row."""
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    return rng.permuted(np.tile(np.asarray(mask, dtype=bool), (permutations, 1)), axis=1)


def preceded(mask: np.ndarray, k: int) -> np.ndarray:
    """(..., n) bool: some position in [t − k, t] of ``mask`` (last axis) is set."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    c = np.cumsum(np.asarray(mask, dtype=np.int64), -1)
    lag = np.zeros_like(c)
    n = c.shape[-1]
    if n > k + 1:
        lag[..., k + 1 :] = c[..., : n - k - 1]  # set positions before t − k
    return (c - lag) > 0


def entropy_parts(entropy: np.ndarray, waad_peaks: np.ndarray, perms: np.ndarray) -> tuple[float, float]:
    """(Σ entropy at the WAAD peaks, mean over the shuffled peak sets ``perms`` (P, n) of the same sum)."""
    e = np.asarray(entropy, dtype=np.float64)
    return float(e[waad_peaks].sum()), float((perms * e).sum(-1).mean())


def cooccur_parts(global_peaks: np.ndarray, receiver_peaks_perms: np.ndarray, receiver_peaks: np.ndarray) -> tuple[float, float]:
    """(positions that are peaks of both FAI signals, the mean count with the receiver peaks shuffled)."""
    return float((global_peaks & receiver_peaks).sum()), float((receiver_peaks_perms & global_peaks).sum(-1).mean())


def follow_parts(fai_peaks: np.ndarray, waad_peaks: np.ndarray, waad_perms: np.ndarray, k: int) -> tuple[float, float]:
    """(FAI peaks with a WAAD peak at most ``k`` tokens before or at them, the mean count with the WAAD peaks
    shuffled).  ``fai_peaks`` (K,) covers the first K response positions, ``waad_peaks`` (n,) and ``waad_perms``
    (P, n) all n >= K."""
    kk = len(fai_peaks)
    obs = preceded(waad_peaks, k)[:kk] & fai_peaks
    base = preceded(waad_perms, k)[:, :kk] & fai_peaks
    return float(obs.sum()), float(base.sum(-1).mean())


def pooled_lift(obs: np.ndarray, base: np.ndarray) -> float:
    """Σ obs / Σ base − 1 (NaN when the baseline sums to 0)."""
    b = float(np.sum(base))
    return float(np.sum(obs)) / b - 1.0 if b > 0 else float("nan")


def bootstrap_lift(obs, base, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """{"value", "ci", "n"}: the pooled lift in percent with a percentile interval over prompts resampled with
    replacement (resamples whose baseline sums to 0 are dropped)."""
    o, b = np.asarray(obs, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if o.shape != b.shape or o.ndim != 1 or len(o) < 1:
        raise ValueError(f"obs and base must be equal-length 1-d arrays, got {o.shape} and {b.shape}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    idx = np.random.default_rng(seed).integers(0, len(o), (resamples, len(o)))
    bs, os_ = b[idx].sum(1), o[idx].sum(1)
    ok = bs > 0
    lifts = os_[ok] / bs[ok] - 1.0
    a = (1 - level) / 2
    ci = [float(np.quantile(lifts, a)) * 100, float(np.quantile(lifts, 1 - a)) * 100] if len(lifts) else [np.nan] * 2
    return {"value": pooled_lift(o, b) * 100, "ci": ci, "n": len(o)}
