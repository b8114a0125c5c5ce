"""CLI: ``headlab bench kernels|capture|lse|mechanisms``, the research benchmarks.

Each command is a plain function in its own module; this module builds the ``bench`` group from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from .bench_capture import capture_cmd
from .bench_lse import lse_cmd
from .bench_mechanisms import mechanisms_cmd

app = typer.Typer(help="Benchmarks: kernels, capture overhead, log-sum-exp paths, mechanisms.", no_args_is_help=True)


def kernels_cmd(
    tokens: int = typer.Option(8192, help="sequence length T"),
    heads: int = typer.Option(9),
    kv_heads: int = typer.Option(3),
    dim: int = typer.Option(64),
    repeats: int = typer.Option(3, help="alternating repeats after a warm-up (median and range are reported)"),
    threads: int = typer.Option(0, help="torch threads (0 = torch's default)"),
    flex: bool = typer.Option(True, help="also time compiled FlexAttention (first call compiles, ~15-30 s)"),
    out: Optional[Path] = typer.Option(
        Path("headlab-report/bench-kernels"),
        help="folder for BENCHMARKS.md, kernels.json, records and plot, or a .md file ('' to skip); the registered "
        "result is written by `headlab reproduce bench-kernels`",
    ),
):
    """Block-sparse kernels vs dense causal SDPA: density, theoretical and achieved speedup, backend that ran."""
    for name, val, lo in (
        ("--tokens", tokens, 16),
        ("--repeats", repeats, 1),
        ("--threads", threads, 0),
        ("--heads", heads, 1),
        ("--kv-heads", kv_heads, 1),
        ("--dim", dim, 1),
    ):
        if val < lo:
            raise typer.BadParameter(f"{name} must be >= {lo}, got {val}")
    if heads % kv_heads:
        raise typer.BadParameter(f"--heads {heads} must be a multiple of --kv-heads {kv_heads}")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        typer.echo("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    from ..bench.kernels import run, write

    res = run(T=tokens, H=heads, Hkv=kv_heads, d=dim, repeats=repeats, flex=flex, threads=threads or None)
    if out is not None and str(out) not in ("", "."):  # typer turns "" into Path(".")
        cmd = (
            f"OMP_WAIT_POLICY=PASSIVE headlab bench kernels --tokens {tokens} --heads {heads} --kv-heads {kv_heads} "
            f"--dim {dim} --repeats {repeats} --threads {threads}" + ("" if flex else " --no-flex") + f" --out {out}"
        )
        write(res, out, cmd)
        typer.echo(f"wrote {out}")


app.command("kernels")(kernels_cmd)
app.command("capture")(capture_cmd)
app.command("lse")(lse_cmd)
app.command("mechanisms")(mechanisms_cmd)
