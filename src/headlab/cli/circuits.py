"""``headlab circuits``: find the heads behind a behaviour by activation / path patching.

    headlab circuits ioi --out circuits/ioi --n 32
    headlab circuits colored-objects --out circuits/colored --n 32
    headlab circuits reuse circuits/ioi circuits/colored --out circuits/reuse.json --k 20
    headlab circuits importance --out circuits/importance --n-texts 8

``ioi`` / ``colored-objects`` write DIR/heads.json (atlas records: effect, direct effect, attention
evidence, roles; usable as ``--atlas`` for edit selectors such as ``name_mover`` or ``effect:top10``),
heads.csv, roles.json ({"LlHh": [roles]}), summary.json (baseline logit difference and accuracy,
thresholds, timings) and effects.png. See docs/circuits.md.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()

app = typer.Typer(
    help="Circuits by patching: IOI and Colored Objects on a causal LM, their overlap, head importance.", no_args_is_help=True
)

OUT = typer.Option(..., "--out", help="output folder (created; written atomically)")
N = typer.Option(32, "--n", help="prompt pairs (clean + corrupted)")
MODEL = typer.Option("smollm2-135m", "--model", help="smollm2-135m, a local HF folder or a Hub id")
SEED = typer.Option(0, "--seed", help="dataset seed")
BATCH = typer.Option(0, "--batch-heads", help="heads patched per forward pass (0 = as many as fit 8192 tokens)")
SENDERS = typer.Option(12, "--path-senders", help="IOI: earlier heads path-patched into the name movers' queries")
THREADS = typer.Option(2, "--threads", help="torch CPU threads")


def _load(model: str, threads: int):
    import torch

    from ..models import load

    if threads < 1:
        raise typer.BadParameter(f"--threads={threads} must be >= 1")
    torch.set_num_threads(threads)
    try:
        return load(model)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--model") from err


def _run(kind: str, out: Path, n: int, model: str, seed: int, batch_heads: int, path_senders: int, threads: int) -> None:
    import time

    from ..circuits import find_circuit, make_colored_objects, make_ioi, write

    if n < 2:
        raise typer.BadParameter(f"--n={n} must be >= 2 prompt pairs", param_hint="--n")
    if batch_heads < 0:
        raise typer.BadParameter(f"--batch-heads={batch_heads} must be >= 0", param_hint="--batch-heads")
    m, tok = _load(model, threads)
    try:
        task = (make_ioi if kind == "ioi" else make_colored_objects)(tok, n=n, seed=seed)
        t0 = time.time()
        res = find_circuit(m, task, model_name=model, batch_heads=batch_heads or None, path_senders=path_senders, progress=True)
        res.seconds["total"] = time.time() - t0
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    paths = write(res, out)
    b = res.baseline
    console.print(
        f"[bold]{kind}[/] on {model}, n={n}: clean logit diff {b['clean_logit_diff']:.3f} "
        f"(accuracy {b['clean_accuracy']:.2f}, top-1 {b['clean_top1']:.2f}); corrupted {b['corrupt_logit_diff']:.3f}; "
        f"{res.seconds['total']:.0f} s"
    )
    tab = Table("head", "effect", "direct", "roles", title="top heads by |effect|")
    recs = sorted(res.records(), key=lambda r: -abs(r["effect"] or 0.0))[:12]
    for r in recs:
        tab.add_row(
            r["site"], f"{r['effect']:+.3f}", f"{r['direct']:+.3f}", ", ".join(x for x in r["roles"] if x != "in_circuit")
        )
    console.print(tab)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}")


@app.command("ioi")
def ioi(
    out: Path = OUT,
    n: int = N,
    model: str = MODEL,
    seed: int = SEED,
    batch_heads: int = BATCH,
    path_senders: int = SENDERS,
    threads: int = THREADS,
) -> None:
    """Indirect object identification (ABC corruption, logit difference IO - S)."""
    _run("ioi", out, n, model, seed, batch_heads, path_senders, threads)


@app.command("colored-objects")
def colored_objects(
    out: Path = OUT, n: int = N, model: str = MODEL, seed: int = SEED, batch_heads: int = BATCH, threads: int = THREADS
) -> None:
    """Colored Objects (colour-swapped corruption, logit difference answer - other colours)."""
    _run("colored-objects", out, n, model, seed, batch_heads, 0, threads)


@app.command("reuse")
def reuse_cmd(
    task_a: Path = typer.Argument(..., help="folder written by `headlab circuits ioi`"),
    task_b: Path = typer.Argument(..., help="folder written by `headlab circuits colored-objects`"),
    out: Path = typer.Option(..., "--out", help="JSON file to write"),
    k: int = typer.Option(20, "--k", help="top-k heads by |effect| per task"),
    permutations: int = typer.Option(10000, "--permutations", help="random head sets for the baseline"),
) -> None:
    """Overlap of the two tasks' heads (Jaccard, top-k) against chance."""
    from ..circuits import load_effects, reuse
    from ..io import atomic_write_json

    try:
        ea, ca, da = load_effects(task_a)
        eb, cb, db = load_effects(task_b)
        res = reuse(ea, eb, k=k, circuit_a=ca, circuit_b=cb, permutations=permutations)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    res = {"task_a": da.get("task"), "task_b": db.get("task"), "model": da.get("model"), **res}
    atomic_write_json(out, res)
    t = res["top_k"]
    console.print(
        f"top-{k}: {t['intersection']} shared (chance {t['expected_intersection']:.2f}), Jaccard {t['jaccard']:.3f} "
        f"(random sets {t['perm_mean_jaccard']:.3f}, p={t['perm_p']:.4f}); Spearman |effect| "
        f"{res['spearman_abs_effect']:.3f}"
    )
    if "in_circuit" in res:
        c = res["in_circuit"]
        console.print(
            f"in-circuit sets ({c['size_a']} / {c['size_b']} heads): {c['intersection']} shared, Jaccard "
            f"{c['jaccard']:.3f} (random {c['perm_mean_jaccard']:.3f}, p={c['perm_p']:.4f})"
        )
    console.print(f"wrote {out}")


