"""Result type shared by the lab experiments, with atomic JSON + PNG + JSONL writers.

An experiment returns what it measured and how; it does not judge itself. Whether a run meets a paper's
claim is decided by the repository's claims harness (``repro/``, ``headlab reproduce NAME``), whose rules
are fixed in code before any run.

Fields of :class:`LabResult` (all but ``records`` written to ``NAME.json``):
- ``name``: run name (file stem of the outputs; the harness names runs after the claims they serve);
- ``measured``: dict of the measured numbers (curves as lists, summaries as floats);
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

FIELDS = ("name", "measured", "config")


@dataclass
class LabResult:
    name: str
    measured: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "config": self.config}

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


def each_item(name: str, items: list, fn: Callable[[Any], Any], quiet: bool = False) -> list:
    """``[fn(item) for item in items]`` with a progress bar named ``name`` on stderr (none when ``quiet``)."""
    from headlab.progress import progress_bar

    out = []
    with progress_bar(name, len(items), quiet=quiet) as advance:
        for it in items:
            out.append(fn(it))
            advance()
    return out


def lab_result(name: str, measured: dict, config: dict, records: list[dict] | None = None) -> LabResult:
    """A LabResult of run ``name`` (the measured numbers, the configuration that produced them, raw rows)."""
    return LabResult(name, measured, config, list(records or []))


def print_table(title: str, columns: list[str], rows: list[list[Any]], result: LabResult | None = None) -> None:
    """Print a rich table (on stdout: these are the results); ``result`` adds where its files are judged."""
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
        Console(stderr=True).print(
            f"run {result.name!r}: in a checkout, `headlab reproduce {result.name}` reruns it at its registered size "
            "and judges it against the paper's claim",
            highlight=False,
        )
