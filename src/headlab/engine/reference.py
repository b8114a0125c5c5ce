"""Dense, naive attention with masks, patterns, edits and the model variants (sliding window,
logit soft-capping, learned sink logits; ``headlab.engine.scores``) — the plain reference for tests.

It materialises the full (B, H, T, S) score matrix; never use it on long inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .context import AttnContext
from .masks import causal_mask, check_qkv, expand_kv, pattern_rows, positions_from_mask, to_bool_mask
from .scores import check_variant


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
    window: int | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
):
    """softmax(cap(q·kᵀ·scale) + mask)·v with edits at scores / weights / output.

    q (B, H, T, d), k/v (B, Hkv, S, d) -> (B, H, T, d) [and weights (B, H, T, S)].
    ``window``: query at key index p sees keys p - window < j <= p (causal only); ``softcap``:
    cap(s) = softcap·tanh(s / softcap); ``sinks`` (H,): an extra logit per head in the softmax
    denominator, with no value (the weights of the S keys then sum to less than 1).
    """
    check_qkv(q, k, v)
    B, H, T, d = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    check_variant(window, softcap, sinks, H, causal)
    bmask = to_bool_mask(attn_mask)
    if ctx is None:
        key_pos, query_pos = positions_from_mask(bmask, B, T, S, q.device)
        ctx = AttnContext(0, 1, H, k.shape[1], causal, key_pos, query_pos)
    ke, ve = expand_kv(k, H).double(), expand_kv(v, H).double()
    s = torch.einsum("bhtd,bhsd->bhts", q.double(), ke) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    allowed = torch.ones(B, 1, T, S, dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed & causal_mask(T, S, q.device)
        if window is not None:
            i = torch.arange(S - T, S, device=q.device)[:, None]
            j = torch.arange(S, device=q.device)[None, :]
            allowed = allowed & (i - j < window)
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
    if sinks is None:
        a = torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)  # rows with no visible key
    else:  # explicit denominator: Σ_j exp(s_ij) + exp(sink_h)
        m = torch.maximum(s.amax(-1, keepdim=True), sinks.double()[None, :, None, None])
        e = torch.exp(s - m)
        a = e / (e.sum(-1, keepdim=True) + torch.exp(sinks.double()[None, :, None, None] - m))
    for e in edits:
        a = e.weights(a, ctx)
    o = torch.einsum("bhts,bhsd->bhtd", a, ve)
    ctx.q_index = None
    for e in edits:
        o = e.output(o, ctx)
    o = o.to(q.dtype)
    return (o, a.to(q.dtype)) if return_weights else o
