"""Gather-by-block sparse attention: for each query block, copy only the key/value blocks its
plan (static) or selection (dynamic) names, then run dense attention on them. Empty blocks are
never read. Query blocks are processed in chunks so scores stay cache-sized.

Under GQA, when the layout is shared by the G query heads of a KV head, the G heads are stacked
as G*block query rows against one gathered KV block set (one gather per KV head, bigger GEMMs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..patterns.dynamic import Selection
from .plan import Plan

CHUNK_ELEMS = 1 << 21  # score entries per chunk (8 MB fp32)


def _blocks(x: torch.Tensor, unit: int) -> torch.Tensor:
    """(B,Hkv,S,d) -> (B,Hkv,nu+1,unit,d): zero-padded to whole units plus one zero unit for padding slots."""
    B, Hkv, S, d = x.shape
    nu = -(-S // unit)
    x = F.pad(x, (0, 0, 0, (nu + 1) * unit - S))
    return x.view(B, Hkv, nu + 1, unit, d)


def _attend_chunk(qc, kc, vc, bias, fix_nan: bool, group: int = 1):
    """qc (..., G*bl, d) scaled; kc/vc (..., L, d) with the same batch dims (no broadcasting, so no
    hidden copies); bias broadcastable to (..., G, bl, L) when ``group`` > 1, else to (..., bl, L)."""
    s = torch.matmul(qc, kc.transpose(-1, -2))
    if group > 1:
        s.view(*s.shape[:-2], group, s.shape[-2] // group, s.shape[-1]).add_(bias)
    else:
        s.add_(bias)
    p = torch.softmax(s, -1)
    if fix_nan:
        p = p.nan_to_num_(0.0)
    return torch.matmul(p, vc)


def _rows(q, shared: bool, Hkv: int, block: int, nq: int, front: int = 0):
    """q (B,H,T,d) -> query rows per block: shared (B,Hkv,nq,G*block,d) or (B,H,nq,block,d)."""
    B, H, T, d = q.shape
    q = F.pad(q, (0, 0, front, nq * block - T - front))
    if not shared:
        return q.view(B, H, nq, block, d)
    G = H // Hkv
    return q.view(B, Hkv, G, nq, block, d).permute(0, 1, 3, 2, 4, 5).reshape(B, Hkv, nq, G * block, d)


def _unrows(o, shared: bool, H: int, T: int, block: int, front: int = 0):
    B, hh, nq, R, d = o.shape
    if shared:
        G = H // hh
        o = o.view(B, hh, nq, G, block, d).permute(0, 1, 3, 2, 4, 5)
    return o.reshape(B, H, nq * block, d)[:, :, front : front + T]


SPLIT_HEADS_BELOW = 0.75  # run heads one by one when that computes < 75 % of the joint work


def _head_work(plan: Plan) -> tuple[int, int]:
    """(blocks computed with all heads chunked together, blocks computed head by head)."""
    per_head = plan.head_counts  # (h, nq)
    return int(per_head.amax(0).sum()) * plan.heads, int(per_head.sum())


def gather_static(q, k, v, plan: Plan, scale: float, split_heads: bool | None = None) -> torch.Tensor:
    """Sparse attention following a static ``Plan``. q (B,H,T,d), k/v (B,Hkv,S,d) -> (B,H,T,d).

    Heads whose layouts need very different numbers of key blocks (MoA's per-head spans, per-head
    windows) are run one head at a time, so a narrow head does not compute the widest head's
    blocks; ``split_heads`` forces either way (None: when it saves > 25 % of the blocks)."""
    B, H, T, d = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    bl, nq = plan.block, plan.nq
    qr = _rows(q * scale, plan.shared, Hkv, bl, nq)  # (B,hh,nq,R,d)
    hh, R = qr.shape[1], qr.shape[3]
    kb, vb = _blocks(k, bl), _blocks(v, bl)  # (B,Hkv,nk+1,bl,d)
    K = plan.idx.shape[-1]
    if plan.shared:
        hsel = torch.arange(Hkv, device=q.device).view(-1, 1, 1) if plan.heads > 1 else None
    else:
        hsel = torch.div(torch.arange(H, device=q.device), G, rounding_mode="floor").view(-1, 1, 1)
    bias = plan.bias
    grouped = plan.shared and G > 1
    if grouped:
        bias = bias.view(plan.heads, nq, 1, bl, K * bl)  # broadcast over the G stacked heads
    out = torch.empty(B, hh, nq, R, d, dtype=q.dtype, device=q.device)
    if split_heads is None:
        joint, split = _head_work(plan)
        split_heads = plan.heads > 1 and split < SPLIT_HEADS_BELOW * joint
    group = G if grouped else 1
    if split_heads and plan.heads > 1:
        for h in range(plan.heads):
            _chunks(
                qr[:, h : h + 1],
                kb,
                vb,
                plan.idx[h : h + 1],
                None if hsel is None else hsel[h : h + 1],
                bias[h : h + 1],
                plan.head_counts[h].tolist(),
                plan.empty_rows,
                group,
                out[:, h : h + 1],
            )
    else:
        _chunks(qr, kb, vb, plan.idx, hsel, bias, plan.counts.tolist(), plan.empty_rows, group, out)
    return _unrows(out, plan.shared, H, T, bl)


def _chunks(qr, kb, vb, idx, hsel, bias, counts: list[int], fix_nan: bool, group: int, out) -> None:
    """Fill ``out`` (B,hh,nq,R,d) block row by block row. qr (B,hh,nq,R,d); kb/vb (B,Hkv,nk+1,bl,d);
    idx (h,nq,K) with h in {1, hh}; hsel (hh,1,1) KV head of each row head, or None (all KV heads,
    shared layout); bias (h,nq,[1,]bl,K*bl); counts[i]: blocks query block i needs (max over heads)."""
    B, hh, nq, R, d = qr.shape
    bl = kb.shape[3]
    a = 0
    while a < nq:
        # chunk of query blocks sized to the blocks they really need (no padding to the widest row)
        b = a + 1
        kc_max = max(1, counts[a])
        while b < nq and (b + 1 - a) * max(kc_max, counts[b]) * B * hh * R * bl <= CHUNK_ELEMS:
            kc_max = max(kc_max, counts[b])
            b += 1
        Kc = kc_max
        ii = idx[:, a:b, :Kc]
        if hsel is None:
            kc, vc = kb[:, :, ii[0]], vb[:, :, ii[0]]  # (B,Hkv,c,Kc,bl,d)
        else:
            kc, vc = kb[:, hsel, ii], vb[:, hsel, ii]  # (B,hh,c,Kc,bl,d)
        kc = kc.reshape(B, hh, b - a, Kc * bl, -1)
        vc = vc.reshape(B, hh, b - a, Kc * bl, -1)
        bc = bias[:, a:b, ..., : Kc * bl]
        out[:, :, a:b] = _attend_chunk(qr[:, :, a:b], kc, vc, bc.unsqueeze(0), fix_nan, group)
        a = b


def gather_dynamic(q, k, v, sel: Selection, scale: float) -> torch.Tensor:
    """Sparse attention over the keys a dynamic pattern selected, with exact token causality."""
    B, H, T, d = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    bl, unit = sel.block, sel.unit
    front = (S - T) - sel.first_block * bl  # rows before the first query
    nq = sel.idx.shape[2]
    hs = sel.idx.shape[1]
    shared = hs in (1, Hkv) and not (hs == H and G > 1)
    qr = _rows(q * scale, shared, Hkv, bl, nq, front)  # (B,hh,nq,R,d)
    hh, R = qr.shape[1], qr.shape[3]
    kb, vb = _blocks(k, unit), _blocks(v, unit)  # (B,Hkv,nu+1,unit,d)
    nu = kb.shape[2] - 1
    idx = torch.where(sel.valid, sel.idx, torch.full_like(sel.idx, nu))
    K = idx.shape[-1]
    bsel = torch.arange(B, device=q.device).view(B, 1, 1, 1)
    if shared:
        hsel = torch.arange(Hkv, device=q.device).view(1, -1, 1, 1)
        idx = idx.expand(B, Hkv, nq, K)
    else:
        hsel = torch.div(torch.arange(H, device=q.device), G, rounding_mode="floor").view(1, -1, 1, 1)
    out = torch.empty(B, hh, nq, R, d, dtype=q.dtype, device=q.device)
    c = max(1, min(nq, CHUNK_ELEMS // max(1, B * hh * R * K * unit)))
    ar = torch.arange(unit, device=q.device)
    for a in range(0, nq, c):
        b = min(nq, a + c)
        ii = idx[:, :, a:b]
        kc = kb[bsel, hsel, ii].reshape(B, hh, b - a, K * unit, d)
        vc = vb[bsel, hsel, ii].reshape(B, hh, b - a, K * unit, d)
        kp = (ii.unsqueeze(-1) * unit + ar).reshape(B, hh, b - a, 1, K * unit)
        qp = ((sel.first_block + torch.arange(a, b, device=q.device)).view(-1, 1) * bl + torch.arange(bl, device=q.device)).view(
            1, 1, b - a, bl, 1
        )
        ok = (kp <= qp) & (kp < S)
        bias = torch.zeros(ok.shape, dtype=q.dtype, device=q.device).masked_fill_(~ok, float("-inf"))
        grouped = shared and G > 1
        out[:, :, a:b] = _attend_chunk(qr[:, :, a:b], kc, vc, bias.unsqueeze(3) if grouped else bias, True, G if grouped else 1)
    res = _unrows(out, shared, H, T, bl, front)
    if sel.dense_rows:
        n = sel.dense_rows
        kr = k.repeat_interleave(G, 1)
        vr = v.repeat_interleave(G, 1)
        qpos = torch.arange(S - n, S, device=q.device).view(-1, 1)
        m = torch.arange(S, device=q.device).view(1, -1) <= qpos
        res = res.clone()
        res[:, :, T - n :] = F.scaled_dot_product_attention(q[:, :, T - n :], kr, vr, attn_mask=m, scale=scale)
    return res
