"""``headlab merge DIR... --out DIR``: the partial scans of ``headlab scan --shard i/n`` -> one report."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def merge(
    parts: list[Path] = typer.Argument(..., help="folders written by `headlab scan --shard i/n --out DIR`, all n of them"),
    out: Path = typer.Option(Path("headlab-report"), help="report folder (as `headlab scan` writes it)"),
    json_out: bool = typer.Option(False, "--json", help="print {meta, records} as JSON on stdout"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no closing message"),
) -> None:
    """Combine the partial scans of shards 1..n into the report of one scan over all texts (float64 sums
    and counts add up exactly). Refuses partials of different models, metrics, texts or headlab
    versions, and overlapping or missing shards; then nothing is written."""
    from ..measure.scan import finish_scan
    from ..measure.shard import load_part, merge_parts

    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        loaded = [load_part(p) for p in parts]
        merged = merge_parts(loaded, [str(p) for p in parts])
        res = finish_scan(merged, out=out)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    files = ["heads.json", "heads.csv", "meta.json", "texts.json", "atlas.png"]
    if json_out:
        typer.echo(json.dumps({"meta": res.meta, "records": res.records, "files": [str(out / f) for f in files]}, default=str))
    elif not quiet:
        n = len(parts)
        console.print(f"merged {n} partial{'s' * (n != 1)} ({len(merged.texts)} texts) into {out}: {', '.join(files)}")
