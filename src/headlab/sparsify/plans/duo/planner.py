"""``duo`` planner: optimisation-based head classification in the style of DuoAttention
(Xiao et al., arXiv 2410.10819).

A gate alpha in [0, 1] per (layer, KV head) mixes full attention with sink + window attention;
the gates are fitted by Adam on synthetic retrieval data (``duo.data``), distilling the gated
model's final hidden states against the dense model's, with an L1 penalty that pushes gates to
0 (``duo.train``). Heads whose gates stay high are the retrieval heads (arXiv 2404.15574).
The budget then decides how many KV heads stay full: the k highest gates (ties broken by the
accumulated distillation gradient), with (k, window) from
``headlab.sparsify.plans.budget.split_budget`` so the streaming heads' sink_window(sink, w) spends
the rest of the budget at the target length.

Gates are cached on disk (``cache_dir`` or ``$HEADLAB_CACHE/profiles``), keyed by the model's
fingerprint, a digest of its weights and tokenizer, the training settings and the seed (and the
sha256 of the calibration file, with ``calib``), so a second budget reuses them without retraining.

``calib`` (a :class:`headlab.data.calib.CalibText` or a path) replaces the pydoc prose the facts are
hidden in with the user's own text; it must hold at least max(train_lengths) tokens.

    plan = make_plan(model, tokenizer, budget=0.35, length=8192)
    with headlab.attach(model, pattern=plan): ...
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ....data.calib import CalibText, as_calib
from ....patterns.headplan import HeadPlan, model_fingerprint
from ....progress import progress_bar
from ..common import Progress, SplitRequest, as_tuple, keyword_planner, split_plan, weights_digest
from .data import INTRO, make_sample
from .train import DuoSettings, GateProfile, train_gates

__all__ = ["DuoRequest", "make_plan", "plan", "gate_profile", "rank_kv_heads", "DuoSettings", "GateProfile"]

_FORMAT = "headlab-duo-gates/1"


def _tokenizer_digest(tokenizer) -> str:
    ids = tokenizer(INTRO + " 0123456789 The pass code", add_special_tokens=False)["input_ids"]
    return hashlib.sha256(json.dumps(list(map(int, ids))).encode()).hexdigest()[:16]


def _cache_path(
    model, tokenizer, settings: DuoSettings, seed: int, cache_dir, calib: CalibText | None = None
) -> tuple[Path, dict]:
    from ....models import cache_dir as default_cache

    key_fields = {
        "format": _FORMAT,
        "settings": settings.as_dict(),
        "seed": int(seed),
        "weights": weights_digest(model),
        "tokenizer": _tokenizer_digest(tokenizer),
    }
    if calib is not None:
        key_fields["calib"] = calib.sha256
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache() / "profiles"
    return folder / f"duo-{model_fingerprint(model)}-{key}.json", key_fields


def _calib_sample(tokenizer, calib: CalibText, n_facts: int, length: int, seed: int):
    """A training sample whose facts hide in a window of the user's text (``duo.data.make_sample``)."""
    return make_sample(tokenizer, length, seed, n_facts=n_facts, hay_ids=functools.partial(calib.window_ids, tokenizer))


def gate_profile(
    model,
    tokenizer,
    settings: DuoSettings | None = None,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    cache_dir=None,
    calib: CalibText | None = None,
) -> tuple[GateProfile, bool]:
    """The trained gates for ``model`` (from the cache when present); returns (profile, from_cache).

    ``progress(done, total, what)``; None shows a rich progress bar while training. ``calib``: the text the
    facts are hidden in (default CPython's pydoc prose).
    """
    settings = settings or DuoSettings()
    settings.check()
    calib = as_calib(calib)
    sample_fn = None
    if calib is not None:
        n_max = max(int(n) for n in settings.lengths)
        calib.require(tokenizer, n_max, f"method duo (its longest training sample, train_lengths up to {n_max})")
        sample_fn = functools.partial(_calib_sample, tokenizer, calib, settings.n_facts)

    path, key_fields = _cache_path(model, tokenizer, settings, seed, cache_dir, calib)
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("format") == _FORMAT and cached.get("key") == key_fields:
                p = cached["profile"]
                if progress is not None:
                    progress(settings.steps, settings.steps, f"duo gates from cache {path.name}")
                return GateProfile(p["gates"], p["pull"], [tuple(x) for x in p["losses"]], p["seconds"]), True
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            pass  # a damaged cache entry is retrained and replaced

    def run(tick: Progress) -> GateProfile:
        def cb(step: int, steps: int, info: dict) -> None:
            if info.get("phase") == "dense":
                tick(0, steps, f"dense hidden states {info['item']}/{info['items']}")
            else:
                tick(step, steps, f"distill {info['distill']:.3g}  reg {info['reg']:.3g}  mean gate {info['mean_gate']:.3f}")

        return train_gates(model, tokenizer, settings, seed=seed, progress=cb, sample_fn=sample_fn)

    with progress_bar("duo gates", settings.steps, quiet=progress is not None, transient=False) as bar:
        prof = run(progress or bar.update)
    from ....io import atomic_write_json

    atomic_write_json(
        path,
        {
            "format": _FORMAT,
            "key": key_fields,
            "fingerprint": model_fingerprint(model),
            "profile": {
                "gates": prof.gates,
                "pull": prof.pull,
                "losses": [list(x) for x in prof.losses],
                "seconds": round(prof.seconds, 2),
            },
        },
    )
    return prof, False


