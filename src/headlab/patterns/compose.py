"""Pattern algebra: union, intersection, per-head assembly and GQA head expansion.

``a | b`` lets a query see a key when either pattern allows it; ``a & b`` when both do.
``per_head([p0, p1, ...])`` builds one pattern whose head h follows ``p_h`` (MoA-style
heterogeneous heads, arXiv 2406.14909). ``for_heads(p, H, Hkv)`` maps a KV-head pattern
(``kv_per_head=True``) onto the H query heads (query head h reads KV head h // (H // Hkv)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Pattern


def _static(p: Pattern, what: str) -> Pattern:
    if not isinstance(p, Pattern):
        raise ValueError(f"{what} needs Pattern objects, got {type(p).__name__}")
    if p.dynamic:
        raise ValueError(f"{what} of dynamic pattern {p.describe()} is not supported; combine static patterns only")
    return p


def _heads_of(a: Pattern, b: Pattern) -> tuple[int | None, bool]:
    if a.n_heads and b.n_heads:
        if a.n_heads != b.n_heads or a.kv_per_head != b.kv_per_head:
            raise ValueError(
                f"cannot combine patterns with {a.n_heads} heads "
                f"(kv_per_head={a.kv_per_head}) and {b.n_heads} heads "
                f"(kv_per_head={b.kv_per_head})"
            )
        return a.n_heads, a.kv_per_head
    if a.n_heads:
        return a.n_heads, a.kv_per_head
    if b.n_heads:
        return b.n_heads, b.kv_per_head
    return None, False


class _Binary(Pattern):
    op = "?"

    def __init__(self, a: Pattern, b: Pattern):
        self.a, self.b = _static(a, "composition"), _static(b, "composition")
        self.n_heads, self.kv_per_head = _heads_of(self.a, self.b)
        self.name = f"({a.describe()} {self.op} {b.describe()})"

    def check(self, q_len, kv_len):
        self.a.check(q_len, kv_len)
        self.b.check(q_len, kv_len)


class Union(_Binary):
    op = "|"

    def rule(self, h, i, j, n):
        return self.a.rule(h, i, j, n) | self.b.rule(h, i, j, n)


class Intersection(_Binary):
    op = "&"

    def rule(self, h, i, j, n):
        return self.a.rule(h, i, j, n) & self.b.rule(h, i, j, n)


class PerHead(Pattern):
    """Head h follows ``patterns[h]``; each sub-pattern must be head-independent."""

    def __init__(self, patterns: Sequence[Pattern], kv_per_head: bool = False):
        patterns = list(patterns)
        if not patterns:
            raise ValueError("per_head needs at least one pattern, got an empty list")
        for p in patterns:
            _static(p, "per_head")
            if p.n_heads not in (None, 1):
                raise ValueError(f"per_head entries must be single-head patterns, got {p.describe()} with {p.n_heads} heads")
        self.patterns = patterns
        self.n_heads = len(patterns)
        self.kv_per_head = bool(kv_per_head)
        self.name = "per_head[" + ", ".join(p.describe() for p in patterns) + "]"

    def check(self, q_len, kv_len):
        for p in self.patterns:
            p.check(q_len, kv_len)

    def rule(self, h, i, j, n):
        out = None
        zero = torch.zeros_like(torch.as_tensor(h))
        for idx, p in enumerate(self.patterns):
            term = (h == idx) & p.rule(zero, i, j, n)
            out = term if out is None else (out | term)
        return out

    def mask_rows(self, q_pos, k_pos, n=None):
        q_pos = torch.as_tensor(q_pos).long().reshape(-1)
        k_pos = torch.as_tensor(k_pos).long().reshape(-1)
        return torch.cat([p.mask_rows(q_pos, k_pos, n)[:1] for p in self.patterns], 0)


class ForHeads(Pattern):
    """A KV-head pattern seen from the H query heads (rule uses h // group)."""

    kv_per_head = False

    def __init__(self, base: Pattern, n_heads: int, n_kv_heads: int):
        self.base = base
        self.n_heads = n_heads
        self.group = n_heads // n_kv_heads
        self.shared_in_group = True
        self.name = base.describe()

    def check(self, q_len, kv_len):
        self.base.check(q_len, kv_len)

    def rule(self, h, i, j, n):
        return self.base.rule(torch.div(h, self.group, rounding_mode="floor"), i, j, n)

    def mask_rows(self, q_pos, k_pos, n=None):
        return self.base.mask_rows(q_pos, k_pos, n).repeat_interleave(self.group, 0)


def for_heads(p: Pattern, n_heads: int, n_kv_heads: int) -> Pattern:
    """Return ``p`` in query-head numbering for a layer with ``n_heads`` / ``n_kv_heads`` heads."""
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise ValueError(f"n_heads={n_heads} must be a positive multiple of n_kv_heads={n_kv_heads}")
    if not p.n_heads or p.n_heads == 1 and not p.kv_per_head:
        return p
    if p.kv_per_head:
        if p.n_heads != n_kv_heads:
            raise ValueError(
                f"{p.describe()} is defined per KV head with {p.n_heads} heads, but the layer has {n_kv_heads} KV heads"
            )
        if p.dynamic:
            return p
        return ForHeads(p, n_heads, n_kv_heads)
    if p.n_heads != n_heads:
        raise ValueError(
            f"{p.describe()} has {p.n_heads} heads, but the layer has {n_heads} query heads "
            f"(use kv_per_head=True for a pattern over its {n_kv_heads} KV heads)"
        )
    return p


def per_head(patterns: Sequence[Pattern], kv_per_head: bool = False) -> Pattern:
    """One pattern with ``len(patterns)`` heads; head h follows ``patterns[h]``.

    ``kv_per_head=True``: the list is indexed by KV head (saves KV memory under GQA);
    ``False``: indexed by query head (heads sharing a KV head only mask differently).
    """
    return PerHead(patterns, kv_per_head=kv_per_head)
