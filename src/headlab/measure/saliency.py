"""Per-token input saliency of one prediction, from Captum.

The target is y(x) = log p(target token | prompt) at the final position, a function of the input
embeddings x (T, D) (the output of the embedding layer; the same as Captum's layer methods on that
layer). Methods:

* ``gxi`` — gradient × input, x ⊙ ∂y/∂x (``captum.attr.InputXGradient``; Shrikumar et al., arXiv 1605.01713);
* ``ig``  — integrated gradients from a baseline x', (x − x') ⊙ ∫_0^1 ∂y/∂x(x' + α(x − x')) dα
  (``captum.attr.IntegratedGradients``, Gauss–Legendre quadrature with ``n_steps`` points; Sundararajan
  et al., arXiv 1703.01365). Completeness: Σ_{t,d} IG = y(x) − y(x') up to the quadrature error, which
  Captum returns as the convergence delta. The baseline is one token's embedding at every position
  (``baseline_id``; the driver uses the pad / end-of-sequence token) or the all-zero embedding. With
  RMSNorm models the zero baseline is degenerate: RMSNorm(αx) = RMSNorm(x) for every α well above
  √eps / rms(x), so the whole change of y happens in a sliver near α = 0 that a few quadrature points miss.

A token's score is ``reduce``-d over the hidden dimension: ``"l2"`` (the L2 norm, a non-negative magnitude:
what the comparison with attention uses) or ``"sum"`` (the signed sum, which keeps completeness).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

METHODS = ("gxi", "ig")
REDUCE = ("l2", "sum")


@dataclass
class Saliency:
    scores: torch.Tensor  # (T,) per-token score after ``reduce``
    raw: torch.Tensor  # (T, D) attributions
    delta: float  # IG: Σ attributions − (y(x) − y(0)) (Captum's convergence delta); gxi: nan
    span: float  # IG: y(x) − y(0) = Σ attributions − delta; gxi: nan


def logprob_fn(model, target_id: int):
    """embeddings (N, T, D) -> (N,) log p(target_id) at the final position."""

    def f(emb: torch.Tensor) -> torch.Tensor:
        logits = model(inputs_embeds=emb, use_cache=False).logits[:, -1].float()
        return torch.log_softmax(logits, -1)[:, target_id]

    return f


def _reduce(attr: torch.Tensor, reduce: str) -> torch.Tensor:
    if reduce == "l2":
        return attr.norm(dim=-1)
    return attr.sum(-1)


def token_saliency(
    model,
    ids: torch.Tensor,
    target_id: int,
    method: str = "ig",
    n_steps: int = 8,
    reduce: str = "l2",
    baseline_id: int | None = None,
) -> Saliency:
    """Saliency of every token of ``ids`` (1, T) for log p(target_id) at the last position (module docstring).

    ``baseline_id``: IG baseline x' = that token's embedding at every position; None: x' = 0."""
    from ..extras import require

    attr = require("captum.attr")
    InputXGradient, IntegratedGradients = attr.InputXGradient, attr.IntegratedGradients

    if method not in METHODS:
        raise ValueError(f"saliency method {method!r}; valid: {METHODS}")
    if reduce not in REDUCE:
        raise ValueError(f"reduce {reduce!r}; valid: {REDUCE}")
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 2:
        raise ValueError(f"ids must be one prompt of >= 2 tokens, shape (1, T), got {tuple(ids.shape)}")
    if method == "ig" and n_steps < 2:
        raise ValueError(f"integrated gradients need n_steps >= 2, got {n_steps}")
    vocab = model.get_input_embeddings().weight.shape[0]
    if not 0 <= int(target_id) < vocab:
        raise ValueError(f"target token id {target_id} out of range 0..{vocab - 1}")
    if baseline_id is not None and not 0 <= int(baseline_id) < vocab:
        raise ValueError(f"baseline token id {baseline_id} out of range 0..{vocab - 1}")
    f = logprob_fn(model, int(target_id))
    with torch.no_grad():
        emb = model.get_input_embeddings()(ids).detach()
    nan = float("nan")
    with torch.enable_grad():
        if method == "gxi":
            attr = InputXGradient(f).attribute(emb.clone().requires_grad_(True))
            delta, span = nan, nan
        else:
            if baseline_id is None:
                base = torch.zeros_like(emb)
            else:
                with torch.no_grad():
                    base = model.get_input_embeddings()(torch.full_like(ids, int(baseline_id))).detach()
            attr, d = IntegratedGradients(f).attribute(
                emb, baselines=base, n_steps=n_steps, internal_batch_size=n_steps, return_convergence_delta=True
            )
            delta = float(d.reshape(-1)[0])
            span = float(attr.detach().double().sum()) - delta
    raw = attr[0].detach()
    return Saliency(_reduce(raw, reduce), raw, delta, span)
