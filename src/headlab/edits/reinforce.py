"""Head reinforcement from context sensitivity (VHR; He et al., "Cracking the Code of Hallucination in LVLMs with Vision-aware Head Divergence", ACL 2025). HP-HEADOUT.

VHD for a text model: two forward passes that differ only in a context span (the passage present
vs removed); a head's score is the mean over items of ‖o^h_with − o^h_without‖₂ at the last prompt
token (computed by :func:`headlab.measure.context_sensitivity`; edits never run a model). VHR then, per layer, drops "surge" heads
(score > layer mean + std), keeps the heads above the layer median of the rest and multiplies their
outputs by α (default 2).

Deviation, stated: VHR re-selects heads at every decoding step and layer with a dual pass inside
the model. Here the selection is computed once on a tuning set and applied as a fixed head scaling
(a static VHR), which is what the edit contract can express. α = 1 is the identity.
"""

from __future__ import annotations

from typing import Any

import torch

from ._util import check_finite
from .core import register
from .scale import ScaleHeads


def select_heads(score: torch.Tensor, layers: Any = None) -> list[tuple[int, int]]:
    """VHR rule per layer: drop surges (> mean + std), keep heads above the median of the rest."""
    if score.ndim != 2:
        raise ValueError(f"score must be (layers, heads), got shape {tuple(score.shape)}")
    L = score.shape[0]
    layers = range(L) if layers is None else layers
    out = []
    for l in layers:
        if not 0 <= l < L:
            raise ValueError(f"layer {l} out of range: valid 0..{L - 1}")
        s = score[l]
        keep = s <= s.mean() + s.std()
        med = s[keep].median()
        out += [(l, int(h)) for h in torch.nonzero(keep & (s > med)).flatten().tolist()]
    return out


@register
class Reinforce(ScaleHeads):
    name = "reinforce"
    summary = "multiply the outputs of context-sensitive heads by alpha (static VHR)"
    paper = "He et al., ACL 2025 (Vision-aware Head Divergence)"

    def __init__(self, heads: Any, alpha: float = 2.0) -> None:
        alpha = check_finite("reinforce alpha", alpha, 0.0, None)
        pairs = [tuple(h) for h in heads]
        if not pairs:
            raise ValueError("reinforce: no heads selected")
        super().__init__({p: alpha for p in pairs})
        self.params = {"alpha": alpha}

    @classmethod
    def from_params(cls, sites: Any, params: dict) -> Reinforce:
        return cls([tuple(s) for s in sites], params["alpha"])


def reinforce(heads: Any, alpha: float = 2.0, layers: Any = None) -> Reinforce:
    """``heads``: explicit [(l, h)] or an (L, H) context-sensitivity score (VHR selection applied)."""
    if isinstance(heads, torch.Tensor):
        heads = select_heads(heads, layers)
    return Reinforce(heads, alpha)
