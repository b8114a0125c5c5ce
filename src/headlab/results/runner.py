"""Rerun a registered claim's command(s) into a new folder and write its ``result.json``."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from ..io import atomic_dir
from .check import compare
from .claims import Claim, get
from .record import read_result, results_root, write_result


def committed_folder(name: str, smoke: bool = False, root: Path | None = None) -> Path:
    """``results/NAME`` (or ``results/NAME/smoke``)."""
    base = (root or results_root()) / name
    return base / "smoke" if smoke else base


def default_out(name: str, smoke: bool = False) -> Path:
    return Path("headlab-report") / "reproduce" / (f"{name}-smoke" if smoke else name)


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_command(line: str) -> None:
    """Run one ``headlab …`` command line in this process; a non-zero exit raises RuntimeError."""
    import click
    import typer

    from ..cli import app

    args = shlex.split(line)
    if args[:1] != ["headlab"]:
        raise ValueError(f"not a headlab command: {line!r}")
    cmd = typer.main.get_command(app)
    try:
        rc = cmd.main(args[1:], prog_name="headlab", standalone_mode=False)
    except click.exceptions.Exit as exc:
        rc = exc.exit_code
    except click.ClickException as exc:
        raise RuntimeError(f"`{line}` failed: {exc.format_message()}") from None
    if rc not in (None, 0):
        raise RuntimeError(f"`{line}` exited with status {rc}")


def check_size(claim: Claim, raw: dict, smoke: bool) -> None:
    """Refuse a run whose configuration differs from the registered size (a changed size is a new claim)."""
    want = claim.smoke_size if smoke else claim.size
    configs = [raw["config"]] if "config" in raw else [r for r in raw.values() if isinstance(r, dict)]
    for cfg in configs:
        for k, v in want.items():
            if k in cfg and cfg[k] != v and not (isinstance(v, list) and list(cfg[k]) == v):
                raise RuntimeError(
                    f"{claim.name}: the run used {k}={cfg[k]!r}, the registered size is {k}={v!r}; "
                    "a run at another size is a new claim with its own name"
                )


def reproduce(
    name: str, out: str | os.PathLike | None = None, smoke: bool = False, check: bool = False, root: Path | None = None, log=print
) -> tuple[dict, list[str]]:
    """Run claim ``name`` into ``out`` (default ``headlab-report/reproduce/NAME``); with ``check`` compare it to
    the committed result.  Returns (result, problems)."""
    claim = get(name)
    root = Path(root) if root is not None else results_root()
    committed = committed_folder(name, smoke, root)
    if check and not (committed / "result.json").exists():
        raise ValueError(f"--check: no committed result at {committed / 'result.json'}")
    for dep in claim.depends:
        if not (root / dep / "result.json").exists():
            raise ValueError(f"{name} applies the configuration of {dep}: run `headlab reproduce {dep} --out {root / dep}` first")
    out = Path(out) if out is not None else default_out(name, smoke)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    cmds = claim.commands(smoke)
    t0 = time.time()
    with atomic_dir(out) as stage:
        shown = []
        for line in cmds:
            shown.append(line.format(out=_show(out), results=_show(root)))
            actual = line.format(out=shlex.quote(str(stage)), results=shlex.quote(str(root)))
            log(f"$ {shown[-1]}")
            run_command(actual)
        raw, _records, files = claim.collect(stage)
        check_size(claim, raw, smoke)
        numbers = claim.summarize(raw)
        judgement = claim.judge(numbers)
        again = f"headlab reproduce {name}" + (" --smoke" if smoke else "") + f" --out {_show(out)}"
        res = write_result(stage, claim, numbers, judgement, shown, again, time.time() - t0, smoke, files)
    problems = compare(read_result(committed), res) if check else []
    return res, problems
