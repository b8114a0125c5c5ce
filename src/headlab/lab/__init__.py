"""Small CPU experiments that reproduce (or fail to reproduce, honestly) attention papers' phenomena.

Each experiment module ``headlab.lab.<name>`` has ``run(config=None, *, quiet=False, **overrides) -> LabResult``
and ``plot(result, fig)``; its sizes and knobs are the fields of its configuration dataclass in
:mod:`headlab.lab.config` (:data:`CONFIGS`; ``--smoke`` sizes in :data:`SMOKE`). :data:`EXPERIMENTS` maps CLI
names to the modules. ``tiny_lm`` builds the small decoder-only LM used by ``sinks``, ``moh`` and
``deconstruct``. Importing this package loads no torch: the modules load on first use of a name below.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .config import CONFIGS, SMOKE, LabConfig

#: CLI name -> experiment module (in ``headlab.lab``)
_MODULES = {
    "sinks": "sinks",
    "induction": "induction",
    "icl-regression": "icl_regression",
    "memory-capacity": "memory_capacity",
    "moh": "moh",
    "deconstruct": "deconstruct",
    "rf-mean": "rf_mean",
    "pointer-hull": "pointer_hull",
    "probing-sst2": "probing_sst2",
    "pooling-sst2": "pooling_sst2",
    "ponet-lra": "ponet_lra",
    "dsf-equiv": "dsf_equiv",
    "refam-squad": "refam_squad",
    "preplan-anchor": "preplan_anchor",
    "carve-squad": "carve_squad",
    "dominance-squad": "dominance_squad",
    "exit-squad": "exit_squad",
}
_API = {
    "TinyLM": "lm",
    "eval_loss": "lm",
    "tiny_lm": "lm",
    "train_lm": "lm",
    "FIELDS": "result",
    "LabResult": "result",
    "TextData": "text",
}

if TYPE_CHECKING:
    from .lm import TinyLM, eval_loss, tiny_lm, train_lm
    from .result import FIELDS, LabResult
    from .text import TextData

    EXPERIMENTS: dict[str, ModuleType]


def __getattr__(name: str) -> Any:
    if name == "EXPERIMENTS":
        value: Any = {cli: importlib.import_module(f"{__name__}.{mod}") for cli, mod in _MODULES.items()}
    elif name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "CONFIGS",
    "EXPERIMENTS",
    "FIELDS",
    "SMOKE",
    "LabConfig",
    "LabResult",
    "TextData",
    "TinyLM",
    "eval_loss",
    "tiny_lm",
    "train_lm",
]
