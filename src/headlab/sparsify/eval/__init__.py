"""The evaluation of sparse patterns and per-head plans on a real model: passkey accuracy,
perplexity, prefill and decode time, KV-cache bytes (StreamingLLM's matched sink + window as the
head-blind control, arXiv 2309.17453; per-head plans after MoA, arXiv 2406.14909, and
DuoAttention, arXiv 2410.10819).

``runner`` (``evaluate``: the interleaved run loop and its rows), ``log`` (``TrialLog``: the
resumable trial log), ``decode`` (decode timing and the plan's KV cache), ``report`` (table, plots,
results.json), ``pareto`` (quality vs KV memory), ``speed`` (timing only), ``reach``
(``headlab sparsify reach``), ``plan_id`` (a plan's label and identity).
"""
