"""``headlab reproduce --check``: every number of a rerun against the committed result, within the
tolerance the committed result states (``exact`` for deterministic numbers, ``ratio`` for timings)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from .claims import Tolerance

COMPARED = ("value", "ci", "n", "k")


def leaves(measured: dict) -> Iterator[tuple[str, float]]:
    """(key path, number) of every compared field of every headline number."""
    for name, num in sorted(measured.items()):
        if not isinstance(num, dict):
            continue
        for f in COMPARED:
            v = num.get(f)
            if isinstance(v, list):
                for i, x in enumerate(v):
                    yield f"{name}.{f}[{i}]", x
            elif v is not None and not isinstance(v, str) and not (isinstance(v, float) and math.isnan(v)):
                yield f"{name}.{f}", v  # NaN is stored as null in result.json: both mean "no number"


def compare(committed: dict, rerun: dict) -> list[str]:
    """Differences beyond tolerance, as readable lines (empty = the rerun reproduces the committed result)."""
    tol = Tolerance(**committed.get("tolerance", {"kind": "exact"}))
    problems = []
    new = dict(leaves(rerun["measured"]))
    for key, old in leaves(committed["measured"]):
        if key not in new:
            problems.append(f"{key}: {old} in the committed result, missing in the rerun")
            continue
        a, b = old, new[key]
        a = float("nan") if a is None else float(a)
        b = float("nan") if b is None else float(b)
        if not tol.ok(a, b) and not (math.isnan(a) and math.isnan(b)):
            problems.append(f"{key}: committed {a:.6g}, rerun {b:.6g} (tolerance {tol.kind} {tol.value:g})")
    extra = sorted(set(new) - set(dict(leaves(committed["measured"]))))
    problems += [f"{key}: new in the rerun, absent from the committed result" for key in extra]
    if committed.get("rule_met") != rerun.get("rule_met"):
        problems.append(
            f"rule outcome changed: committed rule_met={committed.get('rule_met')}, rerun rule_met={rerun.get('rule_met')}"
        )
    return problems
