"""Head ablation in three modes (one class per mode so the engine only runs the needed stage).

* ``"zero"``    (HP-HEADOUT): o^{l,h} <- 0 before W_O (Michel et al. 2019, arXiv 1905.10650).
* ``"uniform"`` (HP-LOGITS): the retrieval-head paper's masking (Wu et al., ICLR 2025,
  arXiv 2404.15574): logits of the head set to 0 over every visible key, so the head attends
  uniformly over what it can see (masked keys stay -inf).
* ``"mean"``    (HP-HEADOUT): o^{l,h} <- mean output of that head (mean ablation, as in circuit
  work). The mean is a (d,) vector per head, averaged over **every real token position of a
  reference set of texts** in one calibration pass with no edit attached: call
  ``edit.calibrate(model, tokenizer, texts)`` or pass ``means={"L12H3": [...d floats]}``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from .core import SiteEdit, register
from ._util import on_heads

MODES = ("zero", "mean", "uniform")


@register
class ZeroAblate(SiteEdit):
    name = "ablate_zero"
    summary = "zero the head output before W_O"

    def __init__(self, sites: Any, atlas: Any = None) -> None:
        super().__init__(sites=sites, atlas=atlas)

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return on_heads(o, self.heads_in(ctx), torch.zeros_like)


@register
class UniformAblate(SiteEdit):
    name = "ablate_uniform"
    summary = "logits set to 0 over visible keys: the head attends uniformly"

    def __init__(self, sites: Any, atlas: Any = None) -> None:
        super().__init__(sites=sites, atlas=atlas)

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

    def set_means(self, means: dict) -> "MeanAblate":
        from .scale import site_vectors

        self._means = site_vectors(means, "mean")
        return self

    def _json_params(self) -> dict:
        return {"means": {k: v.tolist() for k, v in self._means.items()}} if self._means else {}

    @classmethod
    def from_params(cls, sites: Any, params: dict) -> "MeanAblate":
        from .core import _pairs

        return cls(_pairs(sites), means=params.get("means"))

    def calibrate(self, model: Any, tokenizer: Any, texts: list[str], batch_size: int = 4,
                  max_length: int = 256) -> "MeanAblate":
        """Mean head output over every real token of ``texts`` (one pass, no edit attached)."""
        from ..measure.record import record_head_outputs

        n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
        self.bind(n_layers, n_heads)
        means = record_head_outputs(model, tokenizer, texts, self.sites, where="all",
                                    batch_size=batch_size, max_length=max_length)
        return self.set_means(means)

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        from .scale import site_key

        heads = self.heads_in(ctx)
        if len(heads) == 0:
            return o
        missing = [site_key(ctx.layer, int(h)) for h in heads if site_key(ctx.layer, int(h)) not in self._means]
        if missing:
            raise ValueError(f"ablate(mode='mean'): no mean output for {missing[:4]}; call "
                             "edit.calibrate(model, tokenizer, texts) or pass means=")
        mu = torch.stack([self._means[site_key(ctx.layer, int(h))] for h in heads]).to(o)  # (k, d)
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
