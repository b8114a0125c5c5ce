"""``headlab steer``: tune a training-free head intervention and measure it (see headlab.steer.run).

One sub-command per method, each with the options it uses:

headlab steer zerotuning --task sst2 --tune-on 200 --eval-on 600 --out tuned.json
headlab steer apply --edits tuned.json --task mmlu --eval-on 200
headlab steer ablate --sites retrieval:top20 --atlas scan/heads.json --mode uniform --task needle
headlab steer ablate --sites L3H1 --mode zero --task my_items.jsonl --tune-on 0 --json
headlab steer guide "The capital of France is" --sites L5H1,L7 --u 0.5 --scale 1.0
headlab steer headhunt --task sst2 --tune-on 16 --eval-on 120 --prescreen-layers 2 --rounds 2 --out hunt.json

The older spellings still work: ``headlab steer --config FILE ...`` (= ``apply --edits FILE``), ``--save``
(= ``--out``), ``--n-tokens`` (= ``--length``) and a METHOD given after the options.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import _common as C
from . import _device as _dev

console = Console()

METHODS = ("zerotuning", "act", "redistribute", "reinforce", "emphasize", "inject", "ablate")
TUNE, GUIDE = "Methods (tune on one split, evaluate on another)", "Guidance"
#: options that take no value: the old ``headlab steer [OPTIONS] METHOD`` form is read past them
_FLAGS = {"--per-head", "--json", "--quiet", "-q"}


class _SteerGroup(C.HeadlabGroup):
    """``headlab steer METHOD ...`` with one sub-command per method; the old forms are rewritten to it:
    ``steer --config FILE ...`` -> ``steer apply --config FILE ...`` and ``steer [OPTIONS] METHOD ...`` ->
    ``steer METHOD [OPTIONS] ...``. An unknown first word is an unknown method, named with the valid ones."""

    def parse_args(self, ctx, args):
        args = _old_form(list(args), set(self.commands), ctx)
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            raise C.USAGE_ERROR(f"unknown steering method {args[0]!r}; valid: {', '.join(self.commands)}", ctx)
        return super().parse_args(ctx, args)


def _old_form(args: list[str], commands: set[str], ctx: Any = None) -> list[str]:
    if not args or not args[0].startswith("-") or args[0] in ("--help", "-h"):
        return args
    i = 0
    while i < len(args):  # the first word that is not an option or an option's value
        a = args[i]
        if not a.startswith("-"):
            return [a, *args[:i], *args[i + 1 :]] if a in commands else args
        i += 1 if (a in _FLAGS or "=" in a) else 2
    if any(a.split("=")[0] in ("--config", "--edits") for a in args):
        return ["apply", *args]
    raise C.USAGE_ERROR(
        f"give a steering method first: headlab steer METHOD [OPTIONS], METHOD one of {', '.join(sorted(commands))} "
        "(see headlab steer --help)",
        ctx,
    )


app = C.typer_app(
    "Steer heads without training: tune an edit on one split, report baseline vs steered on a disjoint one "
    "(95% intervals, paired test); or apply saved edits; or guide generation through perturbed heads.",
    cls=_SteerGroup,
)


def _opt(default: Any, *names: str, **kw: Any) -> Any:
    return typer.Option(default, *names, **kw)


#: (name, type, option) of the options every method takes
COMMON: list[tuple[str, Any, Any]] = [
    (
        "task",
        str,
        _opt(
            "sst2",
            "--task",
            help="sst2 | mmlu | squad | needle, or your own FILE.jsonl / FILE.csv with rows "
            "{prompt, choices, label} (choice task) or {prompt, answers} (generation task)",
        ),
    ),
    ("tune_on", int, _opt(40, "--tune-on", help="tuning items (disjoint from the evaluation items)")),
    ("eval_on", int, _opt(100, "--eval-on", help="evaluation items")),
    ("seed", int, _opt(0, "--seed", help="split / bootstrap seed")),
    (
        "out",
        Optional[Path],
        _opt(
            None,
            "--out",
            help="results JSON (the edits, accuracies, per-item records in STEM.items.jsonl, a plot STEM.png); "
            "default headlab-report/steer/METHOD-TASK.json",
        ),
    ),
    ("save", Optional[Path], C.alias("--save")),
    ("model", str, C.model_option()),
    ("batch_size", int, _opt(8, "--batch-size", help="prompts per forward pass")),
    ("length", int, _opt(512, "--length", help="needle: haystack length in tokens")),
    (
        "needle_seed",
        int,
        _opt(0, "--needle-seed", help="needle: seed of the generated haystacks and pass keys (another seed, other items)"),
    ),
    ("n_tokens", Optional[int], C.alias("--n-tokens")),
    (
        "icl_shots",
        int,
        _opt(0, "--icl-shots", help="choice tasks: also evaluate a K-shot ICL prompt (demos from the tuning split)"),
    ),
    ("prompt_field", str, _opt("prompt", "--prompt-field", help="task file: field holding the prompt")),
    (
        "choices_field",
        str,
        _opt("choices", "--choices-field", help="task file: field holding the choices (JSON list, or text split on --sep)"),
    ),
    ("label_field", str, _opt("label", "--label-field", help="task file: field holding the right choice (index or text)")),
    (
        "answers_field",
        str,
        _opt("answers", "--answers-field", help="task file: field holding the accepted answers (generation tasks)"),
    ),
    ("sep", str, _opt("|", "--sep", help="task file (CSV): separator inside the choices / answers field")),
    ("threads", int, C.threads_option()),
    ("json_out", bool, C.json_option()),
    ("quiet", bool, C.quiet_option()),
    ("device", Optional[str], _dev.device_option()),
    ("dtype", Optional[str], _dev.dtype_option()),
    ("device_map", Optional[str], _dev.device_map_option()),
]

BLOCK = "layers per block in the search (0 = the method's default: {})"
#: per method: its docstring and its own options
SPECIFIC: dict[str, tuple[str, list[tuple[str, Any, Any]]]] = {
    "zerotuning": (
        "ZeroTuning: search the initial-token attention scaling per layer block on the tuning items.",
        [
            ("block", int, _opt(0, "--block", help=BLOCK.format(5))),
            ("per_head", bool, _opt(False, "--per-head", help="also profile single heads in the kept layers")),
        ],
    ),
    "act": (
        "ACT: search which layer blocks to redistribute sink attention in, on the tuning items.",
        [("block", int, _opt(0, "--block", help=BLOCK.format(3)))],
    ),
    "redistribute": (
        "Redistribute attention toward the context span (VAR-style); p tuned on the tuning items.",
        [("param", Optional[float], _opt(None, "--param", help="p: apply this value without the tuning competition"))],
    ),
    "reinforce": (
        "Reinforce the most context-sensitive heads (VHR-style); alpha tuned on the tuning items.",
        [("param", Optional[float], _opt(None, "--param", help="alpha: apply this value without the tuning competition"))],
    ),
    "emphasize": (
        "Emphasise the context tokens the question attends to (dual-stream selection, arXiv 2501.12206); alpha and "
        "uniform vs VHD head weights tuned on the tuning items.",
        [("param", Optional[float], _opt(None, "--param", help="alpha: apply this value on every head, no tuning"))],
    ),
    "inject": (
        "Inject a task embedding at fitted sites (choice tasks; fitted on the tuning items).",
        [],
    ),
    "ablate": (
        "Ablate the given heads (no tuning: --tune-on 0 is fine).",
        [
            (
                "sites",
                str,
                _opt(..., "--sites", help="site selector: 'L3H1,L5', 'retrieval:top20' (with --atlas), 'random:20:0'"),
            ),
            ("atlas", Optional[str], _opt(None, "--atlas", help="heads.json from `headlab scan` for atlas selectors")),
            ("mode", str, _opt("uniform", "--mode", help="zero | mean | uniform")),
        ],
    ),
    "apply": (
        "Apply saved edits (as a method's --out wrote them) to a task: the tuning items are skipped.",
        [
            ("edits", Optional[str], _opt(None, "--edits", help="edits JSON written by a method's --out (required)")),
            ("config", Optional[str], C.alias("--config")),
        ],
    ),
}


def _run(method: str, kw: dict) -> None:
    """What every method sub-command does: check, run headlab.steer.run.steer, print and write."""
    from ..data.tasks.user_file import is_task_file, load_file
    from ..steer.run import steer as run_steer

    C.set_threads(kw["threads"])
    if kw["icl_shots"] < 0:
        raise ValueError(f"--icl-shots must be >= 0, got {kw['icl_shots']}")
    config = None
    if method == "apply":
        config = C.pick(kw["edits"], kw["config"])
        if config is None:
            raise ValueError("apply needs --edits FILE (the JSON a method's --out wrote)")
    out = C.pick(kw["out"], kw["save"]) or C.REPORT / "steer" / f"{method}-{Path(kw['task']).stem}.json"
    C.check_out_file(Path(out))
    length = C.pick(kw["length"], kw["n_tokens"])
    opts: dict[str, Any] = {
        "batch_size": kw["batch_size"],
        "mode": kw.get("mode", "uniform"),
        "per_head": kw.get("per_head", False),
        "param": kw.get("param"),
        "icl_shots": kw["icl_shots"],
    }
    for key in ("sites", "atlas", "block"):
        if kw.get(key):
            opts[key] = kw[key]
    if kw["needle_seed"] < 0:
        raise ValueError(f"--needle-seed must be >= 0, got {kw['needle_seed']}")
    task_kw = (
        {"n_tokens": length, "n": kw["tune_on"] + kw["eval_on"], "seed": kw["needle_seed"]} if kw["task"] == "needle" else None
    )
    the_task = kw["task"]
    if is_task_file(the_task):
        the_task = load_file(
            the_task,
            prompt_field=kw["prompt_field"],
            choices_field=kw["choices_field"],
            label_field=kw["label_field"],
            answers_field=kw["answers_field"],
            sep=kw["sep"],
        )
    device, dtype, device_map = kw["device"], kw["dtype"], kw["device_map"]
    placed = device is not None or dtype is not None or device_map is not None
    res_all = run_steer(
        None if method == "apply" else method,
        the_task,
        config=config,
        tune_on=kw["tune_on"],
        eval_on=kw["eval_on"],
        seed=kw["seed"],
        save=str(out),
        model_name=kw["model"],
        task_kw=task_kw,
        progress=not kw["quiet"],
        model_tok=_dev.load_model(kw["model"], device, dtype, device_map) if placed else None,
        **opts,
    )
    if kw["json_out"]:
        typer.echo(json.dumps(res_all, default=str))
    else:
        _table(res_all)
    C.note(f"wrote {out} and {res_all.get('plot')} in {res_all['seconds']} s")


def _table(out: dict) -> None:
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
        console.print(f"edit: {escape(d)}", highlight=False)


def _method_command(method: str) -> None:
    """Register ``headlab steer METHOD`` with the common options and the method's own."""
    doc, own = SPECIFIC[method]
    spec = COMMON[:4] + own + COMMON[4:]

    def command(**kw: Any) -> None:
        _run(method, kw)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=tp) for name, tp, opt in spec]
    )
    command.__annotations__ = {name: tp for name, tp, _ in spec}
    command.__name__ = command.__qualname__ = f"steer_{method}"
    command.__doc__ = doc + "\n\nPrints baseline vs steered with 95% intervals and writes --out (JSON, items, plot)."
    app.command(method, rich_help_panel=TUNE)(command)


