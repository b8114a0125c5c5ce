"""The configuration of every lab experiment: one frozen dataclass per experiment whose fields are its sizes and
knobs with their defaults, the one home of those numbers (this module imports no torch, so the command line
reads it at once).

- ``run(config=None, *, quiet=False, **overrides)`` of ``headlab.lab.<experiment>`` starts from the
  dataclass (or ``config``) and replaces the fields named in ``overrides``;
- the ``headlab lab <experiment>`` options take their defaults from the fields, and ``--smoke`` applies
  the experiment's :data:`SMOKE` sizes;
- the result records :meth:`LabConfig.record` as its ``config``;
- the claims harness tests that every size it registers agrees with the fields it names.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="LabConfig")


@dataclass(frozen=True)
class LabConfig:
    """What every experiment takes: ``seed`` (data and initialisation)."""

    NAME: ClassVar[str] = ""
    seed: int = 0

    @classmethod
    def make(cls: type[C], config: C | None = None, **overrides: Any) -> C:
        """``config`` (default: the defaults) with the fields in ``overrides`` replaced; TypeError naming an unknown one."""
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        valid = [f.name for f in fields(cls)]
        bad = sorted(set(overrides) - set(valid))
        if bad:
            raise TypeError(f"{cls.NAME}: unknown setting(s) {bad}; valid: {valid}")
        return replace(config if config is not None else cls(), **overrides)

    def record(self, **extra: Any) -> dict[str, Any]:
        """The configuration as a result records it: every field but the run's name (tuples as lists), then ``extra``."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        return {**{k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}, **extra}


@dataclass(frozen=True)
class TinyLMConfig(LabConfig):
    """The tiny LMs of ``sinks``, ``moh`` and ``deconstruct`` (:func:`headlab.lab.tiny_lm`) and their budget:
    ``steps`` of ``batch`` windows of ``seq_len`` tokens at peak learning rate ``lr``."""

    steps: int = 1000
    layers: int = 2
    d_model: int = 64
    heads: int = 4
    batch: int = 32
    seq_len: int = 64
    lr: float = 3e-3


@dataclass(frozen=True)
class SinksConfig(TinyLMConfig):
    """``sinks``: softmax / sigmoid / gated tiny LMs; ``evals`` sink probes over training; ``data`` "text" or
    "backcopy"; ``mlp`` / ``tied`` the architecture; ``repeats`` seeds per mechanism; ``name`` the run's name."""

    NAME: ClassVar[str] = "sinks"
    steps: int = 1200
    weight_decay: float = 0.01
    evals: int = 8
    data: str = "text"
    mlp: bool = True
    tied: bool = True
    repeats: int = 1
    name: str = NAME


@dataclass(frozen=True)
class InductionConfig(LabConfig):
    """``induction``: Reddy's bursty task (K classes, L labels, item dimension D, N pairs in bursts of B, ...)."""

    NAME: ClassVar[str] = "induction"
    steps: int = 5000
    K: int = 16384
    L: int = 32
    D: int = 31
    N: int = 4
    B: int = 2
    p_bursty: float = 0.9
    alpha: float = 0.0
    eps: float = 0.1
    batch: int = 128
    lr: float = 3e-3
    eval_every: int = 100


@dataclass(frozen=True)
class IclRegressionConfig(LabConfig):
    """``icl-regression``: input dimension d, context length n, the head counts trained, test lengths."""

    NAME: ClassVar[str] = "icl-regression"
    steps: int = 6000
    d: int = 5
    n: int = 20
    heads: tuple[int, ...] = (1, 2, 4)
    batch: int = 256
    lr: float = 1e-3
    noise: float = 0.5
    test_lengths: tuple[int, ...] = (20, 40, 80)


@dataclass(frozen=True)
class MemoryCapacityConfig(LabConfig):
    """``memory-capacity``: key widths d_ks, value width d_v, random memories per point, softmax β."""

    NAME: ClassVar[str] = "memory-capacity"
    d_ks: tuple[int, ...] = (16, 32, 64, 128)
    d_v: int = 64
    trials: int = 5
    beta: float = 16.0


