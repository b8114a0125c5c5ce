"""Result type shared by the lab experiments, with atomic JSON + PNG + JSONL writers.

The claim, the rule and the code that decides live in the claims registry
(:mod:`headlab.results.lab_claims`), fixed before any run; :func:`judged` applies them to the measured
numbers, so the verdict is always computed, never written by hand.

Fields of :class:`LabResult` (all but ``records`` written to ``NAME.json``):
- ``name``: experiment name (file stem of the outputs);
- ``claim``: the paper's claim in words, with the paper cited;
- ``measured``: dict of the measured numbers (curves as lists, summaries as floats);
- ``rule_met``: bool, the registered rule's outcome on ``measured``;
- ``verdict``: the rule's outcome with the numbers it used (one clause per condition);
- ``headline``: the registered headline numbers (value, interval, item count);
- ``rule``: the decision rule in words;
- ``config``: the exact configuration (sizes, steps, seed) that produced the numbers;
- ``records``: raw per-trial / per-evaluation rows, written to ``NAME.records.jsonl``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from headlab.io import atomic_write_bytes, atomic_write_text  # noqa: E402

FIELDS = ("name", "claim", "measured", "rule_met", "verdict", "headline", "rule", "config")


@dataclass
class LabResult:
    name: str
    claim: str
    measured: dict[str, Any]
    rule_met: bool
    verdict: str
    rule: str
    config: dict[str, Any] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "claim": self.claim,
            "measured": self.measured,
            "rule_met": bool(self.rule_met),
            "verdict": self.verdict,
            "headline": self.headline,
            "rule": self.rule,
            "config": self.config,
        }

    def write(self, out_dir: str | os.PathLike, plot: Callable[[LabResult, Any], None] | None = None) -> dict[str, Path]:
        """Write ``NAME.json``, ``NAME.records.jsonl`` and (given ``plot(result, fig)``) ``NAME.png``."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        paths = {"json": out / f"{self.name}.json", "records": out / f"{self.name}.records.jsonl"}
        if plot is not None:
            fig = plt.figure(figsize=(11, 4))
            try:
                plot(self, fig)
                fig.tight_layout()
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
            finally:
                plt.close(fig)
            paths["png"] = atomic_write_bytes(out / f"{self.name}.png", buf.getvalue())
        atomic_write_text(paths["records"], "".join(json.dumps(r, default=float) + "\n" for r in self.records))
        atomic_write_text(paths["json"], json.dumps(self.to_dict(), indent=1, default=float) + "\n")
        return paths


def judged(name: str, measured: dict, config: dict, records: list[dict] | None = None) -> LabResult:
    """A LabResult whose claim, rule and verdict come from the registered claim ``name``."""
    from headlab.results.claims import get

    claim = get(name)
    nums = claim.summarize({"measured": measured, "config": config})
    j = claim.judge(nums)
    return LabResult(
        name,
        f"{claim.claim} ({claim.paper})",
        measured,
        j["rule_met"],
        j["verdict"],
        claim.rule,
        config,
        nums,
        list(records or []),
    )


def print_table(title: str, columns: list[str], rows: list[list[Any]], result: LabResult | None = None) -> None:
    """Print a rich table (and the rule's outcome when a result is given)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r])
    console = Console()
    console.print(table)
    if result is not None:
        color = "green" if result.rule_met else "red"
        console.print(
            f"claim: {result.claim}\nrule: {result.rule}\n[{color}]{result.verdict}[/{color}]", markup=True, highlight=False
        )
