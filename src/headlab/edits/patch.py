"""Activation patching: replace per-head quantities of a run by those recorded in another run.

The edit takes a precomputed :class:`Recording` (made by ``headlab.patching.record``, which runs the
model; this plug-in never does) of one of the engine's three stages

    "scores"  S (B, H, T, S) before the softmax   "weights" A (B, H, T, S)
    "output"  o (B, H, T, d_v) = A·v, before W_O

and writes the recorded values into the current run at the chosen sites (and optionally only at
some query positions). This is the patching of causal tracing / circuit discovery: record a clean
prompt, run a corrupted prompt of the same token length, patch one head at a time and see how much
of the clean behaviour comes back (Wang et al., IOI, arXiv 2211.00593; Heimersheim & Nanda,
arXiv 2404.15255).

Rows: by default every row of the run patches ``sites`` from the recording's row of the same index
(or from its only row when the recording holds one prompt). ``rows=[selector or None per run row]``
patches a different set of heads in every row, and ``src_rows=[recording row per run row]`` says
which recorded prompt each row takes, so a batch of copies of one corrupted batch can patch a
different head in every copy (``headlab.patching.head_effects``).

Composable with every other edit: at its stage it replaces the value in list order, so later
edits of the same stage act on the patched value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine.context import AttnContext
from .base import STAGES, Edit
from .select import resolve


@dataclass
class Recording:
    """Per-layer values of one stage of a recorded run.

    Attributes:
        what: the stage, "scores" | "weights" | "output".
        data: ``{layer: (B, H, T, S or d_v) tensor}`` in query-head numbering.
        query_pos: (B, T) long, position of each query among its row's real tokens, -1 for pads.
        n_layers, n_heads: shape of the model recorded.
        logits: optional (B, V) logits of the recorded run at each row's last real token.
    """

    what: str
    data: dict[int, torch.Tensor]
    query_pos: torch.Tensor
    n_layers: int
    n_heads: int
    logits: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.what not in STAGES:
            raise ValueError(f"Recording.what={self.what!r} must be one of {STAGES}")

    @property
    def batch(self) -> int:
        return int(self.query_pos.shape[0])

    @property
    def length(self) -> int:
        """T, the token length (columns, pads included) of the recorded run."""
        return int(self.query_pos.shape[1])

    def lengths(self) -> list[int]:
        """Real tokens per row."""
        return (self.query_pos.max(dim=1).values + 1).tolist()

    def head(self, layer: int, head: int) -> torch.Tensor:
        """(B, T, ...) recorded values of one site."""
        if layer not in self.data:
            raise ValueError(f"the recording has no layer {layer}; recorded layers: {sorted(self.data)}")
        return self.data[layer][:, head]


def _row_sites(sel: Any, n_layers: int, n_heads: int, atlas: Any) -> set[tuple[int, int]]:
    if sel is None:
        return set()
    return {(l, h) for l, hs in resolve(sel, n_layers, n_heads, atlas).items() for h in hs}


class Patch(Edit):
    """Patch recorded ``src`` values (``headlab.patching.record``) into a run at ``sites``.

    positions: None (every query) or query positions counted from each row's first real token
    (negative: from its last, ``[-1]`` = the final token). rows / src_rows: per-row sites and
    recording rows (module docstring). Sites may be atlas selectors (``atlas=``).
    """

    name = "patch"

    def __init__(
        self,
        src: Recording,
        sites: Any = "all",
        positions: Sequence[int] | None = None,
        rows: Sequence[Any] | None = None,
        src_rows: Sequence[int] | None = None,
        atlas: Any = None,
    ) -> None:
        if not isinstance(src, Recording):
            raise ValueError(f"patch: src must be a Recording from headlab.patching.record(...), got {type(src).__name__}")
        super().__init__(sites)
        self.src = src
        self.atlas = atlas
        if positions is not None:
            positions = [positions] if isinstance(positions, int) else list(positions)
            if not positions or not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
                raise ValueError(
                    f"patch: positions must be a non-empty list of ints (query positions counted from each "
                    f"row's first real token; negative = from the end), got {positions!r}"
                )
        self.positions = positions
        self.rows = None if rows is None else list(rows)
        if src_rows is not None:
            src_rows = [int(r) for r in src_rows]
            bad = [r for r in src_rows if not 0 <= r < src.batch]
            if bad:
                raise ValueError(f"patch: src_rows {bad[:4]} out of range: the recording has rows 0..{src.batch - 1}")
            if self.rows is not None and len(src_rows) != len(self.rows):
                raise ValueError(
                    f"patch: rows has {len(self.rows)} entries but src_rows has {len(src_rows)}; give one per run row"
                )
        self.src_rows = src_rows
        self._row_mask: dict[int, torch.Tensor] = {}

    # -- addressing ---------------------------------------------------------------------
    def bind(self, n_layers: int, n_heads: int) -> Patch:
        if (n_layers, n_heads) != (self.src.n_layers, self.src.n_heads):
            raise ValueError(
                f"patch: the recording is of a model with {self.src.n_layers} layers x {self.src.n_heads} heads, "
                f"this model has {n_layers} x {n_heads}"
            )
        self._shape = (n_layers, n_heads)
        if self.rows is None:
            self._sites = resolve(self._sel, n_layers, n_heads, self.atlas)
            self._row_mask = {}
        else:
            per_row = [_row_sites(s, n_layers, n_heads, self.atlas) for s in self.rows]
            union = sorted(set().union(*per_row)) if per_row else []
            self._sites = {}
            for l, h in union:
                self._sites.setdefault(l, []).append(h)
            self._row_mask = {}
            for l in self._sites:
                m = torch.zeros(len(per_row), n_heads, dtype=torch.bool)
                for r, s in enumerate(per_row):
                    for ll, h in s:
                        if ll == l:
                            m[r, h] = True
                self._row_mask[l] = m
        missing = [l for l in self._sites if l not in self.src.data]
        if missing:
            raise ValueError(f"patch: sites in layers {missing[:6]} but the recording has layers {sorted(self.src.data)[:6]}...")
        return self

    def stages(self) -> set[str]:
        return {self.src.what}

    # -- the replacement ---------------------------------------------------------------------
    def _source_rows(self, b: int) -> torch.Tensor:
        if self.src_rows is not None:
            if len(self.src_rows) != b:
                raise ValueError(f"patch: src_rows has {len(self.src_rows)} entries but the run has B={b} rows")
            return torch.tensor(self.src_rows, dtype=torch.long)
        if self.src.batch == b:
            return torch.arange(b)
        if self.src.batch == 1:
            return torch.zeros(b, dtype=torch.long)
        raise ValueError(
            f"patch: the recording has {self.src.batch} rows but the run has B={b}; pass src_rows= "
            "(recording row per run row) or record a batch of the same size"
        )

    def _check_positions(self, ctx: AttnContext, srow: torch.Tensor) -> None:
        qp = ctx.query_pos
        t_run, t_src = int(qp.shape[1]), self.src.length
        if t_run != t_src:
            raise ValueError(
                f"patch: the recording has T={t_src} tokens but this run has T={t_run} (layer {ctx.layer}); "
                "clean and corrupt prompts must have the same token length"
            )
        ref = self.src.query_pos[srow].to(qp.device)
        if not torch.equal(ref, qp):
            r = int((ref != qp).any(dim=1).nonzero()[0])
            n_run, n_src = int(qp[r].max()) + 1, int(ref[r].max()) + 1
            raise ValueError(
                f"patch: run row {r} has {n_run} real tokens but its recorded row {int(srow[r])} has {n_src} "
                "(or different padding); clean and corrupt prompts must have the same token length"
            )

    def _mask(self, ctx: AttnContext, b: int, heads: torch.Tensor) -> torch.Tensor:
        """(B, H, Tc) bool: where to write."""
        H = ctx.n_heads
        if self.rows is None:
            rh = torch.zeros(b, H, dtype=torch.bool)
            rh[:, heads] = True
        else:
            rh = self._row_mask[ctx.layer]
            if rh.shape[0] != b:
                raise ValueError(f"patch: rows has {rh.shape[0]} entries but the run has B={b} rows")
        qp = ctx.chunk_query_pos()  # (B, Tc)
        rh = rh.to(qp.device)
        if self.positions is None:
            pm = torch.ones_like(qp, dtype=torch.bool)
        else:
            n_real = (ctx.query_pos.max(dim=1).values + 1)[:, None]  # (B, 1)
            pm = torch.zeros_like(qp, dtype=torch.bool)
            for p in self.positions:
                want = p if p >= 0 else n_real + p
                pm |= (qp == want) & (qp >= 0)
        return rh[:, :, None] & pm[:, None, :]

    def _apply(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0:
            return x
        b = x.shape[0]
        srow = self._source_rows(b)
        self._check_positions(ctx, srow)
        rec = self.src.data[ctx.layer]
        if ctx.q_index is not None and self.src.what != "output":
            rec = rec[:, :, ctx.q_index.cpu()]
        rec = rec[srow]
        if rec.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"patch: recorded {self.src.what} of layer {ctx.layer} has shape (B, H, T, .)={tuple(rec.shape)} "
                f"but the run has {tuple(x.shape)}"
            )
        m = self._mask(ctx, b, heads).to(x.device)[..., None]  # (B, H, Tc, 1)
        return torch.where(m, rec.to(device=x.device, dtype=x.dtype), x)

    def scores(self, s: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return self._apply(s, ctx)

    def weights(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return self._apply(a, ctx)

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return self._apply(o, ctx)

    def describe(self) -> str:
        where = "per-row sites" if self.rows is not None else repr(self._sel)
        pos = "" if self.positions is None else f" at positions {self.positions}"
        return f"patch({self.src.what}) on {where}{pos}"


#: the factory is the class: one signature and one set of defaults
patch = Patch


__all__ = ["Recording", "Patch", "patch"]
