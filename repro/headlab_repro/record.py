"""``results/NAME/result.json``: provenance (git commit, versions, machine) and the atomic writer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from headlab.io import atomic_write_json
from headlab.timing import machine, versions

FORMAT = "headlab-result/1"
#: keys every result.json has (those written before provenance was recorded at the start included)
REQUIRED = (
    "format",
    "name",
    "claim",
    "paper",
    "command",
    "reproduce",
    "size",
    "rule",
    "measured",
    "verdict",
    "rule_met",
    "conditions",
    "tolerance",
    "seeds",
    "smoke",
    "git_commit",
    "versions",
    "machine",
    "seconds",
    "created",
    "files",
)
#: keys a run written now has: the start-of-run provenance and the computed evidence label besides
KEYS = (*REQUIRED, "started_commit", "registered_commit", "evidence", "evidence_why", "tree", "started", "cpu")


def repo_root() -> Path | None:
    """The source checkout holding this harness (``repro/headlab_repro`` -> repository), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def results_root() -> Path:
    """``$HEADLAB_RESULTS``, else the checkout's ``results/``, else ``./results``."""
    env = os.environ.get("HEADLAB_RESULTS")
    if env:
        return Path(env)
    root = repo_root()
    return root / "results" if root is not None and (root / "results").is_dir() else Path("results")


def git_commit() -> str | None:
    """HEAD of the checkout, with ``+dirty`` when the tree differs from it (untracked code included)."""
    from .provenance import commit_label, tree_state

    return commit_label(tree_state())


def write_result(
    folder: Path,
    claim,
    numbers: dict,
    judgement: dict,
    commands: list[str],
    reproduce: str,
    seconds: float,
    smoke: bool,
    files: dict,
    start: dict | None = None,
) -> dict:
    """Write ``folder/result.json`` atomically and return its content. ``start``: the provenance recorded when
    the run began (``tree`` state, ``started`` time, ``cpu`` watch result), see :mod:`headlab_repro.provenance`."""
    from .provenance import commit_label, tree_state

    start = start or {}
    end_tree = tree_state()
    res = {
        "format": FORMAT,
        "name": claim.name,
        "claim": claim.claim,
        "paper": claim.paper,
        "command": commands,
        "reproduce": reproduce,
        "size": claim.smoke_size if smoke else claim.size,
        "rule": {"text": claim.rule, "code": claim.rule_code()},
        "measured": numbers,
        "verdict": judgement["verdict"],
        "rule_met": judgement["rule_met"],
        "conditions": judgement["conditions"],
        "tolerance": claim.tolerance.to_dict(),
        "seeds": list(claim.seeds),
        "smoke": smoke,
        "git_commit": commit_label(end_tree),
        "started_commit": commit_label(start["tree"]) if "tree" in start else None,
        "tree": {
            "changed_at_start": start["tree"]["changed"] if "tree" in start else None,
            "changed_at_end": end_tree["changed"],
            "same_commit": ("tree" in start and start["tree"]["commit"] == end_tree["commit"]) or None,
        },
        "versions": versions(),
        "machine": machine(),
        "seconds": round(seconds, 1),
        "started": start.get("started"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": start.get("cpu"),
        "files": files,
    }
    from .evidence import label

    lab = label(res)
    res["evidence"], res["registered_commit"], res["evidence_why"] = lab["evidence"], lab["registered_commit"], lab["why"]
    atomic_write_json(folder / "result.json", json.loads(json.dumps(res, default=float).replace("NaN", "null")))
    return res


def read_result(folder: str | os.PathLike) -> dict:
    path = Path(folder) / "result.json"
    if not path.exists():
        raise ValueError(f"no result at {path}")
    return json.loads(path.read_text())
