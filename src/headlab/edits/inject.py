"""Soft injection of ICL task embeddings with per-head mixing weights (SITE; Park & Rhee 2025,
"Soft Head Selection for Injecting ICL-Derived Task Embeddings"). HP-HEADOUT.

Task embedding: μ^{l,h} = mean over many few-shot ICL prompts of the head output (before W_O) at
the last prompt token (computed by :func:`headlab.measure.task_embedding`; edits never run a model). Injection, at the last prompt token of a zero-shot
prompt only: o^{l,h} <- (1 - α_{l,h}) o^{l,h} + α_{l,h} μ^{l,h}, α = sigmoid(θ). θ (one value per
head) is learned by :func:`headlab.steer.tune.fit_inject` with cross-entropy on the first answer
token; ``theta`` may also be given directly (θ = -inf, i.e. α = 0, is the identity).

"Last prompt token": position ``ctx.state["prompt_last"]`` (B,) when given; else the last query of
a prefill call (T > 1, or a 1-token prompt). Decode steps (T = 1 against a cache) are untouched.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ..engine.sites import format_site, parse_site
from .core import SiteEdit, register
from .scale import site_vectors


@register
class Inject(SiteEdit):
    """Soft injection of task embeddings ``means`` ({site: (d,)}) with mixing α = sigmoid(θ)."""

    name = "inject"
    summary = "o <- (1-a) o + a mu at the last prompt token, a = sigmoid(theta) per head"

    def __init__(self, means: dict, theta: Any = -2.0) -> None:
        if not isinstance(means, dict) or not means:
            raise ValueError("inject: means must be a non-empty {site: (d,) vector} dict (see task_embedding)")
        mu = site_vectors(means, "inject: mean")
        pairs = [parse_site(key) for key in mu]
        super().__init__(sites=pairs)
        self.means = mu
        if isinstance(theta, dict):
            missing = set(mu) - {format_site(*k) if isinstance(k, tuple) else str(k) for k in theta}
            if missing:
                raise ValueError(f"inject: theta misses sites {sorted(missing)[:4]}")
            vals = [float(theta[k] if k in theta else theta[tuple(p)]) for k, p in zip(mu, pairs)]
        else:
            vals = [float(theta)] * len(mu)
        self.theta = torch.nn.Parameter(torch.tensor(vals, dtype=torch.float32))
        self._index = {k: i for i, k in enumerate(mu)}

    def alphas(self) -> dict[str, float]:
        return {k: float(torch.sigmoid(self.theta.detach()[i])) for k, i in self._index.items()}

    def _json_params(self) -> dict:
        return {
            "means": {k: v.tolist() for k, v in self.means.items()},
            "theta": {k: float(self.theta.detach()[i]) for k, i in self._index.items()},
        }

    @classmethod
    def from_params(cls, sites: Any, params: dict) -> Inject:
        return cls(params["means"], params["theta"])

    def describe(self) -> str:
        a = torch.sigmoid(self.theta.detach())
        return f"inject({len(self.means)} heads, alpha mean {float(a.mean()):.3f}, max {float(a.max()):.3f}): {self.summary}"

    def _rows(self, ctx: AttnContext) -> torch.Tensor:
        """(B, T) bool: queries that are the last prompt token."""
        qp = ctx.query_pos
        pl = ctx.state.get("prompt_last")
        if pl is not None:
            return qp == torch.as_tensor(pl, device=qp.device).view(-1, 1)
        if qp.shape[1] == 1 and ctx.key_pos.shape[1] > 1:
            return torch.zeros_like(qp, dtype=torch.bool)
        return (qp == qp.amax(dim=1, keepdim=True)) & (qp >= 0)

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0:
            return o
        rows = self._rows(ctx)
        if not rows.any():
            return o
        keys = [format_site(ctx.layer, int(h)) for h in heads]
        mu = torch.stack([self.means[k] for k in keys]).to(o)  # (k, d)
        a = torch.sigmoid(self.theta[[self._index[k] for k in keys]]).to(o)  # (k,)
        w = a[None, :, None, None] * rows[:, None, :, None].to(o.dtype)  # (B,k,T,1)
        out = o.clone()
        out[:, heads] = (1 - w) * o[:, heads] + w * mu[None, :, None, :]
        return out


#: the factory is the class: one signature and one set of defaults
inject = Inject
