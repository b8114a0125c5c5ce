"""Dense, naive attention with masks, patterns and edits — the plain reference for tests.

It materialises the full (B, H, T, S) score matrix; never use it on long inputs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .context import AttnContext
from .masks import causal_mask, check_qkv, expand_kv, pattern_rows, positions_from_mask, to_bool_mask


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = True,
    attn_mask: torch.Tensor | None = None,
    pattern=None,
    edits: Sequence = (),
    ctx: AttnContext | None = None,
    return_weights: bool = False,
):
    """softmax(q·kᵀ·scale + mask)·v with edits at scores / weights / output.

    q (B, H, T, d), k/v (B, Hkv, S, d) -> (B, H, T, d) [and weights (B, H, T, S)].
    """
    check_qkv(q, k, v)
    B, H, T, d = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    bmask = to_bool_mask(attn_mask)
    if ctx is None:
        key_pos, query_pos = positions_from_mask(bmask, B, T, S, q.device)
        ctx = AttnContext(0, 1, H, k.shape[1], causal, key_pos, query_pos)
    ke, ve = expand_kv(k, H).double(), expand_kv(v, H).double()
    s = torch.einsum("bhtd,bhsd->bhts", q.double(), ke) * scale
    allowed = torch.ones(B, 1, T, S, dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed & causal_mask(T, S, q.device)
    if bmask is not None:
        allowed = allowed & bmask
    if pattern is not None:
        if not getattr(pattern, "dynamic", False):
            pattern = pattern.for_heads(H, k.shape[1])
        rows = [pattern_rows(pattern, q[b : b + 1], k[b : b + 1], ctx.query_pos[b], ctx.key_pos[b]) for b in range(B)]
        allowed = allowed & torch.stack(rows)
    s = s.masked_fill(~allowed, float("-inf"))
    ctx.q_index = torch.arange(T, device=q.device)
    for e in edits:
        s = e.scores(s, ctx)
    a = torch.softmax(s, dim=-1)
    a = torch.nan_to_num(a, nan=0.0)  # rows with no visible key
    for e in edits:
        a = e.weights(a, ctx)
    o = torch.einsum("bhts,bhsd->bhtd", a, ve)
    ctx.q_index = None
    for e in edits:
        o = e.output(o, ctx)
    o = o.to(q.dtype)
    return (o, a.to(q.dtype)) if return_weights else o
