"""Streaming probes: per-(layer, query head) statistics accumulated chunk by chunk.

A probe never keeps attention maps. The engine calls, for each attention call of a layer,
either ``update(A, ctx)`` with the weights of one query chunk ``A (B, H, Tc, S)`` (rows of pad
queries are included; use ``ctx.query_valid()``), or — when every attached probe supports it —
``update_fast(stats, ctx)`` with per-query statistics computed next to SDPA:

    stats["sink"]      (B, H, T)  A[i, first real key]
    stats["prev"]      (B, H, T)  A[i, i-1]   (0 where i has no previous real key)
    stats["entropy"]   (B, H, T)  -Σ_j A_ij ln A_ij   (nats)
    stats["distance"]  (B, H, T)  Σ_j A_ij (pos_i - pos_j)
    stats[p.key_stat]  (B, H, T)  Σ_j A_ij w_j   ("keys": w = ``p.key_weights(ctx)`` (B, S), e.g. stop words)
    stats["scores"]    a :class:`~headlab.engine.fast.FastCall`: exact weights of chosen (query, key)
                       pairs from q, k and the log-sum-exp (a probe's own blocked pass, e.g. global sinks)

and, for ``"band"`` probes, ``update_band(band, ctx)`` per query chunk with the weights on a band of
position gaps ``p.band_range(ctx)`` (:class:`~headlab.engine.fast.Band`; WAAD and FAI read near-diagonal
bands, arXiv 2510.13554). Every fast form is checked against the probe's ``update`` on the same maps.

Averages are pooled over every valid query of every row and every call (a decode step adds
one query per row), so ``result()`` is (sum over queries) / (number of queries).

A probe class that measures a head metric also carries its facts, read by scan, atlas roles,
CLI and report (nothing else restates them): ``formula`` (one line), ``paper`` (citation),
``role`` (a :class:`RoleRule`: which role a head gets for which score, with the default
threshold) and ``protocol`` (None when it runs on any text; else the input protocol it needs).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch

from ..engine.context import AttnContext
from ..engine.fast import Band

#: what ``fast_needs`` may name: per-query statistics, per-key weighted sums, bands of weights, the scores
FAST_STATS = ("sink", "prev", "entropy", "distance", "keys", "band", "scores")


def acc_dtype(device: torch.device) -> torch.dtype:
    """The accumulator dtype on ``device``: float64, or float32 where the device has none (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class RoleRule:
    """A head has ``role`` when its metric ``op`` ``threshold`` holds (e.g. ``sink >= 0.3``).

    relative_to: name of a reference value the threshold multiplies (``"uniform_entropy"``: the
        broad role is ``entropy >= 0.6 * uniform_entropy``); without that value no role is given.
    unless: a role that excludes this one (a local head is not a sink head).
    letter: one-letter mark of the role in plots and tables.
    rank: where the role is listed among a head's roles (lower first; specific roles before the
        generic local / broad, so that a head's first role is its most telling one).
    """

    role: str
    op: str
    threshold: float
    letter: str
    relative_to: str | None = None
    unless: str | None = None
    rank: int = 0

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"role {self.role!r}: op {self.op!r} must be one of {list(_OPS)}")

    @property
    def higher_is_stronger(self) -> bool:
        """Whether larger metric values mean a stronger role (False for ``<=``/``<`` rules)."""
        return self.op in (">=", ">")

    def holds(self, value: float | None, threshold: float | None = None, reference: float | None = None) -> bool:
        """Whether ``value`` passes (``threshold`` overrides the default; ``reference`` for relative rules)."""
        if value is None:
            return False
        t = self.threshold if threshold is None else float(threshold)
        if self.relative_to is not None:
            if not reference:
                return False
            t = t * reference
        return bool(_OPS[self.op](value, t))

    def describe(self, metric: str, threshold: float | None = None) -> str:
        """The rule in words, e.g. ``"sink >= 0.3"`` or ``"entropy >= 0.6 * uniform_entropy"``."""
        t = self.threshold if threshold is None else float(threshold)
        rhs = f"{t:g} * {self.relative_to}" if self.relative_to else f"{t:g}"
        return f"{metric} {self.op} {rhs}" + (f" and not {self.unless}" if self.unless else "")


