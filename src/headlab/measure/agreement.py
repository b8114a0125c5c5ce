"""Agreement between an attention vector and a saliency vector over the same T input tokens.

The measurement follows Papi et al., "Cross-Attention is Half Explanation in Speech-to-Text Models"
(arXiv 2509.18010): attention scores of one output step, per head, per layer and averaged over heads
and layers, are compared with the input saliency of that step. Here, for one vector pair a (attention,
T) and s (saliency, T, non-negative):

* ``pearson``  — Pearson r(a, s) (the paper's correlation of attention with saliency);
* ``spearman`` — Spearman ρ(a, s), the same on ranks (insensitive to the very peaked attention sinks);
* ``coverage`` — the share of saliency's top-k tokens that attention's top-k also holds,
  |top_k(a) ∩ top_k(s)| / k with k = max(1, round(frac · T)) (frac = 0.2 by default); a random
  ranking covers k/T on average (``chance``);
* ``mass``     — the share of the saliency mass on saliency's own top-k that attention's top-k holds,
  Σ_{j ∈ top_k(a)} s_j / Σ_{j ∈ top_k(s)} s_j (1 = attention picks the k most salient tokens).

Top-k ties break by position (a stable sort). A constant vector has no rank order: its correlations
are NaN (left out of averages, with the count of items that remain).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

METRICS = ("spearman", "pearson", "coverage", "mass")


def _vec(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().double().numpy() if hasattr(x, "detach") else x, dtype=np.float64).ravel()
    if a.size < 2:
        raise ValueError(f"{name}: need >= 2 tokens, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: non-finite values")
    return a


def top_k(frac: float, n: int) -> int:
    """k = max(1, round(frac · n)) for 0 < frac <= 1."""
    if not 0 < frac <= 1:
        raise ValueError(f"top fraction {frac} must be in (0, 1]")
    return max(1, round(frac * n))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def _top(x: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-x, kind="stable")[:k]


def agreement(attention, saliency, frac: float = 0.2) -> dict[str, float]:
    """{"spearman", "pearson", "coverage", "mass", "k", "chance"} for attention (T,) vs saliency (T,)."""
    a, s = _vec(attention, "attention"), _vec(saliency, "saliency")
    if a.shape != s.shape:
        raise ValueError(f"attention has {a.size} tokens, saliency {s.size}; they must match")
    if (s < 0).any():
        raise ValueError("saliency must be non-negative (a magnitude per token)")
    k = top_k(frac, a.size)
    ta, ts = _top(a, k), _top(s, k)
    flat = np.ptp(a) == 0 or np.ptp(s) == 0
    own = float(s[ts].sum())
    return {
        "spearman": math.nan if flat else _pearson(stats.rankdata(a), stats.rankdata(s)),  # Spearman: Pearson of ranks
        "pearson": math.nan if flat else _pearson(a, s),
        "coverage": len(np.intersect1d(ta, ts)) / k,
        "mass": float(s[ta].sum()) / own if own > 0 else math.nan,
        "k": k,
        "chance": k / a.size,
    }
