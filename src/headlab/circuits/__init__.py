"""Circuit tasks found by patching (IOI, Colored Objects), head classes and cross-task reuse.

``make_ioi(tokenizer, n)`` / ``make_colored_objects(tokenizer, n)`` build a :class:`Task`;
``find_circuit(model, task)`` runs the patching sweeps and classifies heads; ``write(result, dir)``
writes the atlas files; ``reuse(effect_a, effect_b)`` measures the overlap of two tasks' heads.
"""

from __future__ import annotations

from .classify import THRESHOLDS, classify
from .colored_objects import make_colored_objects
from .ioi import make_ioi
from .reuse import overlap, reuse, top_k
from .run import CircuitResult, find_circuit, load_effects, write
from .task import Task, single_token_ids

__all__ = [
    "Task",
    "make_ioi",
    "make_colored_objects",
    "find_circuit",
    "CircuitResult",
    "write",
    "load_effects",
    "classify",
    "THRESHOLDS",
    "reuse",
    "overlap",
    "top_k",
    "single_token_ids",
]
