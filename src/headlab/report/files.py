"""Scan outputs: heads.json, heads.csv and meta.json, written atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..io import atomic_write_json, atomic_write_text


def write_records(out: Path, recs: list[dict], metrics: list[str], name: str = "heads") -> None:
    atomic_write_json(out / f"{name}.json", recs)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["layer", "head", *metrics, "roles"])
    for r in recs:
        w.writerow([r["layer"], r["head"], *("" if r.get(m) is None else r[m] for m in metrics), " ".join(r["roles"])])
    atomic_write_text(out / f"{name}.csv", buf.getvalue())


def write_meta(out: Path, meta: dict) -> None:
    atomic_write_json(out / "meta.json", meta)
