"""Retrieval-score protocol (Wu et al., arXiv 2404.15574), with our own needles and real prose as
the haystack; the per-step score, its formula and threshold live in :mod:`headlab.probes.retrieval`.

Protocol: insert a needle sentence at a sentence boundary at depth d of a haystack, ask for it,
prefill the prompt, then decode greedily; at each step ``RetrievalProbe.credit`` scores every
head. A case counts only when the model succeeds (ROUGE-1 recall of the generated answer against
the needle's answer > 0.5); a head's score is the mean over counted cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..data.prose import haystack
from ..engine.hf import attach, model_shape
from ..probes.retrieval import RetrievalProbe

#: our own needles: (sentence inserted, question, answer span inside the sentence)
NEEDLES = (
    (
        "The secret ingredient in the lighthouse keeper's soup was a spoonful of smoked cardamom honey.",
        "What was the secret ingredient in the lighthouse keeper's soup?",
        "a spoonful of smoked cardamom honey",
    ),
    (
        "The expedition finally found the lost violin hidden under the third stair of the old mill.",
        "Where was the lost violin hidden?",
        "under the third stair of the old mill",
    ),
    (
        "The password to the archive room is seven purple elephants dancing.",
        "What is the password to the archive room?",
        "seven purple elephants dancing",
    ),
)

#: a case counts when the answer's ROUGE-1 recall exceeds this
SUCCESS_RECALL = 0.5


def _words(s: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", s.lower())


def rouge1_recall(generated: str, reference: str) -> float:
    """Share of the reference's words (lower-cased, punctuation dropped) found in ``generated``."""
    ref = _words(reference)
    if not ref:
        return 0.0
    gen = set(_words(generated))
    return sum(w in gen for w in ref) / len(ref)


@dataclass
class RetrievalCase:
    n_tokens: int
    depth: float
    needle: int
    answer: str
    recall: float
    scores: torch.Tensor  # (layers, heads)


def _insert(hay: str, sentence: str, depth: float) -> tuple[str, int]:
    """Insert at the sentence boundary nearest to ``depth`` of the text; returns (text, char index)."""
    target = int(len(hay) * depth)
    cuts = [m.end() for m in re.finditer(r"[.!?] ", hay)] or [len(hay)]
    cut = min(cuts, key=lambda c: abs(c - target)) if depth > 0 else 0
    return hay[:cut] + sentence + " " + hay[cut:], cut


def build_case(tokenizer, n_tokens: int, depth: float, needle: int, seed: int = 0, haystack_fn=None):
    """(prompt ids (1, T), answer token span (s, e), answer text).

    ``haystack_fn(tokenizer, n_tokens, seed=)`` gives the distractor text (default: CPython's pydoc
    prose, ``headlab.data.prose.haystack``; ``headlab.data.calib.CalibText.haystack`` for a user's file)."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if not 0 <= needle < len(NEEDLES):
        raise ValueError(f"needle must be in 0..{len(NEEDLES) - 1}, got {needle}")
    sentence, question, answer = NEEDLES[needle]
    hay = (haystack_fn or haystack)(tokenizer, n_tokens, seed=seed)
    text, _ = _insert(hay, sentence, depth)
    request = f"{text}\n\nBased on the text above, answer the question.\nQuestion: {question}"
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": request}], add_generation_prompt=True, tokenize=False)
    else:
        prompt = request + "\nAnswer:"
    enc = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=False)
    a0 = prompt.index(sentence) + sentence.index(answer)
    a1 = a0 + len(answer)
    span = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < a1 and e > a0]
    return torch.tensor([enc["input_ids"]]), (span[0], span[-1] + 1), answer


@torch.no_grad()
def retrieval_case(
    model, tokenizer, n_tokens: int, depth: float, needle: int, max_new: int = 24, seed: int = 0, edits=(), haystack_fn=None
) -> RetrievalCase:
    """One needle case; ``edits`` (headlab.edits) act during prefill and decoding alike; ``haystack_fn`` as in
    :func:`build_case`."""
    ids, span, answer = build_case(tokenizer, n_tokens, depth, needle, seed, haystack_fn=haystack_fn)
    cache = DynamicCache()
    dev = model.device  # ids stay on the host for scoring; the model reads a copy on its device
    with attach(model, edits=list(edits)):
        model(input_ids=ids[:, :-1].to(dev), cache=cache, use_cache=True, logits_to_keep=1)
    probe = RetrievalProbe()
    nxt = ids[:, -1:].to(dev)
    generated: list[int] = []
    with attach(model, probes=[probe], edits=list(edits)):
        for _ in range(max_new):
            out = model(input_ids=nxt, cache=cache, use_cache=True)
            w = int(out.logits[0, -1].argmax())
            probe.credit(ids[0], span, w)
            generated.append(w)
            text = tokenizer.decode(generated)
            if "\n" in text.strip() or w in tokenizer.all_special_ids:
                break
            nxt = torch.tensor([[w]], device=dev)
    gen = tokenizer.decode(generated, skip_special_tokens=True).strip().split("\n")[0]
    return RetrievalCase(n_tokens, depth, needle, gen, rouge1_recall(gen, answer), probe.result())


def retrieval_scores(
    model, tokenizer, lengths=(600, 1200), depths=(0.25, 0.5, 0.75), needles=(0, 1, 2), max_new: int = 24, progress=None, edits=()
) -> tuple[torch.Tensor, list[RetrievalCase]]:
    """(layers, heads) mean retrieval score over successful cases, and all cases.

    Heads are all-NaN when no case succeeds (the model never retrieved the needle)."""
    cases = []
    for n in lengths:
        for d in depths:
            for k in needles:
                cases.append(retrieval_case(model, tokenizer, n, d, k, max_new=max_new, edits=edits))
                if progress is not None:
                    progress()
    ok = [c.scores for c in cases if c.recall > SUCCESS_RECALL]
    if not ok:
        L, H, _ = model_shape(model)
        return torch.full((L, H), float("nan")), cases
    return torch.stack(ok).mean(0), cases
