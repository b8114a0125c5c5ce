"""No `headlab bench ...` command writes into the committed results/ folder unless --out says so: a plain
run must never overwrite a registered result or a hand-written file."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from headlab.cli import app


@pytest.mark.parametrize("name", ["capture", "mechanisms", "kernels", "lse"])
def test_bench_default_out_is_not_results(name):
    root = typer.main.get_command(app)
    bench = root.commands["bench"]  # type: ignore[attr-defined]
    assert name in bench.commands, f"headlab bench {name} is missing; have {sorted(bench.commands)}"
    outs = [p for p in bench.commands[name].params if p.name == "out"]
    assert outs, f"headlab bench {name} has no --out"
    default = Path(str(outs[0].default))
    assert default.parts[0] == "headlab-report", f"headlab bench {name} defaults to {default}"
