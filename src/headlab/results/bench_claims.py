"""Claims of the no-model and timing benchmarks: reachability of sparse patterns (``headlab sparsify reach``)
and the cost of scan's streaming probes (``headlab bench capture``).

Rules and sizes are fixed here before the runs. PowerAttention (arXiv 2503.03588): with keys at
power-of-two block distances every distance n is reachable in popcount(n) hops, so a d-layer model sees
2^d blocks and full coverage needs O(log N) layers, where a sliding window's receptive field grows only
linearly with depth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .claims import Claim, Tolerance, number, register

BENCH = "bench"

# roles of the default patterns of ``headlab.patterns.reach.default_items`` (by name prefix)
ROLES = (
    ("power(64, window 1, sink 0) pure", "power_pure"),
    ("power(64, window 4, sink 1)", "power"),
    ("strided(64, local 4, stride 3)", "strided_4_3"),
    ("strided(64, local 16, stride 8)", "strided_16_8"),
    ("sink_window(", "sink_window"),
    ("window(", "window"),
    ("neighborhood(", "neighborhood"),
    ("halo(", "halo"),
)


def _role(name: str) -> str:
    return next(r for prefix, r in ROLES if name.startswith(prefix))


def _collect_reach(out: Path) -> tuple[dict, list[dict], dict]:
    """``headlab sparsify reach --out DIR``: DIR/reach.json, DIR/reach.records.jsonl, DIR/reach.png, DIR/table.md."""
    out = Path(out)
    raw = json.loads((out / "reach.json").read_text())
    rec = out / "reach.records.jsonl"
    records = [json.loads(x) for x in rec.read_text().splitlines() if x.strip()]
    return raw, records, {"raw": "reach.json", "plot": "reach.png", "records": rec.name, "table": "table.md"}


def _window_size(name: str) -> int:
    """``window(256)`` -> 256."""
    return int(name.split("(", 1)[1].rstrip(")"))


def _summary_reach(raw: dict) -> dict:
    """One number per pattern and length: layers until every token reaches every earlier token (NaN: never)."""
    out = {}
    bounds = raw["popcount_bound"]
    for r in raw["rows"] + raw["rows_long"]:
        full = r["layers_to_full"]
        out[f"{r['name']} @ {r['length']}"] = number(
            float("nan") if full is None else full,
            n=r["length"] // r["unit"] + (r["length"] % r["unit"] > 0),  # graph nodes: tokens or blocks
            role=_role(r["name"]),
            length=r["length"],
            unit=r["unit"],
            density=r["density"],
            final_coverage=r["coverage"][-1],
            never=bool(r.get("never")),
            bound=bounds[str(r["length"])] if r["unit"] > 1 else None,
        )
    return out


def _find(x: dict, role: str, length: int) -> dict:
    return next(v for v in x.values() if isinstance(v, dict) and v.get("role") == role and v.get("length") == length)


def _rule_reach(x: dict) -> list:
    lengths = sorted({v["length"] for v in x.values() if isinstance(v, dict) and v.get("role") == "power_pure"})
    short, long = lengths[0], lengths[-1]
    conds = []
    for role, label in (("power_pure", "pure power-of-two blocks"), ("power", "power(64, window 4, sink 1)")):
        for n in (short, long):
            v = _find(x, role, n)
            conds.append(
                (
                    f"{label} at {n} tokens reaches every earlier token in {v['value']:.0f} layers "
                    f"<= floor(log2(n_blocks - 1)) + 1 = {v['bound']}",
                    not math.isnan(v["value"]) and v["value"] <= v["bound"],
                )
            )
    a, b = _find(x, "power_pure", short), _find(x, "power_pure", long)
    extra = math.log2(b["n"] / a["n"])
    conds.append(
        (
            f"O(log N): {b['n'] // a['n']}x the blocks ({short} -> {long} tokens) costs pure power "
            f"{b['value'] - a['value']:+.0f} layers (<= log2 of the ratio = {extra:.0f})",
            b["value"] - a["value"] <= extra + 1e-9,
        )
    )
    w = _find(x, "window", short)
    size = _window_size(next(k for k, v in x.items() if v is w).split(" @ ")[0])
    lin = math.ceil((short - 1) / (size - 1))
    conds.append(
        (
            f"a sliding window({size}) grows linearly: {w['value']:.0f} layers at {short} tokens "
            f"= ceil((T - 1) / (w - 1)) = {lin}",
            w["value"] == lin,
        )
    )
    return conds


register(
    Claim(
        name="sparsify-reach",
        table=BENCH,
        short="Layers until every token reaches every earlier token: PowerAttention's log2 bound vs windows (no model)",
        claim=(
            "Power-of-two block links give every token a path to every earlier token within "
            "floor(log2(n_blocks - 1)) + 1 stacked layers (popcount of the block distance), i.e. O(log N) layers, "
            "while a sliding window needs a number of layers linear in the length."
        ),
        paper="PowerAttention arXiv 2503.03588",
        command=("headlab sparsify reach --length 2048 --block-length 32768 --max-layers 64 --out {out}",),
        size={"length": 2048, "block_length": 32768, "max_layers": 64},
        smoke=("headlab sparsify reach --length 256 --block-length 2048 --max-layers 64 --out {out}",),
        smoke_size={"length": 256, "block_length": 2048, "max_layers": 64},
        rule=(
            "Pure power-of-two blocks (window 1, no sink) and power(64, window 4, sink 1) reach full coverage within "
            "floor(log2(n_blocks - 1)) + 1 layers at both lengths (blocks of 64); going from 2048 to 32768 tokens "
            "(16x the blocks) adds at most log2(16) = 4 layers for pure power; and window(T/8) needs exactly "
            "ceil((T - 1) / (w - 1)) layers at 2048 tokens (linear growth)."
        ),
        conditions=_rule_reach,
        summarize=_summary_reach,
        collect=_collect_reach,
        cost_s=40,
        smoke_cost_s=5,
        tolerance=Tolerance("exact"),
        notes=(
            "Exact boolean reachability over the pattern graph (union over heads, residual self-edges); block-defined "
            "patterns use the block graph, which is exact for them. The full table is results/sparsify-reach/table.md."
        ),
    )
)
