"""``moa`` planner: MoA's attention-influence profile and per-KV-head elastic rules (Fu et al.,
arXiv 2406.14909).

``influence`` computes the first-order loss change of masking attention entries, ``rules`` the
elastic rules and their choice under a KV budget, and ``planner`` the profile and the per-head plan
(``make_plan``, or ``plan`` with a ``MoaRequest``). Imported by ``plans.make_plan("moa", ...)`` when
first used.
"""
