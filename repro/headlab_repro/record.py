"""``results/NAME/result.json``: provenance (git commit, versions, machine) and the atomic writer."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from headlab.io import atomic_write_json
from headlab.timing import machine, versions

FORMAT = "headlab-result/1"
KEYS = (
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
    """HEAD of the checkout, with ``+dirty`` when tracked source files differ from it."""
    root = repo_root()
    if root is None:
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "repro"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


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
) -> dict:
    """Write ``folder/result.json`` atomically and return its content."""
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
        "git_commit": git_commit(),
        "versions": versions(),
        "machine": machine(),
        "seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    atomic_write_json(folder / "result.json", json.loads(json.dumps(res, default=float).replace("NaN", "null")))
    return res


def read_result(folder: str | os.PathLike) -> dict:
    path = Path(folder) / "result.json"
    if not path.exists():
        raise ValueError(f"no result at {path}")
    return json.loads(path.read_text())
