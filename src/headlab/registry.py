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

This module imports nothing from headlab: every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

_MISSING: Any = object()


class Registry(Generic[T]):
    """Named plug-ins of one ``kind`` ("probe", "edit", "pattern", "mechanism", ...)."""

    def __init__(self, kind: str, entries: dict[str, T] | None = None) -> None:
        if not kind or not isinstance(kind, str):
            raise ValueError(f"a registry needs a non-empty kind, got {kind!r}")
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, obj in (entries or {}).items():
            self.register(name, obj)

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
        if name in self._entries and not replace and self._entries[name] is not obj:
            raise ValueError(
                f"{self.kind} {name!r} is already registered ({self._entries[name]!r}); pass replace=True to replace it"
            )
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove and return an entry (unknown names raise ``ValueError``)."""
        obj = self.get(name)
        del self._entries[name]
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
