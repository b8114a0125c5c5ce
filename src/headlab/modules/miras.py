"""Miras online-memory layers: Behrouz, Razaviyayn, Zhong, Mirrokni, "It's All Connected: A Journey Through
Test-Time Memorization, Attentional Bias, Retention, and Online Optimization" (arXiv 2504.13173).

A sequence layer is an associative memory W (d_v x d_k per head) trained online, one gradient step per token:

    S_t = α_t S_{t-1} − η_t ∇_W ℓ(W_{t-1}; k_t, v_t),   W_t = view(S_t),   y_t = W_t q_t

with four choices (the paper's framework): memory architecture (here a matrix per head — the paper's
Moneta/Yaad/Memora use a 2-layer MLP memory; this is the matrix instance), attentional bias ℓ, retention
gate (what ``view`` and α do), and learning rule (plain online gradient descent).  With e = W k − v:

==========  ===========================  ====================  ==========================================
variant     attentional bias ℓ           ∇ℓ = ψ(e) k^T, ψ =    retention (view, state)
==========  ===========================  ====================  ==========================================
linear      −⟨W k, v⟩ (dot product)      −v                    ℓ2 decay α_t, view = identity
delta       ½‖W k − v‖²  (ℓ2)            e                     ℓ2 decay α_t, view = identity
moneta      ‖W k − v‖_p^p  (p = 3)       p·sign(e)|e|^{p−1}    ℓ_q: W = S / max(‖S‖_q, 1)^{q−2} (q = 4)
yaad        Huber_δ(W k − v)             clamp(e, −δ, δ)       ℓ2 decay α_t, view = identity
memora      ½‖W k − v‖²  (ℓ2)            e                     KL: S = logits, W = c·softmax_rows(S)
==========  ===========================  ====================  ==========================================

(The ``max(·, 1)`` floor of Moneta's normaliser is a stability choice of this module; the paper's
normaliser is ‖S‖_q^{q−2}.  Memora's update W_t = c·softmax(α_t log W_{t−1} − η_t ∇) is exactly the state
update above on logits, because softmax ignores the per-row constant log-normaliser.)

Two forms:
- :func:`miras_recurrent`: the per-token loop above (the definition);
- :func:`miras_chunked`: the paper's parallel training — inside a chunk of b tokens every gradient is taken
  at the memory of the chunk start, so S_t = (Π α) S_0 − Σ_{s≤t} (Π_{r=s+1..t} α_r) η_s ψ(e_s) k_s^T is one
  batched product.  With ``chunk=1`` it equals the recurrence exactly; for the dot-product bias (gradient
  independent of W) it equals it for every chunk size, and with α = η = 1 it is unnormalised linear
  attention (tested).
Shapes: q, k (B, H, T, d_k); v (B, H, T, d_v); alpha, eta (B, H, T) in (0, 1] and > 0 -> y (B, H, T, d_v).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._heads import check_choice, check_dims, check_input, merge_heads, split_heads

P_MONETA, Q_MONETA, DELTA_YAAD, C_MEMORA = 3.0, 4.0, 1.0, 1.0


def _psi_dot(e, v):
    return -v


#: attentional bias name -> ψ(e, v), the factor with ∇_W ℓ = ψ(e, v) k^T
BIASES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "dot": _psi_dot,
    "l2": lambda e, v: e,
    "lp": lambda e, v: P_MONETA * e.sign() * e.abs().pow(P_MONETA - 1),
    "huber": lambda e, v: e.clamp(-DELTA_YAAD, DELTA_YAAD),
}


def _view_lq(s: torch.Tensor) -> torch.Tensor:
    norm = s.abs().pow(Q_MONETA).sum((-2, -1), keepdim=True).pow(1 / Q_MONETA)
    return s / norm.clamp_min(1.0).pow(Q_MONETA - 2)


#: retention name -> (view: state (..., d_v, d_k) -> memory W, initial state S_0 given (B,H,d_v,d_k) zeros)
RETENTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "l2": lambda s: s,
    "lq": _view_lq,
    "kl": lambda s: C_MEMORA * s.softmax(-1),
}

#: variant -> (bias, retention)
VARIANTS: dict[str, tuple[str, str]] = {
    "linear": ("dot", "l2"),
    "delta": ("l2", "l2"),
    "moneta": ("lp", "lq"),
    "yaad": ("huber", "l2"),
    "memora": ("l2", "kl"),
}


def _check(q, k, v, alpha, eta, bias, retention):
    check_choice("bias", bias, BIASES)
    check_choice("retention", retention, RETENTIONS)
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k (B,H,T,d_k) and v (B,H,T,d_v); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if alpha.shape != q.shape[:3] or eta.shape != q.shape[:3]:
        raise ValueError(f"alpha and eta must be (B,H,T)={tuple(q.shape[:3])}; got {tuple(alpha.shape)}, {tuple(eta.shape)}")


def miras_recurrent(q, k, v, alpha, eta, bias: str = "l2", retention: str = "l2"):
    """The definition, one token at a time: S_t = α_t S_{t−1} − η_t ψ(W_{t−1} k_t − v_t) k_t^T; y_t = W_t q_t."""
    _check(q, k, v, alpha, eta, bias, retention)
    psi, view = BIASES[bias], RETENTIONS[retention]
    b, h, t, dk = q.shape
    s = q.new_zeros(b, h, v.shape[-1], dk)
    ys = []
    for i in range(t):
        w = view(s)
        e = (w @ k[:, :, i, :, None]).squeeze(-1) - v[:, :, i]
        g = psi(e, v[:, :, i])[..., None] * k[:, :, i, None, :]
        s = alpha[:, :, i, None, None] * s - eta[:, :, i, None, None] * g
        ys.append((view(s) @ q[:, :, i, :, None]).squeeze(-1))
    return torch.stack(ys, 2)


def miras_chunked(q, k, v, alpha, eta, bias: str = "l2", retention: str = "l2", chunk: int = 16):
    """Chunk-parallel form (gradients at the chunk-start memory); ``chunk=1`` is the recurrence."""
    _check(q, k, v, alpha, eta, bias, retention)
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    psi, view = BIASES[bias], RETENTIONS[retention]
    b, h, t, dk = q.shape
    s = q.new_zeros(b, h, v.shape[-1], dk)
    log_a = alpha.clamp_min(1e-30).log()
    ys = []
    for c0 in range(0, t, chunk):
        sl = slice(c0, min(t, c0 + chunk))
        kc, vc, qc, ec = k[:, :, sl], v[:, :, sl], q[:, :, sl], eta[:, :, sl]
        n = kc.shape[2]
        w0 = view(s)
        e = kc @ w0.transpose(-1, -2) - vc  # (B,H,n,d_v)
        g = psi(e, vc) * ec[..., None]  # η_s ψ(e_s)
        cum = log_a[:, :, sl].cumsum(-1)  # Σ_{r<=t} log α_r
        diff = cum[..., :, None] - cum[..., None, :]  # (B,H,n,n): Σ_{r=s+1..t} log α_r
        tri = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        dec = diff.masked_fill(~tri, float("-inf")).exp()  # 0 above the diagonal
        st = cum.exp()[..., None, None] * s[:, :, None] - torch.einsum("bhts,bhsv,bhsk->bhtvk", dec, g, kc)
        ys.append((view(st) @ qc[..., None]).squeeze(-1))
        s = st[:, :, -1]
    return torch.cat(ys, 2)


class MirasMemory(nn.Module):
    """Multi-head Miras layer: q, k, v projections (q, k L2-normalised), data-dependent retention α_t =
    σ(w_α·x_t) and step η_t = σ(w_η·x_t) per head, chunk-parallel online memory, output projection."""

    def __init__(self, d_model: int, n_heads: int, variant: str = "moneta", chunk: int = 16):
        super().__init__()
        check_choice("variant", variant, VARIANTS)
        if chunk < 1:
            raise ValueError(f"chunk={chunk} must be >= 1")
        self.d_head = check_dims(d_model, n_heads)
        self.d_model, self.n_heads, self.variant, self.chunk = d_model, n_heads, variant, chunk
        self.bias, self.retention = VARIANTS[variant]
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.gates = nn.Linear(d_model, 2 * n_heads)
        self.out = nn.Linear(d_model, d_model)
        nn.init.constant_(self.gates.bias[:n_heads], 3.0)  # start near full retention (α ≈ 0.95)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        check_input(x, self.d_model)
        q, k, v = (split_heads(z, self.n_heads) for z in self.qkv(x).chunk(3, -1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        a, e = torch.sigmoid(self.gates(x)).transpose(1, 2).chunk(2, 1)  # (B,H,T) each
        y = self.out(merge_heads(miras_chunked(q, k, v, a, e, self.bias, self.retention, self.chunk)))
        return (y, write_read_weights(q, k, a, e)) if return_weights else y


def write_read_weights(q, k, alpha, eta):
    """(B,H,T,T) weights W_ts = (Π_{r=s+1..t} α_r) η_s (q_t·k_s), 0 for s > t: how strongly the write of step s
    enters the read at step t through the key similarity.  Exactly the layer's attention matrix for the dot-product
    bias with identity retention; for the other biases it is the decay-and-similarity part only."""
    cum = alpha.clamp_min(1e-30).log().cumsum(-1)
    t = q.shape[2]
    tri = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    dec = (cum[..., :, None] - cum[..., None, :]).masked_fill(~tri, float("-inf")).exp()
    return dec * eta[..., None, :] * (q @ k.transpose(-1, -2))
