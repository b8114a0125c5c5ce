"""Attention influence, MoA's profiling signal (Fu et al., arXiv 2406.14909, Sec. 4.1).

For one attention row i with weights A_i· and loss gradient G_ij = dL/dA_ij, masking the entry
(i, j) and renormalising the row moves the row to A'_ik = A_ik / (1 - A_ij) (k != j), A'_ij = 0.
The first-order estimate of the loss change is

    dL_ij = G_i · (A'_i - A_i) = A_ij (sum_k A_ik G_ik - G_ij) / (1 - A_ij)

(row 0, with a single visible key, uses -A_ij G_ij). Since the output is O = A V, the gradient is
G = dO · Vᵀ: one backward pass through the dense model (SDPA, no attention maps stored) gives
dO per layer, and the maps are rebuilt afterwards, a chunk of queries at a time.

``capture`` routes a model's attention through SDPA and keeps q, k, v and the output (with its
gradient) per layer; ``entry_influence`` is the per-entry estimate on a block of query rows;
``distance_histogram`` folds |dL| into per-head mass by key distance i - j, with the first
``sink`` keys summed apart. ``reference_influence`` is the brute-force per-(i, j) definition.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

_counter = itertools.count()


class Capture:
    """Per-layer tensors of one forward pass: ``q`` (B, H, T, d), ``k``/``v`` (B, Hkv, T, d),
    ``out`` (B, H, T, d) with ``.grad`` after ``backward``; ``scale`` the softmax scale."""

    def __init__(self) -> None:
        self.layers: dict[int, dict] = {}

    def clear(self) -> None:
        self.layers.clear()


def _make_fn(cap: Capture):
    order: dict[int, int] = {}

    def moa_profile_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            layer = order.setdefault(id(module), len(order))
        B, H, T, d = query.shape
        S = key.shape[2]
        if B != 1 or T != S:
            raise ValueError(
                f"the MoA profiler runs one unpadded sequence at a time (B=1, T=S), got q {tuple(query.shape)}, "
                f"k {tuple(key.shape)}"
            )
        scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, enable_gqa=key.shape[1] != H)
        if out.requires_grad:
            out.retain_grad()
        cap.layers[layer] = {"q": query.detach(), "k": key.detach(), "v": value.detach(), "out": out, "scale": scale}
        return out.transpose(1, 2).contiguous(), None

    return moa_profile_attention


@contextlib.contextmanager
def capture(model) -> Iterator[Capture]:
    """Run ``model``'s attention as causal SDPA and record q, k, v, out per layer (restored on exit)."""
    if not getattr(model, "_supports_attention_backend", False):
        raise ValueError(f"{type(model).__name__} does not route attention through transformers' AttentionInterface")
    cap = Capture()
    name = f"headlab_moa_profile_{next(_counter)}"
    AttentionInterface.register(name, _make_fn(cap))
    AttentionMaskInterface.register(name, sdpa_mask)
    previous = model.config._attn_implementation
    try:
        model.set_attn_implementation(name)
        yield cap
    finally:
        model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)


