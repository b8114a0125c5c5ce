"""Attention weights of one prompt and the gradient of a target with respect to them, from one forward
and one backward pass through headlab's engine.

A weights-stage edit (:class:`AttentionTap`) sees every layer's map A (B=1, H, T, T) after the softmax,
keeps the head-averaged map (for rollout) and the final query's row per head, and adds a zero tensor
that requires grad to that row, so that backward gives ∂y/∂A[l, h, T-1, :] for every head.

*Attention × gradient* per head is then A[l, h, T-1, j] · ∂y/∂A[l, h, T-1, j] (first-order estimate of
how much the target y moves when that attention weight is removed; Chefer et al., arXiv 2103.15679,
use its positive part averaged over heads). The token saliency :func:`attn_grad_saliency` is the mean
over layers and heads of the positive part.

``bump`` (``{layer: (H, T)}``) adds fixed values to the final row instead, so finite differences of y
check the gradient (tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..edits.base import Edit
from ..engine.context import AttnContext
from ..engine.hf import attach, model_shape


class AttentionTap(Edit):
    """Weights-stage edit recording maps and tapping the final query's row (module docstring)."""

    name = "attention_tap"
    needs_all_queries = True  # the final query must be in the chunk the tap sees

    def __init__(self, bump: dict[int, torch.Tensor] | None = None) -> None:
        super().__init__("all")
        self.bump = dict(bump or {})
        self.mean_maps: dict[int, torch.Tensor] = {}  # layer -> (T, S) head mean
        self.last: dict[int, torch.Tensor] = {}  # layer -> (H, S) final query's weights
        self.tap: dict[int, torch.Tensor] = {}  # layer -> (H, S) zero leaf with grad

    def weights(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        if a.shape[0] != 1:
            raise ValueError(f"attention_tap works on one prompt at a time, got a batch of {a.shape[0]} (maps {tuple(a.shape)})")
        self.mean_maps[ctx.layer] = a[0].detach().mean(0)
        self.last[ctx.layer] = a[0, :, -1].detach()
        z = torch.zeros_like(a[0, :, -1]).requires_grad_(True)
        self.tap[ctx.layer] = z
        add = z
        if ctx.layer in self.bump:
            b = self.bump[ctx.layer]
            if tuple(b.shape) != tuple(z.shape):
                raise ValueError(f"bump for layer {ctx.layer} has shape {tuple(b.shape)}; need (heads, keys) = {tuple(z.shape)}")
            add = z + b.to(z)
        return torch.cat([a[:, :, :-1], (a[:, :, -1] + add)[:, :, None]], dim=2)


@dataclass
class AttentionGrad:
    maps: torch.Tensor  # (L, T, T) head-averaged attention of every layer
    last: torch.Tensor  # (L, H, T) the final query's attention weights per head
    grad: torch.Tensor  # (L, H, T) ∂y/∂A[l, h, T-1, :]
    target: float  # y
    target_id: int
    logits: torch.Tensor  # (V,) final position's logits

    @property
    def attn_x_grad(self) -> torch.Tensor:
        """(L, H, T) A · ∂y/∂A at the final query (signed)."""
        return self.last * self.grad


def target_logprob(logits: torch.Tensor, target_id: int) -> torch.Tensor:
    """log p(target_id) at the final position; logits (1, T, V)."""
    return torch.log_softmax(logits[0, -1].float(), -1)[target_id]


def attention_grad(
    model, ids: torch.Tensor, target_id: int | Callable[[torch.Tensor], int], bump: dict[int, torch.Tensor] | None = None
) -> AttentionGrad:
    """Maps and ∂y/∂A for y = log p(target) at the final position of ``ids`` (1, T).

    ``target_id``: a token id, or a callable (final logits (V,)) -> id chosen from this same pass (e.g. the
    predicted label word)."""
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 2:
        raise ValueError(f"ids must be one prompt of >= 2 tokens, shape (1, T), got {tuple(ids.shape)}")
    L, H, _ = model_shape(model)
    tap = AttentionTap(bump)
    with torch.enable_grad(), attach(model, edits=[tap]):
        logits = model(input_ids=ids, use_cache=False).logits
        tid = int(target_id(logits[0, -1].detach())) if callable(target_id) else int(target_id)
        V = logits.shape[-1]
        if not 0 <= tid < V:
            raise ValueError(f"target token id {tid} out of range 0..{V - 1}")
        y = target_logprob(logits, tid)
        layers = sorted(tap.tap)
        if layers != list(range(L)):
            raise RuntimeError(f"attention_tap saw layers {layers}, expected 0..{L - 1}")
        grads = torch.autograd.grad(y, [tap.tap[layer] for layer in layers])
    return AttentionGrad(
        maps=torch.stack([tap.mean_maps[layer] for layer in layers]),
        last=torch.stack([tap.last[layer] for layer in layers]),
        grad=torch.stack([g.detach() for g in grads]),
        target=float(y.detach()),
        target_id=tid,
        logits=logits[0, -1].detach(),
    )


def attn_grad_saliency(ag: AttentionGrad) -> torch.Tensor:
    """(T,) mean over layers and heads of the positive part of A · ∂y/∂A at the final query."""
    return ag.attn_x_grad.clamp(min=0).mean((0, 1))
