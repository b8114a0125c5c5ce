"""Sparse attention on a real model: quality evaluation (passkey, perplexity, prefill and decode
time, KV-cache bytes) of patterns and per-head plans. ``from headlab import sparsify; sparsify.evaluate(...)``."""

from .decode_time import DecodeTiming, cache_nbytes, decode_config, dense_kv_bytes, greedy_decode, plan_cache
from .pareto import pareto_front, plot_pareto
from .passkey_eval import (
    Row,
    TrialLog,
    cli_pattern,
    evaluate,
    format_table,
    matched_window,
    nominal_density,
    passkey_depths,
    perplexity,
    plan_runs,
    plot,
    sink_window_density,
    write_report,
)
from .significance import McNemar, mcnemar_exact, wilson_interval

__all__ = [
    "DecodeTiming",
    "McNemar",
    "Row",
    "TrialLog",
    "cache_nbytes",
    "cli_pattern",
    "decode_config",
    "dense_kv_bytes",
    "evaluate",
    "format_table",
    "greedy_decode",
    "matched_window",
    "mcnemar_exact",
    "nominal_density",
    "pareto_front",
    "passkey_depths",
    "perplexity",
    "plan_cache",
    "plan_runs",
    "plot",
    "plot_pareto",
    "sink_window_density",
    "wilson_interval",
    "write_report",
]
