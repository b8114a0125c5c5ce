"""FlexAttention ``mask_mod`` functions as headlab patterns, and back.

``from_mask_mod(fn)`` wraps ``fn(b, h, q_idx, kv_idx) -> bool tensor`` (the ``mask_mod`` signature of
``torch.nn.attention.flex_attention``; masks written for attention-gym drop in) as a static
:class:`~headlab.patterns.base.Pattern`, so it runs through every engine path (the block-sparse
kernel, the chunked eager loop with probes and edits) and has ``mask``, ``block_layout`` and
``density``. The reverse direction is ``pattern.mask_mod(kv_len, q_len)`` on any static pattern, a
function ready for ``create_block_mask``.

Indices: headlab rules see positions (``q_idx`` is the query's position counted from the first
real token), which equal FlexAttention's indices when queries and keys have the same length, the
case mask_mod functions are written for. The batch index ``b`` is always 0: a headlab pattern is the
same for every row. ``fn`` must use tensor operations only (it is called on broadcast index grids
here and under ``vmap`` by ``create_block_mask``); it may be non-causal: a causal model still masks
future keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Pattern, check_int

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class MaskModPattern(Pattern):
    """A static pattern whose rule is a FlexAttention ``mask_mod``."""

    def __init__(self, fn: MaskMod, n_heads: int | None = None, kv_per_head: bool = False, name: str | None = None):
        if not callable(fn):
            raise ValueError(f"from_mask_mod needs a function fn(b, h, q_idx, kv_idx) -> bool tensor, got {type(fn).__name__}")
        self.fn = fn
        self.n_heads = None if n_heads is None else check_int("n_heads", n_heads, 1)
        self.kv_per_head = bool(kv_per_head)
        self.name = name or f"mask_mod({getattr(fn, '__name__', 'fn')})"

    def rule(self, h, i, j, n):
        h = torch.as_tensor(h)
        b = torch.zeros((), dtype=torch.long, device=h.device)
        m = self.fn(b, h.long() if self.n_heads else torch.zeros_like(h, dtype=torch.long), i, j)
        m = torch.as_tensor(m, device=h.device)
        if m.dtype != torch.bool:
            raise ValueError(f"{self.name}: mask_mod must return a bool tensor (True = may attend), got dtype {m.dtype}")
        return m


def from_mask_mod(fn: MaskMod, n_heads: int | None = None, kv_per_head: bool = False, name: str | None = None) -> Pattern:
    """A headlab pattern from a FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool``.

    ``n_heads``: give it when ``fn`` depends on ``h`` (query heads; or KV heads with
    ``kv_per_head=True``); without it every head shares the mask and ``fn`` sees ``h = 0``.
    """
    return MaskModPattern(fn, n_heads=n_heads, kv_per_head=kv_per_head, name=name)
