"""Command line: ``headlab COMMAND``, in help groups: Analyse (scan, report, contrast, circuits, merge), Intervene
(steer, sparsify), Research (lab, bench, and the harness's reproduce), Setup (doctor, cache).

The shared vocabulary, the error path and the output discipline live in :mod:`headlab.cli._common`."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..version import __version__
from . import _common as C
from . import _device as _dev

app = C.typer_app("headlab: see, steer and sparsify the attention heads of Hugging Face transformers.")
console = Console(stderr=True)

ANALYSE, INTERVENE, RESEARCH, SETUP = "Analyse", "Intervene", "Research", "Setup"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"headlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print headlab's version and exit"),
) -> None:
    """headlab: see, steer and sparsify the attention heads of Hugging Face transformers.

    Results go to stdout (JSON with --json); progress and notes go to stderr (none with --quiet); a failure is
    one `error:` line on stderr with exit code 2 (HEADLAB_DEBUG=1 shows the traceback). Every output goes to
    --out, by default under headlab-report/."""


def _summary(res, all_heads: bool) -> None:
    metrics = res.meta["metrics"]
    out = Console()
    if all_heads:
        t = Table(title="heads")
        for c in ["layer", "head", *metrics, "roles"]:
            t.add_column(c, justify="right" if c != "roles" else "left")
        for r in res.records:
            t.add_row(
                str(r["layer"]), str(r["head"]), *("-" if r[m] is None else f"{r[m]:.3f}" for m in metrics), " ".join(r["roles"])
            )
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
    from ..probes.roles import role_metrics

    for role, (m, higher) in role_metrics().items():
        hs = [r for r in res.records if role in r["roles"]]
        hs.sort(key=lambda r: (r.get(m) or 0) * (-1 if higher else 1))
        t.add_row(
            role, str(len(hs)), " ".join(format_site(r["layer"], r["head"]) for r in hs[:12]) + (" …" if len(hs) > 12 else "")
        )
    out.print(t)


@app.command(rich_help_panel=ANALYSE)
def scan(
    model: str = C.model_option(),
    texts: Optional[Path] = typer.Option(
        None,
        help="UTF-8 file, texts separated by blank lines, or a .jsonl / .csv file "
        "with one text per row (see --text-field); default: built-in prose",
    ),
    n: int = typer.Option(8, "--n", help="number of built-in texts when --texts is not given"),
    n_texts: Optional[int] = C.alias("--n-texts"),
    max_tokens: int = typer.Option(512, help="tokens kept per text"),
    metrics: str = typer.Option(
        "default",
        help="comma list of sink,sink_rate,entropy,prev_token,distance,induction,retrieval,waad,fai,magnet,global_sink; "
        "'default' = every metric with a map-free form next to SDPA (all but the opt-in entropy and global_sink, "
        "which cost an extra attention-sized pass); 'all'; mixes such as default,entropy (docs/probes.md)",
    ),
    out: Path = C.out_option(C.REPORT / "scan", "output folder"),
    html: bool = typer.Option(False, "--html", help="also write the interactive DIR/index.html"),
    all_heads: bool = typer.Option(False, "--all-heads", help="print one row per head"),
    text_field: str = typer.Option("text", help="--texts .jsonl / .csv: the field holding each text"),
    json_out: bool = C.json_option("print {meta, records} as JSON on stdout instead of the tables"),
    quiet: bool = C.quiet_option(),
    threads: int = C.threads_option(),
    batch_size: int = typer.Option(1, "--batch-size", help="texts per forward pass (right padding, masked: same statistics)"),
    shard: Optional[str] = typer.Option(
        None,
        "--shard",
        help="i/n: scan shard i of n (1..n) of the texts and write only "
        "the partial state DIR/partial.json; combine all n with `headlab merge`",
    ),
    ray: bool = typer.Option(
        False,
        "--ray",
        help="fan the texts out over a Ray cluster (pip install 'headlab[ray]'); "
        "a local Ray is started when no --ray-address is given",
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="HOST:PORT, ray://HOST:PORT or auto: the Ray cluster to use (implies --ray)"
    ),
    ray_cpus: Optional[int] = typer.Option(None, "--ray-cpus", help="CPUs of the local Ray (default: all); one task per CPU"),
    edits: Optional[Path] = typer.Option(
        None,
        help="edits JSON (as `headlab steer METHOD --out` writes): scan with "
        "the edits, and without them into DIR/baseline.json for comparison",
    ),
    prefix: Optional[str] = typer.Option(
        None,
        help="special token put before every text, e.g. '<|endoftext|>' "
        "(SmolLM2 adds no BOS: by default the first word is the initial token)",
    ),
    group: Optional[list[str]] = typer.Option(
        None,
        "--group",
        help="NAME=SPEC token group (repeatable) adding share:NAME, aei:NAME and mdi:FIRST/NAME: "
        "SPEC is positions like 0-15,40- (0 = first token), last:N, text:STRING (tokens overlapping it) or rest; "
        "see docs/probes.md",
    ),
    group_queries: Optional[str] = typer.Option(
        None, "--group-queries", help="SPEC of the query rows the --group metrics count (default: every query), e.g. last:8"
    ),
    importance: bool = typer.Option(
        False,
        "--importance",
        help="add per-head columns importance_kl (KL of the next-token distribution when the head is mean-ablated) "
        "and importance_taylor (its gradient estimate), one forward pass of all texts per head (docs/circuits.md)",
    ),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
) -> None:
    """Per-head statistics of every attention head; writes heads.json, heads.csv, meta.json, atlas.png."""
    from ..data import prose
    from ..measure.scan import parse_metrics, read_texts, run_scan, scan_part
    from ..measure.shard import parse_shard, save_part

    shard_t = parse_shard(shard)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    use_ray = ray or ray_address is not None
    if use_ray and shard_t is not None:
        raise ValueError(f"--shard {shard} and --ray split the texts two ways: give one of them")
    if importance and (use_ray or shard_t is not None or edits is not None):
        raise ValueError("--importance needs every text in one process on the unedited model: not with --shard, --ray or --edits")
    C.set_threads(threads)
    C.check_out_folder(out)
    n_name, n = ("--n-texts", n_texts) if n_texts is not None else ("--n", n)
    mlist = parse_metrics(metrics)
    from ..measure.dilution import parse_group, parse_groups

    parse_groups(group or [])  # bad specs fail here, naming the value
    if group_queries is not None:
        parse_group(f"queries={group_queries}")
    if n < 1:
        raise ValueError(f"{n_name} must be >= 1, got {n}")
    if max_tokens < 2:
        raise ValueError(f"--max-tokens must be >= 2, got {max_tokens}")
    text_list = read_texts(texts, text_field) if texts else prose.documents(n, min_chars=max_tokens * 6)
    if shard_t is not None and shard_t[1] > len(text_list):
        raise ValueError(f"--shard {shard}: {shard_t[1]} shards for {len(text_list)} texts; use at most {len(text_list)}")
    edit_list = []
    if edits is not None:
        from ..edits import from_config

        edit_list = from_config(edits)
    if use_ray:
        from ..measure.distributed import ray_scan
        from ..measure.scan import finish_scan

        with contextlib.nullcontext() if quiet else console.status(f"scanning on Ray ({ray_address or 'local'})"):
            loader = functools.partial(_dev.load_model, device=device, dtype=dtype, device_map=device_map)
            part = ray_scan(
                loader,
                model,
                text_list,
                mlist,
                address=ray_address,
                num_cpus=ray_cpus,
                max_tokens=max_tokens,
                prefix=prefix,
                edits=edit_list,
                batch_size=batch_size,
                drop_retrieval=metrics in ("all", "default"),
                groups=group,
                group_queries=group_queries,
            )
        res = finish_scan(part, out=out)
        if html:
            C.note("--html is not written with --ray (no model in this process)")
        html = False
        _scan_done(res, out, html, json_out, all_heads, quiet)
        return
    with contextlib.nullcontext() if quiet else console.status(f"loading {model}"):
        m, tok = _dev.load_model(model, device, dtype, device_map)
    if not (hasattr(m, "lm_head")) and "retrieval" in mlist and metrics in ("all", "default"):
        mlist.remove("retrieval")
        C.note("retrieval skipped: it needs a generative model")
    from ..probes import query_probe_names

    n_mine = (
        len(text_list)
        if shard_t is None
        else len(range((shard_t[0] - 1) * len(text_list) // shard_t[1], shard_t[0] * len(text_list) // shard_t[1]))
    )
    n_steps = n_mine * bool(set(mlist) & set(query_probe_names()))
    n_steps += n_mine * bool(group)  # one pass per text for the token groups
    n_steps += "induction" in mlist
    n_steps += importance
    n_steps += 18 * ("retrieval" in mlist)
    n_steps *= 2 if edit_list else 1
    with Progress(
        TextColumn("[bold]scan[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=quiet,
    ) as progress:
        task = progress.add_task("", total=n_steps)
        if shard_t is not None:
            part = scan_part(
                m,
                tok,
                model,
                text_list,
                mlist,
                max_tokens=max_tokens,
                prefix=prefix,
                edits=edit_list,
                batch_size=batch_size,
                shard=shard_t,
                groups=group,
                group_queries=group_queries,
                tick=lambda msg: progress.update(task, advance=1, description=msg),
            )
            save_part(out, part)
        else:
            res = run_scan(
                m,
                tok,
                model,
                text_list,
                mlist,
                max_tokens=max_tokens,
                out=out,
                prefix=prefix,
                edits=edit_list,
                head_maps=0,
                batch_size=batch_size,
                groups=group,
                group_queries=group_queries,
                importance=importance,
                tick=lambda msg: progress.update(task, advance=1, description=msg),
            )
    if shard_t is not None:
        if html:
            C.note("--html is not written for one shard: a shard writes only its partial state")
        if json_out:
            typer.echo(json.dumps({"meta": part.meta, "files": [str(out / "partial.json")]}, default=str))
        else:
            C.note(
                f"wrote shard {shard_t[0]}/{shard_t[1]} ({len(part.texts)} texts) to {out / 'partial.json'}; "
                f"combine all {shard_t[1]} with `headlab merge DIR... --out DIR`"
            )
        return
    if html:
        from ..measure.maps import write_html_report

        write_html_report(out, model=m, tokenizer=tok, texts=text_list[:1], edits=edit_list)
    _scan_done(res, out, html, json_out, all_heads, quiet)


def _scan_done(res, out: Path, html: bool, json_out: bool, all_heads: bool, quiet: bool) -> None:
    files = ["heads.json", "heads.csv", "meta.json", "atlas.png"] + (["index.html"] if html else [])
    if json_out:
        typer.echo(json.dumps({"meta": res.meta, "records": res.records, "files": [str(out / f) for f in files]}, default=str))
        return
    _summary(res, all_heads)
    imp = res.meta.get("importance")
    if imp:
        typer.echo(
            f"importance: Spearman(KL, |Taylor|) = {imp['spearman_kl_vs_abs_taylor']:.3f}, "
            f"Pearson(ΔNLL, Taylor) = {imp['pearson_delta_nll_vs_taylor']:.3f} over {imp['tokens']} tokens"
        )
    C.note(f"wrote {', '.join(str(out / f) for f in files)} in {res.meta['seconds']} s")


@app.command("contrast", rich_help_panel=ANALYSE)
def contrast_cmd(
    task: str = typer.Option(..., "--task", help="the task question asked after the context"),
    context: Optional[str] = typer.Option(None, "--context", help="the context text"),
    context_file: Optional[Path] = typer.Option(None, "--context-file", help="UTF-8 file holding the context"),
    general: str = typer.Option("Summarize the text.", "--general", help="the general instruction contrasted with the task"),
    model: str = C.model_option(),
    lam: Optional[float] = typer.Option(None, "--lam", help="λ in task / (general + λ) (default 1/N, N context tokens)"),
    layers: str = typer.Option("all", "--layers", help="layers fused into the token ranking, e.g. L14-24 or all"),
    top: int = typer.Option(10, "--top", help="context tokens listed, highest fused contrast first"),
    out: Path = C.out_option(C.REPORT / "contrast", "output folder (contrast.json, contrast.png)"),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
    threads: int = C.threads_option(),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
) -> None:
    """CARVE contrast (arXiv 2509.06461): which context tokens a task question draws attention to,
    against a general instruction, and the attention entropy per layer (docs/probes.md)."""
    from ..engine.hf import model_shape
    from ..engine.sites import parse_layers
    from ..io import atomic_dir, atomic_write_json
    from ..measure.contrast import contrast, contrast_png

    if (context is None) == (context_file is None):
        raise ValueError("give the context with exactly one of --context TEXT or --context-file FILE")
    if context_file is not None and not context_file.is_file():
        raise ValueError(f"--context-file {str(context_file)!r} does not exist")
    text = context if context is not None else context_file.read_text(encoding="utf-8")  # type: ignore[union-attr]
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    C.check_out_folder(out)
    C.set_threads(threads)
    m, tok = _dev.load_model(model, device, dtype, device_map)
    lay = parse_layers(layers, model_shape(m)[0])
    res = contrast(m, tok, text, task, general, lam=lam, layers=lay)
    with atomic_dir(out) as stage:
        atomic_write_json(stage / "contrast.json", {"model": model, "task": task, "general": general, **res.to_json()})
        contrast_png(stage / "contrast.png", res, title=f"{model}: {task[:60]!r} vs {general[:40]!r}")
    if json_out:
        typer.echo(json.dumps({"top": res.top(top), "files": [str(out / "contrast.json"), str(out / "contrast.png")]}))
        return
    t = Table(title=f"context tokens the task draws attention to (layers {layers}, λ = {res.lam:.3g})")
    for c in ("#", "token", "fused contrast"):
        t.add_column(c, justify="right" if c != "token" else "left")
    for i, s, v in res.top(top):
        t.add_row(str(i), repr(s), f"{v:.3f}")
    Console().print(t)
    e = Table(title="attention entropy over the context per layer (nats)")
    for c in ("layer", "task", "general"):
        e.add_column(c, justify="right")
    for layer, (a, b) in enumerate(zip(res.entropy_task.tolist(), res.entropy_general.tolist(), strict=True)):
        e.add_row(str(layer), f"{a:.3f}", f"{b:.3f}")
    Console().print(e)
    C.note(f"wrote {out / 'contrast.json'}, {out / 'contrast.png'}")


def _register_groups() -> None:
    """Sub-command groups live in their own files."""
    from . import bench as cli_bench
    from . import cache as cli_cache
    from . import circuits as cli_circuits
    from . import lab as cli_lab
    from . import sparsify as cli_sparsify
    from . import steer as cli_steer
    from .doctor import doctor
    from .merge import merge
    from .report import report

    app.command("report", rich_help_panel=ANALYSE)(report)
    app.add_typer(cli_circuits.app, name="circuits", rich_help_panel=ANALYSE)
    app.command("merge", rich_help_panel=ANALYSE)(merge)
    app.add_typer(cli_steer.app, name="steer", rich_help_panel=INTERVENE)
    app.add_typer(cli_sparsify.app, name="sparsify", rich_help_panel=INTERVENE)
    app.add_typer(cli_lab.app, name="lab", rich_help_panel=RESEARCH)
    app.add_typer(cli_bench.app, name="bench", rich_help_panel=RESEARCH)
    app.command("doctor", rich_help_panel=SETUP)(doctor)
    app.add_typer(cli_cache.app, name="cache", rich_help_panel=SETUP)
    _register_plugins()


def _register_plugins() -> None:
    """Commands that other installed packages add through the ``headlab.commands`` entry-point group: each
    entry point is a function ``register(app)``. The repository's claims harness adds ``reproduce`` this way;
    a plug-in that fails to load is reported on stderr, never fatal."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="headlab.commands"):
        try:
            ep.load()(app)
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take the CLI down
            typer.echo(f"warning: plug-in command {ep.name!r} ({ep.value}) failed to load: {C.message(exc)}", err=True)


_register_groups()


def main() -> None:
    """The ``headlab`` console script: every failure that reaches it is one ``error:`` line on stderr, exit 2
    (:class:`headlab.cli._common.HeadlabGroup` handles those inside commands; this catches the rest)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(prog_name="headlab")
    except C.EXITS:
        raise
    except C.USER_ERRORS as exc:
        if C.debug():
            raise
        C.print_error(C.message(exc))
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
