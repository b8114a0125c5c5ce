"""What the paired-timing benchmarks (``headlab bench capture``, ``headlab bench lse``) share: the atomic writing
of a run folder — STEM.json (the command, config, summaries and every sample), STEM.records.jsonl (one line per
sample), table.md and STEM.png. Their timing protocol (and :func:`spread`, the median and range of samples) is
:mod:`headlab.timing`'s."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from ..io import atomic_dir, atomic_write_json, atomic_write_text
from ..timing import spread

__all__ = ["spread", "write_run"]


def write_run(
    res: dict,
    out: str | Path,
    command: str,
    stem: str,
    table: Callable[[dict], str],
    plot: Callable[[dict, Path], None],
) -> Path:
    """Write ``res`` (``res["lengths"][n]`` holds ``pair_ratios`` and ``samples``) into the folder ``out``
    atomically; refuses an ``out`` that is a file and non-finite ratios (nothing is written then)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    bad = [n for n, r in res["lengths"].items() if not all(math.isfinite(x) for x in r["pair_ratios"])]
    if bad:
        raise ValueError(f"non-finite timing ratios at lengths {bad}")
    with atomic_dir(out) as stage:
        atomic_write_json(stage / f"{stem}.json", {"command": command, **res})
        recs = [s for r in res["lengths"].values() for s in r["samples"]]
        atomic_write_text(stage / f"{stem}.records.jsonl", "".join(json.dumps(s) + "\n" for s in recs))
        atomic_write_text(stage / "table.md", table(res))
        plot(res, stage / f"{stem}.png")
    return out
