"""``headlab bench neighborhood``: neighbourhood attention through the fused block-sparse kernel vs a naive
(unfused) gather implementation, alternating repeats, medians and ranges (Faster Neighborhood Attention, arXiv
2403.04690). Registered on the ``bench`` group by ``headlab.cli.bench``; see :mod:`headlab.bench.neighborhood`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from . import _common as C


def neighborhood_cmd(
    lengths: str = typer.Option("4096,16384", help="comma-separated 1D sequence lengths ('' for none)"),
    kernel: int = typer.Option(63, help="1D kernel size (keys per query)"),
    grids: str = typer.Option("64,128", help="comma-separated side lengths of square 2D grids ('' for none)"),
    kernel2d: int = typer.Option(13, "--kernel2d", help="2D kernel size per axis (kernel2d² keys per query)"),
    heads: int = typer.Option(4, help="attention heads"),
    dim: int = typer.Option(32, help="head dimension"),
    halo: str = typer.Option(
        "", help="BLOCK,HALO: also time HaloNet's blocked attention on the 2D grids (block x block tiles, halo each side)"
    ),
    repeats: int = typer.Option(7, help="alternating (naive, fused) rounds after one warm-up of each"),
    threads: int = C.threads_option(),
    out: Path = C.out_option(C.REPORT / "bench-neighborhood", "output folder (neighborhood.json, records, table.md, .png)"),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
):
    """Is the fused block-sparse neighbourhood attention faster than the naive unfused one (and HaloNet's blocked
    attention, with --halo)? Same inputs, alternating."""
    ls = C.split_list(lengths, "--lengths", int) if lengths.strip() else []
    gs = C.split_list(grids, "--grids", int) if grids.strip() else []
    if not ls and not gs:
        raise typer.BadParameter("give --lengths or --grids (or both)")
    for name, val, lo in (
        ("--kernel", kernel, 1),
        ("--kernel2d", kernel2d, 1),
        ("--heads", heads, 1),
        ("--dim", dim, 1),
        ("--repeats", repeats, 1),
    ):
        if val < lo:
            raise typer.BadParameter(f"{name} must be >= {lo}, got {val}")
    hb = C.split_list(halo, "--halo", int) if halo.strip() else []
    if hb and (len(hb) != 2 or hb[0] < 1 or hb[1] < 0):
        raise typer.BadParameter(f"--halo takes BLOCK,HALO with BLOCK >= 1 and HALO >= 0, got {halo!r}")
    if hb and not gs:
        raise typer.BadParameter("--halo times the 2D grids: give --grids")
    C.check_out_folder(out)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        C.note("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    from ..bench import neighborhood as nb

    try:
        res = nb.run(
            ls, kernel, gs, kernel2d, repeats, threads, heads=heads, dim=dim, halo=(hb[0], hb[1]) if hb else None, log=C.note
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    cmd = (
        f"headlab bench neighborhood --lengths {','.join(map(str, ls))} --kernel {kernel} --grids {','.join(map(str, gs))} "
        f"--kernel2d {kernel2d} --heads {heads} --dim {dim} --repeats {repeats} --threads {threads}"
        + (f" --halo {hb[0]},{hb[1]}" if hb else "")
    )
    nb.write(res, out, cmd)
    typer.echo(json.dumps(res, default=str) if json_out else nb.table(res))
    C.note(f"wrote {out}/neighborhood.json, neighborhood.records.jsonl, table.md, neighborhood.png")
