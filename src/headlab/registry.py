"""One registry type for every kind of plug-in looked up by name (probes, edits, patterns, modules).

A :class:`Registry` maps names to objects (classes or factories) in registration order. It reads
like a dict (``REGISTRY[name]``, ``name in REGISTRY``, iteration over names, ``len``, ``items()``)
so code that used the former plain dicts keeps working, and adds:

* ``register(name, obj)`` or ``@register`` / ``@register("name")`` as a decorator (the name is
  then the object's ``name`` attribute, else its ``__name__``); a second entry under a taken name
  raises ``ValueError`` unless ``replace=True``;
* ``get(name)``, which raises ``ValueError`` naming the unknown name and listing the valid ones
  (``REGISTRY[name]`` raises ``KeyError`` with the same message);
* ``names()``, the registered names in registration order.

A registry made with ``lazy=True`` (the engine's probes, edits and patterns) first runs
:func:`ensure_plugins` on every lookup: the top package arms it (:func:`add_plugin_loader`) with a
function that imports the plug-in packages, so ``import headlab`` stays cheap (no torch) and a name is
still found however the caller came in.

This module imports nothing from headlab: every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

_MISSING: Any = object()

_LOADERS: list[Callable[[], None]] = []
_STATE = {"loaded": 0, "busy": False}


def add_plugin_loader(loader: Callable[[], None]) -> None:
    """Run ``loader()`` (once) before the first lookup in a lazy registry; the top package adds the one that
    imports headlab's plug-in packages, a third-party package may add its own."""
    if loader not in _LOADERS:
        _LOADERS.append(loader)


def ensure_plugins() -> None:
    """Run the plug-in loaders not run yet (re-entrant calls while loading return at once)."""
    if _STATE["busy"] or _STATE["loaded"] == len(_LOADERS):
        return
    _STATE["busy"] = True
    try:
        while _STATE["loaded"] < len(_LOADERS):
            loader = _LOADERS[_STATE["loaded"]]
            _STATE["loaded"] += 1
            loader()
    finally:
        _STATE["busy"] = False


class Registry(Generic[T]):
    """Named plug-ins of one ``kind`` ("probe", "edit", "pattern", "mechanism", ...)."""

    def __init__(self, kind: str, entries: dict[str, T] | None = None, *, lazy: bool = False) -> None:
        if not kind or not isinstance(kind, str):
            raise ValueError(f"a registry needs a non-empty kind, got {kind!r}")
        self.kind = kind
        self.lazy = lazy
        self._stored: dict[str, T] = {}
        for name, obj in (entries or {}).items():
            self.register(name, obj)

    @property
    def _entries(self) -> dict[str, T]:
        """The entries, after the plug-in loaders ran (lazy registries)."""
        if self.lazy:
            ensure_plugins()
        return self._stored

    # -- registration -------------------------------------------------------------------
    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    @overload
    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: T, *, replace: bool = False) -> T: ...

    def register(self, name: Any = None, obj: Any = _MISSING, *, replace: bool = False) -> Any:
        """``register("name", obj)``; or as a decorator: ``@register`` / ``@register("name")``."""
        if obj is not _MISSING:
            return self._add(name, obj, replace)
        if isinstance(name, str):
            return lambda o: self._add(name, o, replace)
        if name is None:
            return lambda o: self._add(_name_of(o), o, replace)
        return self._add(_name_of(name), name, replace)

    def _add(self, name: str, obj: T, replace: bool) -> T:
        if not isinstance(name, str) or not name.strip() or name != name.strip() or "," in name:
            raise ValueError(f"{self.kind} name {name!r} must be a non-empty string without spaces at the ends or commas")
        if name in self._stored and not replace and self._stored[name] is not obj:
            raise ValueError(
                f"{self.kind} {name!r} is already registered ({self._stored[name]!r}); pass replace=True to replace it"
            )
        self._stored[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove and return an entry (unknown names raise ``ValueError``)."""
        obj = self.get(name)
        del self._stored[name]
        return obj

    # -- lookup -------------------------------------------------------------------------
    def _unknown(self, name: Any) -> str:
        return f"unknown {self.kind} {name!r}; valid {self.kind} names are: {', '.join(self._entries) or '(none registered)'}"

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The entry called ``name``; unknown names raise ``ValueError`` listing the valid ones
        (or return ``default`` when one is given)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _MISSING:
                return default
            raise ValueError(self._unknown(name)) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def keys(self) -> list[str]:
        return self.names()

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise KeyError(self._unknown(name)) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def _name_of(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(obj, "__name__", None)
    if isinstance(name, str) and name:
        return name
    raise ValueError(f"cannot tell the name of {obj!r}: register it as register('name', obj)")
