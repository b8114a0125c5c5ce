"""``headlab sparsify eval --suite long``: the RULER-style long-context suite (arXiv 2404.06654;
``headlab.data.longctx``) instead of passkey prompts — called by ``cli/sparsify.py``'s ``eval`` once the model and
the configurations are loaded; see :mod:`headlab.sparsify.eval.suite`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from . import _common as C

QUESTIONS = ("after", "inside")


def parse_suite(text: str) -> list[str]:
    """'long' -> every suite task; else a comma list of task names."""
    from ..data.longctx import SUITES, TASKS

    if text in SUITES:
        return list(SUITES[text])
    names = C.split_list(text, "--suite")
    bad = [t for t in names if t not in TASKS]
    if not names or bad:
        raise typer.BadParameter(
            f"--suite must be one of {', '.join(SUITES)} or a comma list of tasks among {', '.join(TASKS)}, got {text!r}"
        )
    return names


def check(suite: str, lengths: list[int], question: str, prefill: str) -> list[str]:
    """Validate the suite options before the model loads; returns the task names."""
    from ..data.longctx import MIN_LENGTH

    tasks = parse_suite(suite)
    if len(lengths) != 1:
        raise typer.BadParameter(f"--suite runs one length at a time, got --lengths {','.join(map(str, lengths))}")
    if lengths[0] < MIN_LENGTH:
        raise typer.BadParameter(f"--suite needs --lengths >= {MIN_LENGTH} tokens, got {lengths[0]}")
    if question not in QUESTIONS:
        raise typer.BadParameter(f"--question must be one of {QUESTIONS}, got {question!r}")
    if prefill not in ("sparse", "dense"):
        raise typer.BadParameter(f"--prefill must be sparse or dense, got {prefill!r}")
    return tasks


def run_suite(
    model,
    tokenizer,
    configs: list[tuple[str, Any]],
    *,
    tasks: list[str],
    suite: str,
    length: int,
    n: int,
    seed: int,
    question: str,
    prefill: str,
    dense_layers: list[int],
    baseline: str | None,
    resume: bool,
    out: Path,
    command: str,
    json_out: bool,
    quiet: bool,
) -> None:
    """Build the items, check them against the planners' calibration data, evaluate (resumable), write the report."""
    from ..data.longctx import make_suite, suite_digest
    from ..sparsify.eval import plan_id
    from ..sparsify.eval.log import TrialLog
    from ..sparsify.eval.suite import calibration_check, evaluate_suite, format_suite_table, write_suite_report

    items = make_suite(tokenizer, length, n=n, seed=seed, tasks=tasks)
    digest = suite_digest(items)
    C.note(f"suite {suite}: {len(items)} items ({len(tasks)} tasks x {n}) at {length} tokens, digest {digest}")
    plans = [p for _, p in configs if plan_id.is_plan(p)]
    cal = calibration_check(tokenizer, items, plans)
    if not cal["disjoint"]:
        raise ValueError(
            f"the suite shares {cal['shared_passages']} passages and {cal['shared_spans']} text spans with the planners' "
            "calibration data; refusing to evaluate on calibration data"
        )
    log = TrialLog(out / "trials.jsonl", resume=resume)
    meta = {"name": suite, "tasks": tasks, "n": n, "length": length, "seed": seed, "digest": digest}
    res = evaluate_suite(
        model,
        tokenizer,
        configs,
        items,
        question=question,
        prefill=prefill,
        dense_layers=dense_layers,
        log=log,
        baseline=baseline,
        progress=None if quiet else (lambda d: C.note(d)),
        suite=meta,
    )
    res.calibration = cal
    folder = write_suite_report(res, out, command=command)
    if json_out:
        typer.echo(json.dumps({"rows": res.to_dict()["rows"], "out": str(folder)}, default=str))
        return
    typer.echo(format_suite_table(res))
    C.note(f"wrote {folder}/results.json, table.md, plot.png, trials.jsonl")
