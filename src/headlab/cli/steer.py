"""``headlab steer``: tune a training-free head intervention and measure it (see headlab.steer.run).

headlab steer zerotuning --task sst2 --tune-on 200 --eval-on 600 --save tuned.json
headlab steer --config tuned.json --task mmlu --eval-on 200
headlab steer ablate --sites retrieval:top20 --atlas scan/heads.json --mode uniform --task needle
headlab steer ablate --sites L3H1 --mode zero --task my_items.jsonl --tune-on 0 --json
headlab steer guide "The capital of France is" --sites L5H1,L7 --u 0.5 --scale 1.0
headlab steer headhunt --task sst2 --tune-on 16 --eval-on 120 --prescreen-layers 2 --rounds 2 --save hunt.json
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from . import _device as _dev

console = Console()
err = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error on stderr; raise the returned Exit (code 2)."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


class _SteerGroup(TyperGroup):
    """``headlab steer METHOD ...`` beside the sub-commands ``headlab steer guide | headhunt ...``: a first word
    that names a sub-command goes to it instead of filling the METHOD argument."""

    def parse_args(self, ctx, args):
        if args and args[0] in self.commands:
            super().parse_args(ctx, [])
            ctx._protected_args, ctx.args = args[:1], args[1:]
            return ctx.args
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_SteerGroup,
    help="Steer heads without training: tune on one split, report on a disjoint one.",
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"allow_interspersed_args": True},
)


@app.callback(invoke_without_command=True)
def steer(
    ctx: typer.Context,
    method: Optional[str] = typer.Argument(None, help="zerotuning | act | redistribute | reinforce | inject | ablate"),
    task: str = typer.Option(
        "sst2",
        help="sst2 | mmlu | squad | needle, or your own FILE.jsonl / FILE.csv with rows "
        "{prompt, choices, label} (choice task) or {prompt, answers} (generation task)",
    ),
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
    param: Optional[float] = typer.Option(
        None, help="redistribute: p, reinforce: alpha — apply this value without the tuning competition (a forced run)"
    ),
    icl_shots: int = typer.Option(
        0, help="choice tasks: also evaluate a K-shot ICL prompt (demos from the tuning split) on the evaluation items"
    ),
    prompt_field: str = typer.Option("prompt", help="task file: field holding the prompt"),
    choices_field: str = typer.Option("choices", help="task file: field holding the choices (JSON list, or text split on --sep)"),
    label_field: str = typer.Option("label", help="task file: field holding the right choice (index or text)"),
    answers_field: str = typer.Option("answers", help="task file: field holding the accepted answers (generation tasks)"),
    sep: str = typer.Option("|", help="task file (CSV): separator inside the choices / answers field"),
    json_out: bool = typer.Option(False, "--json", help="print the results as JSON on stdout (no table)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
) -> None:
    """Tune METHOD on --tune-on items, or apply --config; print baseline vs steered with 95% CIs."""
    if ctx.invoked_subcommand:
        return
    import torch

    from ..data.tasks.user_file import is_task_file, load_file
    from ..steer.run import steer as run_steer

    if threads < 0:
        raise fail(f"--threads must be >= 0 (0 = torch default), got {threads}")
    if threads:
        torch.set_num_threads(threads)
    if param is not None and method not in ("redistribute", "reinforce"):
        raise fail(f"--param applies to redistribute (p) and reinforce (alpha), not {method!r}")
    if icl_shots < 0:
        raise fail(f"--icl-shots must be >= 0, got {icl_shots}")
    opts = {"batch_size": batch_size, "mode": mode, "per_head": per_head, "param": param, "icl_shots": icl_shots}
    if sites:
        opts["sites"] = sites
    if atlas:
        opts["atlas"] = atlas
    if block:
        opts["block"] = block
    task_kw = {"n_tokens": n_tokens, "n": tune_on + eval_on} if task == "needle" else None
    try:
        the_task = task
        if is_task_file(task):
            the_task = load_file(
                task,
                prompt_field=prompt_field,
                choices_field=choices_field,
                label_field=label_field,
                answers_field=answers_field,
                sep=sep,
            )
        placed = device is not None or dtype is not None or device_map is not None
        out = run_steer(
            method,
            the_task,
            config=config,
            tune_on=tune_on,
            eval_on=eval_on,
            seed=seed,
            save=save,
            model_name=model,
            task_kw=task_kw,
            progress=not quiet,
            model_tok=_dev.load_model(model, device, dtype, device_map) if placed else None,
            **opts,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise fail(str(exc)) from None
    if json_out:
        typer.echo(json.dumps(out, default=str))
        return
    res = out["results"]
    t = Table(title=f"{out['method']} on {out['task']}: tuned on {out['tune_on']}, evaluated on {out['eval_on']} items")
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


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name} {text!r}: give comma-separated numbers, e.g. 0.5,1") from None
    if not vals:
        raise typer.BadParameter(f"{name} is empty: give at least one number")
    return vals


@app.command("guide")
def guide_cmd(
    prompt: str = typer.Argument(..., help="the prompt to continue"),
    sites: str = typer.Option(..., help="heads to perturb: 'L5H1,L7' (a layer = all its heads), 'all'"),
    u: float = typer.Option(1.0, help="SoftPAG blend toward the identity, 0..1 (1 = PAG: o_i = v_i)"),
    scale: float = typer.Option(1.0, help="guidance scale s: logits + s·(logits − logits_perturbed)"),
    max_new_tokens: int = typer.Option(40, help="tokens to generate (greedy)"),
    chat: bool = typer.Option(False, "--chat", help="wrap the prompt in the tokenizer's chat template"),
    model: str = typer.Option("smollm2-135m", help="smollm2-135m or a local HF folder"),
    json_out: bool = typer.Option(False, "--json", help="print {plain, guided} as JSON"),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
) -> None:
    """Greedy continuation of PROMPT without and with perturbed-attention guidance (SoftPAG on --sites)."""
    from ..steer.guidance import guided_generate

    try:
        m, tok = _dev.load_model(model, device, dtype, None)
        text = (
            tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            if chat
            else prompt
        )
        ids = tok(text, return_tensors="pt")["input_ids"]
        outs = {}
        for name, s in (("plain", 0.0), ("guided", scale)):
            new = guided_generate(m, ids, None, sites, u, s, max_new_tokens, eos_token_id=tok.eos_token_id)
            outs[name] = tok.decode(new[0], skip_special_tokens=True)
    except (ValueError, RuntimeError, OSError) as exc:
        raise fail(str(exc)) from None
    if json_out:
        typer.echo(json.dumps({"sites": sites, "u": u, "scale": scale, **outs}))
        return
    console.print(f"[bold]plain[/]: {escape(outs['plain'])}")
    console.print(f"[bold]guided[/] (sites {escape(sites)}, u={u}, s={scale}): {escape(outs['guided'])}")


@app.command("headhunt")
def headhunt_cmd(
    task: str = typer.Option("sst2", help="sst2 | mmlu, or a choice-task FILE.jsonl / FILE.csv {prompt, choices, label}"),
    tune_on: int = typer.Option(16, help="tuning items: the search and the (u, s) choice see only these"),
    eval_on: int = typer.Option(120, help="evaluation items (disjoint)"),
    seed: int = typer.Option(0, help="split / bootstrap seed"),
    rounds: int = typer.Option(2, help="greedy rounds"),
    per_round: int = typer.Option(1, help="heads added per round"),
    u: float = typer.Option(1.0, help="SoftPAG blend during the search, 0..1"),
    scale: float = typer.Option(1.0, help="guidance scale s during the search"),
    pool: str = typer.Option("all", help="candidate heads (site selector, e.g. 'L10-29')"),
    prescreen_layers: int = typer.Option(0, help="first keep only the best N layers (each layer perturbed whole); 0 = off"),
    u_grid: str = typer.Option("0.5,1", help="u values tried for the final head set on the tuning items"),
    s_grid: str = typer.Option("0.5,1,2,4", help="s values tried for the final head set on the tuning items"),
    n_random: int = typer.Option(2, help="random head sets of the same size to compare with (each tuned the same way)"),
    batch_size: int = typer.Option(16, help="items per evaluation pass"),
    threads: int = typer.Option(0, help="torch threads (0 = torch default)"),
    save: Optional[str] = typer.Option(None, help="write the results here (JSON), STEM.items.jsonl and STEM.png"),
    model: str = typer.Option("smollm2-135m", help="smollm2-135m or a local HF folder"),
    json_out: bool = typer.Option(False, "--json", help="print the results as JSON on stdout (no table)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """HeadHunter: greedily pick heads whose SoftPAG-perturbed copy gives the best guidance on the tuning items;
    report plain vs guided (hunted heads) vs guided (random heads) accuracy on the evaluation items."""
    import torch

    from ..data.tasks.user_file import is_task_file, load_file
    from ..steer.headhunter import run_headhunt

    if threads < 0:
        raise fail(f"--threads must be >= 0 (0 = torch default), got {threads}")
    if threads:
        torch.set_num_threads(threads)
    ug, sg = _floats(u_grid, "--u-grid"), _floats(s_grid, "--s-grid")
    try:
        the_task = load_file(task) if is_task_file(task) else task
        out = run_headhunt(
            the_task,
            tune_on,
            eval_on,
            seed,
            rounds,
            per_round,
            u,
            scale,
            pool,
            prescreen_layers,
            ug,
            sg,
            n_random,
            batch_size,
            save=save,
            model_name=model,
            progress=not quiet,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise fail(str(exc)) from None
    if json_out:
        typer.echo(json.dumps(out, default=str))
        return
    st = out["results"]["stats"]
    t = Table(
        title=f"HeadHunter on {out['task']}: heads {', '.join(out['search']['heads'])}; evaluated on {out['eval_on']} items"
    )
    for c in ("", "heads", "u", "s", "accuracy", "95% CI", "vs plain (paired 95%)"):
        t.add_column(c)
    p = st["plain"]
    t.add_row("plain", "-", "-", "-", f"{p['value']:.3f}", f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]", "")
    for name, sg_ in out["strength"].items():
        a, d = st[name], st[f"{name}_vs_plain"]
        t.add_row(
            name,
            ",".join(sg_["heads"]),
            f"{sg_['u']:g}",
            f"{sg_['scale']:g}",
            f"{a['value']:.3f}",
            f"[{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]",
            f"{d['value']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]",
        )
    console.print(t)
    if save:
        console.print(f"wrote {save} and {out.get('plot')} in {out['seconds']} s")
