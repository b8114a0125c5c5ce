"""Circuit component reuse across tasks (Merullo et al., arXiv 2310.08744): how much the heads
that matter for one task overlap with those of another, against chance.

Sets: the top-k heads by |effect| in each task (equal sizes) and the thresholded in-circuit sets.
Overlap: Jaccard |A∩B| / |A∪B| and |A∩B|; chance: the hypergeometric distribution of |A∩B| for
random sets of the same sizes among all heads (exact p-value), and a permutation baseline (random
sets, the mean Jaccard and the share at least as large as observed). Also the Spearman correlation
of |effect| over all heads.
"""

from __future__ import annotations

import torch
from scipy import stats


def top_k(effect: torch.Tensor, k: int) -> set[tuple[int, int]]:
    """The k heads with the largest |effect| (NaN counts as 0)."""
    L, H = effect.shape
    if not 1 <= k <= L * H:
        raise ValueError(f"k={k} must be in 1..{L * H} (heads)")
    flat = torch.nan_to_num(effect.abs().flatten(), nan=0.0)
    idx = torch.topk(flat, k).indices.tolist()
    return {(i // H, i % H) for i in idx}


def overlap(a: set, b: set, n_total: int, permutations: int = 10000, seed: int = 0) -> dict:
    """Jaccard / intersection of two head sets with a hypergeometric and a permutation baseline."""
    inter, union = len(a & b), len(a | b)
    jac = inter / union if union else float("nan")
    ka, kb = len(a), len(b)
    hyper = stats.hypergeom(n_total, ka, kb)
    g = torch.Generator().manual_seed(seed)
    ra = torch.rand(permutations, n_total, generator=g).argsort(1)[:, :ka]
    rb = torch.rand(permutations, n_total, generator=g).argsort(1)[:, :kb]
    ma = torch.zeros(permutations, n_total, dtype=torch.bool).scatter_(1, ra, True)
    mb = torch.zeros(permutations, n_total, dtype=torch.bool).scatter_(1, rb, True)
    ri = (ma & mb).sum(1).float()
    ru = (ma | mb).sum(1).float().clamp(min=1)
    rj = ri / ru
    return {
        "size_a": ka,
        "size_b": kb,
        "intersection": inter,
        "jaccard": jac,
        "expected_intersection": ka * kb / n_total,
        "p_hypergeom": float(hyper.sf(inter - 1)) if ka and kb else 1.0,
        "perm_mean_jaccard": float(rj.mean()),
        "perm_p": float(((rj >= jac).sum() + 1) / (permutations + 1)),
        "permutations": permutations,
    }


def reuse(
    effect_a: torch.Tensor,
    effect_b: torch.Tensor,
    k: int = 20,
    circuit_a: set | None = None,
    circuit_b: set | None = None,
    permutations: int = 10000,
    seed: int = 0,
) -> dict:
    """Overlap of the top-k heads (and of given in-circuit sets) of two tasks on one model."""
    if effect_a.shape != effect_b.shape:
        raise ValueError(f"effects of different models: {tuple(effect_a.shape)} vs {tuple(effect_b.shape)}")
    n = effect_a.numel()
    ta, tb = top_k(effect_a, k), top_k(effect_b, k)
    fa = torch.nan_to_num(effect_a.abs().flatten(), nan=0.0).numpy()
    fb = torch.nan_to_num(effect_b.abs().flatten(), nan=0.0).numpy()
    rho = stats.spearmanr(fa, fb)
    out = {
        "k": k,
        "n_heads": n,
        "top_k": overlap(ta, tb, n, permutations, seed),
        "shared_top_k": sorted(f"L{l}H{h}" for l, h in ta & tb),
        "spearman_abs_effect": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
    }
    if circuit_a is not None and circuit_b is not None:
        out["in_circuit"] = overlap(set(circuit_a), set(circuit_b), n, permutations, seed)
        out["shared_in_circuit"] = sorted(f"L{l}H{h}" for l, h in set(circuit_a) & set(circuit_b))
    return out
