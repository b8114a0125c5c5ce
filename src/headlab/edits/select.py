"""Site selectors that resolve against a head-atlas scan (``heads.json`` from ``headlab scan``).

A scan result is a list of records ``{"layer": l, "head": h, <metric>: value, ..., "roles": [...]}``
(or a dict holding that list under ``"heads"``). On top of the plain selectors of
:func:`headlab.engine.sites.parse_sites` ("all", "L12H3", (12, 3), {12: [3, 4]}), this module accepts:

  ``"retrieval"``            heads whose ``roles`` contain "retrieval"
  ``"sink:top5"``            the 5 heads with the largest ``sink`` metric (``:bottom5`` = smallest)
  ``"entropy<1.2"``          heads whose metric is below / above (``>``) a threshold
  ``"random:20"``            20 heads drawn uniformly (``"random:20:7"`` = seed 7); needs no atlas
  ``"matched:retrieval:top20:7"``  a layer-matched random null of one selector term: in every layer as many heads
                             as the term selects there, drawn uniformly (seed 7) from that layer's other heads
  ``"retrieval:top20,L3H1"`` comma = union of terms

The atlas is always given explicitly: the ``atlas=`` argument (path to heads.json, a folder holding
it, or the loaded records); ``headlab steer`` passes its ``--atlas``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..engine.sites import format_site, is_site_term, parse_sites

_TOP_RE = re.compile(r"^([A-Za-z_][\w.-]*):(top|bottom)(\d+)$")
_THR_RE = re.compile(r"^([A-Za-z_][\w.-]*)\s*([<>])\s*(-?[\d.eE+-]+)$")
_RAND_RE = re.compile(r"^random:(\d+)(?::(\d+))?$")
_ROLE_RE = re.compile(r"^[A-Za-z_][\w.-]*$")
_MATCHED_RE = re.compile(r"^matched:(.+?)(?::(\d+))?$")


def load_atlas(atlas: Any = None) -> list[dict]:
    """Records of a scan: from a path (file or folder with heads.json) or the loaded records."""
    if atlas is None:
        raise ValueError(
            "this site selector needs a head atlas: pass atlas='path/to/heads.json' "
            "(written by `headlab scan`), or --atlas on the command line"
        )
    if isinstance(atlas, (str, Path)):
        p = Path(atlas)
        if p.is_dir():
            p = p / "heads.json"
        if not p.is_file():
            raise ValueError(f"head atlas {str(p)!r} not found; run `headlab scan` first")
        atlas = json.loads(p.read_text())
    if isinstance(atlas, dict):
        atlas = atlas.get("heads", atlas.get("records"))
    if not isinstance(atlas, list) or not all(isinstance(r, dict) and "layer" in r and "head" in r for r in atlas):
        raise ValueError("head atlas must be a list of {'layer', 'head', <metric>..., 'roles'} records")
    return atlas


def is_atlas_selector(sel: Any) -> bool:
    """True when ``sel`` is a string that plain parse_sites does not understand."""
    if not isinstance(sel, str) or sel == "all":
        return False
    return any(not is_site_term(t) for t in sel.split(","))


def random_sites(
    k: int, n_layers: int, n_heads: int, seed: int = 0, exclude: dict[int, list[int]] | None = None
) -> dict[int, list[int]]:
    """``k`` heads drawn uniformly without replacement (optionally avoiding ``exclude``)."""
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if not (exclude and h in exclude.get(l, []))]
    if not 0 < k <= len(pool):
        raise ValueError(f"random:{k}: k must be in 1..{len(pool)} (available heads)")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(pool), generator=g)[:k].tolist()
    out: dict[int, list[int]] = {}
    for i in idx:
        l, h = pool[i]
        out.setdefault(l, []).append(h)
    return {l: sorted(hs) for l, hs in sorted(out.items())}


def matched_random_sites(ref: dict[int, list[int]], n_heads: int, seed: int = 0) -> dict[int, list[int]]:
    """A layer-matched random null of the head set ``ref``: in every layer as many heads as ``ref`` has there,
    drawn uniformly without replacement from that layer's heads outside ``ref`` (one generator seeded with
    ``seed``, layers in increasing order)."""
    g = torch.Generator().manual_seed(int(seed))
    out: dict[int, list[int]] = {}
    for l in sorted(ref):
        taken = set(ref[l])
        pool = [h for h in range(n_heads) if h not in taken]
        if len(taken) > len(pool):
            raise ValueError(
                f"matched: layer {l} has {len(taken)} of its {n_heads} heads selected; a layer-matched null needs "
                f"as many other heads, only {len(pool)} are left"
            )
        if taken:
            idx = torch.randperm(len(pool), generator=g)[: len(taken)].tolist()
            out[l] = sorted(pool[i] for i in idx)
    return out


def _term(term: str, n_layers: int, n_heads: int, atlas: Any) -> set[tuple[int, int]]:
    m = _MATCHED_RE.match(term)
    if m:
        inner = _term(m.group(1), n_layers, n_heads, atlas)
        ref: dict[int, list[int]] = {}
        for l, h in sorted(inner):
            ref.setdefault(l, []).append(h)
        r = matched_random_sites(ref, n_heads, int(m.group(2) or 0))
        return {(l, h) for l, hs in r.items() for h in hs}
    if is_site_term(term):
        return {(l, h) for l, hs in parse_sites(term, n_layers, n_heads).items() for h in hs}
    m = _RAND_RE.match(term)
    if m:
        r = random_sites(int(m.group(1)), n_layers, n_heads, int(m.group(2) or 0))
        return {(l, h) for l, hs in r.items() for h in hs}
    recs = load_atlas(atlas)
    for r in recs:
        if not (0 <= int(r["layer"]) < n_layers and 0 <= int(r["head"]) < n_heads):
            raise ValueError(
                f"atlas record {format_site(r['layer'], r['head'])} is outside this model "
                f"({n_layers} layers x {n_heads} heads): the atlas is from another model"
            )
    m = _TOP_RE.match(term)
    if m:
        metric, way, k = m.group(1), m.group(2), int(m.group(3))
        have = [r for r in recs if isinstance(r.get(metric), (int, float))]
        if not have:
            raise ValueError(
                f"selector {term!r}: metric {metric!r} not in the atlas "
                f"(have {sorted(k for k in recs[0] if k not in ('layer', 'head', 'roles'))})"
            )
        if not 0 < k <= len(have):
            raise ValueError(f"selector {term!r}: k must be in 1..{len(have)}")
        have.sort(key=lambda r: (r[metric], -r["layer"], -r["head"]), reverse=(way == "top"))
        return {(int(r["layer"]), int(r["head"])) for r in have[:k]}
    m = _THR_RE.match(term)
    if m:
        metric, op, x = m.group(1), m.group(2), float(m.group(3))
        if not any(metric in r for r in recs):
            raise ValueError(f"selector {term!r}: metric {metric!r} not in the atlas")
        return {
            (int(r["layer"]), int(r["head"]))
            for r in recs
            if isinstance(r.get(metric), (int, float)) and ((r[metric] > x) if op == ">" else (r[metric] < x))
        }
    if _ROLE_RE.match(term):
        roles = sorted({ro for r in recs for ro in r.get("roles", [])})
        got = {(int(r["layer"]), int(r["head"])) for r in recs if term in r.get("roles", [])}
        if not got and term not in roles:
            raise ValueError(f"selector {term!r}: no such role in the atlas (roles: {roles})")
        return got
    raise ValueError(
        f"bad site selector {term!r}: expected 'all', 'L<l>H<h>', a role, "
        "'<metric>:top<k>', '<metric>><x>', 'random:<k>[:seed]' or 'matched:<selector>[:seed]'"
    )


def resolve(sel: Any, n_layers: int, n_heads: int, atlas: Any = None) -> dict[int, list[int]]:
    """Any selector (plain or atlas-based) -> validated ``{layer: sorted heads}``."""
    if not is_atlas_selector(sel):
        return parse_sites(sel, n_layers, n_heads)
    got: set[tuple[int, int]] = set()
    for term in sel.split(","):
        got |= _term(term.strip(), n_layers, n_heads, atlas)
    out: dict[int, list[int]] = {}
    for l, h in sorted(got):
        out.setdefault(l, []).append(h)
    return out


def sites(sel: Any, n_layers: int, n_heads: int, atlas: Any = None) -> list[tuple[int, int]]:
    """Resolve eagerly to an explicit list of (layer, head) pairs (handy for saving configs)."""
    return [(l, h) for l, hs in resolve(sel, n_layers, n_heads, atlas).items() for h in hs]
