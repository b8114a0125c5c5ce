"""A small decoder-only LM whose token mixer is any registered mechanism
(:data:`headlab.modules.registry.MECHANISMS`: softmax, sigmoid, gated, moh, linear, ...), given by name or
as a factory with the registry's signature ``factory(d_model, n_heads) -> nn.Module``.

Example::

    lm = headlab.lab.tiny_lm(mechanism="gated", layers=4, d_model=128, heads=4)
    logits, weights = lm(idx, return_weights=True)       # idx (B, T) byte ids, T <= max_len

Pre-LayerNorm blocks (x + mix(LN x); x + MLP(LN x), GELU ×4), learned absolute positions, tied
embeddings.  ``mlp=False`` drops the MLPs (an attention-only model: every block is x + mix(LN x)) and
``tied=False`` gives the read-out its own (V, d_model) weight and bias — the setting in which an idle head
has no later layer that could ignore its output (used by the ``sinks`` experiment).  ``forward(idx (B,T), return_weights=True)`` also returns one (B,H,T,T) weight tensor per layer.
:func:`train_lm` trains it on :class:`~headlab.lab.text.TextData` by :mod:`headlab.modules.training`'s recipe
(AdamW, warm-up + cosine, β·aux_loss of mechanisms that expose one: MoH load balancing, β = 0.01).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, Union

import torch
import torch.nn.functional as F
from torch import nn

from headlab.modules import training
from headlab.modules.registry import make_mechanism
from headlab.progress import progress_bar

from .text import VOCAB

#: a registry name, or a factory with the registry signature ``factory(d_model, n_heads) -> nn.Module``
Mechanism = Union[str, Callable[[int, int], nn.Module]]  # noqa: UP007  (a runtime alias on Python 3.10)


class Windows(Protocol):
    """Training data: :class:`~headlab.lab.text.TextData` or any source of (inputs, targets) (B, T) windows."""

    def batch(self, split: str, batch: int, seq_len: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


def build_mixer(mechanism: Mechanism, d_model: int, heads: int) -> nn.Module:
    return mechanism(d_model, heads) if callable(mechanism) else make_mechanism(mechanism, d_model, heads)


class Block(nn.Module):
    def __init__(self, mechanism: Mechanism, d_model: int, heads: int, mlp: bool = True):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.mix = build_mixer(mechanism, d_model, heads)
        self.ln2 = nn.LayerNorm(d_model) if mlp else None
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)) if mlp else None

    def forward(self, x, return_weights: bool = False):
        if return_weights:
            y, a = self.mix(self.ln1(x), return_weights=True)
        else:
            y, a = self.mix(self.ln1(x)), None
        x = x + y
        if self.mlp is None or self.ln2 is None:
            return x, a
        return x + self.mlp(self.ln2(x)), a


class TinyLM(nn.Module):
    def __init__(
        self,
        mechanism: Mechanism = "softmax",
        layers: int = 4,
        d_model: int = 128,
        heads: int = 4,
        vocab: int = VOCAB,
        max_len: int = 256,
        mlp: bool = True,
        tied: bool = True,
    ):
        super().__init__()
        if layers < 1 or vocab < 2 or max_len < 2:
            raise ValueError(f"need layers >= 1, vocab >= 2, max_len >= 2; got {layers}, {vocab}, {max_len}")
        self.mechanism = mechanism if isinstance(mechanism, str) else getattr(mechanism, "__name__", "custom")
        self.max_len = max_len
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(mechanism, d_model, heads, mlp) for _ in range(layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = None if tied else nn.Linear(d_model, vocab)  # untied read-out (V, d_model) + bias
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, return_weights: bool = False):
        if idx.dim() != 2 or idx.shape[1] > self.max_len:
            raise ValueError(f"idx must be (B, T) with T <= max_len={self.max_len}, got {tuple(idx.shape)}")
        x = self.tok(idx) + self.pos.weight[: idx.shape[1]]
        weights = []
        for blk in self.blocks:
            x, a = blk(x, return_weights)
            weights.append(a)
        h = self.ln(x)
        logits = h @ self.tok.weight.T if self.head is None else self.head(h)
        return (logits, weights) if return_weights else logits

    def aux_loss(self) -> torch.Tensor:
        """Sum of the mechanisms' auxiliary losses from the last forward (0 when none)."""
        total = torch.zeros(())
        for blk in self.blocks:
            aux = getattr(blk.mix, "aux_loss", None)
            if isinstance(aux, torch.Tensor):
                total = total + aux
        return total


def tiny_lm(*args: Any, seed: int = 0, **kw: Any) -> TinyLM:
    """A :class:`TinyLM` (``TinyLM``'s arguments) built after ``torch.manual_seed(seed)``: same seed, same weights."""
    torch.manual_seed(seed)
    return TinyLM(*args, **kw)


@torch.no_grad()
def eval_loss(model: TinyLM, data: Windows, batch: int = 32, seq_len: int = 64, n_batches: int = 4, seed: int = 1234) -> float:
    """Mean validation cross-entropy (nats/byte) on fixed windows."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n_batches):
        x, y = data.batch("val", batch, seq_len, gen)
        losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
    model.train(was)
    return sum(losses) / len(losses)


def train_lm(
    model: TinyLM,
    data: Windows,
    steps: int,
    batch: int = 32,
    seq_len: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    every: int = 0,
    on_eval: Callable[[int, TinyLM], bool | None] | None = None,
    quiet: bool = False,
    description: str = "training",
    weight_decay: float = 0.01,
    schedule: str = "cosine",
    warm_steps: int | None = None,
) -> list[float]:
    """Train for ``steps`` AdamW steps; call ``on_eval(step, model)`` at step 0, every ``every`` steps and at
    the end; an ``on_eval`` that returns True stops training there (early stopping).  ``schedule``: linear
    warm-up over ``warm_steps`` (default steps/20), then "cosine" decay to 0 at ``steps`` or "constant".  Returns the training-loss
    history (one entry per step taken)."""
    opt, sched = training.adamw(model, steps, lr, weight_decay=weight_decay, schedule=schedule, warm_steps=warm_steps)
    gen = torch.Generator().manual_seed(seed)
    hist = []
    model.train()
    if on_eval and on_eval(0, model) is True:
        return hist
    with progress_bar(description, steps, quiet=quiet) as advance:
        for step in range(1, steps + 1):
            x, y = data.batch("train", batch, seq_len, gen)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            training.step(model, opt, sched, loss)
            hist.append(loss.item())
            advance()
            if on_eval and ((every and step % every == 0) or step == steps) and on_eval(step, model) is True:
                break
    return hist
