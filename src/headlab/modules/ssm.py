"""A selective state-space cell (S6, as in Mamba, arXiv 2312.00752) written in the Dynamical Systems
Framework of Sieber et al., "Understanding the differences in Foundation Models: Attention, State Space
Models, and Recurrent Neural Networks" (NeurIPS 2024, arXiv 2405.15731).

DSF writes every layer as a linear parameter-varying system, per head with state h_t (d_v x n):

    h_t = Λ_t ⊙ h_{t−1} + (Δ_t ⊙ u_t) B_t^T,     y_t = h_t C_t (+ D ⊙ u_t)

- selective SSM: Λ_t[c, m] = exp(Δ_t[c] A[c, m]) (diagonal, input-dependent through Δ_t = softplus(·)),
  B_t, C_t (n) projections of the input, u_t the values (d_v);
- linear attention: Λ_t = 1, Δ_t = 1, B_t = φ(k_t), C_t = φ(q_t), u_t = v_t (no normaliser).

So the two coincide when A = 0 (no forgetting) and the step Δ is 1 — then the SSM output is exactly
unnormalised causal linear attention with keys B and queries C (tested) — and differ as soon as Λ ≠ 1.
A per-head scalar Λ_t (A constant across (c, m), "Mamba-2") is gated linear attention.

Forms (tested equal): :func:`ssm_recurrent` (the loop, the definition), :func:`ssm_parallel`
(y_t = Σ_{s≤t} C_t·(exp(L_t − L_s) ⊙ Δ_s u_s B_s^T) with L_t = Σ_{r≤t} Δ_r A, the attention-like
(T, T) form) and :func:`ssm_chunked` (the parallel form inside chunks, the state carried between them:
O(T) memory); :func:`linear_chunked` is the scalar-Λ case (gated linear attention) in its cheap chunked form.  :func:`to_dsf` returns the per-step (Λ_t, B_t, C_t).
Shapes: u, delta (B, H, T, d_v); b, c (B, H, T, n); a (H, d_v, n) <= 0 -> y (B, H, T, d_v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._heads import check_dims, check_input, merge_heads, split_heads


def _check(u, delta, b, c, a):
    if u.dim() != 4 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (B,H,T,d_v); got {tuple(u.shape)}, {tuple(delta.shape)}")
    if b.shape != c.shape or b.shape[:3] != u.shape[:3]:
        raise ValueError(
            f"b and c must both be (B,H,T,n) with (B,H,T)={tuple(u.shape[:3])}; got {tuple(b.shape)}, {tuple(c.shape)}"
        )
    if a.shape != (u.shape[1], u.shape[3], b.shape[3]):
        raise ValueError(f"a must be (H, d_v, n)={(u.shape[1], u.shape[3], b.shape[3])}; got {tuple(a.shape)}")


def to_dsf(delta, b, c, a):
    """DSF matrices per step: Λ (B,H,T,d_v,n) = exp(Δ ⊙ A), input map B (B,H,T,n), output map C (B,H,T,n)."""
    return torch.exp(delta[..., None] * a[None, :, None]), b, c


def ssm_recurrent(u, delta, b, c, a):
    """h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) B_t^T; y_t = h_t C_t."""
    _check(u, delta, b, c, a)
    bs, h, t, dv = u.shape
    state = u.new_zeros(bs, h, dv, b.shape[-1])
    lam = torch.exp(delta[..., None] * a[None, :, None])  # (B,H,T,d_v,n)
    ys = []
    for i in range(t):
        state = lam[:, :, i] * state + (delta[:, :, i] * u[:, :, i])[..., None] * b[:, :, i, None, :]
        ys.append((state @ c[:, :, i, :, None]).squeeze(-1))
    return torch.stack(ys, 2)


def _chunk(u, delta, b, c, a, state):
    """Parallel form over one chunk from ``state`` (B,H,d_v,n); returns (y, last state)."""
    n = u.shape[2]
    cum = (delta[..., None] * a[None, :, None]).cumsum(2)  # L_t (B,H,n_t,d_v,n)
    diff = cum[:, :, :, None] - cum[:, :, None]  # L_t − L_s (B,H,t,s,d_v,n)
    tri = torch.ones(n, n, dtype=torch.bool, device=u.device).tril()[None, None, :, :, None, None]
    dec = diff.masked_fill(~tri, float("-inf")).exp()
    x = (delta * u)[..., None] * b[..., None, :]  # Δ_s u_s B_s^T (B,H,s,d_v,n)
    states = cum.exp() * state[:, :, None] + torch.einsum("bhtsvn,bhsvn->bhtvn", dec, x)
    y = torch.einsum("bhtvn,bhtn->bhtv", states, c)
    return y, states[:, :, -1]


def ssm_parallel(u, delta, b, c, a):
    """All T steps at once (memory O(T² d_v n)): the attention-like form of the recurrence."""
    _check(u, delta, b, c, a)
    return _chunk(u, delta, b, c, a, u.new_zeros(u.shape[0], u.shape[1], u.shape[3], b.shape[3]))[0]


def ssm_chunked(u, delta, b, c, a, chunk: int = 32):
    """The parallel form inside chunks of ``chunk`` steps with the state carried across (O(T) memory)."""
    _check(u, delta, b, c, a)
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    state = u.new_zeros(u.shape[0], u.shape[1], u.shape[3], b.shape[3])
    ys = []
    for s0 in range(0, u.shape[2], chunk):
        sl = slice(s0, s0 + chunk)
        y, state = _chunk(u[:, :, sl], delta[:, :, sl], b[:, :, sl], c[:, :, sl], a, state)
        ys.append(y)
    return torch.cat(ys, 2)


def linear_chunked(q, k, v, log_decay=None, chunk: int = 64):
    """The scalar-Λ case of DSF per head — gated linear attention (Mamba-2-like): h_t = λ_t h_{t−1} + v_t k_t^T,
    y_t = h_t q_t, λ_t = exp(log_decay_t) (``log_decay`` (B,H,T) <= 0; None: λ = 1, plain unnormalised causal
    linear attention).  Chunked: inside a chunk ((q k^T) ⊙ decay) v, across chunks the carried state;
    O(T·chunk·d + T·d²) time, O(d²) state.  q, k (B,H,T,d_k), v (B,H,T,d_v) -> (B,H,T,d_v)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k (B,H,T,d_k), v (B,H,T,d_v); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    if log_decay is None:
        log_decay = q.new_zeros(q.shape[:3])
    elif log_decay.shape != q.shape[:3]:
        raise ValueError(f"log_decay must be (B,H,T)={tuple(q.shape[:3])}; got {tuple(log_decay.shape)}")
    state = q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3])  # Σ decayed k v^T (B,H,d_k,d_v)
    ys = []
    for c0 in range(0, q.shape[2], chunk):
        sl = slice(c0, c0 + chunk)
        qc, kc, vc, cum = q[:, :, sl], k[:, :, sl], v[:, :, sl], log_decay[:, :, sl].cumsum(-1)
        n = qc.shape[2]
        tri = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        dec = (cum[..., :, None] - cum[..., None, :]).masked_fill(~tri, float("-inf")).exp()
        ys.append(((qc @ kc.transpose(-1, -2)) * dec) @ vc + (qc * cum.exp()[..., None]) @ state)
        tail = (cum[..., -1:] - cum).exp()[..., None]  # decay from s to the chunk end
        state = cum[..., -1].exp()[..., None, None] * state + (kc * tail).transpose(-1, -2) @ vc
    return torch.cat(ys, 2)