class Probe:
    name = "probe"
    #: subset of FAST_STATS this probe needs for ``update_fast``; None = no fast path
    fast_needs: tuple[str, ...] | None = None
    #: the metric's formula in one line (A = attention weights, i = query, j = key)
    formula: str = ""
    #: where the metric comes from (citation with arXiv id where there is one)
    paper: str = ""
    #: the role a head gets from this metric, with its default threshold (None = no role)
    role: RoleRule | None = None
    #: None: runs on any text with no arguments; else the input protocol the metric needs
    protocol: str | None = None

    def __init__(self) -> None:
        self.n_layers = 0
        self.n_heads = 0
        self.total: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def supports_fast(self, causal: bool) -> bool:
        """Whether ``update_fast`` gives this probe's exact value for this kind of attention."""
        return self.fast_needs is not None

    def reset(self, n_layers: int, n_heads: int) -> None:
        self.n_layers, self.n_heads = n_layers, n_heads
        self.total = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.count = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self._placed = False  # the accumulators move to the device of the first update after a reset

    def _ensure(self, ctx: AttnContext) -> None:
        if self.total is None or self.total.shape != (ctx.n_layers, ctx.n_heads):
            self.reset(ctx.n_layers, ctx.n_heads)

    def _acc(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, count) accumulators, (layers, heads) float64; after ``reset``/``_ensure``."""
        if self.total is None or self.count is None:
            raise RuntimeError(f"probe {self.name!r} has seen no attention call")
        return self.total, self.count

    def add(self, ctx: AttnContext, per_query: torch.Tensor, valid: torch.Tensor) -> None:
        """Accumulate ``per_query (B, H, Tq)`` over queries where ``valid (B, Tq)`` is True, on the
        tensors' device (no host transfer per call)."""
        self._ensure(ctx)
        dt = acc_dtype(per_query.device)
        w = valid.to(per_query.device, dt).unsqueeze(1)  # (B, 1, Tq)
        vals = torch.where(w > 0, per_query.to(dt), 0.0)  # pads may hold NaN; valid NaNs show
        self.add_row(ctx.layer, vals.sum(dim=(0, 2)), w.sum(dim=(0, 2)).expand(ctx.n_heads))

    def add_row(self, layer: int, total_row: torch.Tensor, count_row: torch.Tensor) -> None:
        """Add (heads,) sums and counts to ``layer``. The accumulators live on the device of the first
        update after ``reset`` (float64, float32 where the device has no float64, e.g. Apple MPS); rows
        from another device (layers spread by ``device_map``) are moved there, (heads,) at a time."""
        total, count = self._acc()
        if not getattr(self, "_placed", True):
            dev = total_row.device
            total, count = total.to(dev, acc_dtype(dev)), count.to(dev, acc_dtype(dev))
            self.total, self.count, self._placed = total, count, True
        total[layer] += total_row.to(total.device, total.dtype)
        count[layer] += count_row.to(count.device, count.dtype)

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_fast(self, stats: dict[str, Any], ctx: AttnContext) -> None:  # pragma: no cover
        raise NotImplementedError

    @property
    def key_stat(self) -> str:
        """The name under which a ``"keys"`` probe finds Σ_j A_ij w_j in the statistics (one per probe object)."""
        return f"keys:{id(self)}"

    def key_weights(self, ctx: AttnContext) -> torch.Tensor:  # pragma: no cover - for "keys" probes
        """(B, S) per-key weights w_j whose attention-weighted sum the engine computes next to attention."""
        raise NotImplementedError

    def band_range(self, ctx: AttnContext) -> tuple[int, int]:  # pragma: no cover - for "band" probes
        """(d0, d1): the position gaps pos_i − pos_j (d0 <= d1) whose weights ``update_band`` reads."""
        raise NotImplementedError

    def update_band(self, band: Band, ctx: AttnContext) -> None:  # pragma: no cover - for "band" probes
        """The weights on the band for the query chunk ``ctx.q_index`` (``band.a`` (B, H, Tc, n))."""
        raise NotImplementedError

    def result(self) -> torch.Tensor:
        """(layers, heads) float32 mean on the host; NaN where nothing was seen."""
        total, count = self._acc()
        return (total / count).to(torch.float32).cpu()

    # state: the running sums and counts, so that runs over disjoint inputs combine exactly
    def state_dict(self) -> dict:
        """``{"name", "total", "count"}``: (layers, heads) float64 sums and counts on the host. A probe's
        ``result()`` depends only on them, so states of runs over disjoint inputs add up (``merge``)."""
        total, count = self._acc()
        return {
            "name": self.name,
            "total": total.detach().to("cpu", torch.float64).clone(),
            "count": count.detach().to("cpu", torch.float64).clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the sums and counts with ``state`` (as ``state_dict`` returns it)."""
        total, count = _state_tensors(self.name, state)
        self.n_layers, self.n_heads = total.shape
        self.total, self.count, self._placed = total.clone(), count.clone(), False

    def merge(self, other: Probe | dict) -> Probe:
        """Add the sums and counts of ``other`` (a probe of the same metric, or its ``state_dict``) to
        this probe's, in float64; returns self."""
        state = other.state_dict() if isinstance(other, Probe) else other
        total, count = _state_tensors(self.name, state)
        if self.total is None:
            self.load_state_dict(state)
            return self
        mine = self.state_dict()
        if tuple(mine["total"].shape) != tuple(total.shape):
            raise ValueError(
                f"probe {self.name!r}: cannot merge a (layers, heads) = {tuple(total.shape)} state into "
                f"{tuple(mine['total'].shape)}"
            )
        self.load_state_dict({"name": self.name, "total": mine["total"] + total, "count": mine["count"] + count})
        return self


def _state_tensors(name: str, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, count) float64 (layers, heads) from a probe state, checked against the probe ``name``."""
    if not isinstance(state, dict) or not {"name", "total", "count"} <= set(state):
        raise ValueError(
            f"probe {name!r}: a state needs keys name, total, count; got {sorted(state) if isinstance(state, dict) else type(state).__name__}"
        )
    if state["name"] != name:
        raise ValueError(f"probe {name!r}: cannot take the state of probe {state['name']!r}")
    total = torch.as_tensor(state["total"], dtype=torch.float64).cpu()
    count = torch.as_tensor(state["count"], dtype=torch.float64).cpu()
    if total.dim() != 2 or total.shape != count.shape:
        raise ValueError(
            f"probe {name!r}: total {tuple(total.shape)} and count {tuple(count.shape)} must both be (layers, heads)"
        )
    return total, count
