"""Neighbourhood attention with dilation, NATTEN semantics (Hassani et al., arXiv 2204.07143,
2209.15001, 2403.04690; NATTEN ``backends/flex.py``), in 1D and 2D.

Per axis of length n, kernel k, dilation δ: query and key must share the residue x mod δ;
inside a residue group coordinates are x // δ and the group holds ceil((n - r) / δ) positions.
Non-causal: the window [c - k//2, c + k//2 + (k % 2 - 1)] is centred on the query but the centre
is clamped so the window *shifts* at the borders instead of shrinking (every query sees exactly
k keys). Causal: key <= query and query - key < k (in group coordinates). 2D applies the 1D rule
to rows and to columns (positions are row-major, p = y * width + x) and ANDs the results.
"""

from __future__ import annotations

import torch

from .base import Pattern, check_int


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {v!r}")
        return check_int(name, v[0], 1), check_int(name, v[1], 1)
    v = check_int(name, v, 1)
    return v, v


def na_axis(i, j, n: int, kernel: int, dilation: int, causal: bool):
    """NATTEN 1D neighbourhood rule on one axis (broadcast tensors i, j; axis length n)."""
    ri, rj = torch.remainder(i, dilation), torch.remainder(j, dilation)
    ii, jj = torch.div(i, dilation, rounding_mode="floor"), torch.div(j, dilation, rounding_mode="floor")
    same = ri == rj
    if causal:
        return same & (jj <= ii) & (ii - jj < kernel)
    wl = kernel // 2
    wr = kernel // 2 + (kernel % 2 - 1)
    n_r = torch.div(n - ri + dilation - 1, dilation, rounding_mode="floor")  # group length
    c = torch.minimum(torch.clamp(ii, min=wl), n_r - 1 - wr)
    return same & (jj >= c - wl) & (jj <= c + wr)


def _check_axis(kernel, dilation, n, axis):
    if kernel * dilation > n:
        raise ValueError(
            f"neighbourhood kernel*dilation = {kernel}*{dilation} = {kernel * dilation} is larger "
            f"than the {axis} length {n}; need kernel*dilation <= {n} "
            f"(dilation too large for the length)"
        )


class Neighborhood(Pattern):
    def __init__(self, kernel: int, dilation: int = 1, causal: bool = False):
        self.kernel = check_int("kernel", kernel, 1)
        self.dilation = check_int("dilation", dilation, 1)
        self.causal = bool(causal)
        self.name = f"neighborhood(kernel={self.kernel}, dilation={self.dilation}, causal={self.causal})"

    def check(self, q_len, kv_len):
        _check_axis(self.kernel, self.dilation, kv_len, "sequence")

    def rule(self, h, i, j, n):
        return na_axis(i, j, n, self.kernel, self.dilation, self.causal)


class Neighborhood2D(Pattern):
    def __init__(self, height: int, width: int, kernel, dilation=1, causal: bool = False):
        self.height = check_int("height", height, 1)
        self.width = check_int("width", width, 1)
        self.kernel = _pair(kernel, "kernel")
        self.dilation = _pair(dilation, "dilation")
        self.causal = bool(causal)
        for k, d, n, ax in zip(self.kernel, self.dilation, (self.height, self.width), ("height", "width")):
            _check_axis(k, d, n, ax)
        self.name = (
            f"neighborhood2d({self.height}x{self.width}, kernel={self.kernel}, dilation={self.dilation}, causal={self.causal})"
        )

    def check(self, q_len, kv_len):
        if kv_len > self.height * self.width:
            raise ValueError(
                f"neighborhood2d covers {self.height}x{self.width} = {self.height * self.width} positions, got kv_len={kv_len}"
            )

    def rule(self, h, i, j, n):
        yi, xi = torch.div(i, self.width, rounding_mode="floor"), torch.remainder(i, self.width)
        yj, xj = torch.div(j, self.width, rounding_mode="floor"), torch.remainder(j, self.width)
        return na_axis(yi, yj, self.height, self.kernel[0], self.dilation[0], self.causal) & na_axis(
            xi, xj, self.width, self.kernel[1], self.dilation[1], self.causal
        )


def neighborhood(kernel: int, dilation: int = 1, causal: bool = False) -> Pattern:
    """1D neighbourhood attention (NATTEN semantics; windows shift at borders)."""
    return Neighborhood(kernel, dilation, causal)


def neighborhood2d(height: int, width: int, kernel, dilation=1, causal: bool = False) -> Pattern:
    """2D neighbourhood attention over a row-major height x width grid."""
    return Neighborhood2D(height, width, kernel, dilation, causal)
