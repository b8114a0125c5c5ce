"""Decode speed at a given context length: greedy generation of a fixed number of new tokens after a
prompt, with the prefill (filling the KV cache) and the token-by-token steps timed apart.

    t = greedy_decode(model, prompt_ids, n_new=32)                  # full (dynamic) cache
    with attach(model, pattern=plan):
        cache, kind, err = plan_cache(model, plan)                  # compressed when headlab.kv_cache works
        t = greedy_decode(model, prompt_ids, 32, cache=cache, cache_kind=kind)
    t.tokens (32 ids), t.tok_s (steps per second), t.cache_bytes (KV bytes right after the prefill)

Per-head plans (DuoAttention-style streaming heads, MoA's elastic spans, arXiv 2406.14909) save
memory and decode time only when the cache keeps just each head's span; ``plan_cache`` asks for that
cache and says when it had to fall back to the full one. ``decode_record`` is one timed decode as
the fields of a ``TrialLog`` record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class DecodeTiming:
    tokens: list[int]  # the n_new greedy tokens (the first comes from the prefill's last logits)
    prefill_s: float  # one forward over the prompt that fills the cache
    decode_s: float  # the n_new - 1 single-token forward steps
    cache: str  # "full" | "compressed"
    cache_bytes: int  # bytes of keys + values held by the cache right after the prefill

    @property
    def steps(self) -> int:
        return len(self.tokens) - 1

    @property
    def tok_s(self) -> float:
        """Decoded tokens per second (single-token steps only, prefill excluded)."""
        return self.steps / self.decode_s if self.decode_s > 0 else float("inf")


def cache_nbytes(cache) -> int:
    """Bytes of keys and values a cache holds: ``cache.nbytes()`` when it has one, else the sum over
    its layers' key and value tensors (transformers' DynamicCache)."""
    fn = getattr(cache, "nbytes", None)
    if callable(fn):
        return int(fn())
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def dense_kv_bytes(model, n: int, dtype: torch.dtype | None = None) -> int:
    """Bytes of a full KV cache for ``n`` tokens: 2 (K, V) x layers x KV heads x head_dim x n x dtype size."""
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    size = torch.empty((), dtype=dtype or next(model.parameters()).dtype).element_size()
    return 2 * cfg.num_hidden_layers * n_kv * head_dim * n * size


def full_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def plan_cache(model, plan):
    """(cache, kind, error): ``headlab.kv_cache(model, plan)`` ("compressed") when it exists and
    accepts the plan, else a full DynamicCache ("full") with the reason in ``error``."""
    try:
        from ..kvcache import kv_cache
    except ImportError as e:
        return full_cache(model), "full", f"no compressed cache: {e}"
    try:
        return kv_cache(model, plan), "compressed", None
    except (ValueError, NotImplementedError, TypeError) as e:
        return full_cache(model), "full", f"kv_cache refused the plan: {e}"


@torch.no_grad()
def greedy_decode(
    model, prompt_ids: Sequence[int] | torch.Tensor, n_new: int, cache=None, cache_kind: str | None = None
) -> DecodeTiming:
    """Greedy-decode exactly ``n_new`` tokens after ``prompt_ids`` (no early stop at EOS), timing the
    prefill and the ``n_new - 1`` single-token steps separately. Positions are passed explicitly, so a
    cache that keeps fewer keys than it has seen still gets the right rotary positions.
    Run it inside ``attach(model, pattern=...)`` to decode under a sparse pattern or plan."""
    if n_new < 2:
        raise ValueError(f"n_new must be >= 2 (one prefill token + at least one decode step), got {n_new}")
    dev = next(model.parameters()).device
    x = torch.as_tensor(prompt_ids, dtype=torch.long, device=dev).reshape(1, -1)  # (1, T)
    T = x.shape[1]
    if T < 1:
        raise ValueError("prompt_ids is empty: need at least one prompt token")
    kind = cache_kind or ("full" if cache is None else type(cache).__name__)
    cache = full_cache(model) if cache is None else cache
    t0 = time.perf_counter()
    out = model(input_ids=x, position_ids=torch.arange(T, device=dev)[None], cache=cache, use_cache=True, logits_to_keep=1)
    nxt = out.logits[0, -1].argmax()
    prefill_s = time.perf_counter() - t0
    nbytes = cache_nbytes(cache)
    tokens = [int(nxt)]
    t0 = time.perf_counter()
    for step in range(n_new - 1):
        out = model(input_ids=nxt.view(1, 1), position_ids=torch.tensor([[T + step]], device=dev), cache=cache, use_cache=True)
        nxt = out.logits[0, -1].argmax()
        tokens.append(int(nxt))
    decode_s = time.perf_counter() - t0
    return DecodeTiming(tokens=tokens, prefill_s=prefill_s, decode_s=decode_s, cache=kind, cache_bytes=nbytes)


def decode_config(model, pattern, prompt_ids, n_new: int) -> tuple[DecodeTiming, str]:
    """(timing, note): one greedy decode under ``pattern`` (None = dense; a per-head plan or any
    pattern ``attach`` takes). A plan decodes with its compressed cache when ``kv_cache`` accepts it,
    else, or when that cache fails while decoding, with the full cache; ``note`` says why."""
    from ...engine.hf import attach

    if pattern is None:
        return greedy_decode(model, prompt_ids, n_new, cache=full_cache(model), cache_kind="full"), ""
    with attach(model, pattern=pattern):
        cache, kind, err = plan_cache(model, pattern)
        try:
            return greedy_decode(model, prompt_ids, n_new, cache=cache, cache_kind=kind), err or ""
        except Exception as e:  # noqa: BLE001 -- a failing compressed cache is reported, not fatal
            if kind != "compressed":
                raise
            note = f"compressed cache failed while decoding ({type(e).__name__}: {e}); timed with the full cache"
            return greedy_decode(model, prompt_ids, n_new, cache=full_cache(model), cache_kind="full"), note


def decode_record(model, p, prompt_ids, n_new: int) -> dict:
    """One timed greedy decode under config ``p`` (None = dense) as a log record's fields."""
    t, note = decode_config(model, p, prompt_ids, n_new)
    return {
        "tokens": t.tokens,
        "prefill_s": t.prefill_s,
        "decode_s": t.decode_s,
        "tok_s": t.tok_s,
        "cache": t.cache,
        "cache_bytes": t.cache_bytes,
        "cache_note": note,
    }
