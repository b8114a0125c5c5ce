"""Save / rebuild edits as JSON: ``[{"edit": name, "sites": [[l, h], ...], "params": {...}}]``.

``from_config`` accepts a list of such dicts, one dict, a ``{"edits": [...]}`` document (what
``headlab steer --save`` writes), a JSON string, or a path to a JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .core import REGISTRY, SiteEdit


def to_config(edits: Any) -> list[dict]:
    """JSON-able list for one edit or a list of edits (sites resolved if bound)."""
    if isinstance(edits, SiteEdit):
        edits = [edits]
    out = []
    for e in edits:
        if not isinstance(e, SiteEdit):
            raise ValueError(f"cannot save {e!r}: only headlab.edits factories have a config")
        out.append(e.config())
    return out


def from_config(obj: Any) -> list[SiteEdit]:
    """Rebuild edits from a saved configuration (see module doc)."""
    if isinstance(obj, Path) or (isinstance(obj, str) and not obj.lstrip().startswith(("{", "["))):
        p = Path(obj)
        if not p.is_file():
            raise ValueError(f"edit config {str(p)!r} not found")
        obj = json.loads(p.read_text())
    elif isinstance(obj, str):
        obj = json.loads(obj)
    if isinstance(obj, dict) and "edits" in obj:
        obj = obj["edits"]
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise ValueError(f"edit config must be a list of {{'edit', 'sites', 'params'}} dicts, got {type(obj).__name__}")
    out = []
    for i, c in enumerate(obj):
        if not isinstance(c, dict) or "edit" not in c:
            raise ValueError(f"edit config entry {i} must be a dict with an 'edit' key, got {c!r}")
        name = c["edit"]
        if name not in REGISTRY:
            raise ValueError(f"unknown edit {name!r} in config entry {i}; known: {sorted(REGISTRY)}")
        try:
            out.append(REGISTRY[name].from_params(c.get("sites", "all"), dict(c.get("params", {}))))
        except KeyError as exc:
            raise ValueError(
                f"edit config entry {i} ({name!r}) lacks parameter {exc.args[0]!r}; "
                f"write configs with headlab.edits.to_config or `headlab steer --save`"
            ) from None
    return out
