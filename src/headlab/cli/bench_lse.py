"""``headlab bench lse``: the CPU log-sum-exp backends of the map-free statistics path (``cpu_flash`` vs uncompiled
FlexAttention), alternating repeats, medians and ranges. Registered on the ``bench`` group by ``headlab.cli.bench``;
see :mod:`headlab.bench.lse`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from . import _common as C


def lse_cmd(
    lengths: str = typer.Option("1024,2048", help="comma-separated sequence lengths"),
    repeats: int = typer.Option(5, help="alternating (cpu_flash, flex) rounds after one warm-up of each"),
    threads: int = C.threads_option(),
    out: Path = C.out_option(C.REPORT / "bench-lse", "output folder (lse.json, records, table.md, lse.png)"),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
):
    """Which log-sum-exp backend is faster on CPU: cpu_flash vs FlexAttention (uncompiled), same inputs, alternating."""
    n = C.split_list(lengths, "--lengths", int)
    if not n or min(n) < 2:
        raise typer.BadParameter(f"--lengths must list integers >= 2, got {lengths!r}")
    if repeats < 1:
        raise typer.BadParameter(f"--repeats must be >= 1, got {repeats}")
    C.check_out_folder(out)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        C.note("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    import torch

    from ..bench import lse

    res = lse.run(n, repeats, threads or torch.get_num_threads(), log=C.note)
    cmd = f"headlab bench lse --lengths {','.join(map(str, n))} --repeats {repeats} --threads {threads}"
    lse.write(res, out, cmd)
    typer.echo(json.dumps(res, default=str) if json_out else lse.table(res))
    C.note(f"wrote {out}/lse.json, lse.records.jsonl, table.md, lse.png")
