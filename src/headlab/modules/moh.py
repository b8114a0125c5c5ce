"""MoH: Mixture-of-Head attention, Jin et al. "MoH: Multi-Head Attention as Mixture-of-Head Attention"
(arXiv 2410.11842), official repo SkyworkAI/MoH.

Heads are split into ``n_shared`` always-on heads and ``H - n_shared`` routed heads of which ``top_k`` are
active per token.  The layer output is W_O [g_1 o^1; …; g_H o^H] with per-token head gates g (B, T, H).

Routers (registry :data:`ROUTERS`, one signature ``router(module, x, q) -> (gates (B,T,H), aux_loss)``):
- ``"trainable"`` (MoH-ViT/DiT): shared gates h_s·softmax(W_s x); routed gates K·(top-K-masked softmax(W_r x))
  / Σ_topK; both scaled by the two-stage balance [α_1, α_2] = 2·softmax(W_h x).  Auxiliary load-balancing
  loss L_b = E · Σ_i f_i P_i over the E routed heads (f_i = share of routing slots given to head i,
  P_i = mean router probability); the caller adds β·L_b (β = 0.01 in the paper).
- ``"query_norm"`` (MoH-LLaMA3, parameter-free, usable training-free): routed logits are the L2 norms of
  each routed head's query vector divided by their std across routed heads; softmax, top-K; the gate is a
  binary mask (1 for shared heads and the selected routed heads).

With every head active and equal router weights (zero router matrices, or ``query_norm`` with
top_k = H - n_shared) all gates are exactly 1 and the layer equals plain multi-head attention.
Heads are computed densely and masked: this reproduces quality, not the compute saving.

Shapes: x (B, T, D) -> y (B, T, D); ``last_gates`` (B, T, H) and ``aux_loss`` (scalar) after forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._heads import check_choice, merge_heads
from .softmax import MultiHeadAttention


def _topk_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Float mask (…, E) with 1 at the k largest logits of the last dim."""
    mask = torch.zeros_like(logits)
    if k > 0:
        mask.scatter_(-1, logits.topk(k, dim=-1).indices, 1.0)
    return mask


def trainable_router(m: MoHAttention, x: torch.Tensor, q: torch.Tensor):
    """Gates (B,T,H) and load-balancing loss for the learned two-stage router."""
    parts, aux = [], x.new_zeros(())
    if m.n_shared:
        parts.append(m.n_shared * m.w_shared(x).softmax(-1))
    if m.n_routed:
        p = m.w_routed(x).softmax(-1)  # (B,T,E)
        mask = _topk_mask(p.detach(), m.top_k)
        sel = p * mask
        parts.append(m.top_k * sel / sel.sum(-1, keepdim=True).clamp_min(1e-9) if m.top_k else sel)
        if 0 < m.top_k < m.n_routed:
            f = mask.mean(dim=(0, 1)) / m.top_k  # share of routing slots, sums to 1
            aux = m.n_routed * (f * p.mean(dim=(0, 1))).sum()
    if len(parts) == 2 and m.top_k:
        alpha = 2 * m.w_balance(x).softmax(-1)  # (B,T,2)
        parts = [parts[0] * alpha[..., :1], parts[1] * alpha[..., 1:]]
    return torch.cat(parts, -1), aux


def query_norm_router(m: MoHAttention, x: torch.Tensor, q: torch.Tensor):
    """Binary gates (B,T,H) from the parameter-free query-norm router; no auxiliary loss."""
    b, _, t, _ = q.shape
    shared = q.new_ones(b, t, m.n_shared)
    norms = q[:, m.n_shared :].norm(dim=-1).transpose(1, 2)  # (B,T,E)
    if m.n_routed > 1:
        norms = norms / norms.std(-1, keepdim=True).clamp_min(1e-6)
    routed = _topk_mask(norms.softmax(-1), m.top_k)
    return torch.cat([shared, routed], -1), x.new_zeros(())


#: router name -> router(module, x (B,T,D), q (B,H,T,d)) -> (gates (B,T,H), aux loss)
ROUTERS: dict[str, Callable] = {"trainable": trainable_router, "query_norm": query_norm_router}


class MoHAttention(MultiHeadAttention):
    """Multi-head attention whose heads are gated per token by a MoH router (see module docstring)."""

    def __init__(self, d_model: int, n_heads: int, n_shared: int, top_k: int, router: str = "trainable", causal: bool = True):
        super().__init__(d_model, n_heads, causal)
        if not 0 <= n_shared <= n_heads:
            raise ValueError(f"n_shared={n_shared} must be in [0, n_heads={n_heads}]")
        if not 0 <= top_k <= n_heads - n_shared:
            raise ValueError(f"top_k={top_k} must be in [0, n_heads - n_shared = {n_heads - n_shared}]")
        if n_shared + top_k == 0:
            raise ValueError("n_shared + top_k must be >= 1 (at least one active head)")
        check_choice("router", router, ROUTERS, "valid routers")
        self.n_shared, self.n_routed, self.top_k, self.router = n_shared, n_heads - n_shared, top_k, router
        if router == "trainable":
            self.w_shared = nn.Linear(d_model, max(n_shared, 1), bias=False)
            self.w_routed = nn.Linear(d_model, max(self.n_routed, 1), bias=False)
            self.w_balance = nn.Linear(d_model, 2, bias=False)
        self.last_gates: torch.Tensor | None = None
        self.aux_loss: torch.Tensor = torch.zeros(())

    @property
    def active_fraction(self) -> float:
        """Share of heads active per token, (n_shared + top_k) / H."""
        return (self.n_shared + self.top_k) / self.n_heads

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        q, k, v = self.heads(x)
        gates, self.aux_loss = ROUTERS[self.router](self, x, q)
        self.last_gates = gates.detach()
        o, a = self.attend(q, k, v, return_weights)
        y = self.out(merge_heads(o * gates.transpose(1, 2).unsqueeze(-1)))
        return (y, a) if return_weights else y
