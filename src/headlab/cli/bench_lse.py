"""``headlab bench lse``: the CPU log-sum-exp backends of the map-free statistics path (``cpu_flash`` vs uncompiled
FlexAttention), alternating repeats, medians and ranges. Registered on the ``bench`` group by ``headlab.cli.bench``;
see :mod:`headlab.bench.lse`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from .bench_capture import _lengths


def lse_cmd(
    lengths: str = typer.Option("1024,2048", help="comma-separated sequence lengths"),
    repeats: int = typer.Option(5, help="alternating (cpu_flash, flex) rounds after one warm-up of each"),
    threads: int = typer.Option(2, help="torch threads"),
    out: Path = typer.Option(Path("headlab-report/bench-lse"), help="output folder (lse.json, records, table.md, lse.png)"),
):
    """Which log-sum-exp backend is faster on CPU: cpu_flash vs FlexAttention (uncompiled), same inputs, alternating."""
    n = _lengths(lengths)
    if repeats < 1:
        raise typer.BadParameter(f"--repeats must be >= 1, got {repeats}")
    if threads < 1:
        raise typer.BadParameter(f"--threads must be >= 1, got {threads}")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"--out {str(out)!r} exists and is not a folder")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        typer.echo("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    from ..bench import lse

    res = lse.run(n, repeats, threads, log=typer.echo)
    cmd = f"headlab bench lse --lengths {','.join(map(str, n))} --repeats {repeats} --threads {threads}"
    lse.write(res, out, cmd)
    typer.echo(lse.table(res))
    typer.echo(f"wrote {out}/lse.json, lse.records.jsonl, table.md, lse.png")
