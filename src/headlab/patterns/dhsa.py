"""DHSA: Dynamic Hierarchical Sparse Attention (Xiong et al., arXiv 2510.24606), training-free.

Keys are cut into variable chunks (``chunks="fixed"``: every ``chunk_size`` keys; ``"heuristic"``:
boundaries where a key departs most from the mean of the previous 4 keys, local maxima kept,
about S / chunk_size of them; the paper's trained boundary predictor is not used). Queries are
grouped in blocks of ``block``. Representations are averaged over heads and length-normalised:
q̄_B = mean(q in B)·√|B|, k̄_c = mean(k in c)·√|c|; token j inherits the chunk score q̄_B·k̄_c.
Each query block keeps its ``local_tokens`` most recent keys (at least its own block), the first ``global_tokens`` keys and
fills up to ``topk_tokens`` with the best-scoring keys (j < end of the block); the last
``instruction_tokens`` queries attend densely. One selection is shared by every head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import check_int
from .dynamic import DynamicPattern, Selection


def fixed_chunks(B: int, S: int, chunk_size: int, device=None) -> torch.Tensor:
    """(B, S) long chunk id of every key for fixed-size chunks."""
    return (torch.arange(S, device=device) // chunk_size).expand(B, S)


def heuristic_chunks(k: torch.Tensor, chunk_size: int, window: int = 4) -> torch.Tensor:
    """(B, S) long chunk ids; boundaries at keys most unlike the mean of the previous ``window``."""
    B, Hkv, S, d = k.shape
    km = F.normalize(k.float().mean(1), dim=-1)  # (B,S,d)
    csum = torch.cumsum(F.pad(km, (0, 0, 1, 0)), 1)  # (B,S+1,d)
    lo = (torch.arange(S, device=k.device) - window).clamp(min=0)
    prev = (csum[:, torch.arange(S, device=k.device)] - csum[:, lo]) / (torch.arange(S, device=k.device) - lo).clamp(min=1).view(
        1, -1, 1
    )
    novelty = 1 - F.cosine_similarity(km, prev, dim=-1)  # (B,S)
    novelty[:, 0] = float("-inf")
    gap = max(1, chunk_size // 4)
    peak = F.max_pool1d(novelty.unsqueeze(1), 2 * gap + 1, stride=1, padding=gap).squeeze(1)
    novelty = novelty.masked_fill(novelty < peak, float("-inf"))
    n_bound = min(max(0, -(-S // chunk_size) - 1), S - 1)
    is_b = torch.zeros(B, S, dtype=torch.long, device=k.device)
    if n_bound:
        val, pos = novelty.topk(n_bound, dim=1)
        is_b.scatter_(1, pos, (val > float("-inf")).long())
    return torch.cumsum(is_b, 1)


class DHSA(DynamicPattern):
    """DHSA training-free: chunk-level scores, length-normalised pooling, top-k token selection."""

    def __init__(
        self,
        block: int = 64,
        topk_tokens: int = 1024,
        local_tokens: int = 128,
        global_tokens: int = 128,
        chunks: str = "fixed",
        chunk_size: int = 64,
        instruction_tokens: int = 64,
    ):
        self.block = check_int("block", block, 1)
        self.topk_tokens = check_int("topk_tokens", topk_tokens, 1)
        self.local_tokens = check_int("local_tokens", local_tokens, 0)
        self.global_tokens = check_int("global_tokens", global_tokens, 0)
        self.chunk_size = check_int("chunk_size", chunk_size, 1)
        self.instruction_tokens = check_int("instruction_tokens", instruction_tokens, 0)
        if chunks not in ("fixed", "heuristic"):
            raise ValueError(f"dhsa chunks must be 'fixed' or 'heuristic', got {chunks!r}")
        self.chunks = chunks
        self.kv_per_head = True  # one selection for every head: KV outside it is never read
        self.name = (
            f"dhsa(block={self.block}, topk={self.topk_tokens}, local={self.local_tokens}, "
            f"global={self.global_tokens}, chunks={self.chunks}/{self.chunk_size})"
        )

    def _kept_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """topk_tokens keys per query row (at least local + global), the last instruction rows dense."""
        kept = torch.minimum(rows + 1, torch.full_like(rows, max(self.topk_tokens, self.local_tokens + self.global_tokens)))
        if self.instruction_tokens:
            kept[-self.instruction_tokens :] = rows[-self.instruction_tokens :] + 1
        return kept

    def select_units(self, q, k, q_pos, k_pos) -> Selection:
        self._check_qk(q, k)
        B, H, T, d = q.shape
        S = k.shape[2]
        dev = q.device
        q_pos = torch.as_tensor(q_pos, device=dev).long().reshape(-1)
        first = int(q_pos[0]) // self.block
        nqb = int(q_pos[-1]) // self.block - first + 1
        cid = fixed_chunks(B, S, self.chunk_size, dev) if self.chunks == "fixed" else heuristic_chunks(k, self.chunk_size)
        C = int(cid.max()) + 1
        kbar = k.float().mean(1)  # (B,S,d)
        ksum = torch.zeros(B, C, d, device=dev).scatter_add_(1, cid.unsqueeze(-1).expand(B, S, d), kbar)
        kcnt = torch.zeros(B, C, device=dev).scatter_add_(1, cid, torch.ones(B, S, device=dev))
        kc = ksum / kcnt.clamp(min=1).sqrt().unsqueeze(-1)  # mean·√|c|
        qbar = q.float().mean(1)  # (B,T,d)
        qb_id = torch.div(q_pos, self.block, rounding_mode="floor") - first
        qsum = torch.zeros(B, nqb, d, device=dev).index_add_(1, qb_id, qbar)
        qcnt = torch.zeros(nqb, device=dev).index_add_(0, qb_id, torch.ones(T, device=dev))
        qc = qsum / qcnt.clamp(min=1).sqrt().view(1, -1, 1)  # mean·√|B|
        s_chunk = qc @ kc.transpose(1, 2)  # (B,nqb,C)
        tok = torch.gather(s_chunk, 2, cid.unsqueeze(1).expand(B, nqb, S))  # (B,nqb,S)
        j = torch.arange(S, device=dev).view(1, 1, -1)
        end = ((torch.arange(nqb, device=dev) + first + 1) * self.block).clamp(max=S).view(1, -1, 1)
        start = ((torch.arange(nqb, device=dev) + first) * self.block).view(1, -1, 1)
        forced = (j >= torch.minimum(end - self.local_tokens, start)) | (j < self.global_tokens)
        prio = torch.where(forced, torch.full_like(tok, float("inf")), tok)
        prio = prio.masked_fill(j >= end, float("-inf"))
        kk = min(max(self.topk_tokens, max(self.local_tokens, self.block) + self.global_tokens), S)
        val, idx = prio.topk(kk, dim=-1)
        valid = val > float("-inf")
        return Selection(
            idx=idx.unsqueeze(1),
            valid=valid.unsqueeze(1),
            unit=1,
            block=self.block,
            first_block=first,
            dense_rows=min(self.instruction_tokens, T),
        )


#: the factory is the class: one signature and one set of defaults
dhsa = DHSA
