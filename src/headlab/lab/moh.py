"""Experiment ``moh``: the same tiny LM with Mixture-of-Head attention at 50%, 75% and 90% active heads
vs full multi-head attention, at an equal training budget (Jin et al., "MoH: Multi-Head Attention as
Mixture-of-Head Attention", arXiv 2410.11842).

MoH uses the trainable two-stage router (a quarter of the heads shared, the rest routed top-K, β = 0.01
load-balancing loss).  The active share is round(p·H)/H, so with H = 8 heads "90%" is 7/8 = 87.5%
(``--heads 20`` gives exact 50/75/90%).  Heads are computed densely and masked, so this compares
quality at equal steps, not wall time.  After training, the MHA model is also evaluated training-free
with the parameter-free query-norm router (MoH-LLaMA3) at 75% vs dropping the same number of random heads.

Training budget.  By default every model trains ``steps`` steps (warm-up + cosine).  With ``converge`` > 0 the
budget is set by the MHA baseline instead: MHA trains at a constant learning rate (after a warm-up over
steps/20) with its loss on 4 separate validation batches checked every ``check_every`` steps, and stops at the
first check where :func:`converged` holds (the best loss improved by less than ``converge`` (relative) over the
last 20% of the steps) or at ``steps`` (the cap); every MoH model then trains exactly as many steps with the
same schedule.  The MHA run up to that step is exactly the run a fixed budget of that many steps would give.

The decision rules are registered in the claims harness beside the library (``repro/headlab_repro/lab_claims.py``): ``moh`` (800 fixed steps) and
``moh-converged`` (budget set by the converged MHA baseline); ``name`` names the run (its
output files; the harness judges a run by the claim of that name).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from headlab.modules.moh import MoHAttention
from headlab.modules.training import AUX_WEIGHT

from .config import MohConfig
from .lm import TinyLM, eval_loss, tiny_lm, train_lm
from .result import LabResult, lab_result, print_table
from .text import TextData

NAME = MohConfig.NAME
FRACTIONS = MohConfig.fractions
VAL_BATCHES = 4  # eval_loss default: 4 fixed validation batches
WINDOW = 0.2  # convergence: improvement over the last 20% of the steps
MIN_CHECKS = 5  # convergence is not tested before 5 checks
STOP_SEED = 4321  # validation batches of the convergence check (not those of the reported val loss)


def converged(steps: list[int], losses: list[float], tol: float, window: float = WINDOW, min_checks: int = MIN_CHECKS) -> bool:
    """True when the best loss up to the last check improved by less than ``tol`` (relative) over the last
    ``window`` of the steps: best(step <= (1 - window)·s) - best(step <= s) < tol · best(step <= (1 - window)·s),
    where s is the last step.  ``steps`` and ``losses`` are the checks so far (same length, steps increasing);
    never True before ``min_checks`` checks after step 0."""
    if len(steps) != len(losses):
        raise ValueError(f"steps ({len(steps)}) and losses ({len(losses)}) differ in length")
    if not 0 < window < 1 or tol < 0:
        raise ValueError(f"need 0 < window < 1 and tol >= 0; got window={window}, tol={tol}")
    if sum(1 for st in steps if st > 0) < min_checks:
        return False
    s = steps[-1]
    before = [x for st, x in zip(steps, losses) if st <= (1 - window) * s]
    if not before:
        return False
    ref = min(before)
    return ref - min(losses) < tol * ref


def _moh_name(frac: float) -> str:
    return f"moh-{round(frac * 100)}"


@torch.no_grad()
def training_free(model: TinyLM, data: TextData, frac: float, batch: int, seq_len: int, seed: int) -> dict:
    """Val loss of a trained MHA TinyLM when each layer keeps round(frac·H) heads chosen by (a) the
    parameter-free query-norm router and (b) a fixed random subset (same count)."""
    from headlab.modules.registry import moh_factory

    out = {}
    originals = [blk.mix for blk in model.blocks]
    h = originals[0].n_heads
    d = originals[0].d_model
    try:
        swapped = []
        for blk in model.blocks:
            moh = moh_factory(frac, router="query_norm")(d, h)
            moh.load_state_dict(blk.mix.state_dict(), strict=True)
            blk.mix = moh
            swapped.append(moh)
        out["query_norm_router"] = eval_loss(model, data, batch, seq_len)
        n_keep = swapped[0].n_shared + swapped[0].top_k
        g = torch.Generator().manual_seed(seed)
        for blk, orig in zip(model.blocks, originals):
            keep = torch.zeros(h)
            keep[torch.randperm(h, generator=g)[:n_keep]] = 1
            blk.mix = _FixedHeads(orig, keep)
        out["random_heads"] = eval_loss(model, data, batch, seq_len)
        out["active_heads"] = n_keep
    finally:
        for blk, orig in zip(model.blocks, originals):
            blk.mix = orig
    return out


class _FixedHeads(torch.nn.Module):
    """Wrap an MHA module and zero a fixed set of head outputs (random head dropping baseline)."""

    def __init__(self, mha, keep: torch.Tensor):
        super().__init__()
        self.mha, self.keep = mha, keep

    def forward(self, x, return_weights: bool = False):
        from headlab.modules._heads import merge_heads

        q, k, v = self.mha.heads(x)
        o, a = self.mha.attend(q, k, v, return_weights)
        y = self.mha.out(merge_heads(o * self.keep[None, :, None, None]))
        return (y, a) if return_weights else y


def run(config: MohConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Train MHA and MoH TinyLMs at one budget (``steps``, or set by the converged MHA: module docstring);
    the harness judges the run by its ``name``. Settings: :class:`MohConfig`."""
    cfg = MohConfig.make(config, **overrides)
    steps, heads, batch, seq_len, seed, converge, name = (
        cfg.steps,
        cfg.heads,
        cfg.batch,
        cfg.seq_len,
        cfg.seed,
        cfg.converge,
        cfg.name,
    )
    if not name.startswith(NAME):
        raise ValueError(f"name={name!r} is not a moh run name (valid: 'moh' or a name starting with 'moh-')")
    if converge < 0 or cfg.check_every < 1:
        raise ValueError(f"need converge >= 0 and check_every >= 1; got converge={converge}, check_every={cfg.check_every}")
    data = TextData.load()
    from headlab.modules.registry import MECHANISMS, moh_factory

    measured: dict = {"models": {}, "val_tokens": VAL_BATCHES * batch * seq_len}
    records: list[dict] = []
    mha = None
    schedule = "constant" if converge > 0 else "cosine"
    budget = steps  # the MHA run sets it when converge > 0
    for model_name, factory in [("mha", MECHANISMS["softmax"])] + [(_moh_name(f), moh_factory(f)) for f in cfg.fractions]:
        model = tiny_lm(factory, cfg.layers, cfg.d_model, heads, max_len=seq_len, seed=seed)
        check: dict[str, list] = {"step": [], "val_loss": []}
        stop: Callable[[int, TinyLM], bool] | None = None
        if converge > 0 and model_name == "mha":

            def _stop(step: int, m: TinyLM, check=check) -> bool:
                check["step"].append(step)
                check["val_loss"].append(eval_loss(m, data, batch, seq_len, VAL_BATCHES, seed=STOP_SEED))
                return converged(check["step"], check["val_loss"], converge)

            stop = _stop

        hist = train_lm(
            model,
            data,
            budget,
            batch,
            seq_len,
            cfg.lr,
            seed,
            cfg.check_every if stop else 0,
            stop,
            quiet,
            f"moh: {model_name}",
            schedule=schedule,
            warm_steps=max(1, steps // 20),
        )
        if model_name == "mha" and converge > 0:
            budget = len(hist)
            measured["convergence"] = {
                **check,
                "steps": budget,
                "converged": converged(check["step"], check["val_loss"], converge),
                "tol": converge,
                "window": WINDOW,
                "cap": steps,
            }
        loss = eval_loss(model, data, batch, seq_len)
        mix = model.blocks[0].mix
        active = mix.active_fraction if isinstance(mix, MoHAttention) else 1.0
        every = max(1, budget // 50)
        records += [{"model": model_name, "step": i * every, "train_loss": v} for i, v in enumerate(hist[::every])]
        measured["models"][model_name] = {
            "val_loss": loss,
            "val_ppl": math.exp(loss),
            "active_fraction": active,
            "train_loss": hist[::every],
            "steps": len(hist),
        }
        if model_name == "mha":
            mha = model
    measured["training_free_75"] = training_free(mha, data, 0.75, batch, seq_len, seed)
    base = measured["models"]["mha"]["val_loss"]
    res = lab_result(name, measured, cfg.record(aux_weight=AUX_WEIGHT, schedule=schedule), records)
    if not quiet:
        rows = [
            [k, v["active_fraction"], v["val_loss"], v["val_ppl"], v["val_loss"] / base] for k, v in measured["models"].items()
        ]
        tf = measured["training_free_75"]
        rows += [
            [
                "mha + query-norm router (training-free)",
                tf["active_heads"] / heads,
                tf["query_norm_router"],
                math.exp(tf["query_norm_router"]),
                tf["query_norm_router"] / base,
            ],
            [
                "mha + random heads (training-free)",
                tf["active_heads"] / heads,
                tf["random_heads"],
                math.exp(tf["random_heads"]),
                tf["random_heads"] / base,
            ],
        ]
        print_table(
            "MoH vs MHA at equal steps (validation, nats/byte)",
            ["model", "active heads", "val loss", "val ppl", "loss / MHA"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for name, m in res.measured["models"].items():
        every = max(1, m.get("steps", res.config["steps"]) // 50)
        xs = [i * every for i in range(len(m["train_loss"]))]
        ax1.plot(xs, m["train_loss"], label=f"{name} ({m['active_fraction']:.0%} heads)")
    conv = res.measured.get("convergence")
    if conv:
        ax1.plot(conv["step"], conv["val_loss"], "k.", label=f"mha val (stop check, {conv['steps']} steps)")
    ax1.set(xlabel="step", ylabel="train loss (nats/byte)", title="training", ylim=(None, 3.5))
    ax1.legend(fontsize=7)
    names = list(res.measured["models"])
    ax2.bar(names, [res.measured["models"][n]["val_loss"] for n in names])
    lo = min(res.measured["models"][n]["val_loss"] for n in names)
    ax2.set(ylabel="val loss", title="validation at equal steps", ylim=(lo * 0.97, None))
