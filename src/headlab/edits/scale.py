"""Scale the output of chosen heads before W_O (HP-HEADOUT).

``scale_heads({(12, 3): 0.0, (5, 1): 2.0})`` multiplies o^{l,h} by the factor. Factor 1 is the
identity (exactly), 0 is output ablation. This is also the execution step of VHR head
reinforcement (VHR, He et al., ACL 2025; see reinforce.py) and of head-level ablation studies
(Michel et al. 2019, "Are Sixteen Heads Really Better than One?", arXiv 1905.10650).
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ..engine.sites import format_site, parse_site
from ._util import layer_vector, site_values
from .core import SiteEdit, register


def site_vectors(vectors: dict, what: str) -> dict[str, torch.Tensor]:
    """{(l, h) or "LlHh": (d,) vector} -> {"LlHh": float32 (d,) tensor}; ``what`` names them in errors."""
    out = {}
    for k, v in vectors.items():
        try:
            key = format_site(*parse_site(k))
        except ValueError:
            raise ValueError(f"{what}: bad site key {k!r}; expected 'L<layer>H<head>' or a (layer, head) pair") from None
        t = torch.as_tensor(v, dtype=torch.float32)
        if t.ndim != 1:
            raise ValueError(f"{what} for {key} must be a (d,) vector, got shape {tuple(t.shape)}")
        out[key] = t
    return out


@register
class ScaleHeads(SiteEdit):
    name = "scale_heads"
    summary = "multiply each head's output o (before W_O) by its factor"

    def __init__(self, factors: Any, sites: Any = None, atlas: Any = None) -> None:
        fac = site_values(factors, "factors")
        super().__init__(sites=list(fac), atlas=None, factors={format_site(*k): v for k, v in fac.items()})
        self._fac = fac

    @classmethod
    def from_params(cls, sites: Any, params: dict) -> ScaleHeads:
        return cls(params["factors"])

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0:
            return o
        f = layer_vector(self._fac, ctx.layer, heads, o.dtype, o.device)
        out = o.clone()
        out[:, heads] = o[:, heads] * f[None, :, None, None]
        return out


def scale_heads(factors: Any) -> ScaleHeads:
    """Multiply the output of each site by a factor: ``scale_heads({(l, h): factor})``."""
    return ScaleHeads(factors)
