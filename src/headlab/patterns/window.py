"""Sliding window and sink + window (StreamingLLM, Xiao et al., arXiv 2309.17453).

``window(size)``: query i sees keys i-size+1 … i.
``sink_window(sink, size)``: additionally keys 0 … sink-1 (the attention sinks), causally.
"""

from __future__ import annotations

from .base import Pattern, check_int


class Window(Pattern):
    def __init__(self, size: int):
        self.size = check_int("window size", size, 1)
        self.name = f"window({self.size})"

    def rule(self, h, i, j, n):
        d = i - j
        return (d >= 0) & (d < self.size)


class SinkWindow(Pattern):
    def __init__(self, sink: int, size: int):
        self.sink = check_int("sink", sink, 0)
        self.size = check_int("window size", size, 1)
        self.name = f"sink_window({self.sink}, {self.size})"

    def rule(self, h, i, j, n):
        d = i - j
        return (d >= 0) & ((d < self.size) | (j < self.sink))


def window(size: int) -> Pattern:
    """Causal sliding window: query i sees keys i-size+1 … i (size >= 1)."""
    return Window(size)


def sink_window(sink: int, size: int) -> Pattern:
    """StreamingLLM: the first ``sink`` keys plus a causal window of ``size``."""
    return SinkWindow(sink, size)
