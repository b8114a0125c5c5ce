"""Percentile bootstrap confidence intervals (Efron & Tibshirani 1993) for accuracies and for the
paired difference steered − baseline on the same items."""
from __future__ import annotations

import torch


def bootstrap_ci(x: torch.Tensor, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of ``x`` (N,) with a percentile bootstrap."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("bootstrap_ci: empty sample")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.numel(), (n_boot, x.numel()), generator=g)
    means = x[idx].mean(1)
    a = (1 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([a, 1 - a], dtype=torch.float64)).tolist()
    return float(x.mean()), lo, hi


def paired_diff_ci(steered: torch.Tensor, base: torch.Tensor, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of steered − baseline, resampling items jointly."""
    s, b = torch.as_tensor(steered, dtype=torch.float64), torch.as_tensor(base, dtype=torch.float64)
    if s.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {tuple(s.shape)} vs {tuple(b.shape)}")
    return bootstrap_ci(s - b, n_boot, level, seed)
