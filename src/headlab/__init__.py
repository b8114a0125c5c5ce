"""headlab: see, steer and sparsify the attention heads of Hugging Face transformers."""

from __future__ import annotations

from . import edits, kernels, patterns, probes  # noqa: F401  (plug-ins register with the engine on import)
from .engine import hf
from .engine import plugins as _plugins
from .engine.attend import attend
from .engine.hf import attach
from .engine.reference import reference_attention
from .measure import patching  # noqa: F401  (headlab.patching.record / head_effects / path_patch)
from .measure.stats import head_stats
from .models import load
from .version import __version__

_plugins.HOOKS.register("sparse_attend", lambda *a, **kw: kernels.sparse_attend(*a, **kw))
_plugins.HOOKS.register("per_head", lambda *a, **kw: patterns.per_head(*a, **kw))


def kv_cache(model, plan):
    """A compressed KV cache for decoding under a per-head ``plan`` (see ``headlab.sparsify.kvcache``)."""
    from .sparsify.kvcache import kv_cache as _kv_cache

    return _kv_cache(model, plan)


__all__ = ["__version__", "hf", "attend", "attach", "reference_attention", "head_stats", "load", "kv_cache"]
