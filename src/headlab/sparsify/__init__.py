"""Sparse attention on a real model: quality evaluation (passkey, perplexity, prefill and decode
time, KV-cache bytes) of patterns and per-head plans. ``from headlab import sparsify; sparsify.evaluate(...)``.

Sub-packages: ``plans`` (per-head planners under a KV budget: uniform and random controls,
retrieval heads arXiv 2404.15574, MoA arXiv 2406.14909, DuoAttention arXiv 2410.10819),
``kvcache`` (the compressed KV cache of a plan) and ``eval`` (run loop, trial log, decode timing,
report). The CLI's named patterns and the matched-density StreamingLLM control (arXiv 2309.17453)
are ``headlab.patterns.presets``.
"""

from ..patterns.presets import matched_window, nominal_density, sink_window_density
from ..patterns.presets import preset as cli_pattern
from ..stats import McNemar, mcnemar_exact, wilson_interval
from .eval.decode import DecodeTiming, cache_nbytes, decode_config, dense_kv_bytes, greedy_decode, plan_cache
from .eval.log import TrialLog
from .eval.pareto import pareto_front, plot_pareto
from .eval.report import format_table, plot, write_report
from .eval.runner import Row, evaluate, passkey_depths, perplexity, plan_runs

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
