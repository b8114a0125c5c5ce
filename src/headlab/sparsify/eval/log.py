"""The resumable trial log of ``headlab sparsify eval``: one JSON line per passkey trial, perplexity
run and timed decode, so a long evaluation of sparse patterns and per-head plans (StreamingLLM,
arXiv 2309.17453; DuoAttention-style plans, arXiv 2410.10819) can stop and go on where it was.
"""

from __future__ import annotations

import json
from pathlib import Path


class TrialLog:
    """Append-only JSON-lines log of every passkey trial and perplexity run (``trials.jsonl``).

    A long run (hours at 8K tokens on a CPU) can be stopped and resumed: records already in the log
    are not recomputed (a record is keyed by length, config label, pattern, dense layers, haystack,
    item seed and needle depth; resume with the same model). A torn last line (the process was
    killed mid-write) is ignored."""

    def __init__(self, path=None, resume: bool = False):
        self.path = Path(path) if path else None
        self.records: list[dict] = []
        if self.path and self.path.exists():
            if resume:
                for line in self.path.read_text().splitlines():
                    try:
                        self.records.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
            else:
                self.path.unlink()

    def find(self, **key) -> dict | None:
        for r in self.records:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, record: dict) -> None:
        self.records.append(record)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
