"""``headlab bench capture``: a forward with scan's streaming probes attached vs a plain SDPA forward,
interleaved repeats, ratios with medians and ranges. Registered on the ``bench`` group by ``headlab.cli.bench``;
see :mod:`headlab.bench.capture`."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def _lengths(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--lengths must be comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 2:
        raise typer.BadParameter(f"--lengths must list integers >= 2, got {text!r}")
    return vals


def capture_cmd(
    lengths: str = typer.Option("2048,8192", help="comma-separated sequence lengths"),
    repeats: int = typer.Option(5, help="alternating (dense, probes) pairs after one warm-up each"),
    probes: str = typer.Option("scan", help="comma list of probes, or 'scan' = the query probes `headlab scan` attaches"),
    model: str = typer.Option("smollm2-135m", help="model name or local folder (headlab.models.load)"),
    threads: int = typer.Option(2, help="torch threads"),
    out: Path = typer.Option(Path("headlab-report/bench-capture"), help="output folder (capture.json, records, table.md, plot)"),
):
    """What scan's streaming probes cost: forward time with them attached / plain SDPA forward, per length."""
    from rich.console import Console

    from ..probes import query_probe_names

    n = _lengths(lengths)
    if repeats < 1:
        raise typer.BadParameter(f"--repeats must be >= 1, got {repeats}")
    if threads < 1:
        raise typer.BadParameter(f"--threads must be >= 1, got {threads}")
    known = query_probe_names()
    names = known if probes == "scan" else [p.strip() for p in probes.split(",") if p.strip()]
    bad = [p for p in names if p not in known]
    if bad or not names:
        raise typer.BadParameter(
            f"--probes {probes!r}: unknown {bad or names}; valid: 'scan' or a comma list of {', '.join(known)}"
        )
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"--out {str(out)!r} exists and is not a folder")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        typer.echo("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    from ..bench import capture
    from ..models import load

    console = Console(stderr=True)
    with console.status("loading the model") as status:
        m, tok = load(model)
        res = capture.run(m, tok, n, names, repeats, threads=threads, model_name=model, tick=lambda s: status.update(s))
    cmd = f"headlab bench capture --lengths {','.join(map(str, n))} --repeats {repeats} --probes {','.join(names)} --model {model} --threads {threads}"
    capture.write(res, out, cmd)
    typer.echo(capture.table(res))
    typer.echo(f"wrote {out}/capture.json, capture.records.jsonl, table.md, capture.png")
