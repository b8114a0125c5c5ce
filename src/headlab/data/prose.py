"""Real English prose available offline: the help topics of CPython's ``pydoc_data.topics``.

``texts()`` gives paragraphs of running prose (code samples and tables filtered out), in a
fixed order; ``haystack()`` concatenates them into a long distractor text of a target length.
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=1)
def _paragraphs() -> tuple[str, ...]:
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # pragma: no cover - part of CPython
        raise RuntimeError("pydoc_data.topics is missing from this Python installation") from exc
    out = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = [ln.strip() for ln in block.strip().splitlines()]
            if not lines or any(ln.startswith((">>>", "...", "*", "+", "|", "=", "-")) for ln in lines[:1]):
                continue
            para = " ".join(lines)
            letters = sum(c.isalpha() or c == " " for c in para)
            # keep sentences: mostly letters, at least ~25 words, ends like a sentence
            if len(para) >= 160 and letters / len(para) > 0.85 and para[-1] in ".:" and "::" not in para:
                out.append(para)
    if not out:  # pragma: no cover
        raise RuntimeError("found no prose paragraphs in pydoc_data.topics")
    return tuple(out)


def texts(n: int | None = None, min_chars: int = 0) -> list[str]:
    """Paragraphs of prose; ``n`` first ones (all when None), each at least ``min_chars`` long."""
    paras = [p for p in _paragraphs() if len(p) >= min_chars]
    if n is not None:
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        paras = paras[:n]
    return paras


def documents(n: int, min_chars: int, seed: int = 0) -> list[str]:
    """``n`` texts of at least ``min_chars`` characters, each made of consecutive paragraphs."""
    if n <= 0 or min_chars <= 0:
        raise ValueError(f"n and min_chars must be positive, got n={n}, min_chars={min_chars}")
    paras = _paragraphs()
    start = (seed * 7919) % len(paras)
    docs: list[str] = []
    i = start
    while len(docs) < n:
        buf: list[str] = []
        while sum(len(p) + 1 for p in buf) < min_chars:
            buf.append(paras[i % len(paras)])
            i += 1
            if i - start > 50 * len(paras):  # pragma: no cover
                raise RuntimeError("not enough prose")
        docs.append(" ".join(buf))
    return docs


def haystack(tokenizer, n_tokens: int, seed: int = 0) -> str:
    """About ``n_tokens`` tokens (never more) of prose, starting at a seed-dependent paragraph."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    paras = _paragraphs()
    i = (seed * 7919) % len(paras)
    parts: list[str] = []
    total = 0
    while total < n_tokens:
        p = paras[i % len(paras)]
        n = len(tokenizer(p, add_special_tokens=False)["input_ids"]) + 1
        if total + n > n_tokens:
            ids = tokenizer(p, add_special_tokens=False)["input_ids"][: max(0, n_tokens - total - 1)]
            if ids:
                parts.append(tokenizer.decode(ids))
            break
        parts.append(p)
        total += n
        i += 1
    return " ".join(parts)
