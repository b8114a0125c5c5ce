"""PowerAttention (Chen et al., 2025, arXiv 2503.03588): power-of-two block distances.

Block index = position // block. Query block bq sees key block bk iff bk <= bq and
(bq - bk < window_blocks, or bq - bk is a power of two, or bk < sink_blocks); token-level
causality (j <= i) applies on top. Every distance n is reachable in popcount(n) hops, so the
receptive field doubles per layer (checked exactly in ``patterns.reach``).
"""

from __future__ import annotations

from .base import Pattern, check_int


class Power(Pattern):
    def __init__(self, block: int, window_blocks: int, sink_blocks: int):
        self.block = check_int("block", block, 1)
        self.window_blocks = check_int("window_blocks", window_blocks, 1)
        self.sink_blocks = check_int("sink_blocks", sink_blocks, 0)
        self.name = f"power(block={self.block}, window_blocks={self.window_blocks}, sink_blocks={self.sink_blocks})"

    def rule(self, h, i, j, n):
        bq, bk = i // self.block, j // self.block
        d = bq - bk
        pow2 = (d > 0) & ((d & (d - 1)) == 0)
        return (j <= i) & ((d < self.window_blocks) | pow2 | (bk < self.sink_blocks))

    def block_rule(self, h, bq, bk):
        """Block-level layout (some allowed pair in block (bq, bk)); rule = j <= i & f(bq, bk)."""
        d = bq - bk
        pow2 = (d > 0) & ((d & (d - 1)) == 0)
        return (d >= 0) & ((d < self.window_blocks) | pow2 | (bk < self.sink_blocks))


def power(block: int = 64, window_blocks: int = 4, sink_blocks: int = 1) -> Pattern:
    """PowerAttention block pattern (defaults sized for SmolLM2; the paper uses block 256, window 5)."""
    return Power(block, window_blocks, sink_blocks)