for _m in (*METHODS, "apply"):
    _method_command(_m)


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name} {text!r}: give comma-separated numbers, e.g. 0.5,1") from None
    if not vals:
        raise typer.BadParameter(f"{name} is empty: give at least one number")
    return vals


@app.command("guide", rich_help_panel=GUIDE)
def guide_cmd(
    prompt: str = typer.Argument(..., help="the prompt to continue"),
    sites: str = typer.Option(..., help="heads to perturb: 'L5H1,L7' (a layer = all its heads), 'all'"),
    u: float = typer.Option(1.0, help="SoftPAG blend toward the identity, 0..1 (1 = PAG: o_i = v_i)"),
    scale: float = typer.Option(1.0, help="guidance scale s: logits + s·(logits − logits_perturbed)"),
    max_new_tokens: int = typer.Option(40, help="tokens to generate (greedy)"),
    chat: bool = typer.Option(False, "--chat", help="wrap the prompt in the tokenizer's chat template"),
    model: str = C.model_option(),
    threads: int = C.threads_option(),
    json_out: bool = C.json_option("print {plain, guided} as JSON"),
    quiet: bool = C.quiet_option(),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
) -> None:
    """Greedy continuation of PROMPT without and with perturbed-attention guidance (SoftPAG on --sites)."""
    from ..steer.guidance import guided_generate

    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    C.set_threads(threads)
    m, tok = _dev.load_model(model, device, dtype, device_map)
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
    if json_out:
        typer.echo(json.dumps({"sites": sites, "u": u, "scale": scale, **outs}))
        return
    console.print(f"[bold]plain[/]: {escape(outs['plain'])}")
    console.print(f"[bold]guided[/] (sites {escape(sites)}, u={u}, s={scale}): {escape(outs['guided'])}")


