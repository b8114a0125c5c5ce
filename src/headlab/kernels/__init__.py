"""Block-sparse attention execution: ``sparse_attend`` (see ``dispatch.py`` for the backends),
the banded window kernel (``band.py``), heterogeneous head groups (``heads.py``), the gather
kernel (``gather.py``), FlexAttention (``flex.py``) and the dense reference (``reference.py``).
"""

from __future__ import annotations

from ..engine.plugins import EXTENSIONS
from .band import band_attend
from .dispatch import BACKENDS, DEFAULT_BLOCK, auto_backend, dense_attend, last_backend, pattern_block, sparse_attend
from .heads import head_bands, split_attend
from .plan import build_plan
from .reference import masked_attention, pattern_mask, reference_sparse_attend

__all__ = [
    "sparse_attend",
    "auto_backend",
    "last_backend",
    "band_attend",
    "head_bands",
    "split_attend",
    "reference_sparse_attend",
    "masked_attention",
    "pattern_mask",
    "dense_attend",
    "build_plan",
    "pattern_block",
    "BACKENDS",
    "DEFAULT_BLOCK",
]


def _engine_sparse_attend(q, k, v, pattern, *, scale=None, causal=True):
    """The engine's block-sparse path: ``sparse_attend`` looked up at call time (so a patched one is used)."""
    return sparse_attend(q, k, v, pattern, scale=scale, causal=causal)


EXTENSIONS.sparse_attend = _engine_sparse_attend
