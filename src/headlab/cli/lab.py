"""``headlab lab``: small CPU experiments reproducing attention papers' phenomena (see headlab.lab).

Every command prints a rich table (JSON with --json) and writes OUT/NAME.json (the measured numbers and the
configuration that produced them), OUT/NAME.records.jsonl (raw per-trial / per-evaluation rows) and OUT/NAME.png.
Experiments do not judge themselves: the repository's claims harness does (``headlab reproduce NAME`` in a
checkout).  ``--smoke`` runs a seconds-long configuration (for tests / CI).  Option defaults and the smoke
sizes come from the experiments' configuration dataclasses (``headlab.lab.config``, their one home);
``headlab reproduce NAME`` reruns the registered sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..lab.config import SMOKE as SMOKE_SIZES
from ..lab.config import (
    DeconstructConfig,
    DsfEquivConfig,
    IclRegressionConfig,
    InductionConfig,
    LabConfig,
    MemoryCapacityConfig,
    MohConfig,
    PointerHullConfig,
    PonetLraConfig,
    PoolingSst2Config,
    ProbingSst2Config,
    RefamSquadConfig,
    SinksConfig,
)
from . import _common as C

app = C.typer_app(
    "Small CPU experiments that reproduce attention papers' phenomena: attention sinks (sinks), induction heads "
    "(induction), in-context linear regression (icl-regression), associative-memory capacity (memory-capacity), "
    "mixture-of-heads (moh), deconstructing attention (deconstruct), random-feature attention (rf-mean), pointer networks "
    "(pointer-hull), efficient probing (probing-sst2), pooling heads (pooling-sst2), PoNet (ponet-lra), the "
    "dynamical-systems view of attention and SSMs (dsf-equiv), global-sink suppression for text grounding "
    "(refam-squad), contrastive-attention context selection (carve-squad) and the preplan-and-anchor coupling of "
    "WAAD and FAI in a model's own reasoning (preplan-anchor)."
)

OUT = C.out_option(C.REPORT / "lab", "output folder for NAME.json, NAME.records.jsonl, NAME.png")
SEED = typer.Option(LabConfig.seed, "--seed", help="random seed (data, init)")
SMOKE = typer.Option(False, "--smoke", help="seconds-long configuration (numbers are meaningless)")
THREADS = C.threads_option()
JSON = C.json_option("print OUT/NAME.json (the measured numbers and the configuration) on stdout instead of the table")
QUIET = C.quiet_option()
NAME_HELP = "run name: the output files' stem (the harness judges a run by the claim of that name)"


def _finish(module, kw: dict, seed: int, out: Path, threads: int = 0, json_out: bool = False) -> None:
    """Run ``module.run(seed=seed, **kw)``, write OUT/NAME.json + .png; bad sizes become a clean CLI error."""
    C.check_out_folder(out)
    _threads(threads)
    try:
        result = module.run(seed=seed, **kw, **({"quiet": True} if json_out else {}))
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    try:
        paths = result.write(out, module.plot)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    if json_out:
        typer.echo(json.dumps(json.loads(Path(paths["json"]).read_text(encoding="utf-8"))))
    C.note(f"wrote {paths['json']}, {paths['records']} and {paths['png']}")


_THREADS = {"n": 0}


@app.callback()
def _options(threads: int = C.threads_option(hidden=True)) -> None:
    """``headlab lab --threads N EXPERIMENT``: the older place of --threads (registered commands use it)."""
    _THREADS["n"] = threads


def _threads(threads: int = 0) -> None:
    """Set torch's thread count when ``--threads N`` asked for one (the experiment's, else the group's)."""
    C.set_threads(threads or _THREADS["n"])


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise typer.BadParameter(f"--{name} must be >= 1, got {value}")
    return value


