"""Sparse attention on a real model: quality evaluation (passkey, perplexity, prefill time) and
per-head plans. ``from headlab import sparsify; sparsify.evaluate(...)``."""
from .passkey_eval import (Row, TrialLog, cli_pattern, evaluate, format_table, matched_window, nominal_density,
                           passkey_depths, perplexity, plan_runs, plot, sink_window_density, write_report)

__all__ = ["Row", "TrialLog", "cli_pattern", "evaluate", "format_table", "matched_window", "nominal_density",
           "passkey_depths", "perplexity", "plan_runs", "plot", "sink_window_density", "write_report"]
