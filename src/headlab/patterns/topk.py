"""Top-k key blocks per query block by pseudo-landmark score: a training-free stand-in for
Landmark Attention (Mohtashami & Jaggi, arXiv 2305.16300), close to Quest/InfLLM block retrieval.

Each key block is represented by its mean key (the "pseudo-landmark"), each query block by its
mean query; query block bq keeps its ``local_blocks`` most recent blocks (itself included), the
first ``sink_blocks`` blocks, and the ``k`` other causal blocks with the highest score q̄·k̄.
``shared_kv=True`` scores per KV head (query heads of a group summed), so the chosen blocks are the
same for the group and only those KV blocks need to be read (saves KV memory under GQA).
"""

from __future__ import annotations

import torch

from .base import check_int
from .dynamic import DynamicPattern, Selection


def block_means(x: torch.Tensor, pos: torch.Tensor, block: int, first_block: int, n_blocks: int) -> torch.Tensor:
    """Mean of x (B,h,L,d) over rows grouped by pos // block - first_block -> (B,h,n_blocks,d)."""
    B, h, L, d = x.shape
    b = torch.div(pos, block, rounding_mode="floor") - first_block
    s = torch.zeros(B, h, n_blocks, d, dtype=x.dtype, device=x.device)
    s.index_add_(2, b, x)
    cnt = torch.zeros(n_blocks, dtype=x.dtype, device=x.device).index_add_(0, b, torch.ones_like(b, dtype=x.dtype))
    return s / cnt.clamp(min=1).view(1, 1, -1, 1)


class TopKBlocks(DynamicPattern):
    def __init__(self, block: int, k: int, sink_blocks: int = 1, local_blocks: int = 1, shared_kv: bool = True):
        self.block = check_int("block", block, 1)
        self.k = check_int("k", k, 0)
        self.sink_blocks = check_int("sink_blocks", sink_blocks, 0)
        self.local_blocks = check_int("local_blocks", local_blocks, 1)
        self.shared_kv = bool(shared_kv)
        self.kv_per_head = self.shared_kv
        self.name = (
            f"topk_blocks(block={self.block}, k={self.k}, sink_blocks={self.sink_blocks}, local_blocks={self.local_blocks})"
        )

    def _kept_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every query row keeps at most (k + local_blocks + sink_blocks) blocks of keys."""
        budget = (self.k + self.local_blocks + self.sink_blocks) * self.block
        return torch.minimum(rows + 1, torch.full_like(rows, budget))

    def select_units(self, q, k, q_pos, k_pos) -> Selection:
        self._check_qk(q, k)
        B, H, T, d = q.shape
        Hkv, S = k.shape[1], k.shape[2]
        q_pos = torch.as_tensor(q_pos, device=q.device).long().reshape(-1)
        first = int(q_pos[0]) // self.block
        nqb = int(q_pos[-1]) // self.block - first + 1
        nkb = -(-S // self.block)
        qm = block_means(q, q_pos, self.block, first, nqb)  # (B,H,nqb,d)
        km = block_means(k, torch.arange(S, device=k.device), self.block, 0, nkb)  # (B,Hkv,nkb,d)
        G = H // Hkv
        if self.shared_kv:
            qm = qm.view(B, Hkv, G, nqb, d).sum(2)
            score = qm @ km.transpose(-1, -2)  # (B,Hkv,nqb,nkb)
        else:
            score = qm @ km.repeat_interleave(G, 1).transpose(-1, -2)  # (B,H,nqb,nkb)
        bq = torch.arange(first, first + nqb, device=q.device).view(-1, 1)
        bk = torch.arange(nkb, device=q.device).view(1, -1)
        causal = bk <= bq
        forced = causal & ((bq - bk < self.local_blocks) | (bk < self.sink_blocks))
        cand = causal & ~forced
        score = score.masked_fill(~cand, float("-inf"))
        kk = min(self.k, nkb)
        top_val, top_idx = score.topk(kk, dim=-1) if kk else (score[..., :0], score[..., :0].long())
        n_forced = min(nkb, self.local_blocks + self.sink_blocks)
        # forced blocks: priority = +inf, pick them with a second topk on the forced mask
        fprio = forced.float().expand(score.shape[:2] + forced.shape)
        f_val, f_idx = fprio.topk(n_forced, dim=-1)
        idx = torch.cat([f_idx, top_idx], -1)
        valid = torch.cat([f_val > 0, top_val > float("-inf")], -1)
        return Selection(idx=idx, valid=valid, unit=self.block, block=self.block, first_block=first)


def topk_blocks(
    block: int = 64, k: int = 8, sink_blocks: int = 1, local_blocks: int = 1, shared_kv: bool = True
) -> DynamicPattern:
    """Dynamic top-k block retrieval by mean-key pseudo-landmarks (training-free Landmark stand-in)."""
    return TopKBlocks(block, k, sink_blocks, local_blocks, shared_kv)
