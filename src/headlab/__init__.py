"""headlab: see, steer and sparsify the attention heads of Hugging Face transformers."""
from __future__ import annotations

__version__ = "0.1.0"

from .attend import attend
from .hf import attach
from .reference import reference_attention
from .stats import head_stats
from .models import load
from . import hf

__all__ = ["__version__", "hf", "attend", "attach", "reference_attention", "head_stats", "load"]
