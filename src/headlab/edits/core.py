"""Common base of the concrete edits: atlas-aware site binding, JSON config, readable describe().

Every concrete edit keeps its parameters in ``self.params`` (JSON-able values only, tensors as
nested lists) so that ``edit.config()`` -> ``from_config`` round-trips exactly.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ..engine.plugins import EDITS
from ._util import fmt_sites, sites_list
from .base import Edit
from .select import resolve

#: edit classes by config name: the engine's edit registry (``headlab.engine.plugins.EDITS``)
REGISTRY = EDITS

E = TypeVar("E", bound="SiteEdit")


def register(cls: type[E]) -> type[E]:
    """Class decorator: make an edit constructible from its config name (``cls.name``)."""
    REGISTRY.register(cls.name, cls)
    return cls


class SiteEdit(Edit):
    """An edit whose sites may be an atlas selector ("retrieval", "sink:top5", "random:20")."""

    summary = ""  # one line: what the edit does (used by describe)
    paper = ""  # citation

    def __init__(self, sites: Any = "all", atlas: Any = None, **params: Any) -> None:
        super().__init__(sites)
        self.atlas = atlas
        self.params = params

    def bind(self, n_layers: int, n_heads: int) -> SiteEdit:
        self._shape = (n_layers, n_heads)
        self._sites = resolve(self._sel, n_layers, n_heads, self.atlas)
        self._check_bound()
        return self

    def _check_bound(self) -> None:
        """Hook for subclasses: validate parameters against the bound sites."""

    def n_sites(self) -> int:
        return sum(len(h) for h in self.sites.values())

    def config(self) -> dict:
        """JSON-able ``{"edit", "sites", "params"}``; sites are explicit pairs once bound."""
        sites = sites_list(self._sites) if self._sites is not None else self._sel
        if isinstance(sites, tuple):
            sites = list(sites)
        return {"edit": self.name, "sites": sites, "params": self._json_params()}

    def _json_params(self) -> dict:
        return dict(self.params)

    @classmethod
    def from_params(cls, sites: Any, params: dict) -> SiteEdit:
        return cls(sites=_pairs(sites), **params)

    def describe(self) -> str:
        where = fmt_sites(self._sites if self._sites is not None else self._sel)
        ps = ", ".join(f"{k}={_short(v)}" for k, v in self._json_params().items())
        return f"{self.name}({ps}) on {where}" + (f": {self.summary}" if self.summary else "")


def _pairs(sites: Any) -> Any:
    if isinstance(sites, list) and sites and all(isinstance(s, list) and len(s) == 2 for s in sites):
        return [tuple(s) for s in sites]
    return sites


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return f"{{{len(v)} entries}}" if len(v) > 3 else repr(v)
    if isinstance(v, list) and len(v) > 6:
        return f"[{len(v)} values]"
    return repr(v)
