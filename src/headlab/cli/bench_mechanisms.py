"""``headlab bench mechanisms``: CAB-style side-by-side benchmark of every mechanism and kernel (speed, peak memory,
efficiency length under the four CAB patterns; quality on MQAR, selective copying and prose at one budget).
Registered on the ``bench`` group by ``headlab.cli.bench``; see :mod:`headlab.bench.mechanisms`."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from . import _common as C

FULL_LENGTHS = [256 * 2**i for i in range(7)]  # 256 … 16384
QUICK_LENGTHS = [256, 512, 1024, 2048]


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 8:
        raise typer.BadParameter(f"{what} must list integers >= 8, got {text!r}")
    return sorted(set(vals))


def mechanisms_cmd(
    quick: bool = typer.Option(False, "--quick", help="CI size: lengths 256..2048, 2 repeats, tiny training budgets"),
    out: Path = typer.Option(Path("headlab-report/bench-mechanisms"), "--out", help="output folder (tables, plots, json)"),
    seed: int = typer.Option(0, "--seed", help="seed of the training runs and inputs"),
    lengths: Optional[str] = typer.Option(None, help="comma-separated lengths (default 256..16384; --quick 256..2048)"),
    repeats: Optional[int] = typer.Option(None, help="timed calls per point (default 3; --quick 2)"),
    time_cap: Optional[float] = typer.Option(None, help="stop an entry's lengths after a call slower than this (s)"),
    mem_cap: float = typer.Option(4.0, help="stop an entry's lengths when 4x its last peak would pass this (GiB)"),
    mechanisms: Optional[str] = typer.Option(
        None, help="comma-separated registry names for the module rows and the quality runs (default: all registered)"
    ),
    steps: Optional[int] = typer.Option(None, help="training steps per (mechanism, task) (default 300; --quick 25)"),
    quality: bool = typer.Option(True, help="train and score the mechanisms (--no-quality: speed and memory only)"),
    threads: int = C.threads_option(),
    json_out: bool = C.json_option("print the efficiency and quality rows as JSON on stdout instead of the tables"),
    quiet: bool = C.quiet_option(),
):
    """Speed, peak memory and efficiency length against dense SDPA under CAB's four patterns, and quality at one
    training budget (MQAR, selective copying, prose perplexity), for every mechanism and kernel."""
    import dataclasses

    import torch
    from rich.progress import Progress

    from ..bench import mechanism_quality as mq
    from ..bench import mechanism_report as report
    from ..bench import mechanisms as mb
    from ..modules import MECHANISMS

    for name, val in (("--repeats", repeats), ("--steps", steps)):
        if val is not None and val < 1:
            raise typer.BadParameter(f"{name} must be >= 1, got {val}")
    if mem_cap <= 0:
        raise typer.BadParameter(f"--mem-cap must be > 0 GiB, got {mem_cap}")
    C.check_out_folder(out)
    names = None
    if mechanisms:
        names = [n.strip() for n in mechanisms.split(",") if n.strip()]
        bad = [n for n in names if n not in MECHANISMS]
        if bad:
            raise typer.BadParameter(f"unknown mechanism(s) {bad}; valid: {', '.join(MECHANISMS.names())}")
    lens = _ints(lengths, "--lengths") if lengths else (QUICK_LENGTHS if quick else FULL_LENGTHS)
    reps = repeats or (2 if quick else 3)
    cap = time_cap if time_cap is not None else (0.5 if quick else 2.0)
    budget = mq.QUICK if quick else mq.Budget()
    if steps:
        budget = dataclasses.replace(budget, steps=steps)
    C.set_threads(threads)
    threads = torch.get_num_threads()  # recorded: the count that ran (0 = torch's default)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        C.note("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")

    ents = mb.entries(names)
    n_speed = sum(len(mb.PATTERNS) * (1 if not e.make else len(lens)) for e in ents)
    quality_names = names or MECHANISMS.names()
    n_quality = len(quality_names) * len(mq.TASKS) if quality else 0
    with Progress(transient=True) as prog:
        task = prog.add_task("bench mechanisms", total=n_speed + n_quality)

        def advance(what: str) -> None:
            prog.update(task, advance=1, description=what[:60])

        torch.manual_seed(seed)
        points, stops = mb.measure(ents, lens, reps, cap, mem_cap, advance)
        effs = mb.efficiency(points, ents)
        rows = []
        if quality:
            from ..lab import TextData, tiny_lm

            text = TextData.load()

            def make_model(mech: str, vocab: int, max_len: int, s: int):
                return tiny_lm(mech, layers=2, d_model=64, heads=4, vocab=vocab, max_len=max_len, seed=s)

            rows = mq.run_quality(quality_names, make_model, (text.train, text.val), budget, seed, advance)
        prog.update(task, completed=n_speed + n_quality)

    import headlab

    cmd = (
        "OMP_WAIT_POLICY=PASSIVE headlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if sys.argv[1:2] == ["bench"]
        else f"OMP_WAIT_POLICY=PASSIVE headlab bench mechanisms{' --quick' if quick else ''} --out {out}"
    )
    meta = {
        "command": cmd,
        "seed": seed,
        "quick": quick,
        "repeats": reps,
        "time_cap_s": cap,
        "mem_cap_gib": mem_cap,
        "threads": threads,
        "torch": torch.__version__,
        "headlab": headlab.__version__,
        "machine": f"{platform.machine()} {platform.system()} {os.cpu_count()} CPUs",
        "budget": dataclasses.asdict(budget) | {"model": "tiny_lm layers=2 d_model=64 heads=4"},
    }
    try:
        report.write(out, meta, ents, lens, points, stops, effs, rows)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    if json_out:
        typer.echo(json.dumps({"efficiency": effs, "quality": rows, "out": str(out)}, default=str))
    else:
        _print(points, effs, rows)
    C.note(
        f"wrote {out}/speed.md, memory.md, efficiency.md"
        + (", quality.md" if rows else "")
        + " (+ .png each) and mechanisms.json"
    )


def _print(points, effs, rows) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="efficiency length against dense SDPA (tokens)")
    for c in ("entry", "level", "pattern", "measured", "fitted", "note"):
        t.add_column(c)
    for r in effs:
        t.add_row(
            r["entry"],
            r["level"],
            r["pattern"],
            str(r["measured"] or "—"),
            f"{r['fitted']:.0f}" if r["fitted"] is not None else "—",
            r["note"],
        )
    console.print(t)
    if rows:
        q = Table(title="quality at one budget")
        for c in ("task", "mechanism", "accuracy", "loss", "perplexity"):
            q.add_column(c)
        for r in rows:
            q.add_row(
                r["task"],
                r["mechanism"],
                f"{r['accuracy']:.3f}",
                f"{r['loss']:.3f}",
                f"{r['perplexity']:.2f}" if "perplexity" in r else "",
            )
        console.print(q)
