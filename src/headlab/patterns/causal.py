"""Dense causal attention as a pattern (query i sees keys 0..i); the baseline of every sparse one."""

from __future__ import annotations

from .base import Pattern


class Causal(Pattern):
    name = "causal"

    def rule(self, h, i, j, n):
        return j <= i


def causal() -> Pattern:
    """Query i sees keys 0 … i."""
    return Causal()
