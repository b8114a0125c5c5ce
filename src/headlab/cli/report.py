"""``headlab report DIR``: (re)write the interactive ``DIR/index.html`` of a scan folder.

Registered by ``headlab.cli`` as ``app.command("report")(report)``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from . import _common as C
from . import _device as _dev

console = Console(stderr=True)


def report(
    dir: Path = typer.Argument(C.REPORT / "scan", help="scan folder (with heads.json and meta.json)"),
    model: Optional[str] = C.model_option(None, C.MODEL_HELP + " for the head maps (default: the one named in meta.json)"),
    no_maps: bool = typer.Option(False, "--no-maps", help="atlas, comparison and provenance only; do not load a model"),
    maps: str = typer.Option("auto", help="heads with detailed maps: auto, none, or sites like L3H2,L5"),
    texts: Optional[Path] = typer.Option(
        None, help="UTF-8 file of texts separated by blank lines (default: DIR/texts.json); cut to the scan's token counts"
    ),
    map_texts: int = typer.Option(1, help="how many texts get maps (one forward pass each)"),
    max_map_px: int = typer.Option(256, help="cells per side of a detailed map (exact below this many tokens)"),
    topk: int = typer.Option(8, help="top attended keys kept per query for detailed heads"),
    max_mb: float = typer.Option(9.5, help="size budget of the whole page in MB"),
    threads: int = C.threads_option(),
    quiet: bool = C.quiet_option(),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
) -> None:
    """Write DIR/index.html: head atlas, one head up close, before/after comparison, provenance."""
    from ..measure.maps import write_html_report
    from ..report.data import load_scan

    C.set_threads(threads)
    scan = load_scan(dir)
    kw = dict(map_sites=maps, max_map_px=max_map_px, topk=topk, map_texts=map_texts, max_bytes=int(max_mb * 1e6))
    text_list = None
    if texts is not None:
        from ..measure.scan import read_texts

        text_list = read_texts(texts)
    if no_maps or maps == "none":
        out = write_html_report(dir, **kw)
    elif text_list is None and not scan.texts:
        C.note(f"no maps: {dir / 'texts.json'} is missing and --texts was not given; writing the page without attention maps")
        out = write_html_report(dir, **kw)
    else:
        name = model or scan.meta.get("model")
        if not name:
            raise ValueError("meta.json names no model: pass --model")
        with console.status(f"loading {name}") if not quiet else contextlib.nullcontext():
            m, tok = _dev.load_model(name, device, dtype, device_map)
        with (
            console.status(f"computing head maps ({map_texts} text(s), streaming, chunked eager path)")
            if not quiet
            else contextlib.nullcontext()
        ):
            out = write_html_report(dir, model=m, tokenizer=tok, texts=text_list, **kw)
    C.note(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
