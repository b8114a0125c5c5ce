"""HaloNet blocked local attention (Vaswani et al., CVPR 2021, arXiv 2103.12731).

1D: query block b = i // block sees keys j in [b*block - halo, (b+1)*block + halo) (its block
plus ``halo`` positions on each side; borders are simply cut, as zero padding would be masked).
2D: block x block query tiles on a row-major height x width grid see their tile grown by
``halo`` on every side; block must divide height and width. ``causal=True`` adds j <= i.
"""

from __future__ import annotations

import torch

from .base import Pattern, check_int


def _halo_axis(i, j, block, halo):
    b = torch.div(i, block, rounding_mode="floor")
    return (j >= b * block - halo) & (j < (b + 1) * block + halo)


class Halo(Pattern):
    def __init__(self, block: int, halo: int, causal: bool = False):
        self.block = check_int("block", block, 1)
        self.halo = check_int("halo", halo, 0)
        self.causal = bool(causal)
        self.name = f"halo(block={self.block}, halo={self.halo}{', causal' if self.causal else ''})"

    def rule(self, h, i, j, n):
        m = _halo_axis(i, j, self.block, self.halo)
        return m & (j <= i) if self.causal else m


class Halo2D(Pattern):
    def __init__(self, height: int, width: int, block: int, halo: int, causal: bool = False):
        self.height = check_int("height", height, 1)
        self.width = check_int("width", width, 1)
        self.block = check_int("block", block, 1)
        self.halo = check_int("halo", halo, 0)
        self.causal = bool(causal)
        if self.height % self.block or self.width % self.block:
            raise ValueError(f"halo2d block={self.block} must divide height={self.height} and width={self.width}")
        self.name = f"halo2d({self.height}x{self.width}, block={self.block}, halo={self.halo})"

    def check(self, q_len, kv_len):
        if kv_len > self.height * self.width:
            raise ValueError(f"halo2d covers {self.height * self.width} positions, got kv_len={kv_len}")

    def rule(self, h, i, j, n):
        yi, xi = torch.div(i, self.width, rounding_mode="floor"), torch.remainder(i, self.width)
        yj, xj = torch.div(j, self.width, rounding_mode="floor"), torch.remainder(j, self.width)
        m = _halo_axis(yi, yj, self.block, self.halo) & _halo_axis(xi, xj, self.block, self.halo)
        return m & (j <= i) if self.causal else m


def halo(block: int, halo: int, causal: bool = False) -> Pattern:
    return Halo(block, halo, causal)


def halo2d(height: int, width: int, block: int, halo: int, causal: bool = False) -> Pattern:
    return Halo2D(height, width, block, halo, causal)
