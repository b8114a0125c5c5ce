"""Addressing of attention heads: a *site* is (layer, query head).

Accepted selectors (``parse_sites``):
  * ``"all"``                      every head of every layer
  * ``"L12H3"`` or ``"L12"``       one head / every head of a layer (also comma separated: "L1H2,L3")
  * ``(12, 3)``                    one site; an iterable of such pairs
  * ``{12: [3, 4], 13: "all"}``    heads per layer
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_SITE_RE = re.compile(r"^L(\d+)(?:H(\d+))?$", re.IGNORECASE)


def check_site(layer: int, head: int, n_layers: int, n_heads: int) -> tuple[int, int]:
    """Validate one site; raise ``ValueError`` naming the bad value and the valid range."""
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer!r} out of range: valid layers are 0..{n_layers - 1}")
    if not isinstance(head, int) or isinstance(head, bool) or not 0 <= head < n_heads:
        raise ValueError(f"head {head!r} out of range: valid heads are 0..{n_heads - 1} (query-head numbering)")
    return layer, head


def parse_sites(sel: Any, n_layers: int, n_heads: int) -> dict[int, list[int]]:
    """Turn any selector into ``{layer: sorted list of heads}`` (validated)."""
    out: dict[int, set[int]] = {}

    def add(layer: int, heads: Any) -> None:
        if isinstance(heads, str) and heads == "all":
            heads = range(n_heads)
        elif isinstance(heads, int):
            heads = [heads]
        for h in heads:
            check_site(layer, int(h) if not isinstance(h, bool) else h, n_layers, n_heads)
            out.setdefault(layer, set()).add(int(h))

    if sel is None or (isinstance(sel, str) and sel == "all"):
        for layer in range(n_layers):
            add(layer, "all")
    elif isinstance(sel, str):
        for part in sel.split(","):
            part = part.strip()
            m = _SITE_RE.match(part)
            if not m:
                raise ValueError(f"bad site {part!r}: expected 'all', 'L<layer>' or 'L<layer>H<head>'")
            layer = int(m.group(1))
            if not 0 <= layer < n_layers:
                raise ValueError(f"layer {layer} out of range in {part!r}: valid layers are 0..{n_layers - 1}")
            add(layer, "all" if m.group(2) is None else int(m.group(2)))
    elif isinstance(sel, Mapping):
        for layer, heads in sel.items():
            if not isinstance(layer, int) or not 0 <= layer < n_layers:
                raise ValueError(f"layer {layer!r} out of range: valid layers are 0..{n_layers - 1}")
            add(layer, heads)
    elif isinstance(sel, tuple) and len(sel) == 2 and all(isinstance(x, int) for x in sel):
        add(sel[0], sel[1])
    elif isinstance(sel, Iterable):
        for item in sel:
            if isinstance(item, str):
                for layer, heads in parse_sites(item, n_layers, n_heads).items():
                    add(layer, heads)
            elif isinstance(item, tuple) and len(item) == 2:
                check_site(item[0], item[1], n_layers, n_heads)
                add(item[0], item[1])
            else:
                raise ValueError(f"bad site {item!r}: expected (layer, head) or 'L<layer>H<head>'")
    else:
        raise ValueError(f"bad site selector {sel!r}")
    return {layer: sorted(heads) for layer, heads in sorted(out.items())}


def format_site(layer: int, head: int) -> str:
    return f"L{layer}H{head}"