def rank_kv_heads(gates, pull=None) -> list[tuple[int, int]]:
    """(layer, KV head) pairs, highest gate first; ties by larger ``pull``, then by (layer, head)."""
    L, H = len(gates), len(gates[0])
    pull = pull or [[0.0] * H for _ in range(L)]
    return sorted(
        ((li, h) for li in range(L) for h in range(H)), key=lambda lh: (-gates[lh[0]][lh[1]], -pull[lh[0]][lh[1]], lh[0], lh[1])
    )


_TRAIN_OPTS = {
    "steps": "steps",
    "items": "items",
    "train_lengths": "lengths",
    "train_sink": "sink",
    "train_window": "window",
    "lr": "lr",
    "reg": "reg",
    "init": "init",
    "n_facts": "n_facts",
}


@dataclass(frozen=True)
class DuoRequest(SplitRequest):
    """Settings of a duo plan: the split of ``SplitRequest`` (``full_share`` of the budget to the
    k highest gates), ``train`` (the gate training, :class:`DuoSettings`; part of the cache key),
    ``plot`` (a path for a PNG of the gates and the loss curve, or None) and ``calib`` (the text the
    facts are hidden in: a :class:`~headlab.data.calib.CalibText` or a path; None = CPython's pydoc prose)."""

    train: DuoSettings = field(default_factory=DuoSettings)
    plot: str | Path | None = None
    calib: CalibText | str | Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "calib", as_calib(self.calib))
        if not isinstance(self.train, DuoSettings):
            raise ValueError(f"train must be DuoSettings, got {self.train!r}")
        self.train.check()

    @classmethod
    def from_options(cls, *, budget, length, **opts) -> DuoRequest:
        """A request from ``make_plan``'s keyword options: the split's (seed, sink, min_window,
        full_share, model_name, plot, calib) and the training's (steps, items, train_lengths, train_sink,
        train_window, lr, reg, init, n_facts)."""
        own = {"seed", "sink", "min_window", "full_share", "model_name", "plot", "calib"}
        bad = sorted(set(opts) - set(_TRAIN_OPTS) - own)
        if bad:
            raise ValueError(
                f"unknown duo option(s) {bad}; valid: {sorted(_TRAIN_OPTS)} plus sink, min_window, full_share, model_name, "
                "plot, calib"
            )
        kw = {_TRAIN_OPTS[k]: v for k, v in opts.items() if k in _TRAIN_OPTS}
        if "lengths" in kw:
            kw["lengths"] = tuple(int(n) for n in as_tuple(kw["lengths"]))
        return cls(budget=budget, length=length, train=DuoSettings(**kw), **{k: v for k, v in opts.items() if k in own})


def plan(model, tokenizer, request: DuoRequest, *, progress: Progress | None = None, cache_dir=None) -> HeadPlan:
    """A per-KV-head plan with kv_fraction <= ``request.budget`` at ``request.length`` tokens from
    trained DuoAttention gates (from the cache when the same training ran before)."""
    t0 = time.time()
    k, w = request.split(model)
    seed, settings = request.seed, request.train
    calib = request.calib
    prof, cached = gate_profile(model, tokenizer, settings, seed=seed, progress=progress, cache_dir=cache_dir, calib=calib)
    full = set(rank_kv_heads(prof.gates, prof.pull)[:k])
    losses = prof.losses
    head = max(1, len(losses) // 10)
    calibration = {
        "data": "synthetic retrieval: pass codes, key-value lines, secret phrases in "
        + (f"user text ({calib.path})" if calib is not None else "CPython pydoc prose"),
        **({"source": calib.source(tokenizer)} if calib is not None else {}),
        "lengths": list(settings.lengths),
        "items": settings.items,
        "seed": seed,
        "steps": settings.steps,
        "sink": settings.sink,
        "window": settings.window,
        "lr": settings.lr,
        "reg": settings.reg,
        "init": settings.init,
        "n_facts": settings.n_facts,
        "train_seconds": round(prof.seconds, 2),
        "from_cache": cached,
        "distill_first": sum(x[0] for x in losses[:head]) / head,
        "distill_last": sum(x[0] for x in losses[-head:]) / head,
    }
    if request.plot is not None:
        from .plot import plot_gates

        plot_gates(
            request.plot,
            prof.gates,
            prof.losses,
            sorted(full),
            title=f"duo gates, {len(full)} of {len(prof.gates) * len(prof.gates[0])} KV heads full, "
            f"sink_window({request.sink}, {w}) for the rest at {request.length} tokens (budget {request.budget})",
        )
    return split_plan(
        model,
        full,
        w,
        request,
        method="duo",
        full_share=request.full_share,
        calibration=calibration,
        scores=prof.gates,
        t0=t0,
        rank="gate, ties by accumulated distillation pull",
    )


make_plan = keyword_planner(
    plan,
    DuoRequest.from_options,
    "make_plan",
    """A per-KV-head plan with kv_fraction <= ``budget`` at ``length`` tokens from trained DuoAttention gates.

    Keywords (defaults: the dataclasses): the split of :class:`DuoRequest` (seed, sink, min_window, full_share of
    the budget to full heads, model_name, ``plot``: a path for a PNG of the gates and the loss curve, ``calib``:
    the user's text the facts are hidden in, a path or a :class:`~headlab.data.calib.CalibText`) and the
    training of :class:`DuoSettings` (part of the cache key): steps, items, train_lengths, train_sink,
    train_window, lr, reg, init, n_facts.""",
)
