"""``headlab doctor``: check the installation and print the command that fixes each problem."""

from __future__ import annotations

import json

import typer

from . import _common as C


def doctor(
    json_out: bool = C.json_option("print the checks as JSON on stdout"),
    quiet: bool = C.quiet_option("print only the problems"),
) -> None:
    """Check torch, transformers, the embedded model and data wheels, the extras, Chromium, devices, threads and
    the model cache; print the fix for each problem. Exit 1 when a required check fails."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..doctor import as_dicts, run_checks

    checks = run_checks()
    failed = [c for c in checks if c.status == "fail"]
    if json_out:
        typer.echo(json.dumps({"ok": not failed, "checks": as_dicts(checks)}))
    else:
        t = Table(title="headlab doctor")
        for col in ("check", "status", "detail", "fix"):
            t.add_column(col, overflow="fold")
        color = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            if quiet and c.status == "ok":
                continue
            t.add_row(escape(c.name), f"[{color[c.status]}]{c.status}[/]", escape(c.detail), escape(c.fix))
        Console().print(t)
        if not quiet:
            Console(stderr=True).print(
                "[red]required checks failed: run the fix commands above[/]"
                if failed
                else "[green]headlab is ready[/] (warnings are optional parts)"
            )
    if failed:
        raise typer.Exit(1)
