"""Small shape helpers shared by the attention modules (not a public API)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def check_dims(d_model: int, n_heads: int) -> int:
    """Return the head width d = d_model // n_heads, or raise a ValueError naming the bad value."""
    if n_heads < 1:
        raise ValueError(f"n_heads={n_heads} must be >= 1")
    if d_model < 1 or d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be a positive multiple of n_heads={n_heads}")
    return d_model // n_heads


def check_choice(name: str, value: Any, valid: Iterable[str], what: str = "valid") -> None:
    """ValueError naming ``value`` and the sorted ``valid`` names when ``value`` is not one of them."""
    if value not in valid:
        raise ValueError(f"{name}={value!r}; {what}: {sorted(valid)}")


def check_input(x: torch.Tensor, d_model: int) -> None:
    """x must be (B, T, d_model)."""
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"expected x of shape (B, T, {d_model}), got {tuple(x.shape)}")


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, H*d) -> (B, H, T, d)."""
    b, t, hd = x.shape
    return x.view(b, t, n_heads, hd // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H*d)."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def causal_mask(t: int, device=None) -> torch.Tensor:
    """Bool (T, T) lower triangle, True = key j is visible from query i (j <= i)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()