@app.command("headhunt", rich_help_panel=GUIDE)
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
    u_grid: str = typer.Option("0.5,1", help="comma-separated u values tried for the final head set on the tuning items"),
    s_grid: str = typer.Option("0.5,1,2,4", help="comma-separated s values tried for the final head set on the tuning items"),
    n_random: int = typer.Option(2, help="random head sets of the same size to compare with (each tuned the same way)"),
    batch_size: int = typer.Option(16, help="items per evaluation pass"),
    threads: int = C.threads_option(),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="results JSON, per-item records STEM.items.jsonl and a plot STEM.png (default headlab-report/steer/headhunt-TASK.json)",
    ),
    save: Optional[Path] = C.alias("--save"),
    model: str = C.model_option(),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
    device: Optional[str] = _dev.device_option(),
    dtype: Optional[str] = _dev.dtype_option(),
    device_map: Optional[str] = _dev.device_map_option(),
) -> None:
    """HeadHunter: greedily pick heads whose SoftPAG-perturbed copy gives the best guidance on the tuning items;
    report plain vs guided (hunted heads) vs guided (random heads) accuracy on the evaluation items."""
    from ..data.tasks.user_file import is_task_file, load_file
    from ..steer.headhunter import run_headhunt

    C.set_threads(threads)
    ug, sg = _floats(u_grid, "--u-grid"), _floats(s_grid, "--s-grid")
    path = C.pick(out, save) or C.REPORT / "steer" / f"headhunt-{Path(task).stem}.json"
    C.check_out_file(path)
    the_task = load_file(task) if is_task_file(task) else task
    placed = device is not None or dtype is not None or device_map is not None
    res = run_headhunt(
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
        save=str(path),
        model_name=model,
        model_tok=_dev.load_model(model, device, dtype, device_map) if placed else None,
        progress=not quiet,
    )
    if json_out:
        typer.echo(json.dumps(res, default=str))
    else:
        _headhunt_table(res)
    C.note(f"wrote {path} and {res.get('plot')} in {res['seconds']} s")


def _headhunt_table(out: dict) -> None:
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
