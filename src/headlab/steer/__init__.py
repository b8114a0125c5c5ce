"""Tuning and measuring edits on real tasks: ``steer`` (tune on one split, report on a disjoint one),
``evaluate``, intervals (scipy: Wilson, paired bootstrap, McNemar) and the per-method tuners."""

from .bootstrap import accuracy_ci, bootstrap_ci, paired_diff_ci, paired_test
from .evaluate import Result, evaluate
from .result import SteerResult
from .run import METHODS, steer
from .tune import fit_inject, search_act, tune_grid, tune_zerotuning

__all__ = [
    "METHODS",
    "Result",
    "SteerResult",
    "accuracy_ci",
    "bootstrap_ci",
    "paired_test",
    "evaluate",
    "fit_inject",
    "paired_diff_ci",
    "search_act",
    "steer",
    "tune_grid",
    "tune_zerotuning",
]