@dataclass(frozen=True)
class MohConfig(TinyLMConfig):
    """``moh``: tiny LMs with MoH at ``fractions`` of active heads vs MHA; ``converge`` > 0 sets the budget by
    the converged MHA (checked every ``check_every`` steps, cap ``steps``); ``name`` the run's name."""

    NAME: ClassVar[str] = "moh"
    steps: int = 800
    heads: int = 8
    fractions: tuple[float, ...] = (0.5, 0.75, 0.9)
    converge: float = 0.0
    check_every: int = 200
    name: str = NAME


@dataclass(frozen=True)
class DeconstructConfig(TinyLMConfig):
    """``deconstruct``: 13 tiny LMs (uniform and hybrid stacks) at one budget; ``name`` the run's name."""

    NAME: ClassVar[str] = "deconstruct"
    steps: int = 300
    layers: int = 4
    batch: int = 16
    eval_batches: int = 8
    name: str = NAME


@dataclass(frozen=True)
class RfMeanConfig(LabConfig):
    """``rf-mean``: input dimension d, keys per item, heads M, training sizes, QK means, noise σ, target γ,
    seeds, validation and test items."""

    NAME: ClassVar[str] = "rf-mean"
    d: int = 8
    keys: int = 16
    heads: int = 128
    sizes: tuple[int, ...] = (128, 512, 2048)
    means: tuple[float, ...] = (0.0, 4.0)
    sigma: float = 2.0
    gamma: float = 4.0
    seeds: int = 5
    n_val: int = 512
    n_test: int = 2048


@dataclass(frozen=True)
class PointerHullConfig(LabConfig):
    """``pointer-hull``: Pointer Networks (arXiv 1506.03134) vs an attention seq2seq on planar convex hulls:
    ``steps`` of ``batch`` point sets with n uniform in [``n_min``, ``n_max``], LSTM width ``hidden``, greedy
    decoding on ``test_items`` fresh sets at each length in ``test_n``."""

    NAME: ClassVar[str] = "pointer-hull"
    steps: int = 5000
    batch: int = 64
    hidden: int = 128
    lr: float = 1e-3
    n_min: int = 5
    n_max: int = 10
    test_n: tuple[int, ...] = (10, 20)
    test_items: int = 1000


@dataclass(frozen=True)
class ProbingSst2Config(LabConfig):
    """``probing-sst2``: efficient probing (arXiv 2506.10178) vs linear and multi-head attentive probes on frozen
    MiniLM token states of SST-2: ``folds``-fold cross-fitting over ``items`` sentences (0 = all 872), each probe
    ``steps`` AdamW steps of ``batch`` at ``lr``; EP with ``queries`` queries, the MHA probe with ``mha_heads``."""

    NAME: ClassVar[str] = "probing-sst2"
    items: int = 0
    max_tokens: int = 64
    folds: int = 4
    steps: int = 300
    batch: int = 32
    lr: float = 1e-3
    queries: int = 32
    mha_heads: int = 12


@dataclass(frozen=True)
class PoolingSst2Config(LabConfig):
    """``pooling-sst2``: AttSets (arXiv 1808.00758) and MLTP (arXiv 2409.02727) pooling heads vs mean, CLS and max
    pooling of frozen MiniLM states on SST-2, same budget (``folds``, ``steps``, ``batch``, ``lr``); MLTP with
    ``latents`` latents and ``mltp_heads`` x ``mltp_d_head`` attention."""

    NAME: ClassVar[str] = "pooling-sst2"
    items: int = 0
    max_tokens: int = 64
    folds: int = 4
    steps: int = 300
    batch: int = 32
    lr: float = 1e-3
    latents: int = 16
    mltp_heads: int = 4
    mltp_d_head: int = 64


