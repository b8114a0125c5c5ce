"""Banded attention: a causal window of ``width`` keys plus ``sink`` leading keys, without gathers.

Query i (the last T of S positions) sees keys j with 0 <= i - j < width, plus keys j < sink
(StreamingLLM, arXiv 2309.17453; one head of MoA's elastic spans, arXiv 2406.14909, at a fixed
length). For a block of ``bq`` queries starting at position i0 the window keys are one contiguous
slice [i0 - width + 1, i0 + bq) of length L = bq + width - 1, so K/V blocks are ``as_strided``
views of one zero-padded copy of K/V (no index gathers), and the visibility of the slice is the
same parallelogram for every block: one (bq, L) bias, broadcast. The G query heads of a KV head
are stacked as G*bq rows of one block. Sink keys (those before the window) are prepended to each
block's slice; only the first few "edge" blocks (window reaching before key 0, or rows that do not
yet see every sink key) get a bias of their own. Each chunk of blocks is one call of torch's fused
CPU flash-attention kernel (``scaled_dot_product_attention`` with the broadcast bias): scores and
softmax stay inside its tiles, nothing (T, S)-sized is ever built.

The plain reference is ``reference_sparse_attend`` with ``sink_window(sink, width)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: (query rows x keys) per chunk of query blocks: bounds the K/V block copies and the edge biases
CHUNK_ELEMS = 1 << 20


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
    off = S - T  # position of query 0
    lo = max(0, off - (w - 1))  # first key any band reaches
    front = (w - 1) - (off - lo)  # zero rows standing for positions < 0
    back = nb * bq - T
    kp = F.pad(k[:, :, lo:], (0, 0, front, back)).reshape(BH, -1, d)  # (BH, nb*bq + w - 1, d)
    vp = F.pad(v[:, :, lo:], (0, 0, front, back)).reshape(BH, -1, dv)
    # block b's window keys: rows [b*bq, b*bq + L) of kp, as one overlapping view (nb, BH, L, d)
    kb = kp.as_strided((nb, BH, L, d), (bq * d, kp.stride(0), d, 1))
    vb = vp.as_strided((nb, BH, L, dv), (bq * dv, vp.stride(0), dv, 1))
    qr = (F.pad(q, (0, 0, 0, back)) if back else q).view(B, Hkv, G, nb, bq, d)
    qr = qr.permute(3, 0, 1, 2, 4, 5).reshape(nb, BH, R, d).contiguous()  # G heads stacked per block
    ns = min(int(sink), S)
    Lt = ns + L
    dev, dt = q.device, q.dtype
    r = torch.arange(bq, device=dev).view(-1, 1)
    c = torch.arange(L, device=dev).view(1, -1)
    band_ok = (c >= r) & (c <= r + w - 1)  # (bq, L), the same for every block
    # edge blocks: the window reaches before key 0, or some row does not see every sink key
    first_regular = max(0, -(-(w - 1 - off) // bq), -(-(ns - 1 + w - off) // bq) if ns else 0)
    n_edge = min(nb, first_regular)
    out = torch.empty(nb, BH, R, dv, dtype=dt, device=dev)

    def keys(a: int, b: int):
        n = b - a
        if not ns:
            return kb[a:b], vb[a:b]  # overlapping views: SDPA reads them by stride
        ks, vs = k[:, :, :ns].reshape(1, BH, ns, d), v[:, :, :ns].reshape(1, BH, ns, dv)
        return torch.cat([ks.expand(n, BH, ns, d), kb[a:b]], 2), torch.cat([vs.expand(n, BH, ns, dv), vb[a:b]], 2)

    cb_edge = max(1, CHUNK_ELEMS // max(1, R * Lt))  # bounds the per-block bias
    for a in range(0, n_edge, cb_edge):
        b = min(n_edge, a + cb_edge)
        pos0 = off + torch.arange(a, b, device=dev).view(-1, 1, 1) * bq  # first query of each block
        kpos = pos0 - (w - 1) + c.view(1, 1, -1)  # (n, 1, L) window key positions
        ok = band_ok.view(1, bq, L) & (kpos >= 0)
        if ns:
            rows = pos0 + r.view(1, bq, 1)
            sink_ok = torch.arange(ns, device=dev).view(1, 1, -1) <= rows - w  # before the window: visible
            ok = torch.cat([sink_ok, ok.expand(b - a, bq, L)], -1)
        bias = torch.zeros(ok.shape, dtype=dt, device=dev).masked_fill_(~ok, float("-inf"))
        bias = bias.unsqueeze(1).expand(b - a, G, bq, Lt).reshape(b - a, 1, R, Lt)
        kc, vc = keys(a, b)
        out[a:b] = F.scaled_dot_product_attention(qr[a:b], kc, vc, attn_mask=bias, scale=scale)
    if n_edge < nb:
        ok = torch.cat([torch.ones(bq, ns, dtype=torch.bool, device=dev), band_ok], -1) if ns else band_ok
        bias = torch.zeros(bq, Lt, dtype=dt, device=dev).masked_fill_(~ok, float("-inf")).repeat(G, 1)  # (R, Lt)
        cb = max(1, CHUNK_ELEMS // max(1, BH * R * Lt))
        for a in range(n_edge, nb, cb):
            b = min(nb, a + cb)
            kc, vc = keys(a, b)
            out[a:b] = F.scaled_dot_product_attention(qr[a:b], kc, vc, attn_mask=bias, scale=scale)
    out = out.view(nb, B, Hkv, G, bq, dv).permute(1, 2, 3, 0, 4, 5).reshape(B, H, nb * bq, dv)
    return out[:, :, :T]
