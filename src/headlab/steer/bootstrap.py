"""Intervals for steering results, from scipy (see :mod:`headlab.stats`).

* :func:`bootstrap_ci` — (mean, low, high) of a sample mean with a percentile bootstrap
  (``scipy.stats.bootstrap``); for 0/1 accuracies prefer :func:`accuracy_ci` (Wilson score interval).
* :func:`paired_diff_ci` — (mean, low, high) of steered − baseline on the same items, paired bootstrap.
* :func:`accuracy_ci` / :func:`paired_test` — the dict forms with item counts and McNemar's exact test.
"""

from __future__ import annotations

from ..stats import bootstrap_mean, paired_difference, proportion


def bootstrap_ci(x, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of ``x`` (N,) with a percentile bootstrap (:func:`headlab.stats.bootstrap_mean`)."""
    return bootstrap_mean(x, n_boot, level, seed)


def paired_diff_ci(steered, base, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of steered − baseline, resampling items jointly (scipy's paired bootstrap)."""
    d = paired_difference(steered, base, level, n_boot, seed)
    return d["value"], d["ci"][0], d["ci"][1]


def accuracy_ci(correct, level: float = 0.95) -> dict:
    """Accuracy of a 0/1 sample with its Wilson interval and item count."""
    return proportion(correct, level=level)


def paired_test(steered, base, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired difference with bootstrap interval, item count and (0/1 data) McNemar's exact p-value."""
    return paired_difference(steered, base, level, n_boot, seed)
