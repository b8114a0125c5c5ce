"""Reachability of sparse patterns across layers (no model needed).

Stacking L attention layers lets token i read token j when the pattern graph (edge i -> j when i may
attend j, union over heads, plus the residual self-edge) has a path of at most L edges. We compute
it exactly with boolean matrix products: ``R_1 = A | I``, ``R_{l+1} = R_l · A``. For patterns whose
rule is defined on whole blocks (power, strided; ``block_level=True``) a block-level graph is exact
(a block that is visible is visible in full, except the causal diagonal block which is a single
hop), so long lengths stay cheap. PowerAttention's claim (arXiv 2503.03588): every distance n is
reachable in popcount(n) hops, so full coverage after ⌊log2 n_blocks⌋ + 1 layers at most.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Pattern


@dataclass
class Reach:
    """Reachability summary of one pattern at one length.

    layers_to_full: layers until every token reaches every earlier token (None: never, i.e. a fixed
        point short of full coverage was reached, or not within max_layers).
    coverage: per layer l=1.., fraction of causal (i, j) pairs reachable.
    last_field: per layer, number of earlier tokens (itself included) the last token reaches.
    """

    name: str
    length: int
    unit: int
    density: float
    layers_to_full: int | None
    coverage: list[float] = field(default_factory=list)
    last_field: list[int] = field(default_factory=list)


def graph(pattern: Pattern, length: int, block: int | None = None) -> torch.Tensor:
    """(n, n) bool adjacency (union over heads, causal, with self-loops); n = length or blocks."""
    if block:
        a = pattern.block_layout(length, length, block, causal=True).any(0)
    else:
        a = pattern.mask(length, length).any(0) & torch.ones(length, length, dtype=torch.bool).tril()
    return a | torch.eye(a.shape[0], dtype=torch.bool)


def reach(pattern: Pattern, length: int, block: int | None = None, max_layers: int = 64) -> Reach:
    """Exact layer-by-layer reachability. ``block``: use the block graph (exact for block rules)."""
    if pattern.dynamic:
        raise ValueError(f"{pattern.describe()} is dynamic: reachability depends on the data")
    a = graph(pattern, length, block).float()
    n = a.shape[0]
    unit = block or 1
    low = torch.ones(n, n, dtype=torch.bool).tril()
    sizes = torch.full((n,), float(unit))
    if block and length % block:
        sizes[-1] = length % block
    # token-weighted causal pair count: off-diagonal blocks count fully, diagonal blocks triangularly
    w = sizes.view(-1, 1) * sizes.view(1, -1)
    w = torch.where(torch.eye(n, dtype=torch.bool), sizes * (sizes + 1) / 2, w) * low
    total = float(w.sum())
    r = a.clone()
    cov, last, full_at = [], [], None
    prev = -1
    for layer in range(1, max_layers + 1):
        rb = (r > 0) & low
        cov.append(float((w * rb).sum()) / total)
        last.append(int((sizes * rb[-1]).sum()))
        count = int(rb.sum())
        if count == int(low.sum()):
            full_at = layer
            break
        if count == prev:  # fixed point: more layers add nothing (e.g. dilation keeps residues apart)
            break
        prev = count
        r = ((r @ a) > 0).float()
    if block:  # a visible block is fully visible (diagonal: causally), so block weights give the exact density
        lay = pattern.block_layout(length, length, block, causal=True).float()
        density = float((lay * w).sum()) / (lay.shape[0] * total)
    else:
        density = pattern.density(length, length)
    return Reach(pattern.describe(), length, unit, density, full_at, cov, last)


def popcount_bound(n_blocks: int) -> int:
    """Max hops PowerAttention needs over distances 1..n_blocks-1: max popcount = ⌊log2(n_blocks-1)⌋+1."""
    if n_blocks <= 1:
        return 1
    return max(bin(dd).count("1") for dd in range(1, n_blocks))


def reach_table(items: list[tuple[str, Pattern, int | None]], length: int, max_layers: int = 64) -> list[Reach]:
    """Reach of each (label, pattern, block-or-None) at ``length``."""
    out = []
    for label, p, blk in items:
        r = reach(p, length, blk, max_layers)
        r.name = label
        out.append(r)
    return out


def default_items(length: int) -> list[tuple[str, Pattern, int | None]]:
    """Patterns compared in docs/sparse.md; token-level sizes scale with ``length`` (w = length/8)."""
    from . import halo, neighborhood, power, sink_window, strided, window

    w = max(4, length // 8)
    return [
        (f"window({w})", window(w), None),
        (f"sink_window({w // 4}, {w})", sink_window(w // 4, w), None),
        (f"neighborhood({w}, dilation=2, causal)", neighborhood(w, 2, causal=True), None),
        (f"halo({w // 2}, {w // 2}, causal)", halo(w // 2, w // 2, causal=True), None),
        ("power(64, window 1, sink 0) pure", power(64, 1, 0), 64),
        ("power(64, window 4, sink 1)", power(64, 4, 1), 64),
        ("strided(64, local 4, stride 3)", strided(64, 4, 3), 64),
        ("strided(64, local 16, stride 8)", strided(64, 16, 8), 64),
    ]


def format_table(rows: list[Reach], marks=(1, 2, 3, 4, 6, 8, 16, 30)) -> str:
    """Markdown table: density, layers to full coverage, coverage after selected layers."""
    head = (
        "| pattern | graph | density | layers to full | "
        + " | ".join(f"cov@{m}" for m in marks)
        + " | last-token field @1/@2/@4 |"
    )
    sep = "|" + "---|" * (5 + len(marks))
    lines = [head, sep]
    for r in rows:
        cov = [r.coverage[min(m, len(r.coverage)) - 1] for m in marks]
        fld = [r.last_field[min(m, len(r.last_field)) - 1] for m in (1, 2, 4)]
        graph_kind = f"blocks of {r.unit}" if r.unit > 1 else "tokens"
        stuck = len(r.coverage) > 1 and r.coverage[-1] == r.coverage[-2]
        full = str(r.layers_to_full) if r.layers_to_full is not None else ("never" if stuck else f"> {len(r.coverage)}")
        lines.append(
            f"| {r.name} | {graph_kind} | {r.density:.3f} | {full} | "
            + " | ".join(f"{c:.3f}" for c in cov)
            + f" | {'/'.join(map(str, fld))} |"
        )
    return "\n".join(lines)
