"""Command line: ``headlab scan | report | steer | sparsify | bench | lab``."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..version import __version__
from . import _device as _dev

app = typer.Typer(help="headlab: see, steer and sparsify the attention heads of Hugging Face transformers.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"headlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print headlab's version and exit")) -> None:
    """headlab: see, steer and sparsify the attention heads of Hugging Face transformers.

    Errors go to stderr with exit code 2; scan, steer and sparsify eval print JSON with --json."""


def _summary(res, all_heads: bool) -> None:
    metrics = res.meta["metrics"]
    out = Console()
    if all_heads:
        t = Table(title="heads")
        for c in ["layer", "head", *metrics, "roles"]:
            t.add_column(c, justify="right" if c != "roles" else "left")
        for r in res.records:
            t.add_row(str(r["layer"]), str(r["head"]), *("-" if r[m] is None else f"{r[m]:.3f}" for m in metrics), " ".join(r["roles"]))
        out.print(t)
    t = Table(title=f"per-layer mean over heads ({res.meta['model']})")
    t.add_column("layer", justify="right")
    for m in metrics:
        t.add_column(m, justify="right")
    L = res.meta["n_layers"]
    for layer in range(L):
        row = [str(layer)]
        for m in metrics:
            vals = [r[m] for r in res.records if r["layer"] == layer and r[m] is not None]
            row.append(f"{sum(vals) / len(vals):.3f}" if vals else "-")
        t.add_row(*row)
    out.print(t)
    t = Table(title="roles (thresholds in README)")
    t.add_column("role")
    t.add_column("count", justify="right")
    t.add_column("heads (layer, head), strongest first")
    from ..engine.sites import format_site
    from ..measure.atlas import role_metrics

    for role, (m, higher) in role_metrics().items():
        hs = [r for r in res.records if role in r["roles"]]
        hs.sort(key=lambda r: (r.get(m) or 0) * (-1 if higher else 1))
        t.add_row(role, str(len(hs)), " ".join(format_site(r["layer"], r["head"]) for r in hs[:12]) + (" …" if len(hs) > 12 else ""))
    out.print(t)


@app.command()
def scan(
    model: str = typer.Option("smollm2-135m", help="smollm2-135m, minilm, or a local Hugging Face folder"),
    texts: Optional[Path] = typer.Option(None, help="UTF-8 file, texts separated by blank lines, or a .jsonl / .csv file "
                                         "with one text per row (see --text-field); default: built-in prose"),
    n_texts: int = typer.Option(8, help="number of built-in texts when --texts is not given"),
    max_tokens: int = typer.Option(512, help="tokens kept per text"),
    metrics: str = typer.Option("all", help="comma list of sink,sink_rate,entropy,prev_token,distance,induction,retrieval, or all"),
    out: Path = typer.Option(Path("headlab-report"), help="output folder"),
    html: bool = typer.Option(False, "--html", help="also write the interactive DIR/index.html"),
    all_heads: bool = typer.Option(False, "--all-heads", help="print one row per head"),
    text_field: str = typer.Option("text", help="--texts .jsonl / .csv: the field holding each text"),
    json_out: bool = typer.Option(False, "--json", help="print {meta, records} as JSON on stdout instead of the tables"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display and no closing message"),
    threads: int = typer.Option(0, help="torch threads (0 = torch default)"),
    edits: Optional[Path] = typer.Option(None, help="edit configuration JSON (as `headlab steer --save` writes): scan with "
                                         "the edits, and without them into DIR/baseline.json for comparison"),
    prefix: Optional[str] = typer.Option(None, help="special token put before every text, e.g. '<|endoftext|>' "
                                         "(SmolLM2 adds no BOS: by default the first word is the initial token)"),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
) -> None:
    """Per-head statistics of every attention head; writes heads.json, heads.csv, meta.json, atlas.png."""
    import torch

    from ..data import prose
    from ..measure.scan import parse_metrics, read_texts, run_scan

    try:
        if threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = torch default), got {threads}")
        if threads:
            torch.set_num_threads(threads)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        mlist = parse_metrics(metrics)
        if n_texts < 1:
            raise ValueError(f"--n-texts must be >= 1, got {n_texts}")
        text_list = read_texts(texts, text_field) if texts else prose.documents(n_texts, min_chars=max_tokens * 6)
        edit_list = []
        if edits is not None:
            from ..edits import from_config

            edit_list = from_config(edits)
        with contextlib.nullcontext() if quiet else console.status(f"loading {model}"):
            m, tok = _dev.load_model(model, device, dtype, device_map)
        if not (hasattr(m, "lm_head")) and "retrieval" in mlist and metrics == "all":
            mlist.remove("retrieval")
            console.print("[yellow]retrieval skipped: it needs a generative model[/]")
        from ..probes import query_probe_names

        n_steps = len(text_list) * bool(set(mlist) & set(query_probe_names()))
        n_steps += "induction" in mlist
        n_steps += 18 * ("retrieval" in mlist)
        n_steps *= 2 if edit_list else 1
        with Progress(TextColumn("[bold]scan[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), TextColumn("{task.description}"), console=console, disable=quiet) as progress:
            task = progress.add_task("", total=n_steps)
            res = run_scan(m, tok, model, text_list, mlist, max_tokens=max_tokens, out=out, prefix=prefix, edits=edit_list,
                           head_maps=0,
                           tick=lambda msg: progress.update(task, advance=1, description=msg))
        if html:
            from ..report.html import write_html_report

            write_html_report(out, model=m, tokenizer=tok, texts=text_list[:1], edits=edit_list)
    except (ValueError, RuntimeError, OSError) as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    files = ["heads.json", "heads.csv", "meta.json", "atlas.png"] + (["index.html"] if html else [])
    if json_out:
        typer.echo(json.dumps({"meta": res.meta, "records": res.records, "files": [str(out / f) for f in files]}, default=str))
        return
    _summary(res, all_heads)
    if not quiet:
        console.print(f"wrote {', '.join(str(out / f) for f in files)} in {res.meta['seconds']} s")


def _register_groups() -> None:
    """Sub-command groups live in their own files."""
    from . import lab as cli_lab
    from . import sparsify as cli_sparsify
    from . import steer as cli_steer
    from .report import report

    app.command("report")(report)
    app.add_typer(cli_steer.app, name="steer")
    app.add_typer(cli_sparsify.app, name="sparsify")
    app.add_typer(cli_sparsify.bench_app, name="bench")
    app.add_typer(cli_lab.app, name="lab")
    from . import circuits as cli_circuits

    app.add_typer(cli_circuits.app, name="circuits")
    from .reproduce import reproduce

    app.command("reproduce")(reproduce)


_register_groups()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(prog_name="headlab")
    except (ValueError, OSError) as exc:  # bad input that no command turned into a message: stderr, exit 2
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
