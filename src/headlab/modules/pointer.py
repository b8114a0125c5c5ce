"""Pointer-network attention head: Vinyals, Fortunato, Jaitly, "Pointer Networks" (NeurIPS 2015,
arXiv 1506.03134).

Additive attention whose distribution *is* the output: u_ij = v^T tanh(W_1 e_j + W_2 d_i) and
p(C_i = j) = softmax_j(u_ij).  Positions can be masked (e.g. already chosen cities in TSP).

Shapes: enc (B, N, d_enc), dec (B, T, d_dec), optional mask (B, N) or (B, T, N) bool (True = may point)
-> log-probabilities (B, T, N).
"""

from __future__ import annotations

import torch
from torch import nn


class PointerHead(nn.Module):
    def __init__(self, d_enc: int, d_dec: int, d_attn: int = 64):
        super().__init__()
        self.d_enc, self.d_dec = d_enc, d_dec
        self.w1 = nn.Linear(d_enc, d_attn, bias=False)
        self.w2 = nn.Linear(d_dec, d_attn, bias=False)
        self.v = nn.Linear(d_attn, 1, bias=False)

    def scores(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        """u (B, T, N) before masking."""
        if enc.dim() != 3 or enc.shape[-1] != self.d_enc:
            raise ValueError(f"enc must be (B, N, {self.d_enc}), got {tuple(enc.shape)}")
        if dec.dim() != 3 or dec.shape[-1] != self.d_dec or dec.shape[0] != enc.shape[0]:
            raise ValueError(f"dec must be (B={enc.shape[0]}, T, {self.d_dec}), got {tuple(dec.shape)}")
        return self.v(torch.tanh(self.w1(enc)[:, None] + self.w2(dec)[:, :, None])).squeeze(-1)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        u = self.scores(enc, dec)
        if mask is not None:
            m = mask.bool()
            if m.dim() == 2:
                m = m[:, None, :]
            if m.shape[0] != u.shape[0] or m.shape[-1] != u.shape[-1]:
                raise ValueError(f"mask must be (B, N) or (B, T, N) for scores {tuple(u.shape)}, got {tuple(mask.shape)}")
            u = u.masked_fill(~m, float("-inf"))
        return u.log_softmax(-1)