@app.command("importance")
def importance_cmd(
    out: Path = OUT,
    model: str = MODEL,
    n_texts: int = typer.Option(8, "--n-texts", help="built-in prose texts"),
    max_tokens: int = typer.Option(48, "--max-tokens", help="tokens per text"),
    threads: int = THREADS,
) -> None:
    """Mean-ablation KL per head (batched) beside its Taylor estimate, with their correlation."""
    from ..data import prose
    from ..io import atomic_dir, atomic_write_bytes, atomic_write_json
    from ..measure.importance import head_importance, importance_png
    from ..measure.record import encode_left

    if n_texts < 1 or max_tokens < 2:
        raise typer.BadParameter(f"need --n-texts >= 1 and --max-tokens >= 2, got {n_texts} and {max_tokens}")
    m, tok = _load(model, threads)
    enc = encode_left(tok, prose.documents(n_texts, min_chars=max_tokens * 6), max_length=max_tokens)
    res = head_importance(m, enc["input_ids"], enc["attention_mask"], progress=True)
    with atomic_dir(out) as d:
        atomic_write_json(d / "heads.json", {"model": model, "heads": [r | {"roles": []} for r in res.records()]})
        atomic_write_json(d / "summary.json", {"model": model, "n_texts": n_texts, "max_tokens": max_tokens, **res.summary()})
        atomic_write_bytes(d / "importance.png", importance_png(res.records(), f"{model}: mean-ablation importance per head"))
    s = res.summary()
    console.print(
        f"Spearman(KL, |Taylor|) = {s['spearman_kl_vs_abs_taylor']:.3f}; Pearson(ΔNLL, Taylor) = "
        f"{s['pearson_delta_nll_vs_taylor']:.3f}; wrote {out}/heads.json, summary.json"
    )


@app.command("attribution")
def attribution_cmd(
    out: Path = OUT,
    task: str = typer.Option("sst2", "--task", help="sst2 or squad"),
    items: int = typer.Option(20, "--items", help="prompts: the first N of the task"),
    model: str = MODEL,
    ig_steps: int = typer.Option(8, "--ig-steps", help="integrated gradients: Gauss-Legendre points"),
    top: float = typer.Option(0.2, "--top", help="coverage: top fraction of tokens compared"),
    max_chars: int = typer.Option(600, "--max-chars", help="squad: longest passage, characters"),
    threads: int = THREADS,
) -> None:
    """Attention at the final position vs input saliency (gradient x input, integrated gradients, attention x
    gradient): Spearman, Pearson, top-k coverage per head, per layer, averaged and rolled out. See docs/attribution.md."""
    from ..measure.attribution import TASKS, run
    from ..measure.attribution_report import table, write

    if task not in TASKS:
        raise typer.BadParameter(f"--task={task!r}; valid: {', '.join(TASKS)}", param_hint="--task")
    if items <= 0:
        raise typer.BadParameter(f"--items={items} must be >= 1", param_hint="--items")
    m, tok = _load(model, threads)
    try:
        records, summary = run(m, tok, task, items, ig_steps=ig_steps, frac=top, max_chars=max_chars, progress=True)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    except RuntimeError as err:  # a missing data package: the message names the pip command
        console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from err
    config = {"model": model, "task": task, "items": items, "ig_steps": ig_steps, "top": top, "max_chars": max_chars}
    cmd = (
        f"headlab circuits attribution --task {task} --items {items} --model {model} --ig-steps {ig_steps} --top {top} "
        f"--max-chars {max_chars} --out {out}"
    )
    paths = write(out, config, records, summary, cmd)
    console.print(table(summary))
    console.print(f"chance coverage {summary['chance_coverage']['value']:.3f}; wrote {', '.join(str(p) for p in paths.values())}")
