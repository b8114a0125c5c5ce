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

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import _common as C
from . import _device as _dev

console = Console()

app = C.typer_app("Circuits by patching: IOI and Colored Objects on a causal LM, their overlap, head importance, attribution.")


def OUT(name: str):  # noqa: N802 - an option factory, like the typer.Option it returns
    return C.out_option(C.REPORT / f"circuits-{name}", "output folder (created; written atomically)")


N = typer.Option(32, "--n", help="prompt pairs (clean + corrupted)")
MODEL = C.model_option()
SEED = typer.Option(0, "--seed", help="dataset seed")
BATCH = typer.Option(0, "--batch-heads", help="heads patched per forward pass (0 = as many as fit 8192 tokens)")
SENDERS = typer.Option(12, "--path-senders", help="IOI: earlier heads path-patched into the name movers' queries")
THREADS = C.threads_option()
JSON = C.json_option()
QUIET = C.quiet_option()
DEVICE, DTYPE, DEVICE_MAP = _dev.device_option(), _dev.dtype_option(), _dev.device_map_option()


def _load(model: str, threads: int, device: Optional[str] = None, dtype: Optional[str] = None, device_map: Optional[str] = None):
    C.set_threads(threads)
    return _dev.load_model(model, device, dtype, device_map)


def _run(kind: str, out: Path, n: int, model: str, seed: int, batch_heads: int, path_senders: int, threads: int, **kw) -> None:
    import time

    from ..circuits import find_circuit, make_colored_objects, make_ioi, write

    json_out, quiet = kw.pop("json_out"), kw.pop("quiet")
    if n < 2:
        raise typer.BadParameter(f"--n={n} must be >= 2 prompt pairs", param_hint="--n")
    if batch_heads < 0:
        raise typer.BadParameter(f"--batch-heads={batch_heads} must be >= 0", param_hint="--batch-heads")
    C.check_out_folder(out)
    m, tok = _load(model, threads, **kw)
    try:
        task = (make_ioi if kind == "ioi" else make_colored_objects)(tok, n=n, seed=seed)
        t0 = time.time()
        res = find_circuit(
            m, task, model_name=model, batch_heads=batch_heads or None, path_senders=path_senders, progress=not quiet
        )
        res.seconds["total"] = time.time() - t0
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    paths = write(res, out)
    b = res.baseline
    recs = sorted(res.records(), key=lambda r: -abs(r["effect"] or 0.0))[:12]
    if json_out:
        typer.echo(json.dumps({"baseline": b, "top": recs, "files": [str(p) for p in paths.values()]}, default=str))
    else:
        console.print(
            f"[bold]{kind}[/] on {model}, n={n}: clean logit diff {b['clean_logit_diff']:.3f} "
            f"(accuracy {b['clean_accuracy']:.2f}, top-1 {b['clean_top1']:.2f}); corrupted {b['corrupt_logit_diff']:.3f}; "
            f"{res.seconds['total']:.0f} s",
            highlight=False,
        )
        tab = Table("head", "effect", "direct", "roles", title="top heads by |effect|")
        for r in recs:
            tab.add_row(
                r["site"], f"{r['effect']:+.3f}", f"{r['direct']:+.3f}", ", ".join(x for x in r["roles"] if x != "in_circuit")
            )
        console.print(tab)
    C.note(f"wrote {', '.join(str(p) for p in paths.values())}")


@app.command("ioi")
def ioi(
    out: Path = OUT("ioi"),
    n: int = N,
    model: str = MODEL,
    seed: int = SEED,
    batch_heads: int = BATCH,
    path_senders: int = SENDERS,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    device_map: Optional[str] = DEVICE_MAP,
) -> None:
    """Indirect object identification (ABC corruption, logit difference IO - S)."""
    _run(
        "ioi", out, n, model, seed, batch_heads, path_senders, threads,
        json_out=json_out, quiet=quiet, device=device, dtype=dtype, device_map=device_map,
    )  # fmt: skip


