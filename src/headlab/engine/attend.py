"""The engine: one entry point for every attention call headlab touches.

Path selection (docs/design.md):
  * nothing attached                 -> torch SDPA (``fast_sdpa``)
  * only probes with a fast form     -> SDPA + log-sum-exp statistics (``stats_path``), no maps
  * only a static pattern, no pads   -> ``headlab.kernels.sparse_attend`` (block-sparse)
  * anything else                    -> chunked eager loop over query blocks (``chunked_eager``):
        memory O(B · H · chunk · S), never O(T²) per head across layers.
The dense ``headlab.reference.reference_attention`` is the plain reference for all of them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .context import AttnContext
from .masks import causal_mask, check_qkv, expand_kv, pattern_rows, positions_from_mask, to_bool_mask

#: target size (elements) of one chunk of scores, B·H·chunk·S
CHUNK_ELEMENTS = 1 << 24


def default_chunk(B: int, H: int, T: int, S: int) -> int:
    return max(1, min(T, CHUNK_ELEMENTS // max(1, B * H * S)))


def make_context(q, k, causal, bmask, layer=0, n_layers=1, state=None) -> AttnContext:
    B, H, T, _ = q.shape
    S = k.shape[2]
    key_pos, query_pos = positions_from_mask(bmask, B, T, S, q.device)
    return AttnContext(layer, n_layers, H, k.shape[1], causal, key_pos, query_pos, state=state if state is not None else {})


def allowed_rows(idx, ctx: AttnContext, T: int, S: int, causal: bool, bmask, pattern, q, k, same_pos: bool = False) -> torch.Tensor:
    """Bool (B|1, 1|H, Tc, S) visibility for the queries ``idx`` (indices into 0..T-1).

    ``pattern`` must already be in query-head numbering (``for_heads``) when static; ``same_pos``:
    every row has the positions 0..S-1 (no padding), so a static pattern is evaluated once."""
    dev = idx.device
    allowed = torch.ones(1, 1, len(idx), S, dtype=torch.bool, device=dev)
    if causal:
        allowed = allowed & (torch.arange(S, device=dev)[None, :] <= (S - T + idx)[:, None])
    if bmask is not None:
        allowed = allowed & bmask[:, :, idx]
    if pattern is not None:
        rows_b = range(1) if same_pos and not pattern.dynamic else range(q.shape[0])
        rows = [pattern_rows(pattern, q[b : b + 1, :, idx], k[b : b + 1], ctx.query_pos[b, idx], ctx.key_pos[b]) for b in rows_b]
        allowed = allowed & torch.stack(rows)
    return allowed


def chunked_eager(q, k, v, scale, causal, bmask, pattern, edits, probes, ctx, chunk=None) -> torch.Tensor:
    """Exact attention over query chunks, with edits and probes; (B, H, T, d_v)."""
    B, H, T, _ = q.shape
    S = k.shape[2]
    kT = expand_kv(k, H).transpose(-1, -2).float()  # (B, H, d, S), cast once
    vf = expand_kv(v, H).float()
    if chunk is None:
        chunk = default_chunk(B, H, T, S)
    elif not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive number of queries (1..{T}), got {chunk!r}")
    same_pos = False
    if pattern is not None:
        if not pattern.dynamic:
            pattern = pattern.for_heads(H, k.shape[1])  # per-KV-head rules in query-head numbering
        same_pos = bool((ctx.key_pos == torch.arange(S, device=q.device)).all())
    if any(getattr(e, "needs_all_queries", False) for e in edits):
        chunk = T
    score_e = [e for e in edits if "scores" in e.stages()]
    weight_e = [e for e in edits if "weights" in e.stages()]
    out_e = [e for e in edits if "output" in e.stages()]
    out = q.new_empty(B, H, T, v.shape[-1])
    for t0 in range(0, T, chunk):
        idx = torch.arange(t0, min(T, t0 + chunk), device=q.device)
        ctx.q_index = idx
        s = torch.matmul(q[:, :, idx].float(), kT) * scale  # (B, H, Tc, S)
        s = s.masked_fill(~allowed_rows(idx, ctx, T, S, causal, bmask, pattern, q, k, same_pos), float("-inf"))
        for e in score_e:
            s = e.scores(s, ctx)
        a = torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)  # rows with no visible key -> 0
        for e in weight_e:
            a = e.weights(a, ctx)
        for p in probes:
            p.update(a, ctx)
        out[:, :, idx] = torch.matmul(a, vf).to(q.dtype)
    ctx.q_index = None
    for e in out_e:
        out = e.output(out, ctx)
    return out


def _sdpa(q, k, v, scale, causal, bmask) -> torch.Tensor:
    T, S = q.shape[2], k.shape[2]
    H = q.shape[1]
    ke, ve = expand_kv(k, H), expand_kv(v, H)
    if bmask is None and causal and T > 1:
        if T == S:
            return F.scaled_dot_product_attention(q, ke, ve, is_causal=True, scale=scale)
        bmask = causal_mask(T, S, q.device)[None, None]
    elif bmask is not None and causal:
        bmask = bmask & causal_mask(T, S, q.device)
    return F.scaled_dot_product_attention(q, ke, ve, attn_mask=bmask, scale=scale)


def stats_path(q, k, v, scale, causal, bmask, probes, ctx) -> torch.Tensor:
    """SDPA output plus per-query statistics from its log-sum-exp, without any map.

    With lse_i = log Σ_j exp(s_ij), A_ij = exp(s_ij − lse_i), so
      sink_i    = exp(s_i,first − lse_i),     prev_i = exp(s_i,i−1 − lse_i)
      entropy_i = lse_i − Σ_j A_ij s_ij  = lse_i − scale · q_i·(Σ_j A_ij k_j)
      distance_i = pos_i − Σ_j A_ij pos_j
    The weighted sums come from the same SDPA call with keys and positions appended to the
    values (q and k zero-padded to the same width, which leaves the scores unchanged).
    Uses the private op ``aten._scaled_dot_product_flash_attention_for_cpu`` (guarded by tests).
    """
    B, H, T, d = q.shape
    S = k.shape[2]
    need = set().union(*(p.fast_needs for p in probes))
    ke, ve = expand_kv(k, H), expand_kv(v, H)
    dv = ve.shape[-1]
    parts = [ve]
    if "entropy" in need:
        parts.append(ke)
    if "distance" in need:
        parts.append(ctx.key_pos.clamp(min=0).to(q.dtype)[:, None, :, None].expand(B, H, S, 1))
    vaug = torch.cat(parts, dim=-1) if len(parts) > 1 else ve
    width = max(d, vaug.shape[-1])
    qa = F.pad(q, (0, width - d))
    ka = F.pad(ke, (0, width - d))
    vaug = F.pad(vaug, (0, width - vaug.shape[-1]))
    allowed = None  # None: every key visible (bidirectional, no padding) or plain causal with T == S
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if not causal and bmask is None:
        o, lse = flash(qa, ka, vaug, 0.0, False, scale=scale)
    elif bmask is not None or T != S:
        allowed = torch.ones(B, 1, T, S, dtype=torch.bool, device=q.device)
        if causal:
            allowed = allowed & causal_mask(T, S, q.device)
        if bmask is not None:
            allowed = allowed & bmask
        add = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        o, lse = flash(qa, ka, vaug, 0.0, False, attn_mask=add, scale=scale)
    else:
        o, lse = flash(qa, ka, vaug, 0.0, True, scale=scale)
    lse = lse.float()  # (B, H, T)
    stats: dict[str, torch.Tensor] = {}
    qabs = torch.arange(S - T, S, device=q.device)
    qf = q.float()
    if "sink" in need:
        first = (ctx.key_pos == 0).float().argmax(dim=-1)  # (B,) index of each row's first real key
        k0 = ke[torch.arange(B), :, first].float()  # (B, H, d)
        s0 = torch.einsum("bhtd,bhd->bht", qf, k0) * scale
        vis0 = torch.ones(B, 1, T, dtype=torch.bool, device=q.device) if allowed is None else allowed[torch.arange(B), :, :, first]
        stats["sink"] = torch.where(vis0, torch.exp(s0 - lse), torch.zeros_like(s0))
    if "prev" in need:
        pidx = (qabs - 1).clamp(min=0)  # (T,)
        kp = ke[:, :, pidx].float()  # (B, H, T, d)
        sp = (qf * kp).sum(-1) * scale
        ok = (ctx.query_pos >= 1)[:, None, :]
        if allowed is not None:
            ok = ok & allowed[:, :, torch.arange(T, device=q.device), pidx]
        stats["prev"] = torch.where(ok, torch.exp(sp - lse), torch.zeros_like(sp))
    o = o.float()
    col = dv
    if "entropy" in need:
        ak = o[..., col : col + d]
        col += d
        stats["entropy"] = (lse - scale * (qf * ak).sum(-1)).clamp(min=0)
    if "distance" in need:
        stats["distance"] = ctx.query_pos.float()[:, None, :] - o[..., col]
    for p in probes:
        p.update_fast(stats, ctx)
    return o[..., :dv].to(q.dtype)


def stats_ok(q, probes, causal: bool) -> bool:
    """Whether every probe has a closed form next to SDPA (CPU only: it uses the flash op's lse)."""
    return q.device.type == "cpu" and bool(probes) and all(p.supports_fast(causal) for p in probes)


def select_path(q, edits, probes, pattern, bmask, causal: bool = True) -> str:
    if not edits and not probes and pattern is None:
        return "sdpa"
    if not edits and pattern is None and stats_ok(q, probes, causal):
        return "stats"
    if not edits and not probes and pattern is not None and bmask is None:
        return "sparse"  # static and dynamic patterns alike: block-sparse kernel, no padding
    return "eager"


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = True,
    attn_mask: torch.Tensor | None = None,
    pattern=None,
    edits: Sequence = (),
    probes: Sequence = (),
    ctx: AttnContext | None = None,
    chunk: int | None = None,
    path: str | None = None,
) -> torch.Tensor:
    """Attention with optional pattern, edits and probes.

    q (B, H, T, d), k/v (B, Hkv, S, d) with H a multiple of Hkv (GQA); the T queries are the
    last T of the S positions. ``attn_mask``: None, bool (B, 1|H, T, S) True = attend, or
    additive float. Returns (B, H, T, d). ``path`` forces "sdpa" | "stats" | "sparse" | "eager".
    """
    check_qkv(q, k, v)
    B, H, T, d = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    bmask = to_bool_mask(attn_mask)
    if bmask is not None:
        if bmask.dim() != 4 or bmask.shape[0] not in (1, B) or bmask.shape[1] not in (1, H) or bmask.shape[2] not in (1, T) \
                or bmask.shape[3] != S:
            raise ValueError(f"attn_mask {tuple(bmask.shape)} must broadcast to (B, 1|H, T, S) = ({B}, 1|{H}, {T}, {S})")
        bmask = bmask.expand(B, bmask.shape[1], T, S)
    if probes and any(isinstance(p, str) for p in probes):
        from .plugins import make_probe

        probes = [make_probe(p) if isinstance(p, str) else p for p in probes]
    path = path or select_path(q, edits, probes, pattern, bmask, causal)
    if path == "stats" and not stats_ok(q, probes, causal):
        raise ValueError("path='stats' needs CPU tensors and probes that all have a closed form here "
                         f"(got {[p.name for p in probes]} on {q.device.type}, causal={causal}); use path='eager'")
    if path in ("sdpa", "sparse") and (edits or probes):
        raise ValueError(f"path={path!r} cannot run edits or probes; use path='eager' (or 'stats' for probes)")
    if path == "sparse" and pattern is None:
        raise ValueError("path='sparse' needs a pattern")
    if ctx is None and path in ("stats", "eager"):
        ctx = make_context(q, k, causal, bmask)
    if path == "sdpa":
        return _sdpa(q, k, v, scale, causal, bmask)
    if path == "stats":
        return stats_path(q, k, v, scale, causal, bmask, probes, ctx)
    if path == "sparse":
        from .plugins import sparse_attend

        return sparse_attend(q, k, v, pattern, scale=scale, causal=causal)
    if path == "eager":
        return chunked_eager(q, k, v, scale, causal, bmask, pattern, list(edits), list(probes), ctx, chunk)
    raise ValueError(f"unknown path {path!r}: choose sdpa, stats, sparse or eager")