def _up(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def _expand(x: torch.Tensor, H: int) -> torch.Tensor:
    """(B, Hkv, S, d) -> (B, H, S, d), query head h reads KV head h // (H // Hkv)."""
    g = H // x.shape[1]
    return x if g == 1 else x.repeat_interleave(g, dim=1)


def entry_influence(q, k, v, dout, scale: float, rows: torch.Tensor, out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, dL) for the query ``rows`` (Tc,) of a causal self-attention call, both (B, H, Tc, S').

    q (B, H, T, d), k/v (B, Hkv, S, d), dout (B, H, T, d_v) = dL/dO, optional out (B, H, T, d_v)
    the attention output (saves one pass); queries are the last T of S positions; S' = S - T +
    rows.max() + 1 (keys no row of the block can see are left out). dL_ij is the first-order loss
    change when entry (i, j) is masked and the row renormalised; 0 where j > i."""
    H, T, S = q.shape[1], q.shape[2], k.shape[2]
    pos = S - T + rows  # (Tc,) absolute positions of the rows
    width = int(pos.max()) + 1
    ke, ve = _up(_expand(k[:, :, :width], H)), _up(_expand(v[:, :, :width], H))
    s = torch.matmul(_up(q[:, :, rows]), ke.transpose(-1, -2)).mul_(scale)  # (B, H, Tc, S')
    causal = torch.arange(width, device=q.device)[None, :] <= pos[:, None]  # (Tc, S')
    a = torch.softmax(s.masked_fill_(~causal, float("-inf")), dim=-1)
    del s
    do = _up(dout[:, :, rows])
    g = torch.matmul(do, ve.transpose(-1, -2))  # dL/dA (B, H, Tc, S')
    if out is not None:
        rowdot = (do * _up(out[:, :, rows])).sum(-1, keepdim=True)  # sum_j A_ij G_ij = dO_i . O_i
    else:
        rowdot = (a * g).sum(-1, keepdim=True)
    first = torch.nonzero(pos == 0).flatten()  # a row with one visible key: masking it empties the row
    g_first = g[:, :, first].clone()
    dl = torch.sub(rowdot, g, out=g).mul_(a).div_(torch.rsub(a, 1.0).clamp_min_(1e-7))
    if len(first):
        dl[:, :, first] = -a[:, :, first] * g_first
    return a, dl


def distance_histogram(
    q, k, v, dout, scale: float, sink: int, chunk: int | None = None, out=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed |dL| per query head: (hist (H, S) by key distance i - j, sink (H,) over keys j < sink).

    Keys j < ``sink`` go only to ``sink`` (a MoA head always keeps them), never to ``hist``."""
    B, H, T, _ = q.shape
    S = k.shape[2]
    if chunk is None:
        chunk = max(1, min(T, (1 << 23) // max(1, B * H * S)))
    hist = torch.zeros(H, S, dtype=torch.float64)
    sinks = torch.zeros(H, dtype=torch.float64)
    for t0 in range(0, T, chunk):
        rows = torch.arange(t0, min(T, t0 + chunk))
        _, dl = entry_influence(q, k, v, dout, scale, rows, out=out)
        e = dl.abs_().sum(0)  # (H, Tc, S'), summed over the batch
        width = e.shape[-1]
        if sink:
            sinks += e[..., :sink].sum((-1, -2)).double()
            e[..., :sink] = 0.0
        dist = ((S - T + rows)[:, None] - torch.arange(width)[None, :]).clamp_(min=0)  # (Tc, S'); j > i carry 0
        part = torch.zeros(H, S, dtype=e.dtype)
        part.index_add_(1, dist.reshape(-1), e.reshape(H, -1))
        hist += part.double()
    return hist, sinks


def reference_influence(q, k, v, dout, scale: float) -> torch.Tensor:
    """Brute force: (B, H, T, S) dL, with dL/dA from autograd and each row masked explicitly."""
    B, H, T, _ = q.shape
    S = k.shape[2]
    ke, ve = _expand(k, H).double(), _expand(v, H).double()
    s = torch.matmul(q.double(), ke.transpose(-1, -2)) * scale
    vis = torch.ones(T, S, dtype=torch.bool).tril(S - T)
    a = torch.softmax(s.masked_fill(~vis, float("-inf")), dim=-1).detach().requires_grad_(True)
    (torch.matmul(a, ve) * dout.double()).sum().backward()
    g = a.grad
    a = a.detach()
    out = torch.zeros(B, H, T, S, dtype=torch.float64)
    for b, h, i, j in itertools.product(range(B), range(H), range(T), range(S)):
        if not vis[i, j]:
            continue
        row = a[b, h, i].clone()
        rest = 1.0 - row[j]
        row[j] = 0.0
        if rest > 1e-12:
            row = row / rest
        out[b, h, i, j] = (g[b, h, i] * (row - a[b, h, i])).sum()
    return out
