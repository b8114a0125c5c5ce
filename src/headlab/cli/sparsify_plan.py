"""CLI: ``headlab sparsify plan`` — profile a model and write a per-head sparsity plan (JSON).

Registered on the ``sparsify`` app in ``cli/sparsify.py``; this module imports nothing from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from . import _common as C
from . import _device as _dev


def _summary(plan) -> str:
    m = plan.meta
    full = plan.full_heads()
    n_full = sum(len(r) for r in full)
    width = len(plan.entries[0])
    lines = [
        f"{m['method']} plan for {m['model']['name']} at {plan.length} tokens: budget {m['budget']} -> "
        f"kv_fraction {m['kv_fraction']:.4f}, attention density {m['density']:.4f}; "
        f"{n_full}/{plan.n_layers * width} KV heads full; {m.get('seconds')} s"
    ]
    source = (m.get("calibration") or {}).get("source")
    if source:
        lines.append(f"calibration text: {source['file']} ({source.get('tokens')} tokens, sha256 {source['sha256'][:12]}…)")
    opts = m.get("options") or {}
    if "window" in opts:
        lines.append(f"streaming heads: sink_window({opts.get('sink')}, {opts['window']})")
    lines.append(
        "full KV heads per layer: " + "  ".join(f"L{li}:{','.join(map(str, r)) if r else '-'}" for li, r in enumerate(full))
    )
    return "\n".join(lines)


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_opt(item: str):
    """'steps=24' -> ('steps', 24); 'lengths=1024,2048' -> ('lengths', [1024, 2048]); 'data=prose' -> ('data', 'prose')."""
    key, sep, value = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier() or not value.strip():
        raise typer.BadParameter(f"--opt must be KEY=VALUE (e.g. steps=24), got {item!r}")
    parts = [_number(v.strip()) for v in value.split(",")]
    return key, parts if "," in value else parts[0]


def plan_cmd(
    method: str = typer.Option(..., "--method", help="duo | moa | retrieval | uniform | random"),
    kv_budget: float = typer.Option(
        0.35, "--kv-budget", help="KV fraction to keep, in (0, 1]: mean over (layer, KV head) of kept keys / length"
    ),
    length: int = typer.Option(8192, help="context length the plan is budgeted for (<= the model's context)"),
    out: Optional[Path] = typer.Option(
        None, "--out", help="plan JSON to write (atomically); default headlab-report/sparsify-plan/METHOD-BUDGET-LENGTH.json"
    ),
    model: str = C.model_option(),
    seed: int = typer.Option(0, help="seed: calibration data and random choices"),
    full_share: Optional[float] = typer.Option(
        None,
        help="share of the budget spent on full (retrieval) heads, in "
        "[0, 1] (default 0.6); the rest widens the streaming heads' windows",
    ),
    sink: Optional[int] = typer.Option(None, help="sink tokens of streaming heads (default 64)"),
    name: Optional[str] = typer.Option(None, help="plan name recorded in the file"),
    threads: int = C.threads_option(),
    cache_dir: Optional[Path] = typer.Option(
        None, help="profile cache (default $HEADLAB_CACHE/profiles): a second budget reuses the profile"
    ),
    calib: Optional[Path] = typer.Option(
        None,
        "--calib",
        help="calibrate duo / moa / retrieval on your own text instead of the built-in pydoc prose: one UTF-8 text "
        'file, or a .jsonl file with a "text" field per line; it must hold at least as many tokens as the method\'s '
        "longest calibration item (it is never repeated); file, sha256 and token count go into the plan",
    ),
    opt: Optional[List[str]] = typer.Option(
        None,
        "--opt",
        help="method option KEY=VALUE (repeatable), e.g. duo: steps=24 items=8 train_lengths=768 train_window=128 "
        "lr=0.08; moa: items=4 lengths=1024,2048 (numbers and comma lists are parsed; see docs/plans.md)",
    ),
    json_out: bool = C.json_option("print the plan's summary (meta, full heads per layer, --out) as JSON on stdout"),
    quiet: bool = C.quiet_option(),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
):
    """Profile a model and write a per-head plan: which KV heads stay full, and each streaming head's span.

    Example: headlab sparsify plan --method retrieval --kv-budget 0.35 --length 8192 --out plan.json
    On your own text: headlab sparsify plan --method duo --calib notes.txt --out plan.json
    Use it with: with headlab.attach(model, pattern=headlab.patterns.load_plan("plan.json", model)): ...
    """
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..data.calib import read_calib
    from ..patterns.headplan import save_plan
    from ..sparsify.plans import CALIBRATED, METHODS, check_budget, check_length, make_plan

    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if calib is not None and method not in CALIBRATED:
        raise typer.BadParameter(
            f"--calib {str(calib)!r}: method {method} uses no calibration data (only {', '.join(CALIBRATED)} "
            "profile the model); drop --calib"
        )
    try:
        check_budget(kv_budget)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if full_share is not None and not 0.0 <= full_share <= 1.0:
        raise typer.BadParameter(f"--full-share must be in [0, 1], got {full_share}")
    if length < 1:
        raise typer.BadParameter(f"--length must be >= 1, got {length}")
    if sink is not None and sink < 0:
        raise typer.BadParameter(f"--sink must be >= 0, got {sink}")
    if out is None:
        out = C.REPORT / "sparsify-plan" / f"{method}-{kv_budget:g}-{length}.json"
    if out.is_dir():
        raise typer.BadParameter(f"--out {str(out)!r} is a folder; give a file name like plan.json")
    opts: dict[str, Any] = {k: v for k, v in (("sink", sink), ("full_share", full_share)) if v is not None}
    if calib is not None:
        try:
            opts["calib"] = read_calib(calib, "--calib")
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    for item in opt or []:
        key, value = parse_opt(item)
        if key in opts:
            raise typer.BadParameter(f"--opt {key} repeats an option given twice or by its own flag")
        opts[key] = value
    C.set_threads(threads)
    m, tok = _dev.load_model(model, device, dtype, device_map)
    check_length(m, length)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn()
    ) as prog:
        task = prog.add_task(f"sparsify plan --method {method}", total=None)

        def tick(done, total, what="") -> None:
            prog.update(task, completed=done, total=total, description=str(what)[:70])

        try:
            plan = make_plan(
                method,
                m,
                tok,
                budget=kv_budget,
                length=length,
                seed=seed,
                progress=tick,
                cache_dir=cache_dir,
                model_name=model,
                **opts,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        except TypeError as exc:  # an option the method does not take
            raise typer.BadParameter(f"method {method!r} does not take one of the options {sorted(opts)}: {exc}") from None
    if name:
        plan = plan.with_meta(name=name)
    save_plan(plan, out)
    if json_out:
        typer.echo(json.dumps({"out": str(out), "meta": plan.meta, "full_heads": plan.full_heads()}, default=str))
    else:
        typer.echo(_summary(plan))
    C.note(f"wrote {out}")
