"""PoNet pooling token mixer: Tan et al., "PoNet: Pooling Network for Efficient Token Mixing in Long
Sequences" (ICLR 2022, arXiv 2110.02442), official repo lxchtan/PoNet (``attention_ponet.py``).

Five linear projections of x: Q, K, O, L (local) and S (segment).  Per head (width d):
- global aggregation (GA): g = mean_t Q_t;  a_t = softmax_t(g·K_t/√d);  v_g = Σ_t a_t K_t   (V = K)
- segment max-pooling (SMP): max of S over each equal-length segment of ``segment_size`` tokens
  (the last segment may be shorter), broadcast back to the segment's tokens;
- local max-pooling (LMP): max of L over the window [t-w, t+w] (``window=2w+1``, default 3), stride 1;
- fusion: out_t = (v_g + SMP(t)) ⊙ O_t + LMP_t, then an output projection.
Bidirectional, O(T); a key-padding mask ``mask`` (B, T) bool (True = real token) is honoured (padding positions
get zero pools, so an all-padding segment never overflows).

Shapes: x (B, T, D) -> (B, T, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._heads import check_dims, check_input, merge_heads, split_heads


class PoNetMixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, segment_size: int = 16, window: int = 3):
        super().__init__()
        self.d_head = check_dims(d_model, n_heads)
        if segment_size < 1:
            raise ValueError(f"segment_size={segment_size} must be >= 1")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window={window} must be a positive odd number")
        self.d_model, self.n_heads, self.segment_size, self.window = d_model, n_heads, segment_size, window
        self.proj = nn.Linear(d_model, 5 * d_model)  # Q, K, O, L, S
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_input(x, self.d_model)
        b, t, d = x.shape
        if mask is not None and mask.shape != (b, t):
            raise ValueError(f"mask must be (B, T) = {(b, t)}, got {tuple(mask.shape)}")
        valid = torch.ones(b, t, dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        q, k, o, loc, seg = self.proj(x).chunk(5, dim=-1)
        neg = torch.finfo(x.dtype).min
        # global aggregation per head
        qh, kh = split_heads(q, self.n_heads), split_heads(k, self.n_heads)  # (B,H,T,d)
        vm = valid[:, None, :, None].to(x.dtype)
        g = (qh * vm).sum(2, keepdim=True) / vm.sum(2, keepdim=True).clamp_min(1)  # (B,H,1,d)
        logits = (g @ kh.transpose(-1, -2)) / math.sqrt(self.d_head)  # (B,H,1,T)
        logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
        vg = merge_heads(logits.softmax(-1) @ kh)  # (B,1,D)
        # segment max pooling
        seg = seg.masked_fill(~valid[..., None], neg)
        n_seg = -(-t // self.segment_size)
        pad = n_seg * self.segment_size - t
        segp = F.pad(seg, (0, 0, 0, pad), value=neg).view(b, n_seg, self.segment_size, d).amax(2)
        smp = segp.repeat_interleave(self.segment_size, dim=1)[:, :t]
        # local max pooling (stride 1, same length)
        loc = loc.masked_fill(~valid[..., None], neg)
        w = self.window // 2
        lmp = F.max_pool1d(F.pad(loc.transpose(1, 2), (w, w), value=neg), self.window, 1).transpose(1, 2)
        # a padding position's pools may hold the fill value (-3.4e38: an all-padding segment or window), which
        # overflows to -inf and NaN downstream; they carry nothing, so they are 0 (real positions are unaffected)
        pad = ~valid[..., None]
        return self.out((vg + smp.masked_fill(pad, 0)) * o + lmp.masked_fill(pad, 0))
