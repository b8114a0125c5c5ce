"""CARVE's contrast between a task query and a general query, and attention entropy per layer.

Ge et al., "Focusing by Contrastive Attention: Enhancing VLMs' Visual Reasoning" (CARVE), arXiv
2509.06461, text analogue. The same context is read twice, followed once by the task question Q and
once by a general instruction G ("Summarize the text."). For the last prompt token (the one that
predicts the first answer token) and each layer l, a_l(X) is its head-mean attention over the context
tokens, renormalised to sum 1 over them. Then

    entropy_l(X) = −Σ_i a_l,i(X) ln a_l,i(X)                       (nats; per layer, X = Q or G)
    contrast_l,i = a_l,i(Q) / (a_l,i(G) + λ)                        (CARVE's ratio; λ = 1/N by default)
    fused_i      = mean over the chosen layers of contrast_l,i
    difference_l,i = a_l,i(Q) − a_l,i(G)

N is the number of context tokens, so λ is the uniform weight: a token the general query ignores
gets at most a_l,i(Q)·N. The general attention is the question-independent part (CARVE's "visual
noise"); tokens with high contrast are the ones the task itself points at. CARVE fuses several
generated steps with weights t − t_start + 1; this text version reads only the first step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine.context import AttnContext
from ..engine.hf import attach, model_shape
from ..io import atomic_write_png
from ..probes.base import Probe
from .stats import forward_for_attention

GENERAL = "Summarize the text."


class LastRowProbe(Probe):
    """Keeps, per layer, the attention row of the last query of the first batch row: (H, S) float32."""

    name = "last_row"

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, torch.Tensor] = {}

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:
        if ctx.q_index is None or int(ctx.q_index[-1]) == ctx.query_pos.shape[1] - 1:
            self.rows[ctx.layer] = a[0, :, -1, :].detach().to("cpu", torch.float32).clone()

    def result(self) -> torch.Tensor:
        """(layers, heads, keys) rows, in layer order."""
        return torch.stack([self.rows[k] for k in sorted(self.rows)])


@dataclass
class Contrast:
    """What :func:`contrast` returns; (L, N) tensors over layers × context tokens."""

    tokens: list[str]
    task: torch.Tensor
    general: torch.Tensor
    contrast: torch.Tensor
    difference: torch.Tensor
    entropy_task: torch.Tensor
    entropy_general: torch.Tensor
    layers: list[int]
    lam: float
    fused: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.fused = self.contrast[self.layers].mean(0)

    def top(self, k: int = 10) -> list[tuple[int, str, float]]:
        """The ``k`` context tokens with the highest fused contrast: (index in the context, token, value)."""
        vals, idx = torch.topk(self.fused, min(k, self.fused.numel()))
        return [(int(i), self.tokens[int(i)], float(v)) for v, i in zip(vals, idx, strict=True)]

    def to_json(self) -> dict:
        r = lambda t: [[round(float(x), 6) for x in row] for row in t]  # noqa: E731
        return {
            "tokens": self.tokens,
            "layers": self.layers,
            "lam": self.lam,
            "entropy_task": [round(float(x), 6) for x in self.entropy_task],
            "entropy_general": [round(float(x), 6) for x in self.entropy_general],
            "fused": [round(float(x), 6) for x in self.fused],
            "contrast": r(self.contrast),
            "difference": r(self.difference),
            "task": r(self.task),
            "general": r(self.general),
        }


def subset_entropy(p: torch.Tensor) -> torch.Tensor:
    """−Σ_i p_i ln p_i over the last dim of a distribution already renormalised (0 ln 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(-1)


def context_attention(model, ids: torch.Tensor, context: slice, edits=()) -> torch.Tensor:
    """(L, N): per layer, the head-mean attention of the last token of ``ids`` (1, T) over the
    positions ``context``, renormalised to sum 1 over them."""
    probe = LastRowProbe()
    with attach(model, probes=[probe], edits=list(edits)):
        forward_for_attention(model, ids)
    rows = probe.result().double()  # (L, H, T)
    a = rows.mean(1)[:, context]  # (L, N)
    mass = a.sum(-1, keepdim=True)
    if bool((mass <= 0).any()):
        raise ValueError("the last token gives the context no attention in some layer; cannot renormalise")
    return a / mass


def contrast(
    model,
    tok,
    context: str,
    task: str,
    general: str = GENERAL,
    *,
    lam: float | None = None,
    layers: list[int] | None = None,
    sep: str = "\n\n",
    drop_first: bool = True,
    edits=(),
) -> Contrast:
    """CARVE's contrast of ``task`` against ``general`` over the tokens of ``context`` (see the module
    docstring). ``drop_first``: leave the first token out of the context set (with no BOS it is the
    attention sink, which would dominate both maps); ``layers``: the layers fused (default all)."""
    ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
    start = 1 if drop_first else 0
    if len(ctx_ids) - start < 2:
        raise ValueError(f"the context has {len(ctx_ids)} tokens; give at least {2 + start}")
    n_layers = model_shape(model)[0]
    layers = list(range(n_layers)) if layers is None else list(layers)
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers} out of range: valid layers are 0..{n_layers - 1}")
    if lam is not None and not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    maps = []
    for q in (task, general):
        q_ids = tok(sep + q, add_special_tokens=False)["input_ids"]
        if not q_ids:
            raise ValueError(f"query {q!r} is empty after tokenisation")
        ids = torch.tensor([ctx_ids + q_ids], dtype=torch.long)
        maps.append(context_attention(model, ids, slice(start, len(ctx_ids)), edits))
    a_q, a_g = maps
    n = a_q.shape[-1]
    lam_v = 1.0 / n if lam is None else float(lam)
    return Contrast(
        tokens=[tok.decode([i]) for i in ctx_ids[start:]],
        task=a_q.float(),
        general=a_g.float(),
        contrast=(a_q / (a_g + lam_v)).float(),
        difference=(a_q - a_g).float(),
        entropy_task=subset_entropy(a_q).float(),
        entropy_general=subset_entropy(a_g).float(),
        layers=layers,
        lam=lam_v,
    )


def contrast_png(path: Path, c: Contrast, title: str = "CARVE contrast") -> Path:
    """Entropy per layer (task vs general) and the contrast map (layers × context tokens, log colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    L, N = c.contrast.shape
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8.0, 3.5 + 0.12 * N), 3.8), gridspec_kw={"width_ratios": [1, 3]})
    a1.plot(range(L), c.entropy_task.tolist(), "o-", ms=3, label="task query")
    a1.plot(range(L), c.entropy_general.tolist(), "s-", ms=3, label="general query")
    a1.set_xlabel("layer")
    a1.set_ylabel("entropy over the context (nats)")
    a1.legend(fontsize=8)
    vals = c.contrast.clamp(min=1e-4).numpy()
    im = a2.imshow(vals, aspect="auto", cmap="magma", norm=LogNorm(), interpolation="nearest")
    a2.set_ylabel("layer")
    step = max(1, N // 60)
    a2.set_xticks(range(0, N, step))
    a2.set_xticklabels([c.tokens[i].strip()[:10] for i in range(0, N, step)], rotation=90, fontsize=6)
    fig.colorbar(im, ax=a2, fraction=0.03, label="task / (general + λ)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic_write_png(path, fig)
