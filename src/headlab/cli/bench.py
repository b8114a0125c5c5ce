"""CLI: ``headlab bench kernels|capture|lse|mechanisms|...|plan``, the research benchmarks.

Each command is a plain function in its own module; this module builds the ``bench`` group from them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from . import _common as C
from .bench_capture import capture_cmd
from .bench_kv import kv_cmd
from .bench_lse import lse_cmd
from .bench_mechanisms import mechanisms_cmd
from .bench_neighborhood import neighborhood_cmd
from .bench_peers import peers_cmd
from .bench_plan import plan_cmd

app = C.typer_app("Benchmarks: kernels, capture overhead, log-sum-exp paths, mechanisms.")


def kernels_cmd(
    length: int = typer.Option(8192, "--length", help="sequence length T"),
    tokens: Optional[int] = C.alias("--tokens"),
    heads: int = typer.Option(9),
    kv_heads: int = typer.Option(3),
    dim: int = typer.Option(64),
    repeats: int = typer.Option(3, help="alternating repeats after a warm-up (median and range are reported)"),
    threads: int = C.threads_option(),
    flex: bool = typer.Option(True, help="also time compiled FlexAttention (first call compiles, ~15-30 s)"),
    out: Optional[Path] = typer.Option(
        Path("headlab-report/bench-kernels"),
        help="folder for BENCHMARKS.md, kernels.json, records and plot, or a .md file ('' to skip); the registered "
        "result is written by `headlab reproduce bench-kernels`",
    ),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
):
    """Block-sparse kernels vs dense causal SDPA: density, theoretical and achieved speedup, backend that ran."""
    length_name, tokens = ("--tokens", tokens) if tokens is not None else ("--length", length)
    for name, val, lo in (
        (length_name, tokens, 16),
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
        C.note("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    from ..bench.kernels import run, write

    res = run(T=tokens, H=heads, Hkv=kv_heads, d=dim, repeats=repeats, flex=flex, threads=threads or None, log=C.note)
    if json_out:
        typer.echo(json.dumps(res, default=str))
    if out is not None and str(out) not in ("", "."):  # typer turns "" into Path(".")
        cmd = (  # the registered spelling (--tokens = --length)
            f"OMP_WAIT_POLICY=PASSIVE headlab bench kernels --tokens {tokens} --heads {heads} --kv-heads {kv_heads} "
            f"--dim {dim} --repeats {repeats} --threads {threads}" + ("" if flex else " --no-flex") + f" --out {out}"
        )
        write(res, out, cmd)
        C.note(f"wrote {out}")


app.command("kernels")(kernels_cmd)
app.command("capture")(capture_cmd)
app.command("lse")(lse_cmd)
app.command("mechanisms")(mechanisms_cmd)
app.command("neighborhood")(neighborhood_cmd)
app.command("peers")(peers_cmd)
app.command("kv")(kv_cmd)
app.command("plan")(plan_cmd)
