"""The compressed KV cache of per-head plans: full heads keep every key, streaming heads only their
sink and recent window (StreamingLLM, arXiv 2309.17453; MoA's elastic spans, arXiv 2406.14909;
DuoAttention's full/streaming split, arXiv 2410.10819).

``cache`` holds the cache (``kv_cache(model, plan)``, also ``headlab.kv_cache``); ``spans`` turns a
plan's patterns into what each (layer, KV head) keeps.
"""

from __future__ import annotations

from .cache import PREFILLS, HeadKVCache, HeadKVLayer, full_kv_nbytes, kv_cache, window_at

__all__ = ["PREFILLS", "HeadKVCache", "HeadKVLayer", "kv_cache", "full_kv_nbytes", "window_at"]
