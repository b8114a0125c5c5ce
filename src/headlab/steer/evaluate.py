"""Evaluate a model (with or without edits) on task items: label-word scoring or greedy generation.

Prompts are left-padded in batches. Character spans of an item (``Item.spans``) become token groups
``run.state["groups"][name]`` (per-row key positions counted from the first real token) and
``run.state["prompt_last"]`` holds each row's last prompt position, so edits such as
redistribute / emphasis / span_exit / inject find their tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data.tasks.base import Item, Task, score_generation
from ..measure.record import encode_left
from ..progress import progress_bar


@dataclass
class Result:
    """Per-item scores of :func:`evaluate`: label-word scoring for choice tasks (the likeliest choice by its
    first token, the few-shot classification protocol of GPT-3, Brown et al., arXiv 2005.14165), greedy
    generation scored by the task's metric otherwise."""

    correct: torch.Tensor  # (N,) float 0/1
    margin: torch.Tensor  # (N,) log-prob of the gold choice minus the best other (choice tasks), else 0
    outputs: list[str]

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    def to_frame(self):
        """pandas DataFrame, one row per item: item, correct (0/1), margin, output (needs ``headlab[frames]``)."""
        from ..engine.frames import pandas

        return pandas().DataFrame(
            {
                "item": list(range(len(self.outputs))),
                "correct": self.correct.tolist(),
                "margin": self.margin.tolist(),
                "output": list(self.outputs),
            }
        )


def _groups(enc: dict, items: Sequence[Item]) -> dict[str, list[list[int]]]:
    names = sorted({n for it in items for n in it.spans})
    out: dict[str, list[list[int]]] = {n: [] for n in names}
    am = enc["attention_mask"]
    for r, it in enumerate(items):
        pad = int((am[r] == 0).sum())
        offs = enc["offset_mapping"][r][pad:].tolist()
        for n in names:
            if n not in it.spans:
                out[n].append([])
                continue
            s, e = it.spans[n]
            out[n].append([i for i, (a, b) in enumerate(offs) if b > a and a < e and b > s])
    return out


def choice_ids(tokenizer: Any, choices: list[str]) -> list[int]:
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in choices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"choices {choices} share their first token; label-word scoring needs distinct first tokens")
    return ids


def evaluate(
    model: Any,
    tokenizer: Any,
    task: Task,
    items: Sequence[Item],
    edits: Sequence = (),
    batch_size: int = 8,
    max_length: int = 2048,
    progress: bool = True,
    desc: str = "",
) -> Result:
    """Score ``items`` of ``task`` with ``edits`` attached (no edits -> the plain model)."""
    from ..engine.hf import attach

    correct, margins, outputs = [], [], []
    gen = task.kind == "generate"
    with (
        torch.no_grad(),
        attach(model, edits=list(edits)) as run,
        progress_bar(desc or task.name, len(items), quiet=not progress) as bar,
    ):
        for i in range(0, len(items), batch_size):
            chunk = list(items[i : i + batch_size])
            enc = encode_left(tokenizer, [it.prompt for it in chunk], max_length, return_offsets=True)
            run.state["groups"] = _groups(enc, chunk)
            ids, am = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
            run.state["prompt_last"] = am.sum(1) - 1
            if gen:
                out = model.generate(
                    input_ids=ids,
                    attention_mask=am,
                    max_new_tokens=task.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
                texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
                outputs += texts
                correct += [score_generation(t, it, task.metric) for t, it in zip(texts, chunk)]
                margins += [0.0] * len(chunk)
            else:
                logits = model(input_ids=ids, attention_mask=am, use_cache=False, logits_to_keep=1).logits[:, -1]
                logp = torch.log_softmax(logits.float(), -1)
                for r, it in enumerate(chunk):
                    cid = choice_ids(tokenizer, it.choices)
                    lp = logp[r, cid]
                    pred = int(lp.argmax())
                    others = torch.cat([lp[: it.label], lp[it.label + 1 :]])
                    correct.append(float(pred == it.label))
                    margins.append(float(lp[it.label] - others.max()))
                    outputs.append(it.choices[pred])
            bar(len(chunk))
    return Result(torch.tensor(correct), torch.tensor(margins), outputs)
