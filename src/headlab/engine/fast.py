"""What the statistics path hands to probes beyond per-query statistics: exact attention weights of
chosen (query, key) pairs, recomputed from q, k and the log-sum-exp — never the whole map.

With the log-sum-exp ``lse_i`` of a softmax row, one weight costs one dot product:
``A_ij = exp(scale · q_i·k_j − lse_i)`` (``lse_i`` includes a learned sink logit when the layer has one).
Two shapes of pair sets cover the per-token analyses of arXiv 2510.13554 (WAAD, FAI) and the global
sinks of arXiv 2509.22650:

* a **band** (:meth:`FastCall.bands`): for every query, the keys at position gaps ``pos_i − pos_j`` in
  ``[d0, d1]``, computed in blocks of ``BAND_BLOCK`` queries by one small matmul per block
  (``BAND_BLOCK × (BAND_BLOCK + d1 − d0)`` scores, of which the band is a skewed view), a query chunk at a
  time (:class:`Band`, (B, H, Tc, d1 − d0 + 1));
* a **slab** (:meth:`FastCall.weights`): a chunk of queries against a chosen list of keys (all of them
  for the fallback), (B, H, Tc, C), with the visibility of the call (causal, window, mask) applied.

Bands use key indices for positions, which holds when each row's real keys are contiguous
(:func:`contiguous_positions`: padding on either side, a sliding cache); otherwise :func:`run_band`
feeds the probes' plain ``update`` from slabs of ``CHUNK`` elements. Shapes: B batch, H query heads,
Hkv key/value heads, T queries (the last T of the S keys), Tc queries of a chunk, n band width.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .context import AttnContext

#: queries per block of the band matmul (the block computes BAND_BLOCK + n - 1 keys for n diagonals)
BAND_BLOCK = 32
#: elements (B · H · Tc · keys) of one chunk of scores held at a time by bands and slabs
CHUNK = 1 << 21


@dataclass
class Band:
    """Attention weights on a band of position gaps for the queries ``t0 .. t1 - 1`` of one call.

    a: (B, H, Tc, n) A[t, key at gap delta[c]] (0 where there is no such key, it is not visible, or the
        query sees no key); delta: (n,) long, the gap ``pos_t − pos_key`` of column c (d1 − c, descending);
    key_index: (Tc, n) long key index of each entry (outside 0..S-1 where there is none);
    key_real: (B, Tc, n) bool, a real (non-pad) key exists there (visible or not);
    mass: (B, H, Tc) Σ_j A[t, j] over all keys (1, r with sink logits, 0 for rows that see nothing).
    """

    a: torch.Tensor
    delta: torch.Tensor
    key_index: torch.Tensor
    key_real: torch.Tensor
    mass: torch.Tensor
    t0: int
    t1: int


def contiguous_positions(ctx: AttnContext) -> bool:
    """Whether position gaps are key-index gaps: in every row the real keys have positions
    ``index − offset`` (one offset per row) and each real query has the position of its own key."""
    kp, qp = ctx.key_pos, ctx.query_pos
    S, T = kp.shape[1], qp.shape[1]
    real = kp >= 0
    off = kp - torch.arange(S, device=kp.device)
    big = torch.iinfo(off.dtype).max
    lo = torch.where(real, off, big).amin(-1)
    hi = torch.where(real, off, -big).amax(-1)
    rows_ok = bool(((lo == hi) | ~real.any(-1)).all())
    q_ok = bool(((qp < 0) | (qp == kp[:, S - T :])).all())
    return rows_ok and q_ok


@dataclass
class FastCall:
    """One attention call on the statistics path: q (B, H, T, d) and k (B, Hkv, S, d) in the statistics
    dtype, ``lse`` (B, H, T) the log-sum-exp with any sink logit included, ``r`` (B, H, T) the mass of the
    real keys (1 without sink logits), and the call's visibility (causal, window, bool mask (B, 1|H, T, S))."""

    q: torch.Tensor
    k: torch.Tensor
    lse: torch.Tensor
    r: torch.Tensor
    scale: float
    causal: bool
    window: int | None
    bmask: torch.Tensor | None
    ctx: AttnContext

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(B, H, Hkv, T, S)."""
        B, H, T, _ = self.q.shape
        return B, H, self.k.shape[1], T, self.k.shape[2]

    def live(self, t0: int, t1: int) -> torch.Tensor:
        """(B, H, Tc) bool: the query sees at least one key (finite log-sum-exp)."""
        return torch.isfinite(self.lse[:, :, t0:t1])

    def scores(self, t0: int, t1: int, keys: torch.Tensor) -> torch.Tensor:
        """(B, H, Tc, C) scaled scores ``scale · q_t·k_j`` of queries t0..t1-1 and key indices ``keys (C,)``."""
        B, H, Hkv, _, _ = self.shape
        G, d = H // Hkv, self.q.shape[-1]
        kc = self.k.index_select(2, keys)  # (B, Hkv, C, d)
        qc = self.q[:, :, t0:t1].reshape(B, Hkv, G * (t1 - t0), d)
        return (torch.matmul(qc, kc.transpose(-1, -2)) * self.scale).view(B, H, t1 - t0, keys.shape[0])

    def visible(self, t0: int, t1: int, keys: torch.Tensor) -> torch.Tensor:
        """(B, 1|H, Tc, C) bool: key ``keys[c]`` is a real key that query t may see (causal, window, mask)."""
        _, _, _, T, S = self.shape
        qabs = torch.arange(t0, t1, device=keys.device) + (S - T)  # (Tc,) key index of each query
        ok = (self.ctx.key_pos.index_select(1, keys) >= 0)[:, None, None, :]  # (B, 1, 1, C)
        if self.causal:
            rel = qabs[:, None] - keys[None, :]  # (Tc, C)
            ok = ok & (rel >= 0)
            if self.window is not None:
                ok = ok & (rel < self.window)
        if self.bmask is not None:
            ok = ok & self.bmask[:, :, t0:t1].index_select(3, keys)
        return ok

    def weights(self, t0: int, t1: int, keys: torch.Tensor) -> torch.Tensor:
        """(B, H, Tc, C) exact attention weights A[t, keys[c]] (0 where not visible), from the log-sum-exp."""
        s = self.scores(t0, t1, keys) - self.lse[:, :, t0:t1, None]
        ok = self.visible(t0, t1, keys) & self.live(t0, t1)[..., None]
        return torch.where(ok, torch.exp(s), torch.zeros((), dtype=s.dtype, device=s.device))

    def query_chunks(self, n_keys: int) -> Iterator[tuple[int, int]]:
        """(t0, t1) chunks of queries such that B · H · Tc · n_keys <= CHUNK."""
        B, H, _, T, _ = self.shape
        step = max(1, CHUNK // max(1, B * H * n_keys))
        for t0 in range(0, T, step):
            yield t0, min(T, t0 + step)

    def bands(self, d0: int, d1: int) -> Iterator[Band]:
        """The band of gaps ``d0 .. d1`` (positions; d0 <= d1, negative = later keys), chunk by chunk.
        Assumes :func:`contiguous_positions`.

        Per block of ``BAND_BLOCK`` queries one batched matmul gives ``scale · q·k − lse`` for the block's
        ``BAND_BLOCK + n − 1`` keys directly: the queries carry two more columns ``[1, −lse]`` and the keys
        ``[bias, 1]``, with bias −1e4 for pad keys and for indices outside 0..S-1 (weight exp(−1e4) = 0),
        and −lse = −1e30 for rows that see nothing; the G query heads of a KV head are stacked in the rows.
        The band is a skewed view of that block, and one ``exp`` writes the weights straight into
        (B, H, Tc, n) order; a mask pass is left only for a sliding window or an explicit mask."""
        if d0 > d1:
            raise ValueError(f"band of position gaps [d0, d1] = [{d0}, {d1}] needs d0 <= d1")
        B, H, Hkv, T, S = self.shape
        G, d = H // Hkv, self.q.shape[-1]
        dev, dt = self.q.device, self.q.dtype
        d1, d0 = min(d1, S - 1), max(d0, -(S - 1))  # no key is further away
        if d0 > d1:
            d0 = d1 = 0
        n = d1 - d0 + 1
        bq = min(BAND_BLOCK, T)
        wk = bq + n - 1  # keys per block
        off = S - T
        tp = math.ceil(T / bq) * bq
        base = off - d1  # key index of row 0 of the keys the blocks read: key j sits at row j - base
        lo, hi = max(0, base), min(S, base + tp + n - 1)  # the keys any block reads (few when decoding)
        real_key = self.ctx.key_pos >= 0  # (B, S)
        kp = torch.zeros(B, Hkv, tp + n - 1, d + 2, dtype=dt, device=dev)  # [k, bias, 1]
        kp[..., d] = -1e4  # rows outside 0..S-1
        if hi > lo:
            kp[:, :, lo - base : hi - base, :d] = self.k[:, :, lo:hi]
            kp[:, :, lo - base : hi - base, d] = torch.where(real_key[:, lo:hi], 0.0, -1e4).to(dt)[:, None, :]
        kp[..., d + 1] = 1.0
        neg_lse = torch.where(torch.isfinite(self.lse), -self.lse, -1e30)  # (B, H, T)
        delta = d1 - torch.arange(n, device=dev)  # (n,)
        step = max(bq, (CHUNK // max(1, B * H * wk)) // bq * bq)
        sS, sD = kp.stride()[2:]
        pair_mask = self.bmask is not None or (self.causal and (d0 < 0 or (self.window is not None and d1 >= self.window)))
        zero = torch.zeros((), dtype=dt, device=dev)
        for c0 in range(0, T, step):
            c1 = min(T, c0 + step)
            tc = c1 - c0
            nb = math.ceil(tc / bq)
            # queries [scale · q, 1, −lse] in (B, Hkv, block, G, bq, d + 2) order: one matmul per block
            qx = torch.empty(B, Hkv, nb, G, bq, d + 2, dtype=dt, device=dev)
            dst = qx.transpose(2, 3)  # (B, Hkv, G, nb, bq, d + 2) view
            qsrc, nl = self.q[:, :, c0:c1], neg_lse[:, :, c0:c1]
            if tc < nb * bq:  # rows past the last query: weight exp(−1e30) = 0
                qsrc = F.pad(qsrc, (0, 0, 0, nb * bq - tc))
                nl = F.pad(nl, (0, nb * bq - tc), value=-1e30)
            torch.mul(qsrc.unflatten(1, (Hkv, G)).unflatten(3, (nb, bq)), self.scale, out=dst[..., :d])
            dst[..., d] = 1.0
            dst[..., d + 1] = nl.unflatten(1, (Hkv, G)).unflatten(3, (nb, bq))
            s = torch.empty(B, Hkv, nb, G * bq, wk, dtype=dt, device=dev)
            first = c0  # row of the first key of the chunk's first block (key index base + c0)
            for b in range(B):
                for g in range(Hkv):
                    kw = kp[b, g].as_strided((nb, wk, d + 2), (bq * sS, sS, sD), kp[b, g].storage_offset() + first * sS)
                    torch.bmm(qx[b, g].view(nb, G * bq, d + 2), kw.transpose(1, 2), out=s[b, g])
            st = s.stride()
            # row r, column c of the band is key column r + c of the block: gap delta[c] = d1 - c
            sb = s.as_strided((B, Hkv, nb, G, bq, n), (st[0], st[1], st[2], bq * st[3], st[3] + 1, 1))
            a = torch.empty(B, Hkv, G, nb, bq, n, dtype=dt, device=dev)
            a.transpose(2, 3).copy_(sb)  # (B, H, Tc, n) order
            a = a.view(B, H, nb * bq, n)
            a = a if tc == nb * bq else a[:, :, :tc].contiguous()
            a.exp_()
            kidx, kc, real = _band_keys(self.ctx.key_pos, T, S, d1, n, c0, c1)
            if pair_mask:
                ok = torch.ones(1, 1, 1, n, dtype=torch.bool, device=dev)
                if self.causal:
                    ok = ok & (delta >= 0)
                    if self.window is not None:
                        ok = ok & (delta < self.window)
                if self.bmask is not None:
                    bm = self.bmask[:, :, c0:c1]  # (B, 1|H, Tc, S)
                    ok = ok & bm.gather(3, kc[None, None].expand(B, bm.shape[1], tc, n))
                a = torch.where(ok, a, zero)
            mass = torch.where(self.live(c0, c1), self.r[:, :, c0:c1], zero)
            yield Band(a, delta, kidx, real, mass, c0, c1)


#: (key_pos, T, S, d1, n, c0, c1) -> (key_pos, (kidx, clamped kidx, real)): the band's key indices, shared by
#: the layers of one forward pass (they see the same positions tensor); the tensor is kept referenced
_BAND_KEYS: dict[tuple, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}


def _band_keys(key_pos: torch.Tensor, T: int, S: int, d1: int, n: int, c0: int, c1: int):
    """(kidx (Tc, n) key index of each band entry, kc the same clamped to 0..S-1, real (B, Tc, n))."""
    key = (id(key_pos), T, S, d1, n, c0, c1)
    hit = _BAND_KEYS.get(key)
    if hit is not None and hit[0] is key_pos:
        return hit[1]
    dev = key_pos.device
    kidx = (S - T + torch.arange(c0, c1, device=dev))[:, None] - (d1 - torch.arange(n, device=dev))[None, :]
    kc = kidx.clamp(0, S - 1)
    real = (key_pos[:, kc] >= 0) & ((kidx >= 0) & (kidx < S))
    if len(_BAND_KEYS) >= 64:
        _BAND_KEYS.clear()
    _BAND_KEYS[key] = (key_pos, (kidx, kc, real))
    return kidx, kc, real


def band_range(probes: Sequence[Any], ctx: AttnContext) -> tuple[int, int]:
    """The union ``(d0, d1)`` of the gap ranges the band probes ask for (``probe.band_range(ctx)``)."""
    ranges = [p.band_range(ctx) for p in probes]
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def run_band(call: FastCall, probes: Sequence[Any], ctx: AttnContext) -> None:
    """Feed the band probes of one call: ``update_band(band, ctx)`` chunk by chunk (``ctx.q_index`` set to
    the chunk), or — when positions are not key indices — their plain ``update(A, ctx)`` from exact slabs
    of weights recomputed from the log-sum-exp (the cost of the map's scores, never more than one chunk)."""
    if not probes:
        return
    dev = call.q.device
    try:
        if contiguous_positions(ctx):
            d0, d1 = band_range(probes, ctx)
            for band in call.bands(d0, d1):
                ctx.q_index = torch.arange(band.t0, band.t1, device=dev)
                for p in probes:
                    p.update_band(band, ctx)
        else:
            S = call.k.shape[2]
            keys = torch.arange(S, device=dev)
            for t0, t1 in call.query_chunks(S):
                ctx.q_index = torch.arange(t0, t1, device=dev)
                a = call.weights(t0, t1, keys)
                for p in probes:
                    p.update(a, ctx)
    finally:
        ctx.q_index = None
