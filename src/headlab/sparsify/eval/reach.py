"""``headlab sparsify reach --out DIR``: the reachability tables as a results folder.

Writes ``reach.json`` (config, one row per pattern and length, PowerAttention's popcount bound),
``reach.records.jsonl`` (one record per pattern, length and layer), ``table.md`` and ``reach.png``
(coverage against layers), all at once through :func:`headlab.io.atomic_dir`. The numbers are exact
(boolean matrix products, :mod:`headlab.patterns.reach`); PowerAttention (arXiv 2503.03588) states that
power-of-two block links reach every distance n in popcount(n) hops, i.e. full coverage after at most
⌊log2(n_blocks − 1)⌋ + 1 layers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ...io import atomic_dir, atomic_write_json, atomic_write_text
from ...patterns.reach import Reach, default_items, format_table, popcount_bound, reach_table

BLOCK = 64  # block size of the block-level patterns in default_items


def compute(length: int = 2048, block_length: int = 32768, max_layers: int = 64) -> dict:
    """Reach of every default pattern: token- and block-level at ``length``, block-level at ``block_length``."""
    for name, val, lo in (
        ("length", length, 2 * BLOCK),
        ("block_length", block_length, 2 * BLOCK),
        ("max_layers", max_layers, 1),
    ):
        if not isinstance(val, int) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {val!r}")
    items = default_items(length)
    tok = [it for it in items if it[2] is None]
    blk = [it for it in items if it[2] is not None]
    rows = reach_table(tok, length, max_layers) + reach_table(blk, length, max_layers)
    rows_long = reach_table(blk, block_length, max_layers)
    return {
        "config": {"length": length, "block_length": block_length, "max_layers": max_layers, "block": BLOCK},
        "rows": [_row(r) for r in rows],
        "rows_long": [_row(r) for r in rows_long],
        "popcount_bound": {str(n): popcount_bound(-(-n // BLOCK)) for n in (length, block_length)},
    }


def _row(r: Reach) -> dict:
    d = dataclasses.asdict(r)
    stuck = len(r.coverage) > 1 and r.coverage[-1] == r.coverage[-2]
    d["never"] = r.layers_to_full is None and stuck
    return d


def _reach(d: dict) -> Reach:
    return Reach(**{k: v for k, v in d.items() if k != "never"})


def table(raw: dict) -> str:
    c = raw["config"]
    nb = -(-c["block_length"] // BLOCK)
    return (
        f"Length {c['length']} tokens:\n\n"
        + format_table([_reach(r) for r in raw["rows"]])
        + f"\n\nBlock-level patterns at {c['block_length']} tokens:\n\n"
        + format_table([_reach(r) for r in raw["rows_long"]])
        + f"\n\nPowerAttention bound at {c['block_length']} tokens ({nb} blocks of {BLOCK}): max popcount of a block "
        f"distance = {raw['popcount_bound'][str(c['block_length'])]} layers.\n"
    )


def records(raw: dict) -> list[dict]:
    out = []
    for r in raw["rows"] + raw["rows_long"]:
        for layer, (cov, fld) in enumerate(zip(r["coverage"], r["last_field"]), start=1):
            out.append(
                {
                    "pattern": r["name"],
                    "length": r["length"],
                    "unit": r["unit"],
                    "layer": layer,
                    "coverage": cov,
                    "last_field": fld,
                }
            )
    return out


def plot(raw: dict, path: Path) -> None:
    """Coverage of causal pairs against stacked layers, one panel per length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = raw["config"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    color = {r["name"]: f"C{i}" for i, r in enumerate(raw["rows"])}  # one colour per pattern in both panels
    for ax, rows, n in ((axes[0], raw["rows"], c["length"]), (axes[1], raw["rows_long"], c["block_length"])):
        for r in rows:
            xs = list(range(1, len(r["coverage"]) + 1))
            ax.plot(xs, r["coverage"], marker=".", label=r["name"], color=color.get(r["name"]))
        ax.axvline(raw["popcount_bound"][str(n)], color="grey", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("stacked layers")
        ax.set_title(f"{n} tokens (dotted: PowerAttention bound)")
    axes[0].set_ylabel("fraction of causal pairs reachable")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(raw: dict, out: str | Path, command: str) -> Path:
    """The results folder ``out`` (reach.json, reach.records.jsonl, table.md, reach.png), atomically."""
    out = Path(out)
    with atomic_dir(out) as stage:
        atomic_write_json(stage / "reach.json", {"command": command, **raw})
        atomic_write_text(stage / "reach.records.jsonl", "".join(json.dumps(x) + "\n" for x in records(raw)))
        atomic_write_text(stage / "table.md", table(raw))
        plot(raw, stage / "reach.png")
    return out
