"""Linear attention read as a Hebbian / Pavlovian associative memory ("Linear attention as Hebbian
associative memory", single author, 2025) — the standard causal linear attention of
Katharopoulos et al. (arXiv 2006.16236) with a feature map φ.

Memory view: the state is M_t = Σ_{j ≤ t} v_j φ(k_j)^T (a Hebbian outer-product write, CS = key,
US = value); reading is o_t = M_t φ(q_t).  With ``normalize="sum"`` the read is divided by
φ(q_t)·z_t, z_t = Σ_{j ≤ t} φ(k_j) (+1e-6).

Two exactly equivalent forms (tested against each other):
- :func:`linear_attention_parallel`: o = ((φ(Q) φ(K)^T) ⊙ causal) V — O(T² d), the "attention" form;
- :func:`linear_attention_recurrent`: the loop over t updating M_t — O(T d²), the "memory" form.
Shapes: q, k (B, H, T, d_k), v (B, H, T, d_v) -> o (B, H, T, d_v).
The module maps x (B, T, D) -> (B, T, D); ``return_weights`` gives the (B,H,T,T) φ-similarities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._heads import causal_mask, check_choice, merge_heads
from .softmax import MultiHeadAttention

EPS = 1e-6

#: feature-map name -> φ applied to q and k (last dim)
FEATURE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,  # pure Hebbian memory (paper's formal core)
    "elu1": lambda x: F.elu(x) + 1,  # positive map of Katharopoulos et al.
}
NORMALIZE = ("none", "sum")


def _check(feature_map: str, normalize: str) -> None:
    check_choice("feature_map", feature_map, FEATURE_MAPS)
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize={normalize!r}; valid: {list(NORMALIZE)}")


def linear_weights(q, k, feature_map: str = "elu1", normalize: str = "sum", causal: bool = True):
    """(B,H,T,T) weights W_ij = φ(q_i)·φ(k_j) (masked, optionally row-normalised)."""
    _check(feature_map, normalize)
    phi = FEATURE_MAPS[feature_map]
    w = phi(q) @ phi(k).transpose(-1, -2)
    if causal:
        w = w * causal_mask(q.shape[-2], q.device).to(w.dtype)
    if normalize == "sum":
        w = w / (w.sum(-1, keepdim=True) + EPS)
    return w


def linear_attention_parallel(q, k, v, feature_map: str = "elu1", normalize: str = "sum", causal: bool = True):
    """Parallel (attention) form: o = W V with W from :func:`linear_weights`."""
    return linear_weights(q, k, feature_map, normalize, causal) @ v


def linear_attention_recurrent(q, k, v, feature_map: str = "elu1", normalize: str = "sum"):
    """Recurrent (memory) form, causal: M_t = M_{t-1} + v_t φ(k_t)^T, o_t = M_t φ(q_t) [/ φ(q_t)·z_t]."""
    _check(feature_map, normalize)
    phi = FEATURE_MAPS[feature_map]
    fq, fk = phi(q), phi(k)
    b, h, t, dk = fq.shape
    mem = q.new_zeros(b, h, v.shape[-1], dk)  # M (B,H,d_v,d_k)
    z = q.new_zeros(b, h, dk)
    outs = []
    for i in range(t):
        mem = mem + v[:, :, i, :, None] * fk[:, :, i, None, :]
        z = z + fk[:, :, i]
        o = (mem @ fq[:, :, i, :, None]).squeeze(-1)
        if normalize == "sum":
            o = o / ((fq[:, :, i] * z).sum(-1, keepdim=True) + EPS)
        outs.append(o)
    return torch.stack(outs, dim=2)


def hebbian_write(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Store N pairs: keys (N, d_k), values (N, d_v) -> M = Σ_j v_j k_j^T (d_v, d_k)."""
    if keys.dim() != 2 or values.dim() != 2 or keys.shape[0] != values.shape[0]:
        raise ValueError(f"keys (N,d_k) and values (N,d_v) must share N; got {tuple(keys.shape)}, {tuple(values.shape)}")
    return values.T @ keys


def hebbian_read(memory: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Retrieve: memory (d_v, d_k), queries (Q, d_k) -> (Q, d_v) = (M q)^T."""
    return queries @ memory.T


class LinearAttention(MultiHeadAttention):
    """Causal multi-head linear attention (parallel form in training; the recurrent form is equal)."""

    def __init__(self, d_model: int, n_heads: int, feature_map: str = "elu1", normalize: str = "sum", causal: bool = True):
        super().__init__(d_model, n_heads, causal)
        _check(feature_map, normalize)
        self.feature_map, self.normalize = feature_map, normalize

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        q, k, v = self.heads(x)
        w = linear_weights(q, k, self.feature_map, self.normalize, self.causal)
        y = self.out(merge_heads(w @ v))
        return (y, w) if return_weights else y