@app.command()
def sinks(
    out: Path = OUT,
    steps: int = typer.Option(SinksConfig.steps, help="training steps per model"),
    layers: int = typer.Option(SinksConfig.layers, help="transformer layers"),
    d_model: int = typer.Option(SinksConfig.d_model, help="width"),
    heads: int = typer.Option(SinksConfig.heads, help="attention heads"),
    seq_len: int = typer.Option(SinksConfig.seq_len, help="window length (BOS at position 0, then seq_len - 1 bytes)"),
    batch: int = typer.Option(SinksConfig.batch, help="windows per step"),
    lr: float = typer.Option(SinksConfig.lr, help="AdamW peak learning rate"),
    weight_decay: float = typer.Option(SinksConfig.weight_decay, help="AdamW weight decay"),
    name: str = typer.Option(SinksConfig.name, "--name", "--claim", help=NAME_HELP),
    data: str = typer.Option(
        SinksConfig.data, help="training data: text (byte-level prose) or backcopy (bigram-backcopy language)"
    ),
    mlp: bool = typer.Option(
        SinksConfig.mlp, "--mlp/--no-mlp", help="MLP after attention in every block (--no-mlp: attention-only)"
    ),
    tied: bool = typer.Option(
        SinksConfig.tied, "--tied/--untied", help="read-out tied to the token embedding (--untied: its own weight)"
    ),
    repeats: int = typer.Option(
        SinksConfig.repeats, help="seeds per mechanism: SEED, SEED+1, ... (numbers are means; by_seed keeps each)"
    ),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Softmax vs sigmoid (no normalisation) vs gated tiny LMs: first-token sink rate over training."""
    from headlab.lab import sinks as exp

    arch = dict(name=name, data=data, mlp=mlp, tied=tied, repeats=_positive("repeats", repeats))
    kw = (
        dict(**SMOKE_SIZES["sinks"], **arch)
        if smoke
        else dict(
            steps=_positive("steps", steps),
            layers=layers,
            d_model=d_model,
            heads=heads,
            seq_len=_positive("seq-len", seq_len),
            batch=_positive("batch", batch),
            lr=lr,
            weight_decay=weight_decay,
            **arch,
        )
    )
    _finish(exp, kw, seed, out, threads, json_out)


@app.command()
def induction(
    out: Path = OUT,
    steps: int = typer.Option(InductionConfig.steps, help="training steps"),
    classes: int = typer.Option(InductionConfig.K, help="number of training classes K"),
    pairs: int = typer.Option(InductionConfig.N, help="item-label pairs N in the context (Reddy: 8)"),
    dim: int = typer.Option(InductionConfig.D, help="item dimension D (Reddy: 63)"),
    lr: float = typer.Option(InductionConfig.lr, help="Adam learning rate"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Reddy's bursty in-context classification: ICL accuracy and induction-head score over training."""
    from headlab.lab import induction as exp

    kw = (
        SMOKE_SIZES["induction"]
        if smoke
        else dict(
            steps=_positive("steps", steps),
            K=_positive("classes", classes),
            N=_positive("pairs", pairs),
            D=_positive("dim", dim),
            lr=lr,
        )
    )
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("icl-regression")
def icl_regression(
    out: Path = OUT,
    steps: int = typer.Option(IclRegressionConfig.steps, help="training steps per model"),
    dim: int = typer.Option(IclRegressionConfig.d, help="input dimension d"),
    context: int = typer.Option(IclRegressionConfig.n, help="context length n used in training"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """One-layer multi-head softmax attention on in-context linear regression vs ridge / one-step GD."""
    from headlab.lab import icl_regression as exp

    kw = SMOKE_SIZES["icl-regression"] if smoke else dict(steps=_positive("steps", steps), d=dim, n=context)
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("memory-capacity")
def memory_capacity(
    out: Path = OUT,
    n: int = typer.Option(MemoryCapacityConfig.trials, "--n", help="random memories per point"),
    trials: Optional[int] = C.alias("--trials"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Recall accuracy of linear-attention (Hebbian) memory vs stored pairs for d_k = 16..128."""
    from headlab.lab import memory_capacity as exp

    n_name, n = ("trials", trials) if trials is not None else ("n", n)
    kw = SMOKE_SIZES["memory-capacity"] if smoke else dict(trials=_positive(n_name, n))
    _finish(exp, kw, seed, out, threads, json_out)


@app.command()
def moh(
    out: Path = OUT,
    steps: int = typer.Option(MohConfig.steps, help="training steps per model"),
    heads: int = typer.Option(MohConfig.heads, help="attention heads (20 gives exact 50/75/90%)"),
    d_model: int = typer.Option(MohConfig.d_model, help="width"),
    converge: float = typer.Option(
        MohConfig.converge,
        help="0: train --steps (cosine); > 0: train MHA at constant LR until its best validation loss improves by "
        "less than this fraction over the last 20% of the steps (cap --steps), then every model that many steps",
    ),
    check_every: int = typer.Option(MohConfig.check_every, help="steps between convergence checks (with --converge)"),
    name: str = typer.Option(MohConfig.name, "--name", "--claim", help=NAME_HELP),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Tiny LM with MoH at 50/75/90% active heads vs full MHA at equal steps."""
    from headlab.lab import moh as exp

    kw = (
        dict(**SMOKE_SIZES["moh"], converge=converge, name=name)
        if smoke
        else dict(
            steps=_positive("steps", steps),
            heads=heads,
            d_model=d_model,
            converge=converge,
            check_every=_positive("check-every", check_every),
            name=name,
        )
    )
    _finish(exp, kw, seed, out, threads, json_out)


@app.command()
def deconstruct(
    out: Path = OUT,
    steps: int = typer.Option(DeconstructConfig.steps, help="training steps per model (13 models)"),
    batch: int = typer.Option(DeconstructConfig.batch, help="windows per step"),
    lr: float = typer.Option(DeconstructConfig.lr, help="AdamW peak learning rate"),
    name: str = typer.Option(DeconstructConfig.name, "--name", "--claim", help=NAME_HELP),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Deconstructing Attention: uniform and hybrid stacks of relaxed attention variants vs all-softmax."""
    from headlab.lab import deconstruct as exp

    kw = (
        dict(**SMOKE_SIZES["deconstruct"], name=name)
        if smoke
        else dict(steps=_positive("steps", steps), batch=_positive("batch", batch), lr=lr, name=name)
    )
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("rf-mean")
def rf_mean(
    out: Path = OUT,
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Random-feature attention: frozen QK with non-zero vs zero mean, test MSE against sample size."""
    from headlab.lab import rf_mean as exp

    kw = SMOKE_SIZES["rf-mean"] if smoke else {}
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("pointer-hull")
def pointer_hull(
    out: Path = OUT,
    steps: int = typer.Option(PointerHullConfig.steps, help="training steps (each model)"),
    batch: int = typer.Option(PointerHullConfig.batch, help="point sets per step"),
    hidden: int = typer.Option(PointerHullConfig.hidden, help="LSTM width"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Pointer Networks vs seq2seq + attention on convex hulls: train on n <= 10 points, test on n = 10 and 20."""
    from headlab.lab import pointer_hull as exp

    kw = (
        SMOKE_SIZES["pointer-hull"]
        if smoke
        else dict(steps=_positive("steps", steps), batch=_positive("batch", batch), hidden=_positive("hidden", hidden))
    )
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("probing-sst2")
def probing_sst2(
    out: Path = OUT,
    steps: int = typer.Option(ProbingSst2Config.steps, help="training steps per probe and fold"),
    folds: int = typer.Option(ProbingSst2Config.folds, help="cross-fitting folds"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Efficient probing vs linear and multi-head attentive probes on frozen MiniLM states of SST-2."""
    from headlab.lab import probing_sst2 as exp

    kw = SMOKE_SIZES["probing-sst2"] if smoke else dict(steps=_positive("steps", steps), folds=folds)
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("pooling-sst2")
def pooling_sst2(
    out: Path = OUT,
    steps: int = typer.Option(PoolingSst2Config.steps, help="training steps per pooling head and fold"),
    folds: int = typer.Option(PoolingSst2Config.folds, help="cross-fitting folds"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """AttSets and MLTP pooling heads vs mean, CLS, max and last-token pooling of frozen MiniLM on SST-2."""
    from headlab.lab import pooling_sst2 as exp

    kw = SMOKE_SIZES["pooling-sst2"] if smoke else dict(steps=_positive("steps", steps), folds=folds)
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("ponet-lra")
def ponet_lra(
    out: Path = OUT,
    steps: int = typer.Option(PonetLraConfig.steps, help="training steps per model (0: time the steps only)"),
    length: int = typer.Option(PonetLraConfig.length, help="longest expression (tokens); the shortest is half"),
    timing_lengths: list[int] = typer.Option(
        PonetLraConfig.timing_lengths, "--timing-lengths", help="lengths at which a training step is timed (repeat the flag)"
    ),
    timing_batch: int = typer.Option(PonetLraConfig.timing_batch, help="sequences per timed step"),
    timing_repeats: int = typer.Option(PonetLraConfig.timing_repeats, help="alternating timing rounds after a warm-up"),
    name: str = typer.Option(PonetLraConfig.name, "--name", "--claim", help=NAME_HELP),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """PoNet vs softmax attention on a ListOps-like task: accuracy at equal steps and time per training step."""
    from headlab.lab import ponet_lra as exp

    if steps < 0:
        raise typer.BadParameter(f"--steps must be >= 0, got {steps}")
    kw = (
        dict(**SMOKE_SIZES["ponet-lra"], name=name)
        if smoke
        else dict(
            steps=steps,
            length=length,
            timing_lengths=tuple(timing_lengths),
            timing_batch=_positive("timing-batch", timing_batch),
            timing_repeats=_positive("timing-repeats", timing_repeats),
            name=name,
        )
    )
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("dsf-equiv")
def dsf_equiv(
    out: Path = OUT,
    trials: int = typer.Option(DsfEquivConfig.trials, help="random draws"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """DSF: linear attention = SSM with A = 0, scalar SSM = gated linear attention; the normalised and selective forms differ."""
    from headlab.lab import dsf_equiv as exp

    kw = SMOKE_SIZES["dsf-equiv"] if smoke else dict(trials=_positive("trials", trials))
    _finish(exp, kw, seed, out, threads, json_out)


@app.command("refam-squad")
def refam_squad(
    out: Path = OUT,
    items: int = typer.Option(RefamSquadConfig.items, help="answerable SQuAD questions (the first ones with short passages)"),
    first_layer: int = typer.Option(RefamSquadConfig.first_layer, help="first layer of the grounding map (0-based)"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """RefAM adapted to text: does suppressing global attention sinks make question-to-passage attention find the
    answer span more often (SmolLM2, SQuAD)?"""
    from headlab.lab import refam_squad as exp

    kw = SMOKE_SIZES["refam-squad"] if smoke else dict(items=_positive("items", items), first_layer=first_layer)
    _finish(exp, kw, seed, out, threads, json_out)


from ..lab.config import PreplanAnchorConfig  # noqa: E402  (kept beside its command)


@app.command("preplan-anchor")
def preplan_anchor(
    out: Path = OUT,
    prompts: int = typer.Option(PreplanAnchorConfig.prompts, help="GSM8K test questions (a seeded draw)"),
    new_tokens: int = typer.Option(PreplanAnchorConfig.new_tokens, help="greedy response length cap per question"),
    model: str = typer.Option(PreplanAnchorConfig.model, help="model name or local folder"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """Preplan-and-anchor rhythm (arXiv 2510.13554): WAAD / FAI coupling lifts over shuffled positions on SmolLM2's
    greedy GSM8K reasoning (the paper's RL part is out of reach on a CPU)."""
    from headlab.lab import preplan_anchor as exp

    kw = (
        dict(SMOKE_SIZES["preplan-anchor"], model=model)
        if smoke
        else dict(prompts=_positive("prompts", prompts), new_tokens=_positive("new-tokens", new_tokens), model=model)
    )
    _finish(exp, kw, seed, out, threads, json_out)


from ..lab.config import CarveSquadConfig  # noqa: E402  (kept beside its command)


@app.command("carve-squad")
def carve_squad(
    out: Path = OUT,
    items: int = typer.Option(CarveSquadConfig.items, help="SQuAD questions, each hidden among distractor paragraphs"),
    context_tokens: int = typer.Option(CarveSquadConfig.context_tokens, help="paragraph tokens per item (about)"),
    first_layer: int = typer.Option(CarveSquadConfig.first_layer, help="first layer of the contrast window (0-based)"),
    last_layer: int = typer.Option(CarveSquadConfig.last_layer, help="last layer of the contrast window (0-based)"),
    keep: float = typer.Option(CarveSquadConfig.keep, help="share of the context tokens kept, by whole sentences, in (0, 1)"),
    lam: float = typer.Option(CarveSquadConfig.lam, help="λ of task / (general + λ) in units of 1/N (N context tokens), > 0"),
    model: str = typer.Option(CarveSquadConfig.model, help="model name or local folder"),
    seed: int = SEED,
    smoke: bool = SMOKE,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
):
    """CARVE adapted to text (arXiv 2509.06461): keep the context sentences that the question's attention, contrasted
    with a general instruction's, points at, and re-answer (SmolLM2, SQuAD among distractors)."""
    from headlab.lab import carve_squad as exp

    kw = (
        dict(SMOKE_SIZES["carve-squad"], model=model)
        if smoke
        else dict(
            items=_positive("items", items),
            context_tokens=context_tokens,
            first_layer=first_layer,
            last_layer=last_layer,
            keep=keep,
            lam=lam,
            model=model,
        )
    )
    _finish(exp, kw, seed, out, threads, json_out)
