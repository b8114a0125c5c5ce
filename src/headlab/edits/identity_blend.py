"""SoftPAG identity blend (Ahn et al. 2025, "Fine-Grained Perturbation Guidance via Attention Head
Selection", 2025). HP-WEIGHTS.

For each selected head: Ã = (1 - u) A + u I, where I sends every query to its own position
(the key with the same position). u = 0 is the identity, u = 1 is PAG (o_i = v_i).
A query whose own key is not among this call's keys keeps its row unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ._util import check_finite
from .core import SiteEdit, register


@register
class IdentityBlend(SiteEdit):
    """SoftPAG: Ã = (1-u) A + u I on ``sites``; u in [0, 1]."""

    name = "identity_blend"
    summary = "blend the attention map with the identity: (1-u) A + u I"
    paper = "Ahn et al. 2025, Fine-Grained Perturbation Guidance via Attention Head Selection"

    def __init__(self, sites: Any = "all", u: float = 1.0, atlas: Any = None) -> None:
        u = check_finite("identity_blend u", u, 0.0, 1.0)
        super().__init__(sites=sites, atlas=atlas, u=u)
        self.u = u

    def weights(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0 or self.u == 0.0:
            return a
        qp = ctx.chunk_query_pos()[:, :, None]  # (B,Tc,1)
        eye = ((ctx.key_pos[:, None, :] == qp) & (qp >= 0)).to(a.dtype)[:, None]  # (B,1,Tc,S)
        has = eye.sum(-1, keepdim=True) > 0
        sub = a[:, heads]
        out = a.clone()
        out[:, heads] = torch.where(has, (1 - self.u) * sub + self.u * eye, sub)
        return out


#: the factory is the class: one signature and one set of defaults
identity_blend = IdentityBlend
