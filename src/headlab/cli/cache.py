"""``headlab cache list|clear``: the converted models headlab keeps (see ``headlab.models.cache_dir``)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from . import _common as C

app = C.typer_app("The model cache: converted embedded models (list, clear).")


@app.command("list")
def list_cmd(
    json_out: bool = C.json_option("print the entries as JSON on stdout"),
    quiet: bool = C.quiet_option(),
) -> None:
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
        C.note('the cache is empty: the first `headlab.load("smollm2-135m")` fills it (~20 s)')


@app.command("clear")
def clear_cmd(
    model: Optional[str] = C.model_option(None, "clear only this built-in model's entries (e.g. smollm2-135m)"),
    json_out: bool = C.json_option("print the removed folders as JSON on stdout"),
    quiet: bool = C.quiet_option(),
) -> None:
    """Remove cached models (made again on the next load)."""
    from ..models import clear_cache

    removed = clear_cache(model)
    if json_out:
        typer.echo(json.dumps({"removed": removed}))
        return
    C.note(f"removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}")