@dataclass(frozen=True)
class PonetLraConfig(LabConfig):
    """``ponet-lra``: PoNet (arXiv 2110.02442) vs softmax attention encoders on a ListOps-like task of up to
    ``length`` tokens (nesting ``depth``, up to ``max_args`` arguments), ``steps`` of ``batch`` at ``lr``, tested on
    ``test_items``; ``timing_lengths`` / ``timing_batch`` / ``timing_repeats`` time one training step of each
    (alternating); ``steps`` = 0 only times; ``name`` the run's name."""

    NAME: ClassVar[str] = "ponet-lra"
    steps: int = 2500
    batch: int = 16
    lr: float = 1e-3
    length: int = 256
    depth: int = 3
    max_args: int = 10
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    segment_size: int = 16
    test_items: int = 2000
    timing_lengths: tuple[int, ...] = (256,)
    timing_batch: int = 16
    timing_repeats: int = 3
    name: str = NAME


@dataclass(frozen=True)
class DsfEquivConfig(LabConfig):
    """``dsf-equiv``: the Dynamical Systems Framework's equivalences (arXiv 2405.15731) checked on random inputs:
    ``trials`` draws of (``batch``, ``heads``, ``length``, ``d_k``, ``d_v``); softmax approximated with the random
    feature sizes ``features``."""

    NAME: ClassVar[str] = "dsf-equiv"
    trials: int = 5
    batch: int = 2
    heads: int = 2
    length: int = 64
    d_k: int = 16
    d_v: int = 16
    features: tuple[int, ...] = (16, 64, 256, 1024, 4096)


@dataclass(frozen=True)
class RefamSquadConfig(LabConfig):
    """``refam-squad``: RefAM's global-sink suppression (arXiv 2509.22650) adapted to text: question-to-passage
    attention of ``model`` in layers ``first_layer``..last, answer-span hit rate of the raw and the suppressed maps
    on the first ``items`` answerable SQuAD questions with passages of at most ``max_chars`` characters."""

    NAME: ClassVar[str] = "refam-squad"
    model: str = "smollm2-135m"
    items: int = 300
    max_chars: int = 1000
    first_layer: int = 15


@dataclass(frozen=True)
class PreplanAnchorConfig(LabConfig):
    """``preplan-anchor``: the WAAD / FAI coupling lifts of arXiv 2510.13554 on ``model``'s greedy reasoning (at most
    ``new_tokens``, responses under ``min_response`` skipped) about ``prompts`` seeded GSM8K test questions: head
    groups of ``frac`` by mean backward distance, WAAD window ``window``, FAI horizon [``fai_lo``, ``fai_hi``], peaks
    in the top ``peak_q``, FAI peaks within ``follow_k`` tokens after a WAAD peak, ``permutations`` shuffles per
    response and ``bootstrap`` resamples of prompts."""

    NAME: ClassVar[str] = "preplan-anchor"
    model: str = "smollm2-135m"
    prompts: int = 70
    new_tokens: int = 128
    min_response: int = 32
    window: int = 10
    fai_lo: int = 10
    fai_hi: int = 100
    frac: float = 0.3
    peak_q: float = 0.2
    follow_k: int = 3
    permutations: int = 200
    bootstrap: int = 2000


@dataclass(frozen=True)
class CarveSquadConfig(LabConfig):
    """``carve-squad``: CARVE's contrastive attention refinement (arXiv 2509.06461) adapted to text: ``items`` SQuAD
    questions, each over about ``context_tokens`` tokens of paragraphs (the gold one among distractors); ``model``'s
    last-position attention in layers ``first_layer``..``last_layer`` under the question vs a general instruction,
    contrast with λ = ``lam`` / N; the top sentences up to ``keep`` of the context tokens are kept and the question
    re-answered greedily (``max_new`` tokens); ``chance_draws`` random subsets per item give the chance hit rate."""

    NAME: ClassVar[str] = "carve-squad"
    model: str = "smollm2-135m"
    items: int = 140
    context_tokens: int = 1200
    first_layer: int = 19
    last_layer: int = 23
    keep: float = 0.3
    lam: float = 1.0
    max_new: int = 24
    chance_draws: int = 200


@dataclass(frozen=True)
class DominanceSquadConfig(LabConfig):
    """``dominance-squad``: text dominance (MDI, arXiv 2508.10552) adapted to a text LM: ``items`` SQuAD questions,
    each over about ``context_tokens`` tokens of paragraphs (the gold one among distractors); ``model``'s attention from
    its answer positions on the task span vs the context, per layer group; the context compressed to ``keep`` of its
    tokens by whole sentences (ranked by the model's own attention, and at random) and answered again greedily
    (``max_new`` tokens)."""

    NAME: ClassVar[str] = "dominance-squad"
    model: str = "smollm2-135m"
    items: int = 100
    context_tokens: int = 1200
    keep: float = 0.5
    max_new: int = 16


