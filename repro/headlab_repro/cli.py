"""``headlab reproduce`` (the harness's command; also ``python -m headlab_repro``): rerun any published number
from its registered command.

headlab reproduce --list                      every registered result, its cost and committed outcome
headlab reproduce NAME [--out DIR]            rerun NAME's command(s) into DIR, write DIR/result.json
headlab reproduce NAME --check [--smoke]      ... and compare with results/NAME (exit 1 when a number moves)
headlab reproduce NAME --from RUN --out DIR   judge a finished run of NAME's registered command (e.g. continued
                                              with --resume) and write DIR/result.json, without rerunning
headlab reproduce --render                    rewrite the results tables in README.md and docs/**/*.md
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def reproduce(
    name: str | None = typer.Argument(None, help="a registered result (see --list)"),
    out: Path | None = typer.Option(
        None, help="run folder (default headlab-report/reproduce/NAME); results/NAME refreshes the committed result"
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="compare the rerun with the committed result; exit 1 when a number moves beyond the stated tolerance",
    ),
    smoke: bool = typer.Option(False, "--smoke", help="the registered reduced size (CI), compared with results/NAME/smoke"),
    list_: bool = typer.Option(False, "--list", help="list every registered result with its cost"),
    render: bool = typer.Option(False, "--render", help="rewrite the marker blocks of README.md and docs/**/*.md from results/"),
    results: Path | None = typer.Option(None, help="committed results folder (default: the checkout's results/)"),
    from_: Path | None = typer.Option(
        None,
        "--from",
        help="a finished run folder made by NAME's registered command (long runs continued with --resume): "
        "judge it and write --out without rerunning",
    ),
    allow_dirty: bool = typer.Option(
        False,
        "--allow-dirty",
        help="run a full-size claim from a tree with uncommitted changes (the diff is stored beside the result, "
        "which is then exploratory)",
    ),
) -> None:
    """Rerun a published result from its registered command, check it, or render the tables from results/."""
    from .claims import all_claims
    from .evidence import label, registrations
    from .record import read_result, repo_root, results_root
    from .render import outcome_word

    root = results or results_root()
    if sum([list_, render, name is not None]) != 1:
        console.print("[red]error:[/] give exactly one of NAME, --list or --render")
        raise typer.Exit(2)
    if list_:
        t = Table(title=f"registered results ({root})")
        t.add_column("name", no_wrap=True)
        for c in ("table", "cost", "smoke", "committed outcome", "evidence", "registered", "command"):
            t.add_column(c, overflow="fold")
        for c in all_claims().values():
            p = root / c.name / "result.json"
            if p.exists():
                res = read_result(p.parent)
                state, lab = outcome_word(res), label(res)
                ev, reg = lab["evidence"], (lab["registered_commit"] or "?")[:10]
            else:
                state, ev, reg = "not run", "–", (registrations().get(c.name) or "?")[:10]
            t.add_row(
                c.name,
                c.table,
                f"~{c.cost_s:.0f} s",
                f"~{c.smoke_cost_s:.0f} s" if c.smoke else "–",
                state,
                ev,
                reg,
                "\n".join(c.command),
            )
        console.print(t)
        return
    if render:
        from .render import render_files

        repo = repo_root() or Path.cwd()
        changed = render_files(repo, root)
        console.print(
            "rewrote "
            + (", ".join(str(p.relative_to(repo)) for p in changed) if changed else "nothing (tables already equal the results)")
        )
        return
    from .runner import adopt

    assert name is not None  # exactly one of NAME / --list / --render, checked above
    from .runner import reproduce as run

    if from_ is not None and (check or smoke):
        console.print("[red]error:[/] --from adopts a finished full-size run; it does not combine with --check or --smoke")
        raise typer.Exit(2)
    try:
        if from_ is not None:
            res, problems = adopt(name, from_, out, root=root)
        else:
            res, problems = run(
                name,
                out,
                smoke=smoke,
                check=check,
                root=root,
                log=lambda s: console.print(s, markup=False),
                allow_dirty=allow_dirty,
            )
    except (ValueError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    color = {True: "green", False: "yellow", None: "red"}[res["rule_met"]]
    console.print(f"[{color}]{res['verdict']}[/{color}]", soft_wrap=True, highlight=False)
    console.print(
        f"evidence: {res.get('evidence')}" + (f" ({'; '.join(res['evidence_why'])})" if res.get("evidence_why") else "")
    )
    console.print(f"wrote {out or 'headlab-report/reproduce/' + name}/result.json in {res['seconds']} s")
    if check:
        if problems:
            for p in problems:
                console.print(f"[red]moved:[/] {p}", soft_wrap=True)
            raise typer.Exit(1)
        console.print(f"check: every number equals the committed result within its tolerance ({res['tolerance']['kind']})")


def register(app: typer.Typer) -> None:
    """The ``headlab.commands`` entry point: add ``reproduce`` to headlab's CLI (Research group)."""
    app.command("reproduce", rich_help_panel="Research")(reproduce)


def main() -> None:
    """``python -m headlab_repro ...``: the same command without going through ``headlab``."""
    typer.run(reproduce)
