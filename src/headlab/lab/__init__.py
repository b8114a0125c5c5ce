"""Small CPU experiments that reproduce (or fail to reproduce, honestly) attention papers' phenomena.

Each experiment module ``headlab.lab.<name>`` has ``run(..., seed, quiet) -> LabResult`` and
``plot(result, fig)``; :data:`EXPERIMENTS` maps CLI names to those modules.  ``tiny_lm`` builds the
small decoder-only LM used by ``sinks`` and ``moh``.
"""

from . import deconstruct, icl_regression, induction, memory_capacity, moh, rf_mean, sinks
from .lm import TinyLM, eval_loss, tiny_lm, train_lm
from .result import FIELDS, LabResult
from .text import TextData

#: CLI name -> experiment module (with ``run`` and ``plot``)
EXPERIMENTS = {
    "sinks": sinks,
    "induction": induction,
    "icl-regression": icl_regression,
    "memory-capacity": memory_capacity,
    "moh": moh,
    "deconstruct": deconstruct,
    "rf-mean": rf_mean,
}

__all__ = ["EXPERIMENTS", "FIELDS", "LabResult", "TextData", "TinyLM", "eval_loss", "tiny_lm", "train_lm"]