@dataclass(frozen=True)
class ExitSquadConfig(LabConfig):
    """``exit-squad``: DyVTE's dynamic token exit (arXiv 2411.19628) adapted to a text LM: ``items`` SQuAD questions
    over their own paragraph (at most ``max_chars`` characters); the paragraph's keys dropped after each layer in
    ``exit_layers`` and the answer decoded greedily again (``max_new`` tokens); a logistic hyper-network (L2 ``l2``)
    on the last position's state picks the exit per item under ``folds``-fold cross-fitting, the earliest layer
    with probability >= ``threshold``."""

    NAME: ClassVar[str] = "exit-squad"
    model: str = "smollm2-135m"
    items: int = 120
    max_chars: int = 1500
    max_new: int = 16
    exit_layers: tuple[int, ...] = (3, 7, 11, 15, 19, 23, 27)
    folds: int = 4
    threshold: float = 0.5
    l2: float = 0.1


#: experiment name -> its configuration dataclass
CONFIGS: dict[str, type[LabConfig]] = {
    c.NAME: c
    for c in (
        SinksConfig,
        InductionConfig,
        IclRegressionConfig,
        MemoryCapacityConfig,
        MohConfig,
        DeconstructConfig,
        RfMeanConfig,
        PointerHullConfig,
        ProbingSst2Config,
        PoolingSst2Config,
        PonetLraConfig,
        DsfEquivConfig,
        RefamSquadConfig,
        PreplanAnchorConfig,
        CarveSquadConfig,
        DominanceSquadConfig,
        ExitSquadConfig,
    )
}

#: experiment name -> the sizes of ``--smoke`` (a seconds-long configuration for tests and CI)
SMOKE: dict[str, dict[str, Any]] = {
    "sinks": dict(steps=4, layers=1, d_model=16, heads=2, batch=4, seq_len=16, evals=2),
    "induction": dict(steps=6, K=16, D=15, batch=8, eval_every=2),
    "icl-regression": dict(steps=5, batch=16, test_lengths=(20,)),
    "memory-capacity": dict(d_ks=(8, 16), trials=1),
    "moh": dict(steps=3, layers=1, d_model=16, heads=4, batch=4, seq_len=16, check_every=1),
    "deconstruct": dict(steps=2, layers=2, d_model=16, heads=2, batch=4, seq_len=16, eval_batches=1),
    "rf-mean": dict(heads=4, sizes=(16, 32), seeds=1, n_val=32, n_test=64),
    "pointer-hull": dict(steps=3, batch=8, hidden=16, n_min=4, n_max=6, test_n=(6, 12), test_items=16),
    "probing-sst2": dict(items=48, max_tokens=24, folds=2, steps=3, batch=8),
    "pooling-sst2": dict(items=48, max_tokens=24, folds=2, steps=3, batch=8, latents=4, mltp_heads=2, mltp_d_head=16),
    "ponet-lra": dict(
        steps=3,
        batch=4,
        length=64,
        depth=3,
        max_args=4,
        d_model=16,
        heads=2,
        layers=1,
        segment_size=8,
        test_items=16,
        timing_lengths=(32, 64),
        timing_batch=2,
        timing_repeats=1,
    ),
    "dsf-equiv": dict(trials=1, batch=1, heads=1, length=8, d_k=4, d_v=4, features=(8, 64)),
    "refam-squad": dict(items=4, max_chars=700),
    "preplan-anchor": dict(prompts=2, new_tokens=40, min_response=16, permutations=20, bootstrap=50),
    "carve-squad": dict(items=2, context_tokens=400, max_new=4, chance_draws=20),
    "dominance-squad": dict(items=2, context_tokens=400, max_new=4),
    "exit-squad": dict(items=4, max_chars=700, max_new=3, exit_layers=(7, 23), folds=2),
}
