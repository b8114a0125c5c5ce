"""Contract shared by every sparse-attention pattern (HP-MASK).

Positions: a pattern is a rule on (query position i, key position j), both counted from the
first real token of a row. ``mask(q_len, kv_len)`` places the queries at the last ``q_len`` of
the ``kv_len`` positions (so decode steps with a cache work): i = kv_len - q_len + t.

Every pattern provides
    mask_rows(q_pos (Tq,), k_pos (S,))     -> bool (h_or_1, Tq, S)   True = may attend
    mask(q_len, kv_len)                    -> bool (h_or_1, q_len, kv_len)
    block_layout(q_len, kv_len, block)     -> bool (h_or_1, ceil(q_len/block), ceil(kv_len/block))
    density(q_len, kv_len)                 -> float, fraction of allowed (i, j) (causal part counted)
``h_or_1`` is 1 when every head shares the mask, else ``n_heads``.
Dynamic patterns (``dynamic = True``) choose keys from the data and implement
    select(q (B,H,Tq,d), k (B,Hkv,S,d), q_pos (Tq,), k_pos (S,)) -> bool (B, h_or_1, Tq, S)
instead of ``mask_rows``.
``kv_per_head`` says, for per-head patterns under GQA, whether the rule is defined per KV head
(so it can save KV memory) or only masks query heads that share a KV head.
"""
from __future__ import annotations

import math

import torch


class Pattern:
    name = "pattern"
    dynamic = False
    n_heads: int | None = None  # None: one mask for every head
    kv_per_head = False

    def mask_rows(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def select(self, q, k, q_pos, k_pos) -> torch.Tensor:  # dynamic patterns only
        raise NotImplementedError(f"{self.name} is static; use mask_rows")

    def mask(self, q_len: int, kv_len: int) -> torch.Tensor:
        if q_len <= 0 or kv_len <= 0 or q_len > kv_len:
            raise ValueError(f"need 0 < q_len <= kv_len, got q_len={q_len}, kv_len={kv_len}")
        q_pos = torch.arange(kv_len - q_len, kv_len)
        return self.mask_rows(q_pos, torch.arange(kv_len))

    def block_layout(self, q_len: int, kv_len: int, block: int) -> torch.Tensor:
        m = self.mask(q_len, kv_len)
        h, tq, s = m.shape
        nq, nk = math.ceil(tq / block), math.ceil(s / block)
        pad = torch.zeros(h, nq * block, nk * block, dtype=torch.bool)
        pad[:, :tq, :s] = m
        return pad.view(h, nq, block, nk, block).any(dim=4).any(dim=2)

    def density(self, q_len: int, kv_len: int) -> float:
        return float(self.mask(q_len, kv_len).float().mean())

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<pattern {self.describe()}>"
