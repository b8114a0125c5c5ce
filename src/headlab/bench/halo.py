"""HaloNet's blocked local self-attention as HaloNet implements it (Vaswani et al., "Scaling Local Self-Attention for
Parameter Efficient Visual Backbones", CVPR 2021, arXiv 2103.12731): the grid is cut into ``block`` x ``block``
query tiles; every tile gathers one shared key/value window, its tile grown by ``halo`` on every side
((block + 2 halo)² positions, borders zero-padded and masked), and runs one dense softmax attention over it.
No per-query gather: a tile's queries share their keys, which is the "more efficient implementation" the paper
trades translational equivariance for.

The attention it computes is :func:`headlab.patterns.halo.halo2d` (tested against the masked dense reference);
``headlab bench neighborhood --halo BLOCK,HALO`` times it against the naive per-query neighbourhood attention.

Shapes: q, k, v (B, H, T, d) with T = height * width (row-major) -> (B, H, T, d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _tiles(x: torch.Tensor, height: int, width: int, block: int, halo: int) -> torch.Tensor:
    """x (N, T, c) on a row-major grid -> (N, tiles, (block + 2 halo)², c): every tile's window, zero-padded."""
    n, _, c = x.shape
    g = x.transpose(1, 2).reshape(n, c, height, width)
    g = F.pad(g, (halo, halo, halo, halo))
    s = block + 2 * halo
    w = g.unfold(2, s, block).unfold(3, s, block)  # (N, c, height/block, width/block, s, s)
    return w.permute(0, 2, 3, 4, 5, 1).reshape(n, -1, s * s, c)


def halo_blocked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, height: int, width: int, block: int, halo: int
) -> torch.Tensor:
    """Blocked local attention with a halo; q, k, v (B, H, T, d), T = height * width -> (B, H, T, d)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"need q, k (B,H,T,d) and v (B,H,T,dv) alike; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, h, t, d = q.shape
    if block < 1 or halo < 0 or height * width != t or height % block or width % block:
        raise ValueError(
            f"need block >= 1 dividing height={height} and width={width}, halo >= 0, height*width = T={t}; "
            f"got block={block}, halo={halo}"
        )
    nb = b * h
    qt = q.reshape(nb, height // block, block, width // block, block, d)
    qt = qt.permute(0, 1, 3, 2, 4, 5).reshape(nb, -1, block * block, d)  # (N, tiles, block², d)
    kt = _tiles(k.reshape(nb, t, d), height, width, block, halo)  # (N, tiles, s², d)
    vt = _tiles(v.reshape(nb, t, v.shape[-1]), height, width, block, halo)
    real = _tiles(q.new_ones(1, t, 1), height, width, block, halo)[0, :, :, 0] > 0  # (tiles, s²) inside the grid
    scores = (qt @ kt.transpose(-1, -2)) * d**-0.5  # (N, tiles, block², s²)
    w = scores.masked_fill(~real[None, :, None, :], float("-inf")).softmax(-1)
    o = w @ vt  # (N, tiles, block², dv)
    dv = v.shape[-1]
    o = o.reshape(nb, height // block, width // block, block, block, dv).permute(0, 1, 3, 2, 4, 5)
    return o.reshape(b, h, t, dv)
