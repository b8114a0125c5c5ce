"""Block plans for static patterns: which key blocks each query block needs, plus the additive
mask (0 / -inf) of the gathered entries. Built once per (pattern, lengths, heads, block, causal)
and cached on the pattern, like FlexAttention's ``create_block_mask``; the build cost is
reported separately by ``headlab bench kernels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..patterns.base import Pattern


@dataclass
class Plan:
    """Gather plan.

    shared: the layout is the same for the G query heads of a KV head (heads dim = 1 or Hkv),
        so the kernel works in KV-head space with G*block query rows per block.
    idx: (h, nq, K) long key-block indices, allowed blocks first; padding slots point at block ``nk``.
    counts: (nq,) long, the most blocks any head needs for each query block (chunks only compute
        up to their own maximum, so a triangular layout does not pay for its widest row).
    head_counts: (h, nq) long, the blocks each head needs (heterogeneous heads run one by one).
    bias: (h, nq, block, K*block) float, 0 where allowed, -inf elsewhere.
    empty_rows: some real query row has no allowed key (output 0 there).
    pairs: allowed (i, j) pairs per head (mean over heads); gathered: (i, j) entries computed.
    """

    shared: bool
    heads: int
    block: int
    nq: int
    nk: int
    idx: torch.Tensor
    counts: torch.Tensor
    head_counts: torch.Tensor
    bias: torch.Tensor
    empty_rows: bool
    pairs: float
    gathered: float


def plan_heads(pattern: Pattern, n_heads: int, n_kv_heads: int) -> tuple[Pattern, bool]:
    """The pattern to evaluate and whether its heads are KV heads (shared within a group)."""
    if not pattern.n_heads:
        return pattern, True
    if pattern.kv_per_head:
        if pattern.n_heads != n_kv_heads:
            raise ValueError(
                f"{pattern.describe()} is defined per KV head with {pattern.n_heads} heads, but k/v have {n_kv_heads} heads"
            )
        return pattern, True
    return pattern.for_heads(n_heads, n_kv_heads), False


def build_plan(pattern: Pattern, T: int, S: int, n_heads: int, n_kv_heads: int, block: int, causal: bool, device=None) -> Plan:
    key = (T, S, n_heads, n_kv_heads, block, causal, str(device))
    cache = pattern.__dict__.setdefault("_plan_cache", {})
    if key in cache:
        return cache[key]
    p, shared = plan_heads(pattern, n_heads, n_kv_heads)
    h = p.heads
    layout = p.block_layout(T, S, block, causal=causal)  # (h, nq, nk)
    nq, nk = layout.shape[1], layout.shape[2]
    counts = layout.sum(-1)
    K = max(1, int(counts.max()))
    order = torch.argsort((~layout).to(torch.int8), dim=-1, stable=True)[..., :K]  # allowed first, ascending
    slot_ok = torch.arange(K).view(1, 1, K) < counts.unsqueeze(-1)
    idx = torch.where(slot_ok, order, torch.full_like(order, nk))
    qp = (S - T + torch.arange(nq * block)).view(1, nq, block, 1)
    kp = (idx.unsqueeze(-1) * block + torch.arange(block)).view(h, nq, 1, K * block)
    hh = torch.arange(h).view(h, 1, 1, 1)
    allowed = p.rule(hh, qp, kp, S) & (kp < S)
    if causal:
        allowed = allowed & (kp <= qp)
    allowed = allowed.expand(h, nq, block, K * block)
    real_row = (qp < S).expand_as(allowed)
    empty = bool((~allowed.any(-1) & real_row[..., 0]).any())
    bias = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, float("-inf"))
    plan = Plan(
        shared=shared,
        heads=h,
        block=block,
        nq=nq,
        nk=nk,
        idx=idx.to(device),
        counts=counts.amax(0),
        head_counts=counts,
        bias=bias.to(device),
        empty_rows=empty,
        pairs=float((allowed & real_row).sum()) / h,
        gathered=float(nq * block * K * block),
    )
    if len(cache) > 16:
        cache.pop(next(iter(cache)))
    cache[key] = plan
    return plan
