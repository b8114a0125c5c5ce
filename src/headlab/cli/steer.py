"""``headlab steer``: tune a training-free head intervention and measure it (see headlab.steer.run).

    headlab steer zerotuning --task sst2 --tune-on 200 --eval-on 600 --save tuned.json
    headlab steer --config tuned.json --task mmlu --eval-on 200
    headlab steer ablate --sites retrieval:top20 --atlas scan/heads.json --mode uniform --task needle
"""
from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
app = typer.Typer(help="Steer heads without training: tune on one split, report on a disjoint one.",
                  invoke_without_command=True, no_args_is_help=False,
                  context_settings={"allow_interspersed_args": True})


@app.callback(invoke_without_command=True)
def steer(
    method: Optional[str] = typer.Argument(None, help="zerotuning | act | redistribute | reinforce | inject | ablate"),
    task: str = typer.Option("sst2", help="sst2 | mmlu | squad | needle"),
    config: Optional[str] = typer.Option(None, help="apply a saved configuration instead of tuning"),
    tune_on: int = typer.Option(40, help="tuning items (disjoint from the evaluation items; skipped with --config)"),
    eval_on: int = typer.Option(100, help="evaluation items"),
    seed: int = typer.Option(0, help="split / bootstrap seed"),
    save: Optional[str] = typer.Option(None, help="write the tuned configuration + results here (JSON) and a PNG"),
    model: str = typer.Option("smollm2-135m", help="smollm2-135m or a local HF folder"),
    sites: Optional[str] = typer.Option(None, help="ablate: site selector ('L3H1,L5', 'retrieval:top20', 'random:20:0')"),
    atlas: Optional[str] = typer.Option(None, help="heads.json from `headlab scan` for atlas selectors"),
    mode: str = typer.Option("uniform", help="ablate mode: zero | mean | uniform"),
    block: int = typer.Option(0, help="layers per block in the zerotuning / act search (0 = method default)"),
    per_head: bool = typer.Option(False, "--per-head", help="zerotuning: also profile single heads in the kept layers"),
    batch_size: int = typer.Option(8, help="prompts per forward pass"),
    n_tokens: int = typer.Option(512, help="needle: haystack length in tokens"),
    threads: int = typer.Option(0, help="torch threads (0 = torch default)"),
    param: Optional[float] = typer.Option(None, help="redistribute: p, reinforce: alpha — apply this value "
                                          "without the tuning competition (a forced run)"),
    icl_shots: int = typer.Option(0, help="choice tasks: also evaluate a K-shot ICL prompt (demos from the "
                                  "tuning split) on the evaluation items"),
) -> None:
    """Tune METHOD on --tune-on items, or apply --config; print baseline vs steered with 95% CIs."""
    import torch

    from ..steer.run import steer as run_steer

    if threads:
        torch.set_num_threads(threads)
    if param is not None and method not in ("redistribute", "reinforce"):
        console.print(f"[red]error:[/] --param applies to redistribute (p) and reinforce (alpha), not {method!r}")
        raise typer.Exit(2)
    if icl_shots < 0:
        console.print(f"[red]error:[/] --icl-shots must be >= 0, got {icl_shots}")
        raise typer.Exit(2)
    opts = {"batch_size": batch_size, "mode": mode, "per_head": per_head, "param": param, "icl_shots": icl_shots}
    if sites:
        opts["sites"] = sites
    if atlas:
        opts["atlas"] = atlas
    if block:
        opts["block"] = block
    task_kw = {"n_tokens": n_tokens, "n": tune_on + eval_on} if task == "needle" else None
    try:
        out = run_steer(method, task, config=config, tune_on=tune_on, eval_on=eval_on, seed=seed, save=save,
                        model_name=model, task_kw=task_kw, **opts)
    except (ValueError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    res = out["results"]
    t = Table(title=f"{out['method']} on {task}: tuned on {out['tune_on']}, evaluated on {out['eval_on']} items")
    for c in ("", "accuracy", "95% CI", "items"):
        t.add_column(c)
    for name in ("baseline", "steered", "icl", "difference"):
        if name not in res:
            continue
        m, lo, hi = res[name]
        st = res["stats"][name]
        count = f"{st['k']}/{st['n']}" if "k" in st else f"n={st['n']}, McNemar p={st.get('mcnemar_p', float('nan')):.3g}"
        t.add_row(name, f"{m:+.3f}" if name == "difference" else f"{m:.3f}", f"[{lo:.3f}, {hi:.3f}]", count)
    console.print(t)
    for d in out["describe"] or ["(no edit: tuning kept the baseline)"]:
        console.print(f"edit: {d}")
    if save:
        console.print(f"wrote {save} and {out.get('plot')} in {out['seconds']} s")
