"""Banded attention: a causal window of ``width`` keys plus ``sink`` leading keys, without gathers.

Query i (the last T of S positions) sees keys j with 0 <= i - j < width, plus keys j < sink
(StreamingLLM, arXiv 2309.17453; one head of MoA's elastic spans, arXiv 2406.14909, at a fixed
length). For a block of ``bq`` queries starting at position i0 the window keys are one contiguous
slice [i0 - width + 1, i0 + bq) of length L = bq + width - 1, so K/V blocks are ``as_strided``
views of one zero-padded copy of K/V (no index gathers), and the visibility of the slice is the
same parallelogram for every block: one (bq, L) bias, broadcast. The G query heads of a KV head
are stacked as G*bq rows of one GEMM. Sink keys (those before the window) are prepended to each
block's slice; their bias is needed only on the few blocks whose rows do not all see them. Only
the first blocks (keys before position 0) need an extra mask. Softmax runs in place.

The plain reference is ``reference_sparse_attend`` with ``sink_window(sink, width)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: score entries per chunk of query blocks (4 MB fp32; the L2 is 2 MB per core here)
CHUNK_ELEMS = 1 << 20
_softmax_out = torch.ops.aten._softmax.out


def band_block(width: int, T: int) -> int:
    """Query block: 64 rows (GEMM sweet spot here), fewer for narrow bands or short inputs."""
    bq = 64 if width >= 128 else 32 if width >= 32 else 16
    return max(1, min(bq, T))


def band_attend(q, k, v, sink: int, width: int, scale: float, block: int | None = None) -> torch.Tensor:
    """q (B,H,T,d), k (B,Hkv,S,d), v (B,Hkv,S,dv) -> (B,H,T,dv); queries are the last T positions.

    sink >= 0 leading keys plus a causal window of ``width`` >= 1 keys (every row sees itself).
    """
    B, H, T, d = q.shape
    Hkv, S, dv = k.shape[1], k.shape[2], v.shape[3]
    if width < 1 or sink < 0:
        raise ValueError(f"band needs width >= 1 and sink >= 0, got width={width}, sink={sink}")
    G = H // Hkv
    BH = B * Hkv
    w = min(int(width), S)
    bq = block or band_block(w, T)
    nb = -(-T // bq)
    R, L = G * bq, bq + w - 1
    off = S - T                                   # position of query 0
    lo = max(0, off - (w - 1))                    # first key any band reaches
    front = (w - 1) - (off - lo)                  # zero rows standing for positions < 0
    back = nb * bq - T
    kp = F.pad(k[:, :, lo:], (0, 0, front, back)).reshape(BH, -1, d)   # (BH, nb*bq + w - 1, d)
    vp = F.pad(v[:, :, lo:], (0, 0, front, back)).reshape(BH, -1, dv)
    # block b's window keys: rows [b*bq, b*bq + L) of kp, as one overlapping view (nb, BH, L, d)
    kb = kp.as_strided((nb, BH, L, d), (bq * d, kp.stride(0), d, 1))
    vb = vp.as_strided((nb, BH, L, dv), (bq * dv, vp.stride(0), dv, 1))
    qr = F.pad(q * scale, (0, 0, 0, back)).view(B, Hkv, G, nb, bq, d)
    qr = qr.permute(3, 0, 1, 2, 4, 5).reshape(nb, BH, R, d).contiguous()  # G heads stacked per block
    ns = min(int(sink), S)
    if ns:
        ks, vs = k[:, :, :ns].reshape(1, BH, ns, d), v[:, :, :ns].reshape(1, BH, ns, dv)
    r = torch.arange(bq, device=q.device).view(-1, 1)
    c = torch.arange(L, device=q.device).view(1, -1)
    band_bias = torch.zeros(bq, L, dtype=q.dtype, device=q.device).masked_fill_((c < r) | (c > r + w - 1), float("-inf"))
    out = torch.empty(nb, BH, R, dv, dtype=q.dtype, device=q.device)
    Lt = ns + L
    cb = max(1, CHUNK_ELEMS // max(1, BH * R * Lt))
    for a in range(0, nb, cb):
        b = min(nb, a + cb)
        n = b - a
        if ns:
            kc = torch.cat([ks.expand(n, BH, ns, d), kb[a:b]], 2).view(n * BH, Lt, d)
            vc = torch.cat([vs.expand(n, BH, ns, dv), vb[a:b]], 2).view(n * BH, Lt, dv)
        else:
            kc, vc = kb[a:b].reshape(n * BH, L, d), vb[a:b].reshape(n * BH, L, dv)
        s = torch.bmm(qr[a:b].view(n * BH, R, d), kc.transpose(1, 2)).view(n, BH, G, bq, Lt)
        s[..., ns:].add_(band_bias)
        for blk in range(a, b):
            i0 = off + blk * bq                     # position of the block's first query
            if i0 < w - 1:                          # window reaches before key 0: padding columns
                s[blk - a, ..., ns:ns + (w - 1 - i0)] = float("-inf")
            if ns and i0 - w < ns - 1:              # some row does not see every sink key
                rows = i0 + torch.arange(bq, device=q.device).view(-1, 1)
                j = torch.arange(ns, device=q.device).view(1, -1)
                s[blk - a, ..., :ns].masked_fill_(j > rows - w, float("-inf"))  # in the window or not yet
        s = s.view(n * BH, R, Lt)
        _softmax_out(s, -1, False, out=s)
        torch.bmm(s, vc, out=out[a:b].view(n * BH, R, dv))
    out = out.view(nb, B, Hkv, G, bq, dv).permute(1, 2, 3, 0, 4, 5).reshape(B, H, nb * bq, dv)
    return out[:, :, :T]
