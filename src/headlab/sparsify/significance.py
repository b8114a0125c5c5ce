"""How sure a passkey count is: Wilson score intervals for an accuracy and an exact McNemar test
for two configurations scored on the same prompts (both from ``scipy.stats``).

    wilson_interval(16, 20)              # (0.584, 0.919): 95 % interval for 16/20
    mcnemar_exact([1, 1, 0, 1], [0, 0, 0, 1])   # paired: b = 2 (only a right), c = 0, p = 0.5

With 20 prompts an interval is wide (16/20 -> 58-92 %): two configurations differ credibly only
when their paired discordant counts are lopsided, which is what McNemar's test measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials (scipy's binomtest)."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class McNemar:
    only_a: int  # pairs where a is right and b is wrong
    only_b: int  # pairs where b is right and a is wrong
    pvalue: float  # two-sided exact test: only_a ~ Binomial(only_a + only_b, 1/2) under "no difference"


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Exact (binomial) McNemar test of two paired outcome lists, e.g. a sparse config vs dense on
    the same passkey prompts. Only discordant pairs carry information; with none, p = 1."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError(f"paired outcomes must have the same length, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if bool(x) and not bool(y))
    only_b = sum(1 for x, y in zip(a, b) if bool(y) and not bool(x))
    d = only_a + only_b
    p = 1.0 if d == 0 else float(binomtest(only_a, d, 0.5, alternative="two-sided").pvalue)
    return McNemar(only_a, only_b, min(1.0, p))
