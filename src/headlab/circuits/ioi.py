"""Indirect object identification (Wang et al., arXiv 2211.00593) on any causal LM.

"When Mary and John went to the store, John gave a drink to" -> " Mary". The clean prompt names
the indirect object (IO) once and the subject (S) twice; the corrupted prompt is the same template
with three fresh, different names (the paper's ABC distribution), so nothing in it says which name
comes next. Metric: logit(IO) - logit(S) at the final token. Names are kept only if they are a
single token with a leading space for the model's tokenizer (checked; given names that are not
raise ``ValueError``).
"""

from __future__ import annotations

import random

import torch

from .task import Task, encode_pairs, find_position, single_token_ids, single_token_words

TEMPLATES = [
    "When {A} and {B} went to the store, {C} gave a drink to",
    "When {A} and {B} went to the park, {C} gave a ball to",
    "After {A} and {B} went to the market, {C} handed a bag to",
    "While {A} and {B} were working at the office, {C} gave a pen to",
    "Then, {A} and {B} had a long talk at home. {C} gave a book to",
    "When {A} and {B} got a snack at the cafe, {C} passed a cup to",
    "After the party, {A} and {B} walked to the station. {C} gave a gift to",
    "Friends {A} and {B} found a kite at the beach. {C} threw it to",
]

NAMES = [
    "Mary",
    "John",
    "Alice",
    "Bob",
    "Tom",
    "James",
    "Sarah",
    "Michael",
    "David",
    "Emma",
    "Anna",
    "Paul",
    "Mark",
    "Laura",
    "Kate",
    "Peter",
    "Lisa",
    "Daniel",
    "Chris",
    "Jessica",
    "Jennifer",
    "Robert",
    "Thomas",
    "Susan",
    "Karen",
    "Steven",
    "Kevin",
    "Brian",
    "George",
    "Linda",
    "Amy",
    "Rachel",
    "Jack",
    "Ryan",
    "Jason",
    "Adam",
    "Eric",
    "Andrew",
    "Matthew",
    "Sam",
    "Ben",
    "Joe",
    "Mike",
    "Dan",
    "Jane",
    "Helen",
    "Emily",
    "Nancy",
]


def make_ioi(tokenizer, n: int = 32, seed: int = 0, names: list[str] | None = None, templates: list[str] | None = None) -> Task:
    """``n`` IOI prompts (half ABBA, half BABA order) with ABC-corrupted twins.

    ``names``: given names must all be single tokens (else ``ValueError`` naming them); by default
    the built-in list filtered to single tokens."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive number of prompts")
    if names is not None:
        single_token_ids(tokenizer, list(names), "IOI names")
        pool = list(dict.fromkeys(names))
    else:
        pool = single_token_words(tokenizer, NAMES)
    if len(pool) < 5:
        raise ValueError(f"IOI needs at least 5 distinct single-token names (2 clean + 3 corrupt), got {len(pool)}: {pool}")
    templates = templates or TEMPLATES
    for t in templates:
        if not all("{" + k + "}" in t for k in "ABC"):
            raise ValueError(f"IOI template {t!r} must contain {{A}}, {{B}} and {{C}}")
    tok = single_token_ids(tokenizer, pool, "IOI names")
    rng = random.Random(seed)
    clean, corrupt, io, s, cor_names = [], [], [], [], []
    for i in range(n):
        t = templates[i % len(templates)]
        a, b, x, y, z = rng.sample(pool, 5)
        io_n, s_n = a, b
        first, second = (io_n, s_n) if i % 2 == 0 else (s_n, io_n)  # ABBA / BABA
        clean.append(t.format(A=first, B=second, C=s_n))
        corrupt.append(t.format(A=x, B=y, C=z))
        io.append(tok[io_n])
        s.append(tok[s_n])
        cor_names.append((x, y, z))
    cids, kids, mask = encode_pairs(tokenizer, clean, corrupt)
    pos = {"IO": [], "S1": [], "S2": [], "S1+1": [], "END": []}
    for r in range(n):
        real = cids[r][mask[r].bool()].tolist()
        p_io = find_position(real, io[r], 0, "IO name")
        p_s1 = find_position(real, s[r], 0, "S name")
        p_s2 = find_position(real, s[r], 1, "S name")
        for k, v in (("IO", p_io), ("S1", p_s1), ("S2", p_s2), ("S1+1", p_s1 + 1), ("END", len(real) - 1)):
            pos[k].append(v)
    return Task(
        "ioi",
        clean,
        corrupt,
        cids,
        kids,
        mask,
        torch.tensor(io),
        torch.tensor(s)[:, None],
        {k: torch.tensor(v) for k, v in pos.items()},
        meta={"names": pool, "templates": templates, "seed": seed, "corrupt_names": cor_names},
    )
