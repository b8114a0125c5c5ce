"""Gate training of DuoAttention (Xiao et al., arXiv 2410.10819) on CPU-sized inputs.

One gate alpha in [0, 1] per (layer, KV head) mixes full and sink + window attention
(``mix.gated_attention``). The model's weights stay frozen; only the gates learn, by Adam on

    loss = mean over target tokens of mean_d (h_gated - h_dense)^2  +  reg * mean(alpha)

where h are the final hidden states of the base model (after its last norm) on the
question-and-answer block of a synthetic retrieval sample (``data.make_sample``); after each
step the gates are clamped to [0, 1]. ``items`` distinct samples are cycled over the ``steps``
(their dense hidden states computed once), a CPU-sized version of the paper's recipe (2000
steps of fresh 1K-32K samples, sink 128 + window 256). Heads whose gate the distillation term holds up are the
ones that need the full context (retrieval heads, arXiv 2404.15574); the rest drift to 0.

Besides the gates, ``pull`` accumulates minus the distillation gradient of each gate over the
run (how strongly the data asked for full attention); it breaks ties between gates that end
at the same clamp value.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch

from .data import make_sample
from .mix import gated_attention


@dataclass(frozen=True)
class DuoSettings:
    """What the gates depend on (besides the model and the seed); part of the cache key."""

    steps: int = 36
    items: int = 12  # distinct samples, cycled; their dense hidden states are computed once
    lengths: tuple[int, ...] = (1024,)  # training lengths, one per item in turn
    sink: int = 64
    window: int = 128  # streaming branch: sink + recent window at training length
    lr: float = 0.05
    reg: float = 0.05
    init: float = 1.0
    n_facts: int = 4
    data: str = "duo-synthetic/1"  # version of the synthetic data recipe

    def check(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.items < 1:
            raise ValueError(f"items must be >= 1, got {self.items}")
        if not self.lengths or any(int(n) < 32 for n in self.lengths):
            raise ValueError(f"training lengths must be >= 32 tokens each, got {self.lengths}")
        if self.sink < 0 or self.window < 1:
            raise ValueError(f"need sink >= 0 and window >= 1, got sink={self.sink}, window={self.window}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (self.reg >= 0 and math.isfinite(self.reg)):
            raise ValueError(f"reg must be >= 0, got {self.reg}")
        if not 0.0 <= self.init <= 1.0:
            raise ValueError(f"init must be in [0, 1], got {self.init}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["lengths"] = [int(n) for n in self.lengths]
        return d


@dataclass
class GateProfile:
    gates: list[list[float]]  # (layers, KV heads), in [0, 1]
    pull: list[list[float]]  # (layers, KV heads), summed -d(distill)/d(gate)
    losses: list[tuple[float, float]] = field(default_factory=list)  # per step: (distill, reg term)
    seconds: float = 0.0


@contextlib.contextmanager
def frozen(model) -> Iterator[None]:
    """Model weights with requires_grad False and the model in eval mode; both restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


def _base(model):
    """The model without its LM head (final hidden states after the last norm)."""
    return getattr(model, "base_model", model)


def _hidden(model, ids: torch.Tensor) -> torch.Tensor:
    out = _base(model)(input_ids=ids, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def distill_loss(
    model,
    gates: torch.Tensor,
    ids: torch.Tensor,
    target: torch.Tensor,
    *,
    sink: int,
    window: int,
    dense: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean over target tokens of mean_d (h_gated - h_dense)^2. ids (1, T), target (T,) bool."""
    if dense is None:
        with torch.no_grad():
            dense = _hidden(model, ids)[0, target]
    with gated_attention(model, gates, sink=sink, window=window):
        h = _hidden(model, ids)[0, target]
    return (h.float() - dense.float()).pow(2).mean(-1).mean()


def train_gates(
    model,
    tokenizer,
    settings: DuoSettings,
    *,
    seed: int = 0,
    progress: Callable[[int, int, dict], None] | None = None,
    sample_fn: Callable[[int, int], object] | None = None,
) -> GateProfile:
    """Fit the gates; deterministic for a seed. ``progress(step, steps, info)`` after each step.

    ``sample_fn(length, seed) -> DuoSample`` replaces the synthetic data (tests use it).
    """
    settings.check()
    from ....engine.hf import model_shape

    n_layers, _, n_kv = model_shape(model)
    n = n_layers * n_kv
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    gates = torch.nn.Parameter(torch.full((n_layers, n_kv), float(settings.init), device=device))
    opt = torch.optim.Adam([gates], lr=settings.lr)
    pull = torch.zeros(n_layers, n_kv, dtype=torch.float64)
    losses: list[tuple[float, float]] = []
    sample_fn = sample_fn or (lambda length, s: make_sample(tokenizer, length, s, n_facts=settings.n_facts))
    t0 = time.perf_counter()
    with frozen(model):
        data = []  # (ids (1, T), target (T,), dense hidden states on the target (n_target, D))
        for i in range(settings.items):
            length = int(settings.lengths[i % len(settings.lengths)])
            sample = sample_fn(length, seed * 100_003 + i)
            ids = sample.input_ids.view(1, -1).to(device)
            target = sample.target.to(device)
            with torch.no_grad():
                data.append((ids, target, _hidden(model, ids)[0, target]))
            if progress is not None:
                progress(0, settings.steps, {"phase": "dense", "item": i + 1, "items": settings.items})
        for step in range(settings.steps):
            ids, target, dense = data[step % len(data)]
            opt.zero_grad(set_to_none=True)
            d = distill_loss(model, gates, ids, target, sink=settings.sink, window=settings.window, dense=dense)
            r = gates.sum() / n  # = mean |alpha| while the gates stay in [0, 1]; gradient exactly 1/n
            (d + settings.reg * r).backward()
            with torch.no_grad():
                pull -= (gates.grad - settings.reg / n).double().cpu()
                opt.step()
                gates.clamp_(0.0, 1.0)
            dv, rv = float(d.detach()), float(settings.reg * r.detach())
            losses.append((dv, rv))
            if progress is not None:
                progress(
                    step + 1,
                    settings.steps,
                    {
                        "phase": "train",
                        "distill": dv,
                        "reg": rv,
                        "length": int(ids.shape[1]),
                        "mean_gate": float(gates.detach().mean()),
                    },
                )
    g = gates.detach().cpu().double()
    return GateProfile(g.tolist(), pull.tolist(), losses, time.perf_counter() - t0)
