"""``headlab lab``: small CPU experiments reproducing attention papers' phenomena (see headlab.lab).

Every command prints a rich table (JSON with --json) and writes OUT/NAME.json (the measured numbers and the
configuration that produced them), OUT/NAME.records.jsonl (raw per-trial / per-evaluation rows) and OUT/NAME.png.
Experiments do not judge themselves: the repository's claims harness does (``headlab reproduce NAME`` in a
checkout).  ``--smoke`` runs a seconds-long configuration (for tests / CI).  Option defaults and the smoke
sizes come from the experiments' configuration dataclasses (``headlab.lab.config``, their one home); the table
:data:`COMMANDS` below says which fields each command exposes, and :func:`headlab.cli.lab_command.lab_command`
builds the commands from it.  ``headlab reproduce NAME`` reruns the registered sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..lab import config as K
from . import _common as C
from .lab_command import Opt, lab_command

app = C.typer_app(
    "Small CPU experiments that reproduce attention papers' phenomena: attention sinks (sinks), induction heads "
    "(induction), in-context linear regression (icl-regression), associative-memory capacity (memory-capacity), "
    "mixture-of-heads (moh), deconstructing attention (deconstruct), random-feature attention (rf-mean), pointer networks "
    "(pointer-hull), efficient probing (probing-sst2), pooling heads (pooling-sst2), PoNet (ponet-lra), the "
    "dynamical-systems view of attention and SSMs (dsf-equiv), global-sink suppression for text grounding "
    "(refam-squad), contrastive-attention context selection (carve-squad), text dominance and its fix by compression "
    "(dominance-squad), dynamic context exit (exit-squad) and the preplan-and-anchor coupling of "
    "WAAD and FAI in a model's own reasoning (preplan-anchor)."
)

COMMON = {
    "out": C.out_option(C.REPORT / "lab", "output folder for NAME.json, NAME.records.jsonl, NAME.png"),
    "seed": typer.Option(K.LabConfig.seed, "--seed", help="random seed (data, init)"),
    "smoke": typer.Option(False, "--smoke", help="seconds-long configuration (numbers are meaningless)"),
    "threads": C.threads_option(),
    "json_out": C.json_option("print OUT/NAME.json (the measured numbers and the configuration) on stdout instead of the table"),
    "quiet": C.quiet_option(),
}
NAME_HELP = "run name: the output files' stem (the harness judges a run by the claim of that name)"
NAME = Opt("name", NAME_HELP, flags=("--name", "--claim"), smoke=True)
MODEL = Opt("model", "model name or local folder", smoke=True)


def _steps(help: str = "training steps per model") -> Opt:
    return Opt("steps", help, min=1)


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


#: (configuration, exposed options, the command's help) per ``headlab lab`` command, in help order
COMMANDS: tuple[tuple[type[K.LabConfig], tuple[Opt, ...], str], ...] = (
    (
        K.SinksConfig,
        (
            _steps(),
            Opt("layers", "transformer layers"),
            Opt("d_model", "width"),
            Opt("heads", "attention heads"),
            Opt("seq_len", "window length (BOS at position 0, then seq_len - 1 bytes)", min=1),
            Opt("batch", "windows per step", min=1),
            Opt("lr", "AdamW peak learning rate"),
            Opt("weight_decay", "AdamW weight decay"),
            NAME,
            Opt("data", "training data: text (byte-level prose) or backcopy (bigram-backcopy language)", smoke=True),
            Opt("mlp", "MLP after attention in every block (--no-mlp: attention-only)", ("--mlp/--no-mlp",), smoke=True),
            Opt("tied", "read-out tied to the token embedding (--untied: its own weight)", ("--tied/--untied",), smoke=True),
            Opt("repeats", "seeds per mechanism: SEED, SEED+1, ... (numbers are means; by_seed keeps each)", min=1, smoke=True),
        ),
        "Softmax vs sigmoid (no normalisation) vs gated tiny LMs: first-token sink rate over training.",
    ),
    (
        K.InductionConfig,
        (
            _steps("training steps"),
            Opt("K", "number of training classes K", ("--classes",), min=1),
            Opt("N", "item-label pairs N in the context (Reddy: 8)", ("--pairs",), min=1),
            Opt("D", "item dimension D (Reddy: 63)", ("--dim",), min=1),
            Opt("lr", "Adam learning rate"),
        ),
        "Reddy's bursty in-context classification: ICL accuracy and induction-head score over training.",
    ),
    (
        K.IclRegressionConfig,
        (_steps(), Opt("d", "input dimension d", ("--dim",)), Opt("n", "context length n used in training", ("--context",))),
        "One-layer multi-head softmax attention on in-context linear regression vs ridge / one-step GD.",
    ),
    (
        K.MemoryCapacityConfig,
        (Opt("trials", "random memories per point", ("--n",), alias="--trials", min=1),),
        "Recall accuracy of linear-attention (Hebbian) memory vs stored pairs for d_k = 16..128.",
    ),
    (
        K.MohConfig,
        (
            _steps(),
            Opt("heads", "attention heads (20 gives exact 50/75/90%)"),
            Opt("d_model", "width"),
            Opt(
                "converge",
                "0: train --steps (cosine); > 0: train MHA at constant LR until its best validation loss improves by "
                "less than this fraction over the last 20% of the steps (cap --steps), then every model that many steps",
                smoke=True,
            ),
            Opt("check_every", "steps between convergence checks (with --converge)", min=1),
            NAME,
        ),
        "Tiny LM with MoH at 50/75/90% active heads vs full MHA at equal steps.",
    ),
    (
        K.DeconstructConfig,
        (
            _steps("training steps per model (13 models)"),
            Opt("batch", "windows per step", min=1),
            Opt("lr", "AdamW peak learning rate"),
            NAME,
        ),
        "Deconstructing Attention: uniform and hybrid stacks of relaxed attention variants vs all-softmax.",
    ),
    (K.RfMeanConfig, (), "Random-feature attention: frozen QK with non-zero vs zero mean, test MSE against sample size."),
    (
        K.PointerHullConfig,
        (_steps("training steps (each model)"), Opt("batch", "point sets per step", min=1), Opt("hidden", "LSTM width", min=1)),
        "Pointer Networks vs seq2seq + attention on convex hulls: train on n <= 10 points, test on n = 10 and 20.",
    ),
    (
        K.ProbingSst2Config,
        (_steps("training steps per probe and fold"), Opt("folds", "cross-fitting folds")),
        "Efficient probing vs linear and multi-head attentive probes on frozen MiniLM states of SST-2.",
    ),
    (
        K.PoolingSst2Config,
        (_steps("training steps per pooling head and fold"), Opt("folds", "cross-fitting folds")),
        "AttSets and MLTP pooling heads vs mean, CLS, max and last-token pooling of frozen MiniLM on SST-2.",
    ),
    (
        K.PonetLraConfig,
        (
            Opt("steps", "training steps per model (0: time the steps only)", min=0),
            Opt("length", "longest expression (tokens); the shortest is half"),
            Opt("timing_lengths", "lengths at which a training step is timed (repeat the flag)"),
            Opt("timing_batch", "sequences per timed step", min=1),
            Opt("timing_repeats", "alternating timing rounds after a warm-up", min=1),
            NAME,
        ),
        "PoNet vs softmax attention on a ListOps-like task: accuracy at equal steps and time per training step.",
    ),
    (
        K.DsfEquivConfig,
        (Opt("trials", "random draws", min=1),),
        "DSF: linear attention = SSM with A = 0, scalar SSM = gated linear attention; the normalised and selective forms differ.",
    ),
    (
        K.RefamSquadConfig,
        (
            Opt("items", "answerable SQuAD questions (the first ones with short passages)", min=1),
            Opt("first_layer", "first layer of the grounding map (0-based)"),
        ),
        "RefAM adapted to text: does suppressing global attention sinks make question-to-passage attention find the "
        "answer span more often (SmolLM2, SQuAD)?",
    ),
    (
        K.PreplanAnchorConfig,
        (
            Opt("prompts", "GSM8K test questions (a seeded draw)", min=1),
            Opt("new_tokens", "greedy response length cap per question", min=1),
            MODEL,
        ),
        "Preplan-and-anchor rhythm (arXiv 2510.13554): WAAD / FAI coupling lifts over shuffled positions on SmolLM2's "
        "greedy GSM8K reasoning (the paper's RL part is out of reach on a CPU).",
    ),
    (
        K.CarveSquadConfig,
        (
            Opt("items", "SQuAD questions, each hidden among distractor paragraphs", min=1),
            Opt("context_tokens", "paragraph tokens per item (about)"),
            Opt("first_layer", "first layer of the contrast window (0-based)"),
            Opt("last_layer", "last layer of the contrast window (0-based)"),
            Opt("keep", "share of the context tokens kept, by whole sentences, in (0, 1)"),
            Opt("lam", "λ of task / (general + λ) in units of 1/N (N context tokens), > 0"),
            MODEL,
        ),
        "CARVE adapted to text (arXiv 2509.06461): keep the context sentences that the question's attention, "
        "contrasted with a general instruction's, points at, and re-answer (SmolLM2, SQuAD among distractors).",
    ),
    (
        K.DominanceSquadConfig,
        (
            Opt("items", "SQuAD questions, each hidden among distractor paragraphs", min=1),
            Opt("context_tokens", "paragraph tokens per item (about)"),
            Opt("keep", "share of the context tokens kept by the compression, by whole sentences, in (0, 1)"),
            Opt("max_new", "greedy answer length cap (tokens)", min=1),
            MODEL,
        ),
        "Text dominance adapted to a text LM (arXiv 2508.10552): the MDI of the task span over a long SQuAD context "
        "per layer group, before and after compressing the context (SmolLM2).",
    ),
    (
        K.ExitSquadConfig,
        (
            Opt("items", "SQuAD questions, each over its own paragraph", min=1),
            Opt("max_chars", "longest paragraph (characters)"),
            Opt("max_new", "greedy answer length cap (tokens)", min=1),
            Opt("exit_layers", "candidate layers after which the paragraph exits (0-based; repeat the flag)"),
            Opt("folds", "cross-fitting folds of the hyper-network", min=2),
            Opt("threshold", "exit at the earliest layer whose predicted probability of an unchanged answer is >= this"),
            MODEL,
        ),
        "DyVTE adapted to a text LM (arXiv 2411.19628): drop a SQuAD paragraph's keys after a layer that a small learned "
        "model picks per question from the last token's state; accuracy vs prefill FLOPs (SmolLM2).",
    ),
)

for _config, _opts, _doc in COMMANDS:
    lab_command(app, _config, _opts, _doc, _finish, COMMON)
