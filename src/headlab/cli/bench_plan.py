"""``headlab bench plan``: a per-head plan's prefill against dense and against its ideal (dense time x the kept
share of attention time + non-attention time, from the same dense forward). Registered on the ``bench`` group
by ``headlab.cli.bench``; see :mod:`headlab.bench.plan_speed`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from . import _common as C
from . import _device as _dev


def _print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..bench.plan_speed import rows, summary_lines

    t = Table(title=Text(f"plan prefill at {res['config']['length']} tokens (median [min–max] over rounds)"))
    for col in ("", "dense", "ideal plan", "measured plan"):
        t.add_column(col, justify="left" if not col else "right")
    for row in rows(res):
        t.add_row(*(Text(x) for x in row))
    console = Console()  # stdout: the results
    console.print(t)
    for line in summary_lines(res):
        console.print(line, highlight=False, markup=False)


def plan_cmd(
    plan: Path = typer.Option(..., "--plan", help="a per-head plan JSON (headlab sparsify plan) or a shipped plan's name"),
    length: int = typer.Option(8192, "--length", help="prompt length T in tokens (1..the model's context)"),
    repeats: int = typer.Option(5, "--repeats", "--rounds", help="alternating (dense, plan) rounds after one warm-up each"),
    model: str = C.model_option(),
    threads: int = C.threads_option(),
    out: Path = C.out_option(C.REPORT / "bench-plan", "output folder (plan.json, plan.records.jsonl, table.md, plan.png)"),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
):
    """A per-head plan's prefill time vs dense and vs its ideal: dense non-attention time + the plan's kept share
    x dense attention time, both from the same dense forward; efficiency = ideal / measured plan time."""
    from rich.console import Console

    if length < 1:
        raise typer.BadParameter(f"--length must be >= 1 (and within the model's context), got {length}")
    if repeats < 1:
        raise typer.BadParameter(f"--repeats must be >= 1, got {repeats}")
    C.check_out_folder(out)
    from ..bench import plan_speed
    from ..patterns import load_plan

    p = load_plan(plan)  # a missing or invalid file fails here, before the model loads
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        C.note("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    console = Console(stderr=True, quiet=quiet)
    with console.status("loading the model") as status:
        m, tok = _dev.load_model(model, device, dtype, device_map)
        plan_speed.check_length(m, length)
        p.check_model(m)
        res = plan_speed.run(
            m,
            tok,
            p,
            length=length,
            repeats=repeats,
            threads=threads or None,
            model_name=model,
            plan_path=str(plan),
            tick=lambda s: status.update(s),
        )
    placed = "".join(f" {f} {v}" for f, v in (("--device", device), ("--dtype", dtype), ("--device-map", device_map)) if v)
    cmd = f"headlab bench plan --plan {plan} --length {length} --repeats {repeats} --model {model} --threads {threads}" + placed
    plan_speed.write(res, out, cmd)
    if json_out:
        typer.echo(json.dumps(res, default=str))
    else:
        _print_table(res)
    C.note(f"wrote {out}/plan.json, plan.records.jsonl, table.md, plan.png")
