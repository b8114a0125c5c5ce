"""Every interval and paired test headlab reports, in one place, from scipy (no hand-written statistics).

* :func:`proportion` — a proportion k/n with its Wilson score interval (Wilson 1927) or the exact
  Clopper–Pearson interval; 0/16 gives [0, 0.19], never [0, 0]. :func:`wilson` is its (low, high).
* :func:`mcnemar_exact` — the exact McNemar test (McNemar 1947) of two paired 0/1 outcome lists: a
  binomial test on the discordant pairs; with none, p = 1.
* :func:`paired_difference` — mean of paired differences a_i − b_i on the same items with a paired
  percentile bootstrap interval (``scipy.stats.bootstrap(paired=True)``) and, for 0/1 outcomes, McNemar.
* :func:`bootstrap_mean` — (mean, low, high) of a sample mean, percentile bootstrap.

Every dict result is ``{"value", "ci": [lo, hi], "n", ...}`` so the item count always travels with the
number. With 20 prompts an interval is wide (16/20 -> 58-92 %): two configurations differ credibly only
when their paired discordant counts are lopsided, which is what McNemar's test measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

METHODS = ("wilson", "exact")


@dataclass(frozen=True)
class McNemar:
    only_a: int  # pairs where a is right and b is wrong
    only_b: int  # pairs where b is right and a is wrong
    pvalue: float  # two-sided exact test: only_a ~ Binomial(only_a + only_b, 1/2) under "no difference"


def mcnemar_exact(a: Sequence, b: Sequence) -> McNemar:
    """Exact (binomial) McNemar test of two paired outcome lists, e.g. a sparse config vs dense on the same
    passkey prompts. Only discordant pairs carry information; with none, p = 1."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes must have the same length, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if bool(x) and not bool(y))
    only_b = sum(1 for x, y in zip(a, b) if bool(y) and not bool(x))
    d = only_a + only_b
    p = 1.0 if d == 0 else float(stats.binomtest(only_a, d, 0.5, alternative="two-sided").pvalue)
    return McNemar(only_a, only_b, min(1.0, p))


def _array(x, name: str) -> np.ndarray:
    a = np.asarray(getattr(x, "numpy", lambda: x)() if hasattr(x, "detach") else x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: empty sample (need >= 1 item)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: sample has non-finite values")
    return a


def proportion(k: int | Sequence[float], n: int | None = None, level: float = 0.95, method: str = "wilson") -> dict:
    """k successes of n (or a 0/1 sample as ``k``) -> {"value": k/n, "ci": [lo, hi], "n": n, "k": k}."""
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    if method not in METHODS:
        raise ValueError(f"method={method!r}; valid: {METHODS}")
    if n is None:
        a = _array(k, "proportion")
        if not np.all((a == 0) | (a == 1)):
            raise ValueError("proportion: a sample must hold only 0/1 outcomes")
        k, n = int(a.sum()), int(a.size)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"proportion: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method=method)
    return {"value": k / n, "ci": [float(ci.low), float(ci.high)], "n": n, "k": k, "interval": f"{method} {round(level * 100)}%"}


def paired_difference(a, b, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of a_i − b_i (same items) with a paired percentile bootstrap interval; McNemar for 0/1 data."""
    x, y = _array(a, "paired_difference a"), _array(b, "paired_difference b")
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    d = x - y
    out = {"value": float(d.mean()), "n": int(d.size), "interval": f"paired bootstrap {round(level * 100)}%"}
    if np.all(d == d[0]) or d.size < 2:
        out["ci"] = [float(d[0]), float(d[0])] if np.all(d == d[0]) else [float("nan")] * 2
    else:
        res = stats.bootstrap(
            (x, y),
            lambda u, v, axis=-1: (u - v).mean(axis),
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=level,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        out["ci"] = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    if np.all(np.isin(x, (0, 1))) and np.all(np.isin(y, (0, 1))):
        m = mcnemar_exact(x == 1, y == 1)
        out.update({"a_only": m.only_a, "b_only": m.only_b, "mcnemar_p": m.pvalue})
    return out


def fmt(num: dict, scale: float = 1.0, digits: int = 1, signed: bool = False) -> str:
    """'68.0 [60.7, 74.7] (n=150)' for a number dict (``scale=100`` for percent)."""
    s = "+" if signed else ""
    v = f"{num['value'] * scale:{s}.{digits}f}"
    if num.get("ci") and all(np.isfinite(num["ci"])):
        lo, hi = (c * scale for c in num["ci"])
        v += f" [{lo:{s}.{digits}f}, {hi:{s}.{digits}f}]"
    if "k" in num:
        v += f" ({num['k']}/{num['n']})"
    elif "n" in num:
        v += f" (n={num['n']})"
    return v


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval of k/n (the ``ci`` of :func:`proportion`)."""
    lo, hi = proportion(k, n, level)["ci"]
    return lo, hi


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials (the same as :func:`wilson`)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return wilson(k, n, confidence)


def bootstrap_mean(x, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of ``x`` (N,) with a percentile bootstrap (scipy)."""
    a = _array(x, "bootstrap_mean")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    if np.all(a == a[0]):
        return float(a[0]), float(a[0]), float(a[0])
    res = stats.bootstrap(
        (a,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(a.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)
