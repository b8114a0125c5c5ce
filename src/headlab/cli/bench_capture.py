"""``headlab bench capture``: a forward with scan's streaming probes attached vs a plain SDPA forward,
interleaved repeats, ratios with medians and ranges. Registered on the ``bench`` group by ``headlab.cli.bench``;
see :mod:`headlab.bench.capture`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from . import _common as C
from . import _device as _dev


def _lengths(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--lengths must be comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 2:
        raise typer.BadParameter(f"--lengths must list integers >= 2, got {text!r}")
    return vals


def _names(text: str, flag: str) -> list[str]:
    """Per-text probe names from ``default`` (the default scan's), ``scan`` (every per-text probe) or a comma list
    (which may contain ``default``)."""
    from ..probes import default_query_metrics, query_probe_names

    known = query_probe_names()
    names: list[str] = []
    for p in (x.strip() for x in text.split(",")):
        for x in default_query_metrics() if p == "default" else known if p == "scan" else [p] if p else []:
            if x not in names:
                names.append(x)
    bad = [p for p in names if p not in known]
    if bad or not names:
        raise typer.BadParameter(
            f"{flag} {text!r}: unknown {bad or names}; valid: 'default' (the default scan's: "
            f"{', '.join(default_query_metrics())}), 'scan' (all) or a comma list of {', '.join(known)}"
        )
    return names


def capture_cmd(
    lengths: str = typer.Option("2048,8192", help="comma-separated sequence lengths"),
    repeats: int = typer.Option(5, help="alternating (dense, probes) pairs after one warm-up each"),
    metrics: str = typer.Option(
        "default",
        help="per-text metrics to attach: 'default' (those of the default scan), 'scan' (every per-text probe, with "
        "the opt-in entropy and global_sink) or a comma list, e.g. default,entropy",
    ),
    probes: Optional[str] = typer.Option(None, help="the same as --metrics (kept for recorded commands); overrides it"),
    rss: bool = typer.Option(True, "--rss/--no-rss", help="also measure the peak RSS of each mode in fresh processes"),
    model: str = C.model_option(),
    threads: int = C.threads_option(),
    out: Path = C.out_option(C.REPORT / "bench-capture", "output folder (capture.json, records, table.md, plot)"),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
):
    """What scan's streaming probes cost: forward time (and peak RSS) with them attached / plain SDPA forward, per length."""
    from rich.console import Console

    n = _lengths(lengths)
    if repeats < 1:
        raise typer.BadParameter(f"--repeats must be >= 1, got {repeats}")
    placed = [f"{flag} {v}" for flag, v in (("--device", device), ("--dtype", dtype), ("--device-map", device_map)) if v]
    if placed and rss:
        raise typer.BadParameter(f"--rss measures fresh CPU float32 processes: add --no-rss to {' '.join(placed)}")
    names = _names(probes, "--probes") if probes is not None else _names(metrics, "--metrics")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"--out {str(out)!r} exists and is not a folder")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        C.note("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    from ..bench import capture

    console = Console(stderr=True, quiet=quiet)
    with console.status("loading the model") as status:
        m, tok = _dev.load_model(model, device, dtype, device_map)
        res = capture.run(
            m, tok, n, names, repeats, threads=threads or None, model_name=model, tick=lambda s: status.update(s), rss=rss
        )
    which = f"--probes {','.join(names)}" if probes is not None else f"--metrics {metrics}"
    cmd = (
        f"headlab bench capture --lengths {','.join(map(str, n))} --repeats {repeats} {which} --model {model} "
        f"--threads {threads}" + ("" if rss else " --no-rss") + "".join(f" {p}" for p in placed)
    )
    capture.write(res, out, cmd)
    typer.echo(json.dumps(res, default=str) if json_out else capture.table(res))
    C.note(f"wrote {out}/capture.json, capture.records.jsonl, table.md, capture.png")
