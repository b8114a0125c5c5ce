"""S2-Attention heterogeneous strided shards (Lin et al., 2024; DKernel ``get_sparse_attn_mask``).

Per KV head h (``kv_per_head=True``, so a real kernel can keep only the shard's KV cache):
block index = position // block; key block bk is visible to query block bq iff bk <= bq and
(bq - bk < local_blocks, or (bk + h * step) mod stride == 0), with step = max(1, stride // n_heads).
Heads listed in ``dense_heads`` are dense (causal). Because heads keep different residues,
the union over heads covers every block when n_heads * step >= stride (e.g. stride <= n_heads).
Token-level causality applies on top.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Pattern, check_int


class Strided(Pattern):
    kv_per_head = True

    def __init__(self, block: int, local_blocks: int, stride: int, n_heads: int, dense_heads: Sequence[int] = ()):
        self.block = check_int("block", block, 1)
        self.local_blocks = check_int("local_blocks", local_blocks, 1)
        self.stride = check_int("stride", stride, 1)
        self.n_heads = check_int("n_heads (KV heads)", n_heads, 1)
        self.step = max(1, self.stride // self.n_heads)
        dense = sorted({check_int("dense head", d, 0, self.n_heads - 1) for d in dense_heads})
        self.dense_heads = tuple(dense)
        self._dense = torch.zeros(self.n_heads, dtype=torch.bool)
        self._dense[list(dense)] = True
        self.name = (
            f"strided(block={self.block}, local_blocks={self.local_blocks}, stride={self.stride}, "
            f"kv_heads={self.n_heads}, dense={list(self.dense_heads)})"
        )

    def rule(self, h, i, j, n):
        bq, bk = i // self.block, j // self.block
        h = torch.as_tensor(h)
        local = (bq - bk) < self.local_blocks
        shard = torch.remainder(bk + h * self.step, self.stride) == 0
        dense = self._dense.to(h.device)[h]
        return (j <= i) & (local | shard | dense)

    def block_rule(self, h, bq, bk):
        """Block-level layout; the token rule is j <= i & f(h, bq, bk)."""
        h = torch.as_tensor(h)
        shard = torch.remainder(bk + h * self.step, self.stride) == 0
        return (bk <= bq) & (((bq - bk) < self.local_blocks) | shard | self._dense[h])


def strided(
    block: int = 64, local_blocks: int = 16, stride: int = 3, dense_heads: Sequence[int] = (), n_heads: int = 3
) -> Pattern:
    """S2 heterogeneous strided pattern over ``n_heads`` KV heads (SmolLM2 has 3)."""
    return Strided(block, local_blocks, stride, n_heads, dense_heads)
