"""Result type shared by the lab experiments, with atomic JSON + PNG writers.

Fields of :class:`LabResult` (all written to ``NAME.json``):
- ``name``: experiment name (file stem of the outputs);
- ``claim``: the paper's claim in words, with the paper cited;
- ``measured``: dict of the measured numbers (curves as lists, summaries as floats);
- ``reproduced``: bool, *computed* from ``measured`` by the rule below, never hard-coded;
- ``rule``: the decision rule in words, with its thresholds;
- ``config``: the exact configuration (sizes, steps, seed) that produced the numbers.
``curves`` (not in the JSON beyond what ``measured`` holds) are drawn by the experiment's ``plot`` function.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIELDS = ("name", "claim", "measured", "reproduced", "rule", "config")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through headlab.io when it exists, else temp file in the same folder + os.replace."""
    try:
        from headlab.io import atomic_write_bytes  # type: ignore
    except Exception:  # noqa: BLE001 - headlab.io may not exist yet
        atomic_write_bytes = None
    if atomic_write_bytes is not None:
        atomic_write_bytes(path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class LabResult:
    name: str
    claim: str
    measured: dict[str, Any]
    reproduced: bool
    rule: str
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reproduced"] = bool(d["reproduced"])
        return d

    def write(self, out_dir: str | os.PathLike, plot: Callable[["LabResult", Any], None] | None = None) -> dict[str, Path]:
        """Write ``out_dir/NAME.json`` and (given ``plot(result, fig)``) ``out_dir/NAME.png``; return paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / f"{self.name}.json"}
        _atomic_write_bytes(paths["json"], (json.dumps(self.to_dict(), indent=2, default=float) + "\n").encode())
        if plot is not None:
            fig = plt.figure(figsize=(11, 4))
            try:
                plot(self, fig)
                fig.tight_layout()
                import io
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=110)
            finally:
                plt.close(fig)
            paths["png"] = out / f"{self.name}.png"
            _atomic_write_bytes(paths["png"], buf.getvalue())
        return paths


def print_table(title: str, columns: list[str], rows: list[list[Any]], result: LabResult | None = None) -> None:
    """Print a rich table (and the verdict line when a result is given)."""
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
        verdict = "[green]reproduced[/green]" if result.reproduced else "[red]not reproduced[/red]"
        console.print(f"claim: {result.claim}\nrule: {result.rule}\nverdict: {verdict}")
