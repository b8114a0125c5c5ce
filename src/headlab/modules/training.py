"""The one training recipe of the small models built from these modules (the lab's tiny LMs, the mechanism
benchmark's quality task): AdamW (β = 0.9, 0.95), a linear warm-up, cosine decay to 0 (or a constant rate),
the mechanisms' auxiliary losses (MoH load balancing) at weight :data:`AUX_WEIGHT`, gradients clipped to norm 1.

    opt, sched = adamw(model, steps, lr)
    for _ in range(steps):
        loss = ...
        step(model, opt, sched, loss)
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

AUX_WEIGHT = 0.01
SCHEDULES = ("cosine", "constant")


def adamw(
    model: nn.Module,
    steps: int,
    lr: float,
    *,
    weight_decay: float = 0.01,
    schedule: str = "cosine",
    warm_steps: int | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``model``'s parameters and its schedule: linear warm-up over ``warm_steps`` (default steps/20),
    then "cosine" decay to 0 at ``steps`` or "constant"."""
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; valid: {', '.join(SCHEDULES)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay} must be >= 0")
    warm = max(1, steps // 20) if warm_steps is None else warm_steps
    if warm < 1:
        raise ValueError(f"warm_steps={warm_steps} must be >= 1")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    decay = (lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))) if schedule == "cosine" else (lambda s: 1.0)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * decay(s))


def step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    loss: torch.Tensor,
    aux_weight: float = AUX_WEIGHT,
) -> None:
    """One update on ``loss`` plus ``aux_weight`` x the model's ``aux_loss()`` (where it has one)."""
    aux = getattr(model, "aux_loss", None)
    total = loss + aux_weight * cast(torch.Tensor, aux()) if callable(aux) else loss
    opt.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
