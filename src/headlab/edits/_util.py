"""Small shared helpers for edits: head indexing, key groups, visibility, parameter checks.

Token groups are *key positions counted from the first real token of each row* (``ctx.key_pos``
numbering). A group spec may be:
  * a list/range of ints             -> the same positions in every row
  * a (start, end) pair given as ``slice(start, end)`` -> positions start..end-1
  * a list of lists (one per row)    -> per-row positions
  * a str                            -> looked up in ``ctx.state["groups"][name]`` (any of the above)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..engine.context import AttnContext
from ..engine.sites import format_layers, format_site, parse_site

NEG_INF = float("-inf")


def check_finite(name: str, value: float, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> float:
    """Validate a scalar parameter; ValueError names the value and the valid range."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    rng = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if not math.isfinite(v):
        raise ValueError(f"{name}={value!r} is not finite; valid range {rng}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name}={value!r} out of range; valid range {rng}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}={value!r} out of range; valid range {rng}")
    return v


def site_values(
    values: Any, name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> dict[tuple[int, int], float]:
    """``{(layer, head): value}`` -> validated dict with int keys (sites checked later at bind)."""
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"{name} must be a non-empty dict {{(layer, head): value}}, got {values!r}")
    out: dict[tuple[int, int], float] = {}
    for key, v in values.items():
        if isinstance(key, str):
            try:
                key = parse_site(key)
            except ValueError:
                raise ValueError(f"bad site {key!r} in {name}: expected (layer, head) or 'L<layer>H<head>'") from None
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(x, int) for x in key)):
            raise ValueError(f"bad site {key!r} in {name}: expected a (layer, head) pair of ints")
        out[key] = check_finite(f"{name}[{key}]", v, lo, hi, lo_open)
    return out


def layer_vector(
    values: Mapping[tuple[int, int], float], layer: int, heads: torch.Tensor, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """(k,) values for ``heads`` of ``layer`` from a {(l, h): v} dict."""
    return torch.tensor([values[(layer, int(h))] for h in heads], dtype=dtype, device=device)


def group_mask(spec: Any, ctx: AttnContext, name: str = "group") -> torch.Tensor:
    """(B, S) bool: keys of this call that belong to the token group ``spec``."""
    kp = ctx.key_pos
    b = kp.shape[0]
    if isinstance(spec, str):
        groups = ctx.state.get("groups", {})
        if spec not in groups:
            raise ValueError(
                f"{name}: token group {spec!r} not found in ctx.state['groups'] "
                f"(have {sorted(groups)}); pass attach(..., state={{'groups': {{{spec!r}: positions}}}})"
            )
        spec = groups[spec]
    if isinstance(spec, torch.Tensor) and spec.dtype == torch.bool:
        if spec.shape == kp.shape:
            return spec.to(kp.device)
        spec = [torch.nonzero(r).flatten().tolist() for r in spec]
    if isinstance(spec, slice):
        start, stop = spec.start or 0, spec.stop
        if stop is None:
            return kp >= start
        return (kp >= start) & (kp < stop)
    if isinstance(spec, torch.Tensor):
        spec = spec.tolist()
    spec = list(spec) if isinstance(spec, Iterable) else spec
    if not isinstance(spec, list):
        raise ValueError(f"{name}: bad token group {spec!r}; expected positions, slice(start, end) or a group name")
    if spec and all(isinstance(x, (list, tuple, range, torch.Tensor)) for x in spec):
        if len(spec) != b:
            raise ValueError(f"{name}: per-row token group has {len(spec)} rows but the batch has B={b}")
        out = torch.zeros_like(kp, dtype=torch.bool)
        for r, pos in enumerate(spec):
            p = torch.as_tensor(list(pos), dtype=torch.long, device=kp.device)
            out[r] = torch.isin(kp[r], p) & (kp[r] >= 0)
        return out
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
        raise ValueError(f"{name}: token positions must be ints, got {spec!r}")
    if any(x < 0 for x in spec):
        raise ValueError(f"{name}: token positions must be >= 0 (counted from the first real token), got {spec!r}")
    p = torch.as_tensor(spec, dtype=torch.long, device=kp.device)
    return torch.isin(kp, p) & (kp >= 0)


def visibility(ctx: AttnContext, s_len: int) -> torch.Tensor:
    """(B, 1, Tc, S) bool: query i of the chunk can see key j (real key, causal if the model is)."""
    kp = ctx.key_pos[:, None, None, :]  # (B,1,1,S)
    qp = ctx.chunk_query_pos()[:, None, :, None]  # (B,1,Tc,1)
    vis = (kp >= 0) & (qp >= 0)
    if ctx.causal:
        vis = vis & (kp <= qp)
    return vis


def on_heads(x: torch.Tensor, heads: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn`` to ``x[:, heads]`` (x is (B, H, ...)) and return a new tensor."""
    if len(heads) == 0:
        return x
    out = x.clone()
    out[:, heads] = fn(x[:, heads])
    return out


def sites_list(sites: Mapping[int, list[int]]) -> list[list[int]]:
    return [[layer, h] for layer, hs in sites.items() for h in hs]


def fmt_sites(sites: Any, limit: int = 6) -> str:
    """Short readable form of a selector or a bound {layer: [heads]} dict."""
    if isinstance(sites, Mapping) and all(isinstance(k, int) for k in sites):
        flat = [
            format_site(l, h) if not isinstance(h, str) else format_layers([l])
            for l, hs in sites.items()
            for h in (hs if not isinstance(hs, str) else [hs])
        ]
        more = f" +{len(flat) - limit} more" if len(flat) > limit else ""
        return ",".join(flat[:limit]) + more + f" ({len(flat)} heads)"
    if isinstance(sites, (list, tuple)) and sites and isinstance(sites[0], (list, tuple)):
        flat = [format_site(a, b) for a, b in sites]
        more = f" +{len(flat) - limit} more" if len(flat) > limit else ""
        return ",".join(flat[:limit]) + more + f" ({len(flat)} heads)"
    return repr(sites)
