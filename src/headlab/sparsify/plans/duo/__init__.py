"""``duo`` planner: DuoAttention's gate training (Xiao et al., arXiv 2410.10819) on CPU-sized inputs.

``data`` builds the synthetic retrieval samples, ``mix`` the gated full / streaming attention,
``train`` fits the gates, ``plot`` draws them and ``planner`` turns them into a per-head plan
(``make_plan``, or ``plan`` with a ``DuoRequest``). Imported by ``plans.make_plan("duo", ...)``
when first used.
"""
