"""``headlab bench kv``: KV-cache compression side by side — dense, kvpress presses (in kvpress's own venv) and
headlab plans (sparse or dense prefill) at the same KV fractions, on the same weights and items (passkey and the
long-context suite). Registered on the ``bench`` group by ``headlab.cli.bench``; see :mod:`headlab.bench.kv`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from . import _common as C

DEFAULT_PRESSES = "streaming_llm,snapkv,knorm,expected_attention,tova,adakv,duo_attention"


def _fraction_text(f: float) -> str:
    return f"{f:g}"


def kv_cmd(
    length: int = typer.Option(4096, "--length", help="prompt length in tokens (prompt + tokens to generate)"),
    passkey: int = typer.Option(10, "--passkey", help="passkey prompts (0: none)"),
    suite_n: int = typer.Option(0, "--suite-n", help="items per task of the long-context suite (0: no suite)"),
    suite_tasks: str = typer.Option("long", "--suite-tasks", help="'long' (every suite task) or a comma list of tasks"),
    fractions: str = typer.Option("0.35", "--fractions", help="comma list of KV fractions kept, each in (0, 1)"),
    presses: str = typer.Option(DEFAULT_PRESSES, "--presses", help="comma list of kvpress presses ('' for none)"),
    plans: str = typer.Option("duo,moa,retrieval,uniform", "--plans", help="comma list of headlab plan methods ('' for none)"),
    plan_dir: Path = typer.Option(
        Path("results/sparsify-plans"), "--plan-dir", help="folder of the plans, named METHOD-FRACTION-LENGTH.json"
    ),
    plan_length: int = typer.Option(0, "--plan-length", help="the plans' LENGTH in their file names (0: --length)"),
    prefill: str = typer.Option("dense,sparse", "--prefill", help="headlab plans' prefill: comma list of dense, sparse"),
    query_aware: bool = typer.Option(
        True, help="also run every press with the question inside the compressed context (labelled query-aware)"
    ),
    duo_pattern: Optional[Path] = typer.Option(
        None,
        "--duo-pattern",
        help="DuoAttention head-pattern folder for kvpress's DuoAttentionPress (default: exported from each fraction's duo plan)",
    ),
    kvpress_python: Path = typer.Option(
        Path("build/kvpress-venv/bin/python"), "--kvpress-python", help="python of kvpress's venv (bash scripts/kvpress_env.sh)"
    ),
    seed: int = typer.Option(0, "--seed", help="suite seed (items are a pure function of it)"),
    resume: bool = typer.Option(False, help="keep the trials already logged in OUT (a stopped run goes on)"),
    model: str = C.model_option(),
    threads: int = C.threads_option(),
    out: Path = C.out_option(C.REPORT / "bench-kv", "output folder (kv.json, kv.records.jsonl, table.md, kv.png, logs)"),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
):
    """Dense vs kvpress presses vs headlab plans at equal KV fractions: accuracy, KV kept, prefill and decode time."""
    from ..bench import kv as K
    from ..data.longctx import SUITES, TASKS, make_suite, suite_digest
    from ..models import load
    from ..patterns.headplan import load_plan
    from ..sparsify.eval.decode import dense_kv_bytes
    from ..sparsify.eval.kvbench import headlab_trials
    from ..sparsify.eval.log import TrialLog
    from ..sparsify.interop import write_duo_pattern

    fr = C.split_list(fractions, "--fractions", float)
    if not fr or any(not 0 < f < 1 for f in fr):
        raise typer.BadParameter(f"--fractions must list numbers in (0, 1), got {fractions!r}")
    press_names = C.split_list(presses, "--presses") if presses.strip() else []
    bad = [p for p in press_names if p not in K.PRESSES]
    if bad:
        raise typer.BadParameter(f"--presses: unknown {bad[0]!r}; valid: {', '.join(K.PRESSES)}")
    methods = C.split_list(plans, "--plans") if plans.strip() else []
    bad = [m for m in methods if m not in K.PLAN_METHODS]
    if bad:
        raise typer.BadParameter(f"--plans: unknown {bad[0]!r}; valid: {', '.join(K.PLAN_METHODS)}")
    prefills = C.split_list(prefill, "--prefill")
    if not prefills or any(p not in ("dense", "sparse") for p in prefills):
        raise typer.BadParameter(f"--prefill must list dense and/or sparse, got {prefill!r}")
    if passkey < 0 or suite_n < 0 or passkey + suite_n == 0:
        raise typer.BadParameter(f"--passkey ({passkey}) and --suite-n ({suite_n}) must be >= 0, and one of them > 0")
    tasks = list(SUITES[suite_tasks]) if suite_tasks in SUITES else C.split_list(suite_tasks, "--suite-tasks")
    if any(t not in TASKS or t == "passkey" for t in tasks):
        raise typer.BadParameter(
            f"--suite-tasks must be 'long' or suite tasks among {', '.join(SUITES['long'])}, got {suite_tasks!r}"
        )
    if plan_length < 0:
        raise typer.BadParameter(f"--plan-length must be >= 0 (0: --length), got {plan_length}")
    C.check_out_folder(out)
    files = {}
    for m in methods:
        for f in fr:
            path = plan_dir / f"{m}-{_fraction_text(f)}-{plan_length or length}.json"
            try:
                files[(m, f)] = load_plan(path)
            except (ValueError, OSError) as e:
                raise typer.BadParameter(
                    f"--plans {m} at {f:g}: {e} (make it with `headlab sparsify plan --method {m} --kv-budget {f:g} --length {length}`)"
                ) from None
    C.set_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        for name in (K.HEADLAB_LOG, K.KVPRESS_LOG):
            (out / name).unlink(missing_ok=True)
    m, tok = load(model)
    folder = Path(str(getattr(m.config, "_name_or_path", "") or model))
    items = (make_suite(tok, length, n=passkey, seed=seed, tasks=["passkey"]) if passkey else []) + (
        make_suite(tok, length, n=suite_n, seed=seed, tasks=tasks) if suite_n else []
    )
    C.note(f"{len(items)} items at {length} tokens (digest {suite_digest(items)})")
    plan_list = [(meth, f, p) for (meth, f), p in files.items()]
    for _, _, p in plan_list:
        p.check_model(m)
    trials = headlab_trials(
        m, tok, items, plan_list, prefills, TrialLog(out / K.HEADLAB_LOG, resume=True), progress=None if quiet else C.note
    )
    kv = {"status": "skipped", "why": "no presses asked for"}
    records: list[dict] = []
    if press_names:
        kv = K.probe_kvpress(kvpress_python)
        if kv["status"] != "ok":
            C.note(f"kvpress: missing ({kv['why']}); make it with `{K.SETUP}`")
        elif not (folder / "config.json").exists():
            kv = {
                "status": "missing",
                "why": f"no local weights folder for {model!r} (kvpress loads a folder)",
                "install": K.SETUP,
            }
        else:
            configs = K.press_configs(press_names, fr, query_aware)
            for c in configs:
                if c["press"] == "duo_attention":
                    if duo_pattern is not None:
                        c["duo_pattern"] = str(duo_pattern)
                    elif ("duo", c["fraction"]) in files:
                        c["duo_pattern"] = str(
                            write_duo_pattern(files[("duo", c["fraction"])], out / f"duo-pattern-{c['fraction']:g}")
                        )
            records = K.run_kvpress(
                Path(kv["python"]),
                folder,
                K.export_items(items, tok),
                configs,
                out,
                threads=threads or None,
                length=length,
                tick=None if quiet else C.note,
            )
    trials += K.kvpress_trials(records, items, lambda n: float(dense_kv_bytes(m, n)))
    res = {
        "config": {
            "model": model,
            "length": length,
            "passkey": passkey,
            "suite_n": suite_n,
            "suite_tasks": tasks,
            "seed": seed,
            "digest": suite_digest(items),
            "fractions": fr,
            "presses": press_names,
            "plans": methods,
            "plan_files": {f"{k[0]}@{k[1]:g}": Path(str(getattr(v, "source", ""))).name for k, v in files.items()},
            "prefill": prefills,
            "query_aware": query_aware,
            "threads": threads,
        },
        "kvpress": kv,
        "errors": K.errors(records),
        "rows": K.rows(trials, items),
        "trials": trials,
        "versions": K.versions(),
    }
    cmd = "headlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "headlab bench kv"
    K.write(res, out, cmd)
    typer.echo(json.dumps(K.finite({k: v for k, v in res.items() if k != "trials"}), default=str) if json_out else K.table(res))
    C.note(f"wrote {out}/kv.json, kv.records.jsonl, table.md, kv.png")
