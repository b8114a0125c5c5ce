"""Readers that turn a command's output folder into (raw dict, per-item/per-trial records, files)."""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def lab(name: str):
    """Collector for ``headlab lab NAME --out DIR``: DIR/NAME.json, DIR/NAME.records.jsonl, DIR/NAME.png."""

    def collect(out: Path) -> tuple[dict, list[dict], dict]:
        out = Path(out)
        raw = json.loads((out / f"{name}.json").read_text())
        rec = out / f"{name}.records.jsonl"
        records = read_jsonl(rec) if rec.exists() else []
        files = {"raw": f"{name}.json", "plot": f"{name}.png", "records": rec.name if rec.exists() else None}
        return raw, records, files

    return collect


def paired(stem: str):
    """Collector for the paired-timing benchmarks (``headlab bench capture|lse --out DIR``): DIR/STEM.json,
    DIR/STEM.records.jsonl, DIR/STEM.png and DIR/table.md (see :func:`headlab.bench.paired.write_run`)."""

    def collect(out: Path) -> tuple[dict, list[dict], dict]:
        out = Path(out)
        raw = json.loads((out / f"{stem}.json").read_text())
        rec = out / f"{stem}.records.jsonl"
        return raw, read_jsonl(rec), {"raw": f"{stem}.json", "plot": f"{stem}.png", "records": rec.name, "table": "table.md"}

    return collect


def steer(*stems: str):
    """Collector for one or more ``headlab steer ... --save DIR/STEM.json`` runs (STEM.png, STEM.items.jsonl)."""

    def collect(out: Path) -> tuple[dict, list[dict], dict]:
        out = Path(out)
        raw, records = {}, []
        for stem in stems:
            raw[stem] = json.loads((out / f"{stem}.json").read_text())
            items = out / f"{stem}.items.jsonl"
            records += [{"run": stem, **r} for r in (read_jsonl(items) if items.exists() else [])]
        files = {
            "raw": [f"{s}.json" for s in stems],
            "plot": [f"{s}.png" for s in stems],
            "records": [f"{s}.items.jsonl" for s in stems],
        }
        return raw, records, files

    return collect