class SelectiveSSM(nn.Module):
    """Multi-head selective SSM token mixer: u, B, C, Δ projections of x, A = −exp(A_log) (S4D-real init
    A[c, m] = −(m+1)), D skip, output projection.  Causal; x (B, T, D) -> (B, T, D).  ``chunk=0`` (default) runs
    the per-token scan (fastest on CPU at these widths), ``chunk>0`` the chunk-parallel form (same numbers)."""

    def __init__(self, d_model: int, n_heads: int, d_state: int = 16, chunk: int = 0):
        super().__init__()
        self.d_head = check_dims(d_model, n_heads)
        if d_state < 1 or chunk < 0:
            raise ValueError(f"d_state={d_state} must be >= 1 and chunk={chunk} >= 0")
        self.d_model, self.n_heads, self.d_state, self.chunk = d_model, n_heads, d_state, chunk
        self.proj = nn.Linear(d_model, 2 * d_model + 2 * n_heads * d_state)
        a = torch.arange(1, d_state + 1, dtype=torch.float).expand(n_heads, self.d_head, d_state)
        self.a_log = nn.Parameter(a.log().clone())
        self.d_skip = nn.Parameter(torch.ones(d_model))
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        check_input(x, self.d_model)
        d, hn = self.d_model, self.n_heads * self.d_state
        u, dt, b, c = self.proj(x).split([d, d, hn, hn], -1)
        u_h, dt_h = split_heads(u, self.n_heads), split_heads(F.softplus(dt), self.n_heads)
        b_h, c_h = split_heads(b, self.n_heads), split_heads(c, self.n_heads)
        a = -self.a_log.exp()
        y = ssm_chunked(u_h, dt_h, b_h, c_h, a, self.chunk) if self.chunk else ssm_recurrent(u_h, dt_h, b_h, c_h, a)
        y = self.out(merge_heads(y) + self.d_skip * u)
        return (y, ssm_weights(dt_h, b_h, c_h, a)) if return_weights else y


def ssm_weights(delta, b, c, a):
    """The DSF attention matrix averaged over channels: y_t[c] = Σ_s K_ts[c] u_s[c] with
    K_ts[c] = Σ_m C_t[m] exp(L_t − L_s)[c, m] Δ_s[c] B_s[m] (s <= t); returns mean_c K (B,H,T,T), O(T² d_v n)."""
    t = delta.shape[2]
    cum = (delta[..., None] * a[None, :, None]).cumsum(2)
    tri = torch.ones(t, t, dtype=torch.bool, device=delta.device).tril()[None, None, :, :, None, None]
    dec = (cum[:, :, :, None] - cum[:, :, None]).masked_fill(~tri, float("-inf")).exp()
    return torch.einsum("bhtn,bhtsvn,bhsv,bhsn->bhts", c, dec, delta, b) / delta.shape[-1]
