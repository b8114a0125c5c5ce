"""The engine's plug-in contracts: the registries through which it finds probes, edits and patterns by
name, and the typed extension points through which packages above it extend it, without the engine
importing them.

* Registries: ``headlab.probes`` fills ``PROBES``, ``headlab.edits`` ``EDITS``, ``headlab.patterns``
  ``PATTERNS`` when imported. Every lookup first makes sure the plug-in packages are loaded
  (:func:`headlab.registry.ensure_plugins`, which ``headlab/__init__.py`` arms), so ``import headlab``
  stays cheap and a name is found however the caller came in.
* Extension points (:data:`EXTENSIONS`, one typed slot each): ``sparse_attend`` (the block-sparse kernel,
  set by ``headlab.kernels``), ``per_head`` (the per-head pattern combinator, ``headlab.patterns``) and
  ``run_view`` (the notebook view of an attached run, ``headlab.report``).
* Compressed KV caches (``headlab.kv_cache``) hand their decode step to the engine by tagging the key
  tensor they return (:func:`tag_compressed`); the engine asks :func:`compressed_of` and lets the cache
  attend over its kept keys (:class:`CompressedKV`).

So the import direction stays one way: plug-ins import the engine, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..registry import Registry, ensure_plugins

#: probe classes by name (``headlab.probes``); a class with ``protocol is None`` builds with no arguments
PROBES: Registry[type] = Registry("probe", lazy=True)
#: edit classes by config name (``headlab.edits``)
EDITS: Registry[type] = Registry("edit", lazy=True)
#: pattern factories by name (``headlab.patterns``)
PATTERNS: Registry[Callable[..., Any]] = Registry("pattern", lazy=True)


class SparseAttend(Protocol):
    """``(q (B,H,T,d), k (B,Hkv,S,d), v, pattern, *, scale, causal) -> out (B,H,T,d)``."""

    def __call__(self, q: Any, k: Any, v: Any, pattern: Any, *, scale: float | None = None, causal: bool = True) -> Any: ...


class PerHead(Protocol):
    """``(patterns: one per query head or KV head, kv_per_head) -> one pattern``."""

    def __call__(self, patterns: list, kv_per_head: bool = False) -> Any: ...


class RunView(Protocol):
    """``(run, head, metric, tokens) -> HTML`` of an attached run (the report's head view)."""

    def __call__(self, run: Any, head: Any = None, metric: str | None = None, tokens: Any = None) -> str: ...


class CompressedKV(Protocol):
    """One layer of a compressed KV cache: attends a decode query over the keys it kept itself;
    returns ``(out (B,T,H,d), None)`` as an attention function does."""

    def attend(self, query: Any, attention_mask: Any, scaling: float | None, *, pattern: Any, edits: Any, probes: Any) -> Any: ...


@dataclass
class Extensions:
    """The engine's typed extension points; each is set once by the package that provides it."""

    sparse_attend: SparseAttend | None = None
    per_head: PerHead | None = None
    run_view: RunView | None = None


EXTENSIONS = Extensions()

#: the attribute a compressed cache puts on the key tensor of a decode step (see :func:`tag_compressed`)
_KV_TAG = "headlab_kv"


def tag_compressed(key: Any, layer: CompressedKV) -> Any:
    """Mark ``key`` (returned by a cache's ``update``) as belonging to compressed-cache layer ``layer``."""
    setattr(key, _KV_TAG, layer)
    return key


def compressed_of(key: Any) -> CompressedKV | None:
    """The compressed-cache layer that returned ``key``, if any."""
    return getattr(key, _KV_TAG, None)


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


def _extension(name: str, package: str) -> Any:
    fn = getattr(EXTENSIONS, name)
    if fn is None:
        ensure_plugins()
        fn = getattr(EXTENSIONS, name)
    if fn is None:
        raise RuntimeError(f"no {name!r} implementation set: import {package} (``import headlab`` arms it)")
    return fn


def sparse_attend(q, k, v, pattern, *, scale: float | None = None, causal: bool = True):
    """The block-sparse kernel (``headlab.kernels.sparse_attend``)."""
    return _extension("sparse_attend", "headlab.kernels")(q, k, v, pattern, scale=scale, causal=causal)


def per_head(patterns: list, kv_per_head: bool = False):
    """The per-head pattern combinator (``headlab.patterns.per_head``)."""
    return _extension("per_head", "headlab.patterns")(patterns, kv_per_head=kv_per_head)


def run_view(run: Any, head: Any = None, metric: str | None = None, tokens: Any = None) -> str:
    """HTML of an attached run (``headlab.report.inline.run_html``)."""
    return _extension("run_view", "headlab.report")(run, head=head, metric=metric, tokens=tokens)
