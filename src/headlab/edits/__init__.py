"""Training-free head interventions ("edits"), composable through ``headlab.attach(model, edits=[...])``.

Composition order: inside one layer every edit's ``scores`` runs first (in list order), then the
softmax, then every ``weights`` (list order), then ``A·v``, then every ``output`` (list order).
So ``[zerotuning(...), ablate(..., mode="uniform")]`` on the same head ends uniform (the later
scores edit wins), while ``[scale_heads({s: 2}), ablate(s, mode="zero")]`` gives 0 either way.
"""

from .ablate import ablate
from .act import act
from .base import Edit
from .config import from_config, to_config
from .core import REGISTRY
from .dual_stream import dual_stream
from .emphasis import emphasis
from .functional import on_output, on_scores, on_weights
from .identity_blend import identity_blend
from .inject import inject
from .patch import patch
from .redistribute import redistribute
from .reinforce import reinforce, select_heads
from .scale import scale_heads
from .select import random_sites, resolve
from .span_exit import span_exit
from .zerotuning import zerotuning

__all__ = [
    "Edit",
    "ablate",
    "act",
    "dual_stream",
    "emphasis",
    "from_config",
    "to_config",
    "identity_blend",
    "inject",
    "patch",
    "redistribute",
    "reinforce",
    "select_heads",
    "scale_heads",
    "span_exit",
    "zerotuning",
    "random_sites",
    "resolve",
    "REGISTRY",
    "on_scores",
    "on_weights",
    "on_output",
]

#: functions that run a model, moved to the measurement layer (edits never run a model)
_MOVED = {"task_embedding": "headlab.measure.task_embedding", "context_sensitivity": "headlab.measure.context_sensitivity"}


def __getattr__(name: str):
    if name in _MOVED:
        raise AttributeError(f"headlab.edits.{name} moved to {_MOVED[name]} (edits never run a model)")
    raise AttributeError(f"module 'headlab.edits' has no attribute {name!r}")
