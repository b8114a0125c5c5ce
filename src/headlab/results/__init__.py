"""Published results as regenerable artifacts: the claims registry (command, size, rule, tolerance fixed in
code), the result writer (``results/NAME/result.json``), ``--check`` comparison and the table renderer.

``headlab reproduce --list | NAME [--out DIR] [--check] [--smoke] | --render``.
"""

from .claims import REGISTRY, Claim, Tolerance, all_claims, get, judge, number, register
from .stats import paired_difference, proportion

__all__ = [
    "REGISTRY",
    "Claim",
    "Tolerance",
    "all_claims",
    "get",
    "judge",
    "number",
    "paired_difference",
    "proportion",
    "register",
]
