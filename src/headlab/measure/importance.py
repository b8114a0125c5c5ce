"""Head importance: what mean-ablating one head does to the next-token distribution, measured and
estimated.

* Measured (batched sweep): each head is mean-ablated (its output before W_O replaced by its mean
  over every real token of the texts, as ``headlab.edits.ablate(mode="mean")`` does) in its own
  copy of the batch; per head the mean over real positions of KL(p || p_ablated) of the
  next-token distributions, and the change of the mean next-token loss ΔNLL.
* Estimated (one forward and backward pass): the first-order Taylor estimate of ΔNLL,
  ``Σ_{b,t} (μ_h - o_{b,h,t}) · ∂NLL/∂o_{b,h,t}`` (the head-importance score of Michel et al.,
  arXiv 1905.10650, with the mean instead of zero as the ablated value; Molchanov et al.,
  arXiv 1611.06440). KL itself has zero gradient at the unablated model, so its first-order
  estimate is 0; the estimate is compared with KL by rank (Spearman of |Taylor| with KL) and
  with ΔNLL directly (Pearson and Spearman).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from scipy import stats

from ..edits.base import Edit
from ..edits.patch import Recording, patch
from ..engine.context import AttnContext
from ..engine.hf import attach, model_shape
from ..engine.sites import format_site, parse_site
from .patching import _ids, _progress, _StageRecorder


@dataclass
class Importance:
    kl: torch.Tensor  # (L, H) mean KL(p || p_ablated) over real positions, nats
    delta_nll: torch.Tensor  # (L, H) measured change of the mean next-token loss
    taylor: torch.Tensor  # (L, H) first-order estimate of delta_nll
    spearman_kl_taylor: float  # rank correlation of kl with |taylor|
    pearson_nll_taylor: float
    spearman_nll_taylor: float
    base_nll: float
    tokens: int

    def records(self) -> list[dict]:
        L, H = self.kl.shape
        return [
            {
                "layer": l,
                "head": h,
                "site": format_site(l, h),
                "kl_mean_ablation": round(float(self.kl[l, h]), 7),
                "delta_nll": round(float(self.delta_nll[l, h]), 7),
                "taylor_nll": round(float(self.taylor[l, h]), 7),
            }
            for l in range(L)
            for h in range(H)
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "spearman_kl_vs_abs_taylor": self.spearman_kl_taylor,
            "pearson_delta_nll_vs_taylor": self.pearson_nll_taylor,
            "spearman_delta_nll_vs_taylor": self.spearman_nll_taylor,
            "base_nll": self.base_nll,
            "tokens": self.tokens,
        }


def _means_tensor(means: Mapping | None, rec: Recording, L: int, H: int) -> dict[int, torch.Tensor]:
    """{layer: (H, d)} means: given ({site: (d,)}) or over every real token of ``rec``."""
    if means is None:
        w = (rec.query_pos >= 0).float()[:, None, :, None]  # (B, 1, T, 1)
        return {l: (rec.data[l] * w).sum((0, 2)) / w.sum((0, 2)) for l in range(L)}
    out = {l: torch.full((H, rec.data[0].shape[-1]), float("nan")) for l in range(L)}
    for k, v in means.items():
        l, h = parse_site(k)
        out[l][h] = torch.as_tensor(v, dtype=torch.float32)
    missing = [format_site(l, h) for l in range(L) for h in range(H) if torch.isnan(out[l][h]).any()]
    if missing:
        raise ValueError(f"means: no mean output for {missing[:4]} ({len(missing)} heads); give one per head or means=None")
    return out


def _next_token_terms(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """(log-probs (B, T, V), NLL per position (B, T-1), valid (B, T-1))."""
    lp = F.log_softmax(logits.float(), -1)
    nll = -lp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    valid = (mask[:, :-1] > 0) & (mask[:, 1:] > 0)
    return lp, nll, valid


class _GradTap(Edit):
    """Output-stage edit adding a zero tensor that requires grad, so that backward gives ∂/∂o."""

    name = "grad_tap"

    def __init__(self) -> None:
        super().__init__("all")
        self.o: dict[int, torch.Tensor] = {}
        self.tap: dict[int, torch.Tensor] = {}

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        z = torch.zeros_like(o, requires_grad=True)
        self.o[ctx.layer] = o.detach()
        self.tap[ctx.layer] = z
        return o + z


def head_importance(
    model,
    ids,
    attention_mask=None,
    means: Mapping | None = None,
    batch_heads: int | None = None,
    token_budget: int = 2048,
    progress: bool = False,
) -> Importance:
    """Mean-ablation KL / ΔNLL per head (batched) and the Taylor estimate (module docstring).

    ids: (B, T) token ids, left- or right-padded with ``attention_mask``; means: {site: (d,)} or
    None (each head's mean output over every real token of ``ids``)."""
    ids = _ids(ids, "ids")
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).long()
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"attention_mask {tuple(mask.shape)} must have the shape of ids {tuple(ids.shape)}")
    B, T = ids.shape
    if T < 2:
        raise ValueError(f"importance needs texts of at least 2 tokens (next-token loss), got T={T}")
    L, H, _ = model_shape(model)
    with torch.no_grad():
        rec = _record_masked(model, ids, mask)
        mu = _means_tensor(means, rec, L, H)
        base_logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    lp0, nll0, valid = _next_token_terms(base_logits, ids, mask)
    real = mask > 0
    n_real = int(real.sum())
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError("importance: no position has a real next token")
    base_nll = float((nll0 * valid).sum() / n_valid)
    # -- measured: mean ablation, one head per copy
    mean_rec = Recording("output", {l: mu[l][None, :, None, :].expand(B, H, T, -1) for l in range(L)}, rec.query_pos, L, H)
    sites = [(l, h) for l in range(L) for h in range(H)]
    k_max = batch_heads or max(1, token_budget // (B * T))
    kl = torch.zeros(L, H)
    dnll = torch.zeros(L, H)
    with torch.no_grad(), _progress(len(sites), "mean-ablating heads", progress) as bar:
        task = bar.add_task("heads", total=len(sites))
        for c0 in range(0, len(sites), k_max):
            chunk = sites[c0 : c0 + k_max]
            k = len(chunk)
            ed = patch(mean_rec, rows=[s for s in chunk for _ in range(B)], src_rows=list(range(B)) * k)
            with attach(model, edits=[ed]):
                lg = model(input_ids=ids.repeat(k, 1), attention_mask=mask.repeat(k, 1), use_cache=False).logits
            for j, (l, h) in enumerate(chunk):
                lp, nll, _ = _next_token_terms(lg[j * B : (j + 1) * B], ids, mask)
                kl_pos = (lp0.exp() * (lp0 - lp)).sum(-1)  # (B, T)
                kl[l, h] = float((kl_pos * real).sum() / n_real)
                dnll[l, h] = float(((nll - nll0) * valid).sum() / n_valid)
            bar.advance(task, k)
    # -- estimated: first-order Taylor of the loss in the head outputs
    tap = _GradTap()
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad(), attach(model, edits=[tap]):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            _, nll, _ = _next_token_terms(logits, ids, mask)
            loss = (nll * valid).sum() / n_valid
            loss.backward()
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    taylor = torch.zeros(L, H)
    w = real.float()[:, None, :, None]
    for l in range(L):
        g = tap.tap[l].grad.float()  # (B, H, T, d)
        diff = mu[l][None, :, None, :] - tap.o[l].float()
        taylor[l] = (diff * g * w).sum((0, 2, 3))
    kl_f, t_f, d_f = kl.flatten().numpy(), taylor.flatten().numpy(), dnll.flatten().numpy()
    return Importance(
        kl,
        dnll,
        taylor,
        float(stats.spearmanr(kl_f, abs(t_f)).statistic),
        float(stats.pearsonr(d_f, t_f).statistic),
        float(stats.spearmanr(d_f, t_f).statistic),
        base_nll,
        n_real,
    )


def _record_masked(model, ids, mask) -> Recording:
    """Output recording of a padded batch (pads anywhere; the recorder keeps query positions)."""
    L, H, _ = model_shape(model)
    rec = _StageRecorder("output", ids.shape[1])
    with attach(model, edits=[rec]):
        model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
    return Recording("output", rec.data, rec.query_pos, L, H)


__all__ = ["Importance", "head_importance", "importance_png"]


def importance_png(records: list[dict], title: str = "head importance") -> bytes:
    """Scatter plots: KL vs |Taylor| (log-log) and measured ΔNLL vs its Taylor estimate, one dot per head."""
    import matplotlib

    from ..io import png_bytes

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kl = np.array([r["kl_mean_ablation"] for r in records])
    dn = np.array([r["delta_nll"] for r in records])
    ta = np.array([r["taylor_nll"] for r in records])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
    axes[0].loglog(np.abs(ta) + 1e-7, kl + 1e-7, ".", alpha=0.6)
    axes[0].set_xlabel("|Taylor estimate of ΔNLL|")
    axes[0].set_ylabel("KL(p || p mean-ablated), nats")
    axes[0].set_title(f"Spearman {stats.spearmanr(kl, np.abs(ta)).statistic:.2f}")
    lim = float(max(np.abs(dn).max(), np.abs(ta).max(), 1e-6))
    axes[1].plot(ta, dn, ".", alpha=0.6)
    axes[1].plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    axes[1].set_xlabel("Taylor estimate of ΔNLL")
    axes[1].set_ylabel("measured ΔNLL (mean ablation)")
    axes[1].set_title(f"Pearson {stats.pearsonr(dn, ta).statistic:.2f}")
    fig.suptitle(title)
    return png_bytes(fig)
