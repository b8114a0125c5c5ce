"""``headlab merge DIR... --out DIR``: the partial scans of ``headlab scan --shard i/n`` -> one report."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from . import _common as C


def merge(
    parts: list[Path] = typer.Argument(..., help="folders written by `headlab scan --shard i/n --out DIR`, all n of them"),
    out: Path = C.out_option(C.REPORT / "merge", "report folder (as `headlab scan` writes it)"),
    json_out: bool = C.json_option("print {meta, records} as JSON on stdout"),
    quiet: bool = C.quiet_option(),
) -> None:
    """Combine the partial scans of shards 1..n into the report of one scan over all texts (float64 sums
    and counts add up exactly). Refuses partials of different models, metrics, texts or headlab
    versions, and overlapping or missing shards; then nothing is written."""
    from ..measure.scan import finish_scan
    from ..measure.shard import load_part, merge_parts

    C.check_out_folder(out)
    loaded = [load_part(p) for p in parts]
    merged = merge_parts(loaded, [str(p) for p in parts])
    res = finish_scan(merged, out=out)
    files = ["heads.json", "heads.csv", "meta.json", "texts.json", "atlas.png"]
    if json_out:
        typer.echo(json.dumps({"meta": res.meta, "records": res.records, "files": [str(out / f) for f in files]}, default=str))
    else:
        n = len(parts)
        C.note(f"merged {n} partial{'s' * (n != 1)} ({len(merged.texts)} texts) into {out}: {', '.join(files)}")
