"""Colored Objects (BIG-bench; the second task of Merullo et al., "Circuit Component Reuse Across
Tasks in Transformer Language Models", arXiv 2310.08744), generated in the IOI harness.

"On the table, I see a red pen, a blue cup and a green book. What color is the cup? The cup is"
-> " blue". The corrupted twin keeps the objects and the question and replaces the three colours by
three other colours, so the clean answer no longer appears. Metric: logit(answer colour) minus the
mean logit of the two other clean colours. Colours and objects must be single tokens with a
leading space (checked).
"""

from __future__ import annotations

import random

import torch

from .task import Task, encode_pairs, find_position, single_token_ids, single_token_words

COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "purple", "orange", "pink", "gray", "silver", "gold"]
OBJECTS = [
    "pen",
    "cup",
    "book",
    "ball",
    "key",
    "hat",
    "phone",
    "box",
    "plate",
    "bag",
    "shoe",
    "lamp",
    "chair",
    "clock",
    "bottle",
    "card",
]
TEMPLATES = [
    "On the table, I see a {c0} {o0}, a {c1} {o1} and a {c2} {o2}. What color is the {q}? The {q} is",
    "On the floor, there is a {c0} {o0}, a {c1} {o1} and a {c2} {o2}. What color is the {q}? The {q} is",
    "In the room, I see a {c0} {o0}, a {c1} {o1} and a {c2} {o2}. Question: what color is the {q}? Answer: The {q} is",
]


def make_colored_objects(
    tokenizer, n: int = 32, seed: int = 0, colors: list[str] | None = None, objects: list[str] | None = None
) -> Task:
    """``n`` prompts with three coloured objects, a question about one, and colour-swapped twins."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive number of prompts")
    if colors is not None:
        single_token_ids(tokenizer, list(colors), "colours")
    if objects is not None:
        single_token_ids(tokenizer, list(objects), "objects")
    cpool = list(colors) if colors is not None else single_token_words(tokenizer, COLORS)
    opool = list(objects) if objects is not None else single_token_words(tokenizer, OBJECTS)
    if len(cpool) < 6 or len(opool) < 3:
        raise ValueError(f"colored objects needs >= 6 single-token colours and >= 3 objects, got {cpool} and {opool}")
    ctok = single_token_ids(tokenizer, cpool, "colours")
    rng = random.Random(seed)
    clean, corrupt, ans, dis, qi = [], [], [], [], []
    for i in range(n):
        t = TEMPLATES[i % len(TEMPLATES)]
        cs = rng.sample(cpool, 6)
        os_ = rng.sample(opool, 3)
        k = rng.randrange(3)
        fill = {f"o{j}": os_[j] for j in range(3)} | {"q": os_[k]}
        clean.append(t.format(**fill, **{f"c{j}": cs[j] for j in range(3)}))
        corrupt.append(t.format(**fill, **{f"c{j}": cs[3 + j] for j in range(3)}))
        ans.append(ctok[cs[k]])
        dis.append([ctok[cs[j]] for j in range(3) if j != k])
        qi.append(k)
    cids, kids, mask = encode_pairs(tokenizer, clean, corrupt)
    pos = {"ANS": [], "END": []}
    for r in range(n):
        real = cids[r][mask[r].bool()].tolist()
        pos["ANS"].append(find_position(real, ans[r], 0, "answer colour"))
        pos["END"].append(len(real) - 1)
    return Task(
        "colored-objects",
        clean,
        corrupt,
        cids,
        kids,
        mask,
        torch.tensor(ans),
        torch.tensor(dis),
        {k: torch.tensor(v) for k, v in pos.items()},
        meta={"colors": cpool, "objects": opool, "seed": seed, "templates": TEMPLATES},
    )
