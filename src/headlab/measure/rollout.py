"""Attention rollout (Abnar & Zuidema, arXiv 2005.00928): how much of the input token j flows into the
final position through the stacked attention layers, the residual connection counted as an identity.

Per layer l the head-averaged map A_l (T, T) becomes Ã_l = (A_l + I) / 2 with rows renormalised to sum 1;
the rollout is R = Ã_L · Ã_{L-1} ··· Ã_1 and the final query's relevance is its last row R[T-1, :].

* :func:`rollout_last` (fast): only that row, propagated as a row vector, r ← r · Ã_l for l = L … 1,
  O(L · T²).
* :func:`rollout_reference` (plain): the full matrix product, layer by layer from the input, O(L · T³).
"""

from __future__ import annotations

import torch


def _check(maps: torch.Tensor) -> torch.Tensor:
    if maps.dim() != 3 or maps.shape[1] != maps.shape[2]:
        raise ValueError(f"maps must be (layers, T, T) head-averaged attention, got shape {tuple(maps.shape)}")
    if maps.shape[0] < 1 or maps.shape[1] < 1:
        raise ValueError(f"maps need >= 1 layer and >= 1 token, got shape {tuple(maps.shape)}")
    return maps.double()


def residual_maps(maps: torch.Tensor) -> torch.Tensor:
    """(L, T, T) Ã_l = (A_l + I) / 2, each row renormalised to sum 1."""
    m = _check(maps)
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    r = 0.5 * m + 0.5 * eye
    return r / r.sum(-1, keepdim=True)


def rollout_last(maps: torch.Tensor) -> torch.Tensor:
    """(T,) rollout relevance of every input token for the final position; ``maps``: (L, T, T)."""
    r_maps = residual_maps(maps)
    r = torch.zeros(r_maps.shape[-1], dtype=r_maps.dtype, device=r_maps.device)
    r[-1] = 1.0
    for layer in range(r_maps.shape[0] - 1, -1, -1):  # last layer first: row vector times Ã_L, then Ã_{L-1} ...
        r = r @ r_maps[layer]
    return r


def rollout_reference(maps: torch.Tensor) -> torch.Tensor:
    """(T, T) full rollout R = Ã_L ··· Ã_1 computed from the input upwards (plain reference)."""
    r_maps = residual_maps(maps)
    rolled = torch.eye(r_maps.shape[-1], dtype=r_maps.dtype, device=r_maps.device)
    for layer in range(r_maps.shape[0]):
        rolled = r_maps[layer] @ rolled
    return rolled
