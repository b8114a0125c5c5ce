"""The exact McNemar power (``headlab.sparsify.eval.power``) against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
from scipy import stats

from headlab.sparsify.eval.power import detectable_difference, power, power_table


def _brute(n: int, p10: float, p01: float, alpha: float) -> float:
    """Sum over every (n10, n01, n_same) outcome of the multinomial whose exact two-sided test rejects."""
    total = 0.0
    same = 1 - p10 - p01
    for a, b in itertools.product(range(n + 1), repeat=2):
        if a + b > n:
            continue
        prob = math.comb(n, a) * math.comb(n - a, b) * p10**a * p01**b * same ** (n - a - b)
        d = a + b
        if d and stats.binomtest(a, d, 0.5).pvalue < alpha:
            total += prob
    return total


@pytest.mark.parametrize("n,p10,p01", [(12, 0.3, 0.05), (15, 0.2, 0.2), (10, 0.5, 0.0), (20, 0.1, 0.3)])
def test_power_equals_enumeration(n, p10, p01):
    assert power(n, p10, p01) == pytest.approx(_brute(n, p10, p01, 0.05), abs=1e-9)


def test_detectable_difference_shrinks_with_items():
    ds = [detectable_difference(n, 0.3) for n in (40, 80, 160)]
    assert ds[0] > ds[1] > ds[2] > 0
    d = ds[1]
    assert power(80, (0.3 + d) / 2, (0.3 - d) / 2) >= 0.8 > power(80, (0.3 + 0.9 * d) / 2, (0.3 - 0.9 * d) / 2)
    assert math.isnan(detectable_difference(10, 0.1))  # 10 items disagreeing 10 % of the time cannot reach 80 %
    assert [r["n"] for r in power_table([20, 40], [0.2])] == [20, 40]


def test_bad_values():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        power(0, 0.1, 0.1)
    with pytest.raises(ValueError, match="discordance must be in"):
        power(10, 0.8, 0.5)
    with pytest.raises(ValueError, match="target power"):
        detectable_difference(10, 0.2, target=1.5)
