"""RULER's answer scoring (Hsieh et al., arXiv 2404.06654; ``eval/synthetic/constants.py`` and
``eval/evaluate.py`` of the ``nvidia-long-context-eval`` wheel), per item:

* the prediction is stripped and every control character (``\\x00``-``\\x1f``) becomes a newline;
* ``all`` (``string_match_all``: needles, variable tracking, frequent words, passkey): the share of the
  references that occur in the prediction, case-insensitive substring match;
* ``part`` (``string_match_part``: question answering): 1 when any reference occurs in it, else 0.

RULER reports the mean of these scores (x 100). For paired tests an item also gets a 0/1 outcome: ``correct``
is a score of 1 (every reference found).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

METRICS = ("all", "part")
_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(pred: str | None) -> str:
    """RULER's ``postprocess_pred``: strip, control characters to newlines, strip again."""
    if pred is None:
        return ""
    return _CONTROL.sub("\n", pred.strip()).strip()


def score(pred: str | None, answers: Sequence[str], metric: str) -> float:
    """RULER's per-item score in [0, 1] of ``pred`` against ``answers`` (see the module doc)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not answers:
        raise ValueError("answers must hold at least one reference string, got none")
    p = postprocess(pred).lower()
    hits = [1.0 if a.lower() in p else 0.0 for a in answers]
    return sum(hits) / len(hits) if metric == "all" else max(hits)


def correct(pred: str | None, answers: Sequence[str], metric: str) -> bool:
    """The 0/1 outcome of an item: its RULER score is 1."""
    return score(pred, answers, metric) >= 1.0
