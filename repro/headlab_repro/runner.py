"""Rerun a registered claim's command(s) into a new folder and write its ``result.json``."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from pathlib import Path

from headlab.io import atomic_dir, atomic_write_json

from .check import compare
from .claims import Claim, get
from .provenance import BUSY_SHARE, CpuWatch, tree_state
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

    from headlab.cli import app

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


def is_timing(claim: Claim) -> bool:
    """Timing claims are judged with a ratio tolerance; their runs need an otherwise idle machine."""
    return claim.tolerance.kind == "ratio"


def judge_run(claim: Claim, numbers: dict, smoke: bool, cpu: dict) -> dict:
    """The claim's judgement of ``numbers``; a full timing run during which other processes used more than
    ``BUSY_SHARE`` cores (``cpu`` as :meth:`CpuWatch.stop` returns it) is ``invalid: machine busy``
    (``rule_met`` None), its verdict keeping what the rule would say."""
    judgement = claim.judge(numbers)
    if is_timing(claim) and not smoke and cpu.get("busy"):
        why = (
            f"invalid: machine busy — other processes used {cpu['other_share']:.2f} cores on average during the run "
            f"(limit {BUSY_SHARE}); rerun on an idle machine"
        )
        judgement = {
            "rule_met": None,
            "verdict": why + " (the rule would say: " + judgement["verdict"] + ")",
            "conditions": judgement["conditions"],
        }
    return judgement


def _judge_into(
    claim: Claim, stage: Path, shown: list[str], again: str, smoke: bool, seconds: float | None, start: dict | None = None
) -> dict:
    """Collect the run in ``stage``, check its size, judge it and write ``stage/result.json``; ``seconds``
    None = the sum of the run's per-record seconds (an adopted run). A full timing run during which other
    processes used the CPU is judged ``invalid: machine busy`` (``rule_met`` None), never met or unmet."""
    raw, records, files = claim.collect(stage)
    check_size(claim, raw, smoke)
    numbers = claim.summarize(raw)
    if seconds is None:
        seconds = sum(float(r.get("seconds") or 0) for r in records)
    judgement = judge_run(claim, numbers, smoke, (start or {}).get("cpu") or {})
    res = write_result(stage, claim, numbers, judgement, shown, again, seconds, smoke, files, start=start)
    if judgement["rule_met"] is None:
        res["invalid"] = judgement["verdict"].split(" (the rule")[0]
        from .evidence import label

        lab = label(res)
        res["evidence"], res["evidence_why"] = lab["evidence"], lab["why"]
        atomic_write_json(stage / "result.json", json.loads(json.dumps(res, default=float).replace("NaN", "null")))
    return res


def reproduce(
    name: str,
    out: str | os.PathLike | None = None,
    smoke: bool = False,
    check: bool = False,
    root: Path | None = None,
    log=print,
    allow_dirty: bool = False,
) -> tuple[dict, list[str]]:
    """Run claim ``name`` into ``out`` (default ``headlab-report/reproduce/NAME``); with ``check`` compare it to
    the committed result.  Returns (result, problems).

    Provenance: the tree is read when the run starts and again when it ends. A full-size run refuses a tree
    with uncommitted changes (untracked code under src/, repro/, scripts/ included) unless ``allow_dirty``,
    and then stores the diff as ``tree.diff`` beside the result (whose label is then exploratory)."""
    claim = get(name)
    tree = tree_state()
    if tree["dirty"] and not smoke and not allow_dirty:
        shown_files = ", ".join(tree["changed"][:8]) + (" …" if len(tree["changed"]) > 8 else "")
        raise ValueError(
            f"{name}: the tree has uncommitted changes ({shown_files}); commit them first so the result names the code "
            "that ran, or pass --allow-dirty (the diff is stored beside the result and the result is exploratory)"
        )
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
    start = {"tree": tree, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    watch = CpuWatch()
    with atomic_dir(out) as stage:
        shown = []
        for line in cmds:
            shown.append(line.format(out=_show(out), results=_show(root)))
            actual = line.format(out=shlex.quote(str(stage)), results=shlex.quote(str(root)))
            log(f"$ {shown[-1]}")
            run_command(actual)
        again = f"headlab reproduce {name}" + (" --smoke" if smoke else "") + f" --out {_show(out)}"
        start["cpu"] = watch.stop()
        if tree["dirty"]:
            (stage / "tree.diff").write_text(tree["diff"])
        res = _judge_into(claim, stage, shown, again, smoke, seconds=time.time() - t0, start=start)
    problems = compare(read_result(committed), res) if check else []
    return res, problems


_RUN_ONLY = {"--resume": 0, "--no-resume": 0, "--quiet": 0, "--out": 1}  # flags that do not change what is measured


def _measured_args(line: str, results: str) -> list[str]:
    """A command line's arguments without the ones that only say where and how it ran (out folder, resume, quiet)."""
    args, out, skip = shlex.split(line.replace("{results}", results)), [], 0
    for a in args:
        if skip:
            skip -= 1
            continue
        key = a.split("=", 1)[0]
        if key in _RUN_ONLY:
            skip = _RUN_ONLY[key] if "=" not in a else 0
            continue
        out.append(os.path.abspath(a) if "/" in a and not a.startswith("-") else a)  # a path, however it was spelled
    return out


def adopt(
    name: str, run_dir: str | os.PathLike, out: str | os.PathLike | None = None, root: Path | None = None
) -> tuple[dict, list[str]]:
    """Judge a finished run of claim ``name`` that was made by its registered command (e.g. a long run continued
    with ``--resume``) and write ``out/result.json`` with the run's files; no rerun.

    The run folder's recorded command must equal the registered one up to where and how it ran (``--out``,
    ``--resume``, ``--quiet``); its size is checked like a fresh run's.  Returns (result, [])."""
    claim = get(name)
    if len(claim.command) != 1:
        raise ValueError(f"{name}: --from works for one-command claims; {name} has {len(claim.command)} commands")
    root = Path(root) if root is not None else results_root()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"--from {str(run_dir)!r} is not a folder")
    raw, records, _ = claim.collect(run_dir)
    ran = raw.get("command") if isinstance(raw, dict) else None
    if not ran:
        raise ValueError(f"{run_dir}: the run's output does not record its command, so it cannot be adopted; rerun it")
    res_show = _show(root)
    want, got = _measured_args(claim.command[0], str(root)), _measured_args(ran, str(root))
    if want != got:
        raise ValueError(f"{run_dir} was made by `{ran}`, not by the registered command `{claim.command[0]}`")
    out = Path(out) if out is not None else default_out(name)
    with atomic_dir(out) as stage:
        for src in sorted(run_dir.rglob("*")):
            if src.is_file():
                dst = stage / src.relative_to(run_dir)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        shown = [claim.command[0].format(out=_show(out), results=res_show)]
        res = _judge_into(claim, stage, shown, f"headlab reproduce {name} --out {_show(out)}", False, seconds=None)
    return res, []
