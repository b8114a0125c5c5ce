"""Is a result evidence, or a look at numbers already seen? Every result gets one of two labels, computed:

* ``confirmatory`` — its design (rule, size, data, seeds, analysis: the registered claim) was committed
  before any run of that design, no output of that design existed in the repository before the rule, the
  run started from a clean tree at or after the registration commit, and no earlier numbers of that design
  are known (:data:`SEEN_BEFORE`);
* ``exploratory`` — everything else: reruns of numbers seen before the rule, redesigns after a failure,
  second looks, runs from a dirty tree or with no recorded start.

The history is read from git (one ``git log`` for the registrations, one for the outputs): the registration
commit of claim NAME is the first commit that adds ``"NAME"`` to a claims module (``repro/headlab_repro`` or its
former home ``src/headlab/results``), or for a name built in code, the commit that added its module; the first output commit is the first one that adds a file under
``results/NAME/`` (smoke folders aside). :data:`SEEN_BEFORE` holds what git cannot show: numbers of a design
published (README, an unregistered run) before its rule, from an audit of the history; an entry there can
only make a result exploratory, never confirmatory.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

from .record import repo_root

CONFIRMATORY = "confirmatory"
EXPLORATORY = "exploratory"
SMOKE = "smoke"

_STEER_README = "its numbers were in README before the rule was written (the committed run repeats them)"
_REWRITTEN = "the rule was rewritten with the numbers in hand (stricter, no verdict flipped)"
#: claim -> why its numbers were seen before its design was fixed (an audit of the history, 2026-12)
SEEN_BEFORE: dict[str, str] = {
    **{
        n: _STEER_README
        for n in (
            "zerotuning-sst2",
            "zerotuning-sst2-heldout",
            "act-sst2",
            "act-sst2-heldout",
            "act-mmlu-transfer",
            "var-squad",
            "var-squad-p06",
            "vhr-squad",
            "vhr-squad-alpha2",
            "site-sst2",
            "retrieval-heads-needle",
        )
    },
    "memory-capacity": _REWRITTEN,
    "icl-regression": _REWRITTEN,
    "induction": _REWRITTEN,
    "circuits-reuse": "results/circuits/reuse.json held the exact registered outcome before registration",
    "circuits-ioi": "an unregistered run of the same design is in results/circuits",
    "circuits-importance": "an unregistered run of the same design is in results/circuits",
    "sparsify-hybrid-4k": "the hybrid sparsify tables held the exact registered outcome before registration",
    "sparsify-duo-fs09-8k": "a second look: registered after sparsify-plans-8k and run on the same prompts",
    "moh-converged": "a redesign after moh failed",
    "sinks-dormant": "a redesign after sinks failed",
    "sinks-dormant-mlp": "the control of a redesign after sinks failed",
    "deconstruct-1000": "a redesign after deconstruct failed",
    "mechanisms-speed": "an unregistered run of the same design is in results/bench-mechanisms",
    "mechanisms-mqar": "an unregistered run of the same design is in results/bench-mechanisms",
    "mechanisms-selective-copy": "an unregistered run of the same design is in results/bench-mechanisms",
    "mechanisms-miras-prose": "an unregistered run of the same design is in results/bench-mechanisms",
    "devices-bf16": "its tolerance was set from the very measurement it re-runs",
    "halo-speed": "its bound was set after an unregistered look at the same benchmark (7-10x)",
    "devices-bf16-lengths": "the 1024-token gaps (devices-bf16) were known when its bound was chosen",
    "report-page-budget": "a gzip of the 2048-token page (2.29 MB) was seen when the limit and the encoding were chosen",
}

_QUOTED = re.compile(r'"([a-z0-9][a-z0-9.-]*)"')
CLAIM_PATHS = ("repro/headlab_repro", "src/headlab/results")


def _git(*args: str) -> str:
    root = repo_root()
    if root is None:
        return ""
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout if r.returncode == 0 else ""


@functools.cache
def commit_order() -> dict[str, int]:
    """{commit: position in HEAD's (linear) history, oldest 0}."""
    return {c: i for i, c in enumerate(_git("rev-list", "--reverse", "HEAD").split())}


@functools.cache
def registrations() -> dict[str, str]:
    """{claim name: the first commit that added the quoted name to a claims module} for every registered claim
    (a claim is registered by the commit that first writes its name there, however the call is spelled)."""
    from .claims import all_claims

    names = set(all_claims())
    out: dict[str, str] = {}
    commit = ""
    for line in _git("log", "--reverse", "--format=@@%H", "-p", "-U0", "--", *CLAIM_PATHS).splitlines():
        if line.startswith("@@") and len(line) == 42:
            commit = line[2:]
            continue
        if line.startswith("+") and not line.startswith("+++"):
            for name in _QUOTED.findall(line):
                if name in names and name not in out:
                    out[name] = commit
    # a name built in code (e.g. f"{base}-rep") never appears quoted: its registration is the commit that added
    # the module registering it (under its present or former path). A claim can only run once its code exists,
    # so a run's start commit is never earlier than its real registration; a name that is quoted in its module
    # but in no commit is simply not registered yet (uncommitted).
    import importlib
    import inspect

    from .claims import _ORDER

    for name in names - set(out):
        modname = _ORDER.get(name, ("", 0))[0]
        module = modname.rsplit(".", 1)[-1]
        if module and f'"{name}"' not in inspect.getsource(importlib.import_module(modname)):
            paths = [f"{p}/{module}.py" for p in CLAIM_PATHS]
            added = _git("log", "--reverse", "--diff-filter=A", "--format=%H", "--", *paths).split()
            if added:
                out[name] = added[0]
    return out


@functools.cache
def first_outputs() -> dict[str, str]:
    """{claim name: the first commit that added a (non-smoke) file under results/NAME/}."""
    out: dict[str, str] = {}
    commit = ""
    for line in _git("log", "--reverse", "--diff-filter=A", "--name-only", "--format=@@%H", "--", "results/").splitlines():
        if line.startswith("@@"):
            commit = line[2:]
            continue
        parts = Path(line).parts
        if len(parts) >= 3 and parts[0] == "results" and "smoke" not in parts[2:-1] and parts[1] not in out:
            out[parts[1]] = commit
    return out


def _clean_commit(c: str | None) -> str | None:
    return c.split("+")[0] if c else None


def label(res: dict) -> dict:
    """``{"evidence", "registered_commit", "why"}`` of a result.json (the reasons it is exploratory, if so)."""
    name = res.get("name", "")
    if res.get("smoke"):
        return {"evidence": SMOKE, "registered_commit": registrations().get(name), "why": ["a smoke run (CI size)"]}
    reg = registrations().get(name)
    order = commit_order()
    why = []
    if name in SEEN_BEFORE:
        why.append(SEEN_BEFORE[name])
    if reg is None or reg not in order:
        why.append("no registration commit in this history")
    started = res.get("started_commit") or res.get("git_commit")
    if not started:
        why.append("the run recorded no commit")
    elif "+dirty" in started:
        why.append("the run's tree had uncommitted changes (+dirty)")
    start = _clean_commit(started)
    if reg in order and start:
        if start not in order:
            why.append(f"its commit {start[:12]} is not in this history")
        elif order[start] < order[reg]:
            why.append("the run started before its rule was committed")
        if "started_commit" not in res:
            why.append("the run's start commit was not recorded (only the commit when it ended)")
    if (res.get("tree") or {}).get("same_commit") is False:
        why.append("HEAD moved while the run was going")
    if res.get("invalid"):
        why.append(res["invalid"])
    first = first_outputs().get(name)
    if reg in order and first in order and order[first] <= order[reg]:
        why.append("outputs of this design were committed with or before its rule")
    return {"evidence": EXPLORATORY if why else CONFIRMATORY, "registered_commit": reg, "why": why}
