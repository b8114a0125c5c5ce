"""Head ablation in three modes (one class per mode so the engine only runs the needed stage).

* ``"zero"``    (HP-HEADOUT): o^{l,h} <- 0 before W_O (Michel et al. 2019, arXiv 1905.10650).
* ``"uniform"`` (HP-LOGITS): the retrieval-head paper's masking (Wu et al., ICLR 2025,
  arXiv 2404.15574): logits of the head set to 0 over every visible key, so the head attends
  uniformly over what it can see (masked keys stay -inf).
* ``"mean"``    (HP-HEADOUT): o^{l,h} <- mean output of that head (mean ablation, as in circuit
  work). The mean is a (d,) vector per head, averaged over **every real token position of a
  reference set of texts** in one calibration pass with no edit attached. Edits never run a model:
  ``headlab.measure.calibrate_mean_ablation(edit, model, tokenizer, texts)`` computes and sets
  them, or compute them with ``headlab.measure.record_head_outputs`` and pass them: ``means={"L12H3": [...d floats]}``
  or ``edit.set_means(...)``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ..engine.sites import format_site
from ._util import on_heads
from .core import SiteEdit, _pairs, register
from .scale import site_vectors

MODES = ("zero", "mean", "uniform")


class _Plain(SiteEdit):
    """An ablation with no parameters but its sites."""

    def __init__(self, sites: Any, atlas: Any = None) -> None:
        super().__init__(sites=sites, atlas=atlas)


@register
class ZeroAblate(_Plain):
    name = "ablate_zero"
    summary = "zero the head output before W_O"

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return on_heads(o, self.heads_in(ctx), torch.zeros_like)


@register
class UniformAblate(_Plain):
    name = "ablate_uniform"
    summary = "logits set to 0 over visible keys: the head attends uniformly"

    def scores(self, s: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return on_heads(s, self.heads_in(ctx), lambda x: torch.where(x == float("-inf"), x, torch.zeros_like(x)))


@register
class MeanAblate(SiteEdit):
    name = "ablate_mean"
    summary = "replace the head output by its mean over a reference set"

    def __init__(self, sites: Any, means: dict | None = None, atlas: Any = None) -> None:
        super().__init__(sites=sites, atlas=atlas)
        self._means: dict[str, torch.Tensor] = {}
        if means is not None:
            self.set_means(means)

    def set_means(self, means: dict) -> MeanAblate:
        """Use ``means`` ({(l, h) or "LlHh": (d,) vector}) as the heads' replacement outputs."""
        self._means = site_vectors(means, "mean")
        return self

    def _json_params(self) -> dict:
        return {"means": {k: v.tolist() for k, v in self._means.items()}} if self._means else {}

    @classmethod
    def from_params(cls, sites: Any, params: dict) -> MeanAblate:
        return cls(_pairs(sites), means=params.get("means"))

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0:
            return o
        missing = [format_site(ctx.layer, int(h)) for h in heads if format_site(ctx.layer, int(h)) not in self._means]
        if missing:
            raise ValueError(
                f"ablate(mode='mean'): no mean output for {missing[:4]}; call "
                "headlab.measure.calibrate_mean_ablation(edit, model, tokenizer, texts) or pass means="
            )
        mu = torch.stack([self._means[format_site(ctx.layer, int(h))] for h in heads]).to(o)  # (k, d)
        if mu.shape[-1] != o.shape[-1]:
            raise ValueError(f"mean has d={mu.shape[-1]} but head outputs have d={o.shape[-1]}")
        out = o.clone()
        out[:, heads] = mu[None, :, None, :].expand(o.shape[0], -1, o.shape[2], -1)
        return out


def ablate(sites: Any, mode: str = "zero", means: dict | None = None, atlas: Any = None) -> SiteEdit:
    """Ablate heads: ``mode`` in ("zero", "mean", "uniform"); sites may be an atlas selector."""
    if mode == "zero":
        return ZeroAblate(sites, atlas=atlas)
    if mode == "uniform":
        return UniformAblate(sites, atlas=atlas)
    if mode == "mean":
        return MeanAblate(sites, means=means, atlas=atlas)
    raise ValueError(f"ablate: mode={mode!r} is not one of {MODES}")
