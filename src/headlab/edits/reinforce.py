"""Head reinforcement from context sensitivity (VHR; He et al., "Cracking the Code of Hallucination in LVLMs with Vision-aware Head Divergence", ACL 2025). HP-HEADOUT.

VHD (SPEC §A6) for a text model: two forward passes that differ only in a context span (the
passage present vs removed); a head's score is the mean over items of ‖o^h_with − o^h_without‖₂
at the last prompt token (``context_sensitivity``). VHR then, per layer, drops "surge" heads
(score > layer mean + std), keeps the heads above the layer median of the rest and multiplies their
outputs by α (default 2).

Deviation, stated: VHR re-selects heads at every decoding step and layer with a dual pass inside
the model. Here the selection is computed once on a tuning set and applied as a fixed head scaling
(a static VHR), which is what the edit contract can express. α = 1 is the identity.
"""
from __future__ import annotations

from typing import Any

import torch

from .core import register
from .scale import ScaleHeads
from ._util import check_finite


@torch.no_grad()
def context_sensitivity(model: Any, tokenizer: Any, with_context: list[str], without_context: list[str],
                        batch_size: int = 4, max_length: int | None = 1024, distance: str = "l2") -> torch.Tensor:
    """(L, H) mean distance between head outputs at the last token, with vs without the context."""
    from ..measure.record import HeadRecorder, run_recorder

    if len(with_context) != len(without_context) or not with_context:
        raise ValueError("context_sensitivity: need the same non-zero number of prompts with and without context")
    if distance not in ("l2", "cosine"):
        raise ValueError(f"distance={distance!r} must be 'l2' or 'cosine'")
    outs = []
    for texts in (with_context, without_context):
        rec = run_recorder(model, tokenizer, texts, HeadRecorder("all", "last"), batch_size, max_length)
        outs.append(rec.per_item())
    L = model.config.num_hidden_layers
    H = model.config.num_attention_heads
    score = torch.zeros(L, H)
    for l in range(L):
        a, b = outs[0][l], outs[1][l]  # (N, H, d)
        if distance == "l2":
            score[l] = (a - b).norm(dim=-1).mean(0)
        else:
            score[l] = (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).mean(0)
    return score


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
    def from_params(cls, sites: Any, params: dict) -> "Reinforce":
        return cls([tuple(s) for s in sites], params["alpha"])


def reinforce(heads: Any, alpha: float = 2.0, layers: Any = None) -> Reinforce:
    """``heads``: explicit [(l, h)] or an (L, H) context-sensitivity score (VHR selection applied)."""
    if isinstance(heads, torch.Tensor):
        heads = select_heads(heads, layers)
    return Reinforce(heads, alpha)
