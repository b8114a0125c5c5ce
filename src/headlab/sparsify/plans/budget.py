"""Budget arithmetic shared by every per-head planner: split a KV budget into full and streaming heads.

DuoAttention (Xiao et al., arXiv 2410.10819) and retrieval-head work (Wu et al., arXiv 2404.15574)
keep the full KV cache for a few "retrieval" heads and sink + window (StreamingLLM, arXiv
2309.17453) for the others. At length n a full head keeps n keys and a streaming head
min(n, sink + window), so with N KV heads of which k are full the plan's KV fraction is

    kv_fraction = (k + (N - k) * min(n, sink + w) / n) / N.

``split_budget`` spends ``full_share`` of the budget on full heads and solves w for the rest,
rounding so the achieved fraction never exceeds the budget.
"""

from __future__ import annotations

import math

FULL = {"pattern": "causal", "args": {}}
_EPS = 1e-9


def streaming(sink: int, window: int) -> dict:
    """The plan entry of a sink + window head."""
    return {"pattern": "sink_window", "args": {"sink": int(sink), "size": int(window)}}


def check_budget(budget) -> float:
    """``budget`` as a float in (0, 1]; ValueError naming the value otherwise."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or math.isnan(budget):
        raise ValueError(f"KV budget must be a number in (0, 1], got {budget!r}")
    if not 0 < budget <= 1:
        raise ValueError(f"KV budget must be in (0, 1], got {budget}")
    return float(budget)


def min_budget(length: int, sink: int = 64, min_window: int = 64) -> float:
    """The smallest KV fraction a plan of streaming heads sink + min_window can reach at ``length``."""
    return min(length, sink + min_window) / length


def split_budget(
    n_kv_total: int, budget: float, length: int, full_share: float = 0.6, sink: int = 64, min_window: int = 64
) -> tuple[int, int]:
    """(k full KV heads, streaming window w) so that the plan's kv_fraction is <= budget, as close as integers allow.

    k = floor(full_share * budget * n_kv_total), lowered until the remaining heads can afford
    sink + min_window keys each; w is the largest window with
    k + (N - k) * min(n, sink + w) / n <= budget * N (never above n - sink, where a streaming head
    already keeps everything). ``full_share = 0`` gives a uniform plan (k = 0).
    """
    if isinstance(n_kv_total, bool) or not isinstance(n_kv_total, int) or n_kv_total < 1:
        raise ValueError(f"n_kv_total must be an integer >= 1, got {n_kv_total!r}")
    b = check_budget(budget)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    if isinstance(full_share, bool) or not isinstance(full_share, (int, float)) or not 0 <= full_share <= 1:
        raise ValueError(f"full_share must be in [0, 1], got {full_share!r}")
    if isinstance(sink, bool) or not isinstance(sink, int) or sink < 0:
        raise ValueError(f"sink must be an integer >= 0, got {sink!r}")
    if isinstance(min_window, bool) or not isinstance(min_window, int) or min_window < 1:
        raise ValueError(f"min_window must be an integer >= 1, got {min_window!r}")
    N, n = n_kv_total, length
    floor_frac = min_budget(n, sink, min_window)
    if b + _EPS < floor_frac:
        raise ValueError(
            f"KV budget {b} is below what sink {sink} + window {min_window} keep at length {n}: "
            f"valid budgets are [{floor_frac:.4f}, 1] (or lower --sink / min_window)"
        )
    k = math.floor(full_share * b * N + _EPS)
    while k > 0 and k + (N - k) * floor_frac > b * N + _EPS:
        k -= 1
    cap = max(min_window, n - sink)
    if k >= N:
        return N, cap
    per_head = (b * N - k) * n / (N - k)  # keys each streaming head may keep
    w = math.floor(per_head + _EPS) - sink
    return k, max(min_window, min(w, cap))


def kv_fraction_of(n_kv_total: int, k: int, window: int, length: int, sink: int = 64) -> float:
    """The KV fraction of k full heads and N - k streaming heads sink + window at ``length``."""
    return (k + (n_kv_total - k) * min(length, sink + window) / length) / n_kv_total
