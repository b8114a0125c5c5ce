"""The engine's plug-in contracts: the registries through which it finds probes, edits, patterns
and the sparse kernel by name, without importing the packages that provide them.

The plug-in packages register themselves when imported (``headlab.probes`` fills ``PROBES``,
``headlab.edits`` fills ``EDITS``, ``headlab.patterns`` fills ``PATTERNS`` and the ``per_head``
combinator, ``headlab.kernels`` the ``sparse_attend`` kernel); ``import headlab`` imports all of
them. So the import direction stays one way: plug-ins import the engine, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry

#: probe classes by name (``headlab.probes``); a class with ``protocol is None`` builds with no arguments
PROBES: Registry[type] = Registry("probe")
#: edit classes by config name (``headlab.edits``)
EDITS: Registry[type] = Registry("edit")
#: pattern factories by name (``headlab.patterns``)
PATTERNS: Registry[Callable[..., Any]] = Registry("pattern")
#: engine hooks provided by plug-in packages: "sparse_attend" (kernels), "per_head" (patterns)
HOOKS: Registry[Callable[..., Any]] = Registry("engine hook")


def make_probe(name: str) -> Any:
    """A fresh probe for ``name``; only probes that need no arguments and no input protocol of their
    own (``protocol is None``) can be made from a name."""
    cls = PROBES.get(name)
    if getattr(cls, "protocol", None) is not None:
        raise ValueError(
            f"probe {name!r} needs its own input protocol ({cls.protocol}); it cannot run on "
            f"arbitrary text. Probes usable by name: {', '.join(query_probe_names())}"
        )
    return cls()


def query_probe_names() -> list[str]:
    """Probes computable on any text (no arguments, no protocol of their own), in registration order."""
    return [n for n, cls in PROBES.items() if getattr(cls, "protocol", None) is None]


def _hook(name: str, package: str) -> Callable[..., Any]:
    if name not in HOOKS:
        raise RuntimeError(f"no {name!r} implementation registered: import {package} (``import headlab`` does)")
    return HOOKS.get(name)


def sparse_attend(q, k, v, pattern, *, scale: float | None = None, causal: bool = True):
    """The registered block-sparse kernel (``headlab.kernels.sparse_attend``)."""
    return _hook("sparse_attend", "headlab.kernels")(q, k, v, pattern, scale=scale, causal=causal)


def per_head(patterns: list, kv_per_head: bool = False):
    """The registered per-head pattern combinator (``headlab.patterns.per_head``)."""
    return _hook("per_head", "headlab.patterns")(patterns, kv_per_head=kv_per_head)
