"""Gated attention, variant G1 of Qiu et al. "Gated Attention for Large Language Models" (NeurIPS 2025,
arXiv 2505.06708; used in Qwen3-Next).

A sigmoid gate computed from the same (pre-norm) input X that feeds q, k, v multiplies the SDPA output
before the output projection:  Y' = Y ⊙ σ(X W_θ + b_θ).
- ``gate="elementwise"``: W_θ ∈ R^{D × H·d}, one gate per head channel (the paper's best variant);
- ``gate="headwise"``:    W_θ ∈ R^{D × H}, one scalar per head broadcast over its d channels.

Shapes: x (B, T, D) -> y (B, T, D).  ``return_weights=True`` also returns the (ungated) softmax weights
A (B, H, T, T); the gate acts after A·v, so sinks are measured on A as in the paper.
After a forward pass ``last_gate`` holds the gate values (B, H, T, d or 1) for sparsity statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._heads import check_choice, merge_heads
from .softmax import MultiHeadAttention

#: gate kind -> factory(d_model, n_heads, d_head) -> Linear producing the gate logits
GATES: dict[str, Callable[[int, int, int], nn.Linear]] = {
    "elementwise": lambda d_model, n_heads, d_head: nn.Linear(d_model, n_heads * d_head),
    "headwise": lambda d_model, n_heads, d_head: nn.Linear(d_model, n_heads),
}


class GatedAttention(MultiHeadAttention):
    """Multi-head softmax attention with a G1 sigmoid output gate (elementwise or headwise)."""

    def __init__(self, d_model: int, n_heads: int, gate: str = "elementwise", causal: bool = True):
        super().__init__(d_model, n_heads, causal)
        check_choice("gate", gate, GATES, "valid gates")
        self.gate_kind = gate
        self.gate = GATES[gate](d_model, n_heads, self.d_head)
        self.last_gate: torch.Tensor | None = None

    def gate_values(self, x: torch.Tensor) -> torch.Tensor:
        """σ(X W_θ) arranged per head: (B, H, T, d) for elementwise, (B, H, T, 1) for headwise."""
        b, t, _ = x.shape
        g = torch.sigmoid(self.gate(x)).view(b, t, self.n_heads, -1)
        return g.transpose(1, 2)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        q, k, v = self.heads(x)
        o, a = self.attend(q, k, v, return_weights)
        g = self.gate_values(x)
        self.last_gate = g.detach()
        y = self.out(merge_heads(o * g))
        return (y, a) if return_weights else y
