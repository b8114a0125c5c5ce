"""Shared machinery of data-dependent (dynamic) patterns.

A dynamic pattern picks, for every query block (absolute block index = position // block), a set
of key *units* (blocks of ``unit`` keys; unit 1 = single tokens) from q and k. ``select_units``
returns them as padded index lists, which the gather kernel uses directly (only the chosen keys
are ever touched); ``select`` turns them into the boolean (B, H, Tq, S) mask the eager engine
wants. Token-level causality (j <= i) always applies on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Pattern


@dataclass
class Selection:
    """Keys chosen per query block.

    idx: (B, h, nqb, K) long, key-unit indices (unit u covers keys u*unit … u*unit+unit-1).
    valid: (B, h, nqb, K) bool, False for padding slots.
    unit: keys per unit. block: queries per query block. first_block: absolute index of
    query block 0 (= q_pos[0] // block). dense_rows: the last ``dense_rows`` queries attend
    densely (causal) instead (DHSA's instruction tokens). h is 1, Hkv or H.
    """

    idx: torch.Tensor
    valid: torch.Tensor
    unit: int
    block: int
    first_block: int
    dense_rows: int = 0


class DynamicPattern(Pattern):
    dynamic = True
    block = 64

    def select_units(self, q, k, q_pos, k_pos) -> Selection:
        raise NotImplementedError

    def _check_qk(self, q, k):
        if q.dim() != 4 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
            raise ValueError(f"{self.name}: need q (B,H,T,d) and k (B,Hkv,S,d), got {tuple(q.shape)} and {tuple(k.shape)}")
        if q.shape[1] % k.shape[1]:
            raise ValueError(f"{self.name}: H={q.shape[1]} must be a multiple of Hkv={k.shape[1]}")

    def select(self, q, k, q_pos, k_pos) -> torch.Tensor:
        """bool (B, H, Tq, S): True where query t may attend key s (causality included)."""
        q_pos = torch.as_tensor(q_pos).long().reshape(-1)
        k_pos = torch.as_tensor(k_pos).long().reshape(-1)
        sel = self.select_units(q, k, q_pos, k_pos)
        H, S = q.shape[1], k.shape[2]
        nk_units = -(-S // sel.unit)
        idx = torch.where(sel.valid, sel.idx, torch.full_like(sel.idx, nk_units))
        unit_mask = torch.zeros(*idx.shape[:3], nk_units + 1, dtype=torch.bool, device=q.device)
        unit_mask.scatter_(3, idx, True)
        unit_mask = unit_mask[..., :nk_units]
        tok = unit_mask.repeat_interleave(sel.unit, dim=3)[..., :S]  # (B, h, nqb, S)
        qb = torch.div(q_pos, sel.block, rounding_mode="floor") - sel.first_block
        m = tok[:, :, qb]  # (B, h, Tq, S)
        causal = k_pos.view(1, 1, 1, -1) <= q_pos.view(1, 1, -1, 1)
        if sel.dense_rows:
            dense = (q_pos >= q_pos.max() - sel.dense_rows + 1).view(1, 1, -1, 1)
            m = m | dense
        m = m & causal
        if m.shape[1] not in (1, H):
            m = m.repeat_interleave(H // m.shape[1], dim=1)
        return m

    def density(self, q_len, kv_len, causal=True):
        raise ValueError(f"{self.name} is dynamic: its density depends on the data; measure it with select() on real q and k")

    def nominal_density(self, n: int) -> float:
        """Share of the causal pairs at length ``n`` the pattern's key budget keeps (subclasses say
        how many keys a row keeps: ``_kept_rows``)."""
        rows = torch.arange(n, dtype=torch.float64)
        return float(self._kept_rows(rows).sum() / (rows + 1).sum())

    def _kept_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(n,) float64 keys query row i (``rows`` = 0..n-1) keeps under the pattern's budget."""
        raise ValueError(f"{self.name} is dynamic and states no key budget: it has no nominal density")
