"""Addressing of attention heads: a *site* is (layer, query head). The only code that writes or
reads site keys and layer lists.

Site keys: ``format_site(12, 3) == "L12H3"``; ``parse_site("L12H3") == (12, 3)``.

Selectors (``parse_sites``), terms separated by commas:
  * ``"all"``                      every head of every layer
  * ``"L12H3"``                    one head
  * ``"L12"``, ``"L12-15"``        every head of a layer / of an inclusive range of layers
  * ``(12, 3)``                    one site; an iterable of such pairs (or of key strings)
  * ``{12: [3, 4], 13: "all"}``    heads per layer

Layer lists (``parse_layers``, e.g. the dense layers of a sparse run) use the same terms without
heads, with the ``L`` optional: ``"L14"``, ``"L14-24"``, ``"0,14-24"``, plus ``"all"``,
``"none"`` (or empty) and ``"every:7"`` (layers 0, 7, 14, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: one selector term: L<layer>[-<last layer>][H<head>]; the L is optional only in layer lists
_TERM_RE = re.compile(r"^(L)?(\d+)(?:-(\d+))?(?:H(\d+))?$", re.IGNORECASE)


def format_site(layer: int, head: int) -> str:
    """The key of one site: ``format_site(12, 3) == "L12H3"``."""
    return f"L{int(layer)}H{int(head)}"


def parse_site(key: Any) -> tuple[int, int]:
    """``"L12H3"`` (any case) or ``(12, 3)`` -> ``(12, 3)``; anything else raises ``ValueError``.

    No model bounds are checked here (use ``check_site``)."""
    if isinstance(key, (list, tuple)) and len(key) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in key):
        return int(key[0]), int(key[1])
    if isinstance(key, str):
        t = _term(key)
        if t is not None and t[0] and t[2] is None and t[3] is not None:
            return int(t[1]), t[3]
    raise ValueError(f"bad site {key!r}: expected 'L<layer>H<head>' (e.g. 'L12H3') or a (layer, head) pair of ints")


def is_site_term(term: str) -> bool:
    """Whether ``term`` is one plain selector term ('all', 'L3', 'L3-5', 'L3H1'), not an atlas selector."""
    t = _term(term)
    return term.strip().lower() == "all" or (t is not None and t[0] and not (t[2] is not None and t[3] is not None))


def _term(text: str) -> tuple[bool, str, str | None, int | None] | None:
    """(has L, first layer text, last layer text or None, head or None) of one term, or None if no match.

    Returned as strings for the layers so that callers can name them in errors."""
    m = _TERM_RE.match(text.strip())
    if not m:
        return None
    return bool(m.group(1)), m.group(2), m.group(3), None if m.group(4) is None else int(m.group(4))


def _layer_range(t: tuple, text: str, n_layers: int) -> range:
    lo = int(t[1])
    hi = lo if t[2] is None else int(t[2])
    if hi < lo:
        raise ValueError(f"layer range {text!r} is empty: write low-high with low <= high")
    bad = range(max(lo, n_layers), hi + 1)  # layers are >= 0 by the grammar
    if len(bad) == 1:
        raise ValueError(f"layer {bad[0]} out of range in {text!r}: valid layers are 0..{n_layers - 1}")
    if bad:
        shown = str(list(bad)) if len(bad) <= 8 else f"[{bad[0]}, {bad[1]}, ..., {bad[-1]}]"
        raise ValueError(f"layers {shown} out of range: valid layers are 0..{n_layers - 1} (in {text!r})")
    return range(lo, hi + 1)


def check_site(layer: int, head: int, n_layers: int, n_heads: int) -> tuple[int, int]:
    """Validate one site; raise ``ValueError`` naming the bad value and the valid range."""
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer!r} out of range: valid layers are 0..{n_layers - 1}")
    if not isinstance(head, int) or isinstance(head, bool) or not 0 <= head < n_heads:
        raise ValueError(f"head {head!r} out of range: valid heads are 0..{n_heads - 1} (query-head numbering)")
    return layer, head


def parse_layers(text: str, n_layers: int) -> list[int]:
    """A layer list -> sorted distinct layers: 'L14', 'L14-24', '0,14-24', 'all', 'none', 'every:7'."""
    if not isinstance(text, str):
        raise ValueError(f"a layer list must be a string like 'L14-24' or '0,14-24', got {text!r}")
    s = text.strip().lower()
    if s in ("", "none"):
        return []
    if s == "all":
        return list(range(n_layers))
    if s.startswith("every:"):
        step = s.split(":", 1)[1]
        if not step.isdigit() or int(step) < 1:
            raise ValueError(f"every:N needs an integer N >= 1, got {text!r}")
        return list(range(0, n_layers, int(step)))
    out: set[int] = set()
    for part in (p.strip() for p in s.split(",")):
        if not part:
            continue
        t = _term(part)
        if t is None or t[3] is not None:
            raise ValueError(
                f"bad layer list {text!r} at {part!r}: expected 'all', 'none', 'every:N' or a comma list "
                "of layers and inclusive ranges like 'L14', 'L14-24', '0,14-24'"
            )
        out.update(_layer_range(t, part, n_layers))
    return sorted(out)


def format_layers(layers: Iterable[int]) -> str:
    """Inverse of ``parse_layers`` for a list of layers: ``[0, 14, 15, 16] -> "L0,L14-16"`` ('none' if empty)."""
    ls = sorted(set(int(x) for x in layers))
    if not ls:
        return "none"
    parts, start = [], ls[0]
    for a, b in zip(ls, ls[1:] + [None]):
        if b != a + 1:
            parts.append(f"L{start}" if start == a else f"L{start}-{a}")
            start = b
    return ",".join(parts)


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

    if sel is None or (isinstance(sel, str) and sel.strip().lower() == "all"):
        for layer in range(n_layers):
            add(layer, "all")
    elif isinstance(sel, str):
        for part in sel.split(","):
            part = part.strip()
            t = _term(part)
            if t is None or not t[0] or (t[2] is not None and t[3] is not None):
                raise ValueError(f"bad site {part!r}: expected 'all', 'L<layer>', 'L<first>-<last>' or 'L<layer>H<head>'")
            for layer in _layer_range(t, part, n_layers):
                add(layer, "all" if t[3] is None else t[3])
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
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                check_site(item[0], item[1], n_layers, n_heads)
                add(item[0], item[1])
            else:
                raise ValueError(f"bad site {item!r}: expected (layer, head) or 'L<layer>H<head>'")
    else:
        raise ValueError(f"bad site selector {sel!r}")
    return {layer: sorted(heads) for layer, heads in sorted(out.items())}


def site_pairs(sites: Mapping[int, Iterable[int]]) -> list[tuple[int, int]]:
    """``{layer: heads}`` -> ``[(layer, head), ...]`` in layer, then head order."""
    return [(layer, int(h)) for layer, hs in sorted(sites.items()) for h in hs]
