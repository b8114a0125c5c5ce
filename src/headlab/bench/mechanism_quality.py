"""Quality half of ``headlab bench mechanisms``: every mechanism trained briefly on CPU with one budget (same model
size, steps, batch, learning rate and seed) on three tasks, so that memory-based mechanisms are judged on recall:

- ``mqar``: multi-query associative recall accuracy (:func:`headlab.bench.tasks_synthetic.mqar`);
- ``selective-copy``: selective-copying accuracy (:func:`headlab.bench.tasks_synthetic.selective_copy`);
- ``prose``: a byte-level causal LM on real prose (CPython's pydoc text) — validation loss (nats/byte) and
  perplexity exp(loss).

The model is injected (``make_model(mechanism, vocab, max_len, seed) -> nn.Module`` mapping ids (B,T) to logits
(B,T,V)) so this package does not depend on the lab package; the CLI passes :func:`headlab.lab.tiny_lm`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..modules import training
from .tasks_synthetic import mqar, selective_copy

MakeModel = Callable[[str, int, int, int], nn.Module]
TASKS = ("mqar", "selective-copy", "prose")


@dataclass(frozen=True)
class Budget:
    steps: int = 300
    batch: int = 32
    lr: float = 3e-3
    eval_items: int = 512  # sequences for the synthetic accuracies (prose: eval_batches x batch windows)
    eval_batches: int = 8
    mqar_pairs: int = 6
    mqar_keys: int = 24
    copy_length: int = 24
    copy_tokens: int = 4
    copy_vocab: int = 12
    prose_len: int = 64

    def __post_init__(self):
        for k, v in asdict(self).items():
            if v <= 0:
                raise ValueError(f"budget {k}={v} must be > 0")


QUICK = Budget(
    steps=25, batch=16, eval_items=128, eval_batches=2, mqar_pairs=4, mqar_keys=16, copy_length=12, copy_tokens=3, prose_len=32
)


def task_spec(task: str, b: Budget):
    """(vocab, max_len, batch(n, gen) -> (inputs, targets, mask))."""
    if task == "mqar":
        return 2 * b.mqar_keys, 4 * b.mqar_pairs, lambda n, g: mqar(n, b.mqar_pairs, g, b.mqar_keys, b.mqar_keys)
    if task == "selective-copy":
        return (
            b.copy_vocab,
            b.copy_length + b.copy_tokens,
            lambda n, g: selective_copy(n, b.copy_length, b.copy_tokens, g, b.copy_vocab),
        )
    raise ValueError(f"task={task!r}; valid: {list(TASKS)}")


def prose_batches(train: torch.Tensor, seq_len: int):
    """Windows of a byte stream: inputs [BOS=256, c_1..c_{L-1}], targets c_1..c_L, all positions scored."""

    def batch(n: int, g: torch.Generator):
        start = torch.randint(0, len(train) - seq_len, (n,), generator=g)
        win = torch.stack([train[s : s + seq_len] for s in start.tolist()])
        inputs = torch.cat([torch.full((n, 1), 256, dtype=torch.long), win[:, :-1]], 1)
        return inputs, win, torch.ones_like(win, dtype=torch.bool)

    return batch


def train(model: nn.Module, batch_fn, b: Budget, seed: int) -> list[float]:
    """AdamW (warm-up 5%, cosine), masked cross-entropy, gradient clip 1; returns the loss history."""
    gen = torch.Generator().manual_seed(seed)
    opt, sched = training.adamw(model, b.steps, b.lr)
    model.train()
    hist = []
    for _ in range(b.steps):
        x, y, m = batch_fn(b.batch, gen)
        loss = F.cross_entropy(model(x)[m], y[m])
        training.step(model, opt, sched, loss)
        hist.append(loss.item())
    return hist


@torch.no_grad()
def evaluate(model: nn.Module, batch_fn, n_items: int, batch: int, seed: int) -> tuple[float, float, int]:
    """(mean loss, accuracy, scored positions) on ``n_items`` fresh sequences from a fixed generator."""
    model.eval()
    gen = torch.Generator().manual_seed(10_000 + seed)
    loss_sum, correct, count = 0.0, 0, 0
    done = 0
    while done < n_items:
        n = min(batch, n_items - done)
        x, y, m = batch_fn(n, gen)
        logits = model(x)[m]
        loss_sum += F.cross_entropy(logits, y[m], reduction="sum").item()
        correct += int((logits.argmax(-1) == y[m]).sum())
        count += int(m.sum())
        done += n
    return loss_sum / count, correct / count, count


def run_quality(
    mechanisms: list[str],
    make_model: MakeModel,
    prose: tuple[torch.Tensor, torch.Tensor] | None,
    budget: Budget,
    seed: int = 0,
    advance: Callable[[str], None] = lambda s: None,
) -> list[dict]:
    """One row per (mechanism, task): loss, accuracy (synthetic) or perplexity (prose), scored positions, seconds."""
    import time

    rows = []
    for task in TASKS:
        if task == "prose":
            if prose is None:
                continue
            vocab, max_len = 257, budget.prose_len
            train_fn, eval_fn = prose_batches(prose[0], max_len), prose_batches(prose[1], max_len)
            n_eval = budget.eval_batches * budget.batch
        else:
            vocab, max_len, train_fn = task_spec(task, budget)
            eval_fn, n_eval = train_fn, budget.eval_items
        for mech in mechanisms:
            advance(f"{task}: {mech}")
            t0 = time.perf_counter()
            model = make_model(mech, vocab, max_len, seed)
            hist = train(model, train_fn, budget, seed)
            loss, acc, n = evaluate(model, eval_fn, n_eval, budget.batch, seed)
            row = {
                "task": task,
                "mechanism": mech,
                "loss": loss,
                "accuracy": acc,
                "positions": n,
                "final_train_loss": sum(hist[-10:]) / len(hist[-10:]),
                "seconds": time.perf_counter() - t0,
            }
            if task == "prose":
                row["perplexity"] = math.exp(loss)
            rows.append(row)
    return rows
