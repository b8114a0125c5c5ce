"""The registry of published claims: each claim's command, evaluation size, decision rule and tolerance
are fixed here, in code, before its result exists.

A :class:`Claim` names
- ``command``: the exact ``headlab …`` command line(s) that produce its raw output; ``{out}`` is the run
  folder, ``{results}`` the committed results folder (for inputs such as a saved configuration);
- ``size``: the evaluation size (items, seeds, steps) — a run whose configuration differs is refused,
  since a changed size is a new claim with its own name;
- ``summarize(raw) -> {key: number}``: the headline numbers, each a dict ``{"value", "ci", "n", ...}``;
- ``rule`` (text) and ``conditions(numbers) -> [(text with numbers, passed)]`` (the code that decides):
  the verdict is "rule met" when every condition passes, "rule not met" otherwise, always with the numbers;
- ``tolerance`` for ``headlab reproduce --check``: ``exact`` for deterministic numbers, ``ratio`` (spread)
  for timings;
- ``smoke``: the same command at a reduced size for CI, with its own committed result.

Registering a claim is a few lines: ``register(Claim(name=..., ...))`` in any module
``headlab_repro/*_claims.py`` listed in :mod:`headlab_repro.registry` (imported on first use; see
``lab_claims.py``); ``headlab reproduce
--render`` then fills ``<!-- results:table:TABLE -->`` (every claim whose ``table`` is TABLE),
``<!-- results:runs:TABLE -->`` and ``<!-- results:detail:NAME -->`` blocks.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Number = dict[str, Any]
#: ``exact`` tolerance: float32 rounding (seen between machines: 2e-8 to 2e-7 relative on the lab smoke runs)
EXACT_RTOL = 1e-6
Conditions = list[tuple[str, bool]]


@dataclass(frozen=True)
class Tolerance:
    """How far a rerun's number may move: ``exact`` (float rounding only: |new − old| ≤ 1e-6 · max(1, |old|), a
    few float32 ulps, which is what another CPU's BLAS or thread count changes in a float32 computation),
    ``abs`` (|new − old| ≤ value) or ``ratio`` (new/old within [1/(1+value), 1+value], for timings)."""

    kind: str = "exact"
    value: float = 0.0

    def __post_init__(self):
        if self.kind not in ("exact", "abs", "ratio"):
            raise ValueError(f"tolerance kind {self.kind!r}; valid: exact, abs, ratio")
        if self.value < 0:
            raise ValueError(f"tolerance value {self.value} must be >= 0")

    def ok(self, old: float, new: float) -> bool:
        if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
            return True
        if self.kind == "exact":
            return old == new or abs(new - old) <= EXACT_RTOL * max(1.0, abs(old))
        if self.kind == "abs":
            return abs(new - old) <= self.value
        if old == 0 or new == 0:
            return old == new
        r = new / old
        return 1 / (1 + self.value) <= r <= 1 + self.value

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class Claim:
    name: str
    claim: str
    paper: str
    command: tuple[str, ...]
    rule: str
    conditions: Callable[[dict[str, Number]], Conditions]
    summarize: Callable[[dict], dict[str, Number]]
    collect: Callable[[Any], tuple[dict, list[dict], dict]]
    size: dict = field(default_factory=dict)
    smoke: tuple[str, ...] = ()
    smoke_size: dict = field(default_factory=dict)
    cost_s: float = 60.0
    smoke_cost_s: float = 10.0
    tolerance: Tolerance = Tolerance()
    table: str = ""
    short: str = ""
    show: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    depends: tuple[str, ...] = ()
    notes: str = ""

    def commands(self, smoke: bool = False) -> tuple[str, ...]:
        cmds = self.smoke if smoke else self.command
        if not cmds:
            raise ValueError(f"claim {self.name!r} has no {'smoke ' if smoke else ''}command")
        return cmds

    def judge(self, numbers: dict[str, Number]) -> dict:
        """{"rule_met": bool, "verdict": text, "conditions": [{"text", "passed"}]} from the headline numbers."""
        nan = float("nan")  # JSON stores NaN as null: give the rule NaN back
        numbers = {
            k: ({f: (nan if f == "value" and x is None else x) for f, x in v.items()} if isinstance(v, dict) else v)
            for k, v in numbers.items()
        }
        conds = self.conditions(numbers)
        met = bool(conds) and all(bool(ok) for _, ok in conds)
        text = ("rule met: " if met else "rule not met: ") + "; ".join(f"{t} ({'yes' if ok else 'no'})" for t, ok in conds)
        return {"rule_met": met, "verdict": text, "conditions": [{"text": t, "passed": bool(ok)} for t, ok in conds]}

    def rule_code(self) -> str:
        try:
            return inspect.getsource(self.conditions)
        except (OSError, TypeError):
            return repr(self.conditions)


REGISTRY: dict[str, Claim] = {}
#: claim name -> (registering module, registration count): tables list claims by module, then in the order a
#: module registers them, whatever module happened to be imported first
_ORDER: dict[str, tuple[str, int]] = {}


def register(claim: Claim) -> Claim:
    """Add a claim; names are unique (a changed plan is a new name)."""
    if claim.name in REGISTRY:
        raise ValueError(f"claim {claim.name!r} is already registered")
    if not claim.command:
        raise ValueError(f"claim {claim.name!r} needs a command")
    for c in claim.command + claim.smoke:
        if not c.startswith("headlab "):
            raise ValueError(f"claim {claim.name!r}: commands start with 'headlab ', got {c!r}")
    REGISTRY[claim.name] = claim
    _ORDER[claim.name] = (str(sys._getframe(1).f_globals.get("__name__", "")), len(_ORDER))
    return claim


def _load() -> None:
    """Import every claims module (registration is their side effect); :mod:`.registry` lists them."""
    from . import registry  # noqa: F401


def get(name: str) -> Claim:
    _load()
    if name not in REGISTRY:
        raise ValueError(f"unknown result {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def all_claims() -> dict[str, Claim]:
    """Every registered claim, ordered by registering module (alphabetical, the order :mod:`.registry` imports
    them), then by registration order within the module."""
    _load()
    return dict(sorted(REGISTRY.items(), key=lambda kv: _ORDER.get(kv[0], ("", 0))))


def number(value: float, n: int | None = None, ci: list[float] | None = None, **extra) -> Number:
    """A headline number; ``n`` is the count of items / trials / sequences behind it."""
    out: Number = {"value": float(value) if value is not None else None}
    if ci is not None:
        out["ci"] = [float(c) for c in ci]
    if n is not None:
        out["n"] = int(n)
    out.update(extra)
    return out


def judge(name: str, raw: dict) -> dict:
    """Headline numbers and verdict of registered claim ``name`` for raw command output ``raw``."""
    c = get(name)
    nums = c.summarize(raw)
    return {"measured": nums, **c.judge(nums)}
