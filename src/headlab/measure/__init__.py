"""Measurement: everything that runs a model to measure its heads — ``head_stats``, scan, atlas
roles, the induction and retrieval protocols, and recording head outputs (mean-ablation means,
task embeddings, context sensitivity). Built on the engine and the plug-ins (probes, edits,
patterns), which never run a model themselves."""

from __future__ import annotations

from .induction import induction_scores, repeated_random_tokens
from .record import HeadRecorder, calibrate_mean_ablation, context_sensitivity, record_head_outputs, task_embedding
from .retrieval import retrieval_case, retrieval_scores
from .stats import head_stats

__all__ = [
    "head_stats",
    "induction_scores",
    "repeated_random_tokens",
    "retrieval_case",
    "retrieval_scores",
    "HeadRecorder",
    "record_head_outputs",
    "calibrate_mean_ablation",
    "task_embedding",
    "context_sensitivity",
]
