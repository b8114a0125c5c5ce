"""MoA's elastic rules and their per-head choice under a KV budget (Fu et al., arXiv 2406.14909, Sec. 4.2).

A rule (alpha, beta) gives a head a sink plus a causal band of width w(N) = round(alpha + beta * N)
at N keys; the "full" rule (beta = 1) keeps every key. At profiled length L, the loss of a rule
is the profiled influence mass at key distances >= w(L) (sink keys are always kept, so their mass
never counts): ``tail[w]`` of the per-distance histogram.

MoA profiles at several lengths and keeps the rule's loss at every profiled length as an
objective. The target length N here (8K) is longer than what a 2-core CPU can profile (1-2K),
so the loss at N is extrapolated from the longest profile Lmax, per head, as a mix of two
scalings of its tail: "absolute" (the head's influence sits at fixed distances: loss_N(w) =
tail_Lmax(w)) and "relative" (it scales with the context: loss_N(w) = tail_Lmax(w * Lmax / N)).
The mix weight of each head is fitted on how well each scaling predicts the Lmax profile from
the shortest one. Each length's losses are divided by that length's total mass, and the
objective is their mean over the profiled lengths and N (a scalarisation of MoA's multi-objective
programme). The choice is a multiple-choice knapsack solved exactly with ``scipy.optimize.milp``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: candidate alphas and betas; the full rule is added separately (beta = 1)
DEFAULT_ALPHAS = (0, 64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_BETAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75)
FULL_RULE = (0.0, 1.0)


def width(rule: tuple[float, float], n: int) -> int:
    """Band width of ``rule`` at ``n`` keys (as ``patterns.moa`` rounds it); n for the full rule."""
    if tuple(rule) == FULL_RULE:
        return n
    return int(round(rule[0] + rule[1] * n))


def kept(rule, n: int, sink: int) -> int:
    """Keys a head with ``rule`` keeps at ``n``: min(n, sink + width)."""
    return n if tuple(rule) == FULL_RULE else min(n, sink + width(rule, n))


def candidate_rules(length: int, sink: int, lengths=(), alphas=DEFAULT_ALPHAS, betas=DEFAULT_BETAS) -> list[tuple[float, float]]:
    """The streaming rules worth considering at target ``length`` plus the full rule (last).

    As in MoA's search space, a rule is valid if its band is >= 1 at the shortest length and no
    wider than the longest profiled length there (a wider band is beyond what the profile can
    judge); it must also keep fewer than ``length`` keys at ``length`` (else it is the full rule)."""
    out = []
    lmax = max(lengths) if len(lengths) else None
    for b in betas:
        for a in alphas:
            rule = (float(a), float(b))
            if not 0.0 <= rule[1] < 1.0:
                raise ValueError(f"beta must be in [0, 1) for a streaming rule, got {b}")
            if width(rule, min((*lengths, length))) < 1:
                continue
            if lmax is not None and width(rule, lmax) > lmax:
                continue
            if sink + width(rule, length) >= length:
                continue
            if rule not in out:
                out.append(rule)
    out.sort(key=lambda r: (kept(r, length, sink), r))
    return out + [FULL_RULE]


def tails(hist: torch.Tensor) -> torch.Tensor:
    """(..., L) per-distance mass -> (..., L + 1) with tail[w] = sum of mass at distances >= w."""
    h = hist.double()
    rev = torch.flip(h, dims=[-1]).cumsum(-1)
    return torch.cat([torch.flip(rev, dims=[-1]), torch.zeros(*h.shape[:-1], 1, dtype=torch.float64)], dim=-1)


def _at(tail: torch.Tensor, w) -> torch.Tensor:
    """tail[..., min(w, L)] for a scalar w."""
    L = tail.shape[-1] - 1
    return tail[..., max(0, min(int(w), L))]


def relative_weight(hists: dict[int, torch.Tensor]) -> torch.Tensor:
    """(K,) weight of the "relative" scaling per head, from the shortest to the longest profile.

    Errors are summed over 64 widths evenly spread over [0, Lmax); 0.5 where both scalings fit
    equally or only one length was profiled."""
    lengths = sorted(hists)
    K = next(iter(hists.values())).shape[0]
    if len(lengths) < 2:
        return torch.full((K,), 0.5, dtype=torch.float64)
    lo, hi = lengths[0], lengths[-1]
    t_lo, t_hi = tails(hists[lo]), tails(hists[hi])
    t_lo = t_lo / t_lo[:, :1].clamp_min(1e-30)  # share of the mass beyond w
    t_hi = t_hi / t_hi[:, :1].clamp_min(1e-30)
    ws = np.unique(np.linspace(0, hi - 1, 64).round().astype(int))
    err_abs = sum((t_hi[:, w] - _at(t_lo, w)).abs() for w in ws)
    err_rel = sum((t_hi[:, w] - _at(t_lo, round(w * lo / hi))).abs() for w in ws)
    tot = err_abs + err_rel
    return torch.where(tot > 0, err_abs / tot.clamp_min(1e-30), torch.full_like(tot, 0.5))


def rule_losses(hists: dict[int, torch.Tensor], rules, length: int) -> tuple[torch.Tensor, dict]:
    """(K, R) objective per head and rule, and the parts {"L=<n>": (K, R), "target": (K, R), "relative": (K,)}.

    ``hists``: {profiled length: (K, length) mass by distance} for K heads (sink keys excluded)."""
    if not hists:
        raise ValueError("need at least one profiled length")
    lengths = sorted(hists)
    K = next(iter(hists.values())).shape[0]
    parts: dict = {}
    for n in lengths:
        t = tails(hists[n])
        total = float(t[:, 0].sum()) or 1.0
        parts[f"L={n}"] = torch.stack([_at(t, width(r, n)) for r in rules], dim=1) / total
    if length in hists:
        parts["target"] = parts[f"L={length}"]
        rel = torch.zeros(K, dtype=torch.float64)
    else:
        hi = lengths[-1]
        t = tails(hists[hi])
        total = float(t[:, 0].sum()) or 1.0
        rel = relative_weight(hists)
        cols = []
        for r in rules:
            w = width(r, length)
            if tuple(r) == FULL_RULE:
                cols.append(torch.zeros(K, dtype=torch.float64))
                continue
            cols.append((1 - rel) * _at(t, w) + rel * _at(t, round(w * hi / length)))
        parts["target"] = torch.stack(cols, dim=1) / total
    parts["relative"] = rel
    objs = [parts[f"L={n}"] for n in lengths] + ([] if length in hists else [parts["target"]])
    return torch.stack(objs).mean(0), parts


def choose(loss, keys, budget: float, n: int) -> np.ndarray:
    """Per head k, the rule r_k minimising sum_k loss[k, r_k] with mean_k keys[k, r_k] / n <= budget.

    loss (K, R) floats; keys (K, R) or (R,) integers (keys a head keeps at length n). Exact:
    a multiple-choice knapsack as a 0/1 programme for ``scipy.optimize.milp`` (HiGHS), with the
    budget in whole keys (sum of kept keys <= floor(budget * K * n)). Among equal losses the
    cheaper choice wins. ValueError if even the cheapest rules exceed the budget."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    loss = np.asarray(loss, dtype=np.float64)
    if loss.ndim != 2:
        raise ValueError(f"loss must be (heads, rules), got shape {loss.shape}")
    keys = np.broadcast_to(np.asarray(keys), loss.shape)
    if not np.issubdtype(keys.dtype, np.integer):
        raise ValueError("keys must be integers (keys kept at length n)")
    K, R = loss.shape
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ValueError(f"KV budget must be in (0, 1], got {budget!r}")
    cap = math.floor(budget * K * n + 1e-9)
    cheapest = int(keys.min(1).sum())
    if cheapest > cap:
        raise ValueError(
            f"KV budget {budget} is below the cheapest candidate rules' kv_fraction {cheapest / (K * n):.4f} at length {n}"
        )
    scale = max(1e-30, float(np.abs(loss).max()))
    # tie-break: a cost term far below any loss difference that matters (relative 1e-9)
    c = (loss + 1e-9 * scale * keys / (K * n)).reshape(-1)
    one = np.zeros((K, K * R))
    for k in range(K):
        one[k, k * R : (k + 1) * R] = 1.0
    cons = [LinearConstraint(one, 1.0, 1.0), LinearConstraint(keys.reshape(1, -1).astype(np.float64), -np.inf, cap)]
    res = milp(c, constraints=cons, integrality=np.ones(K * R), bounds=Bounds(0, 1), options={"disp": False, "mip_rel_gap": 0.0})
    if res.x is None:
        raise ValueError(f"no rule assignment meets KV budget {budget} ({res.message})")
    pick = np.asarray(res.x).reshape(K, R).argmax(1)
    used = int(keys[np.arange(K), pick].sum())
    if used > cap:  # never hand back a plan over budget, whatever the solver's tolerance
        raise ValueError(f"solver returned kv_fraction {used / (K * n):.6f} above budget {budget}")
    return pick


def kept_keys(rules, length: int, sink: int) -> np.ndarray:
    """(R,) keys each rule keeps at ``length``."""
    return np.array([kept(r, length, sink) for r in rules], dtype=np.int64)


def check_rules_grid(alphas, betas) -> None:
    for a in alphas:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or a < 0 or math.isnan(a):
            raise ValueError(f"alphas must be numbers >= 0, got {a!r}")
    for b in betas:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1:
            raise ValueError(f"betas must be numbers in [0, 1) (the full rule is always a candidate), got {b!r}")
