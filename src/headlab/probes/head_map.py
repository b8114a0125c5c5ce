"""Downsampled attention maps and top-attended keys for a few heads, streamed chunk by chunk.

The report's "one head up close" view needs to *see* a head's attention map without ever holding
all heads × full maps. ``HeadMapProbe`` keeps, per selected (layer, head):

* a block-averaged map of at most ``px × px`` cells: query positions ``0..N-1`` are cut into
  ``R = min(N, px)`` contiguous bins (query ``i`` goes to bin ``i * R // N``), keys likewise into
  ``C = min(N, px)`` bins, and cell ``(r, c)`` is the mean of ``A[i, j]`` over the block (masked,
  i.e. future, keys count as 0). With ``N <= px`` the map is exact: one cell per (query, key);
* optionally the top-``k`` keys of every query (positions and weights), for "what does token i
  look at" lists.

Memory: ``R·C`` float64 per selected head plus ``N·k`` for top-k, independent of the number of
chunks; the probe needs the weights ``A``, so it forces the engine's chunked eager path.

This generalises the per-head attention visualisations of bertviz (Vig, arXiv 1904.02679) and
CircuitsVis to long inputs by streaming block reduction instead of storing full maps.
``downsample_reference`` is the plain dense version used by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..engine.context import AttnContext
from ..engine.sites import parse_sites
from .base import Probe


def bin_index(pos: torch.Tensor, n: int, bins: int) -> torch.Tensor:
    """Bin of each position in ``0..n-1`` when ``n`` positions are cut into ``bins`` contiguous bins."""
    return (pos.long() * bins) // n


def downsample_reference(full: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Plain block average of ``full (N, N)`` into ``(rows, cols)`` with the probe's binning (loops)."""
    n_q, n_k = full.shape
    out = np.zeros((rows, cols), dtype=np.float64)
    for r in range(rows):
        qi = [i for i in range(n_q) if i * rows // n_q == r]
        for c in range(cols):
            kj = [j for j in range(n_k) if j * cols // n_k == c]
            out[r, c] = float(np.mean(full[np.ix_(qi, kj)])) if qi and kj else np.nan
    return out


@dataclass
class HeadMap:
    """Result for one (layer, head).

    map: (R, C) float32 block means (NaN for query bins never seen).
    n_tokens: N, the number of real tokens (keys) of the recorded sequence.
    topk_pos: (N, k) int64 key positions of the k largest weights of each query, -1 where unseen.
    topk_w: (N, k) float32 those weights (descending).
    """

    layer: int
    head: int
    map: np.ndarray
    n_tokens: int
    topk_pos: np.ndarray | None = None
    topk_w: np.ndarray | None = None


class HeadMapProbe(Probe):
    """Keep a ``px``-bounded block-averaged map (+ optional top-k keys) for the selected heads.

    Args:
        sites: which heads to record (any ``parse_sites`` selector: "all", "L3H2,L5", {3: [2]}).
        px: maximum cells per side of each map (``R = C = min(N, px)``), >= 1.
        topk: keys kept per query (0 = none).
        row: which batch row to record (maps describe one sequence).
        name: key of this probe in ``Run.stats()``; use distinct names when attaching two.

    One sequence per layer: every call for a layer must see the same number ``N`` of real keys
    (one prefill split in query chunks); a call with another ``N`` raises ``ValueError`` (call
    ``reset`` between sequences). ``result()`` gives the (layers, heads) number of query rows
    recorded (NaN for heads not selected); ``maps()`` gives the maps.
    """

    name = "head_map"
    fast_needs = None  # needs the weights A: forces the chunked eager path

    def __init__(self, sites: Any = "all", *, px: int = 256, topk: int = 0, row: int = 0, name: str | None = None) -> None:
        super().__init__()
        if not isinstance(px, int) or px < 1:
            raise ValueError(f"px must be an int >= 1 (cells per side of a map), got {px!r}")
        if not isinstance(topk, int) or topk < 0:
            raise ValueError(f"topk must be an int >= 0, got {topk!r}")
        if not isinstance(row, int) or row < 0:
            raise ValueError(f"row must be an int >= 0 (batch row to record), got {row!r}")
        self._sel = sites
        self.px, self.k, self.row = px, topk, row
        if name is not None:
            self.name = name
        self._sites: dict[int, list[int]] = {}
        self._n: dict[int, int] = {}  # layer -> N
        self._sum: dict[int, torch.Tensor] = {}  # layer -> (h, R, C) float64
        self._rows: dict[int, torch.Tensor] = {}  # layer -> (R,) queries seen per row bin
        self._top_pos: dict[int, torch.Tensor] = {}  # layer -> (h, N, k)
        self._top_w: dict[int, torch.Tensor] = {}

    def reset(self, n_layers: int, n_heads: int) -> None:
        super().reset(n_layers, n_heads)
        self._sites = parse_sites(self._sel, n_layers, n_heads)
        for d in (self._n, self._sum, self._rows, self._top_pos, self._top_w):
            d.clear()

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:
        """a: (B, H, Tc, S) weights of the queries ``ctx.q_index`` (all T queries when None)."""
        self._ensure(ctx)
        heads = self._sites.get(ctx.layer)
        if not heads:
            return
        B, H, Tc, S = a.shape
        if self.row >= B:
            raise ValueError(f"HeadMapProbe row {self.row} out of range: the batch has rows 0..{B - 1}")
        kpos = ctx.key_pos[self.row].to(a.device)  # (S,)
        qpos = ctx.chunk_query_pos()[self.row].to(a.device)  # (Tc,)
        if kpos.shape[0] != S or qpos.shape[0] != Tc:
            raise ValueError(
                f"HeadMapProbe: A is (B,H,Tc,S)={tuple(a.shape)} but ctx has {kpos.shape[0]} keys, {qpos.shape[0]} queries"
            )
        kvalid, qvalid = kpos >= 0, qpos >= 0
        n = int(kvalid.sum())
        if n == 0:
            return
        layer = ctx.layer
        if layer not in self._n:
            self._start(layer, len(heads), n)
        elif self._n[layer] != n:
            raise ValueError(
                f"HeadMapProbe records one sequence per layer: layer {layer} saw {self._n[layer]} tokens before, "
                f"now {n}; call reset() between sequences"
            )
        R = C = min(n, self.px)
        hidx = torch.tensor(heads, device=a.device)
        x = a[self.row]  # (H, Tc, S), a view: never copy the full chunk
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # half-precision weights: sum in fp32
        if not bool(qvalid.all()):
            x = x[:, qvalid]
        qp = qpos[qvalid]
        tq = int(qp.shape[0])
        if tq == 0:
            return
        # 1) rows first: sum the chunk's queries into their row bins, all heads at once (cheap,
        #    no copy of A); 2) keep the selected heads; 3) sum keys into column bins on the small result.
        rb = bin_index(qp, n, R)
        r0, r1 = int(rb.min()), int(rb.max()) + 1
        rows = torch.zeros(H, r1 - r0, S, dtype=x.dtype, device=x.device).index_add_(1, rb - r0, x)  # (H, r, S)
        rows = rows.index_select(0, hidx)
        if not bool(kvalid.all()):
            rows = rows[:, :, kvalid]
        kp = kpos[kvalid]
        h = len(heads)
        cols = torch.zeros(h * (r1 - r0), C, dtype=torch.float32, device=x.device)
        cols.index_add_(1, bin_index(kp, n, C), rows.reshape(h * (r1 - r0), n).float())  # (h*r, C)
        self._sum[layer][:, r0:r1] += cols.reshape(h, r1 - r0, C).double().cpu()
        self._rows[layer].index_add_(0, rb.cpu(), torch.ones(tq, dtype=torch.float64))
        total, count = self._acc()
        total[layer, hidx.cpu()] += tq
        count[layer, hidx.cpu()] += 1
        if self.k:
            k = min(self.k, n)
            xs = x.index_select(0, hidx) if h < H else x  # (h, Tq, S)
            if not bool(kvalid.all()):
                xs = xs[:, :, kvalid]
            w, j = torch.topk(xs, k, dim=-1)  # (h, Tq, k)
            self._top_w[layer][:, qp.cpu(), :k] = w.float().cpu()
            self._top_pos[layer][:, qp.cpu(), :k] = kp[j].cpu()

    def _start(self, layer: int, h: int, n: int) -> None:
        R = C = min(n, self.px)
        self._n[layer] = n
        self._sum[layer] = torch.zeros(h, R, C, dtype=torch.float64)
        self._rows[layer] = torch.zeros(R, dtype=torch.float64)
        if self.k:
            self._top_pos[layer] = torch.full((h, n, self.k), -1, dtype=torch.long)
            self._top_w[layer] = torch.zeros(h, n, self.k, dtype=torch.float32)

    def result(self) -> torch.Tensor:
        """(layers, heads) float32: query rows recorded per selected head; NaN elsewhere."""
        total, count = self._acc()
        out = torch.full_like(total, float("nan"))
        seen = count > 0
        out[seen] = total[seen]
        return out.to(torch.float32)

    def maps(self) -> dict[tuple[int, int], HeadMap]:
        """{(layer, head): HeadMap} for every selected head of every layer seen."""
        out: dict[tuple[int, int], HeadMap] = {}
        for layer, n in sorted(self._n.items()):
            C = min(n, self.px)
            # cells per block: (#queries seen in the row bin) × (#key positions in the column bin)
            col_w = torch.bincount(bin_index(torch.arange(n), n, C), minlength=C).double()  # (C,)
            denom = self._rows[layer][:, None] * col_w[None, :]  # (R, C)
            mean = self._sum[layer] / denom  # NaN (0/0) where no query was seen
            for i, head in enumerate(self._sites[layer]):
                tp = self._top_pos[layer][i].numpy() if self.k else None
                tw = self._top_w[layer][i].numpy() if self.k else None
                out[(layer, head)] = HeadMap(layer, head, mean[i].float().numpy(), n, tp, tw)
        return out
