"""``headlab cache list|clear``: the converted models headlab keeps (see ``headlab.models.cache_dir``)."""

from __future__ import annotations

import json
from typing import Optional

import typer

app = typer.Typer(help="The model cache: converted embedded models (list, clear).", no_args_is_help=True)


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="print the entries as JSON on stdout")) -> None:
    """Every cached model: folder, size and origin (wheel, file hash, quantisation)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..models import cache_dir, cache_entries

    entries = cache_entries()
    if json_out:
        typer.echo(json.dumps({"cache_dir": str(cache_dir()), "entries": entries}))
        return
    t = Table(title=f"model cache: {escape(str(cache_dir()))}")
    for col in ("model", "folder", "MB", "origin"):
        t.add_column(col, overflow="fold")
    for e in entries:
        m = e["meta"]
        origin = ", ".join(str(m[k]) for k in ("source", "quantization", "stored_as") if k in m)
        t.add_row(escape(str(m.get("model", "?"))), escape(e["path"]), f"{e['bytes'] / 1e6:.0f}", escape(origin))
    Console().print(t)
    if not entries:
        Console(stderr=True).print('the cache is empty: the first `headlab.load("smollm2-135m")` fills it (~20 s)')


@app.command("clear")
def clear_cmd(
    model: Optional[str] = typer.Option(None, "--model", help="clear only this model's entries (e.g. smollm2-135m)"),
    json_out: bool = typer.Option(False, "--json", help="print the removed folders as JSON on stdout"),
) -> None:
    """Remove cached models (made again on the next load)."""
    from rich.console import Console
    from rich.markup import escape

    from ..models import clear_cache

    try:
        removed = clear_cache(model)
    except ValueError as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps({"removed": removed}))
        return
    Console(stderr=True).print(f"removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}")