@app.command("colored-objects")
def colored_objects(
    out: Path = OUT("colored-objects"),
    n: int = N,
    model: str = MODEL,
    seed: int = SEED,
    batch_heads: int = BATCH,
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    device_map: Optional[str] = DEVICE_MAP,
) -> None:
    """Colored Objects (colour-swapped corruption, logit difference answer - other colours)."""
    _run(
        "colored-objects", out, n, model, seed, batch_heads, 0, threads,
        json_out=json_out, quiet=quiet, device=device, dtype=dtype, device_map=device_map,
    )  # fmt: skip


@app.command("reuse")
def reuse_cmd(
    task_a: Path = typer.Argument(..., help="folder written by `headlab circuits ioi`"),
    task_b: Path = typer.Argument(..., help="folder written by `headlab circuits colored-objects`"),
    out: Path = C.out_option(C.REPORT / "circuits-reuse" / "reuse.json", "JSON file to write"),
    k: int = typer.Option(20, "--k", help="top-k heads by |effect| per task"),
    permutations: int = typer.Option(10000, "--permutations", help="random head sets for the baseline"),
    json_out: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Overlap of the two tasks' heads (Jaccard, top-k) against chance."""
    from ..circuits import load_effects, reuse
    from ..io import atomic_write_json

    C.check_out_file(out)
    try:
        ea, ca, da = load_effects(task_a)
        eb, cb, db = load_effects(task_b)
        res = reuse(ea, eb, k=k, circuit_a=ca, circuit_b=cb, permutations=permutations)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    res = {"task_a": da.get("task"), "task_b": db.get("task"), "model": da.get("model"), **res}
    atomic_write_json(out, res)
    if json_out:
        typer.echo(json.dumps(res, default=str))
    else:
        t = res["top_k"]
        console.print(
            f"top-{k}: {t['intersection']} shared (chance {t['expected_intersection']:.2f}), Jaccard {t['jaccard']:.3f} "
            f"(random sets {t['perm_mean_jaccard']:.3f}, p={t['perm_p']:.4f}); Spearman |effect| "
            f"{res['spearman_abs_effect']:.3f}",
            highlight=False,
        )
        if "in_circuit" in res:
            c = res["in_circuit"]
            console.print(
                f"in-circuit sets ({c['size_a']} / {c['size_b']} heads): {c['intersection']} shared, Jaccard "
                f"{c['jaccard']:.3f} (random {c['perm_mean_jaccard']:.3f}, p={c['perm_p']:.4f})",
                highlight=False,
            )
    C.note(f"wrote {out}")


@app.command("importance")
def importance_cmd(
    out: Path = OUT("importance"),
    model: str = MODEL,
    n: int = typer.Option(8, "--n", help="built-in prose texts"),
    n_texts: Optional[int] = C.alias("--n-texts"),
    max_tokens: int = typer.Option(48, "--max-tokens", help="tokens per text"),
    seed: int = typer.Option(
        0, "--seed", help="prose: the texts start at a seed-dependent paragraph (another seed, other texts)"
    ),
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    device_map: Optional[str] = DEVICE_MAP,
) -> None:
    """Mean-ablation KL per head (batched) beside its Taylor estimate, with their correlation."""
    from ..data import prose
    from ..io import atomic_dir, atomic_write_bytes, atomic_write_json
    from ..measure.importance import head_importance, importance_png
    from ..measure.record import encode_left

    n_name, n = ("--n-texts", n_texts) if n_texts is not None else ("--n", n)
    if n < 1 or max_tokens < 2:
        raise typer.BadParameter(f"need {n_name} >= 1 and --max-tokens >= 2, got {n} and {max_tokens}")
    if seed < 0:
        raise typer.BadParameter(f"--seed={seed} must be >= 0", param_hint="--seed")
    C.check_out_folder(out)
    m, tok = _load(model, threads, device, dtype, device_map)
    enc = encode_left(tok, prose.documents(n, min_chars=max_tokens * 6, seed=seed), max_length=max_tokens)
    res = head_importance(m, enc["input_ids"], enc["attention_mask"], progress=not quiet)
    with atomic_dir(out) as d:
        atomic_write_json(d / "heads.json", {"model": model, "heads": [r | {"roles": []} for r in res.records()]})
        seeded = {"seed": seed} if seed else {}  # recorded when used: earlier runs' summaries stay as they were
        atomic_write_json(d / "summary.json", {"model": model, "n_texts": n, "max_tokens": max_tokens, **seeded, **res.summary()})
        atomic_write_bytes(d / "importance.png", importance_png(res.records(), f"{model}: mean-ablation importance per head"))
    s = res.summary()
    if json_out:
        typer.echo(json.dumps({"summary": s, "files": [str(out / f) for f in ("heads.json", "summary.json", "importance.png")]}))
    else:
        console.print(
            f"Spearman(KL, |Taylor|) = {s['spearman_kl_vs_abs_taylor']:.3f}; Pearson(ΔNLL, Taylor) = "
            f"{s['pearson_delta_nll_vs_taylor']:.3f}",
            highlight=False,
        )
    C.note(f"wrote {out}/heads.json, summary.json, importance.png")


@app.command("attribution")
def attribution_cmd(
    out: Path = OUT("attribution"),
    task: str = typer.Option("sst2", "--task", help="sst2 or squad"),
    n: int = typer.Option(20, "--n", help="prompts: the first N of the task (after --offset)"),
    items: Optional[int] = C.alias("--items"),
    offset: int = typer.Option(0, "--offset", help="skip the first OFFSET prompts of the order (fresh prompts for a rerun)"),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="order: the shuffle `headlab steer --seed SEED` uses (default: the task's stored order)"
    ),
    model: str = MODEL,
    ig_steps: int = typer.Option(8, "--ig-steps", help="integrated gradients: Gauss-Legendre points"),
    top: float = typer.Option(0.2, "--top", help="coverage: top fraction of tokens compared"),
    max_chars: int = typer.Option(600, "--max-chars", help="squad: longest passage, characters"),
    threads: int = THREADS,
    json_out: bool = JSON,
    quiet: bool = QUIET,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    device_map: Optional[str] = DEVICE_MAP,
) -> None:
    """Attention at the final position vs input saliency (gradient x input, integrated gradients, attention x
    gradient): Spearman, Pearson, top-k coverage per head, per layer, averaged and rolled out. See docs/attribution.md."""
    from ..measure.attribution import TASKS, run
    from ..measure.attribution_report import table, write

    n_name, items = ("--items", items) if items is not None else ("--n", n)
    if task not in TASKS:
        raise typer.BadParameter(f"--task={task!r}; valid: {', '.join(TASKS)}", param_hint="--task")
    if items <= 0:
        raise typer.BadParameter(f"{n_name}={items} must be >= 1", param_hint=n_name)
    if offset < 0:
        raise typer.BadParameter(f"--offset={offset} must be >= 0", param_hint="--offset")
    C.check_out_folder(out)
    m, tok = _load(model, threads, device, dtype, device_map)
    try:
        records, summary = run(
            m, tok, task, items, ig_steps=ig_steps, frac=top, max_chars=max_chars, progress=not quiet, offset=offset, seed=seed
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    config = {"model": model, "task": task, "items": items, "ig_steps": ig_steps, "top": top, "max_chars": max_chars}
    picked = ""
    if offset or seed is not None:  # recorded only when used: earlier runs' configs stay as they were
        config.update({"offset": offset, "seed": seed})
        picked = f" --offset {offset}" + (f" --seed {seed}" if seed is not None else "")
    cmd = (  # the registered spelling (--items = --n)
        f"headlab circuits attribution --task {task} --items {items}{picked} --model {model} --ig-steps {ig_steps} "
        f"--top {top} --max-chars {max_chars} --out {out}"
    )
    paths = write(out, config, records, summary, cmd)
    if json_out:
        typer.echo(json.dumps({"summary": summary, "files": [str(p) for p in paths.values()]}, default=str))
    else:
        console.print(table(summary))
        console.print(f"chance coverage {summary['chance_coverage']['value']:.3f}", highlight=False)
    C.note(f"wrote {', '.join(str(p) for p in paths.values())}")
