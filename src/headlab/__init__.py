"""headlab: see, steer and sparsify the attention heads of Hugging Face transformers.

The public API (``headlab.__all__``)::

    import headlab
    model, tok = headlab.load("smollm2-135m")             # the embedded model, offline
    res = headlab.scan(model, tok, ["some text", ...])    # per-head statistics and roles (streaming, no maps)
    with headlab.attach(model, probes=["sink"], edits=[...], pattern=...) as run:
        model(**tok("hello", return_tensors="pt"))
    run.stats(); run.to_frame(); run.show()

``import headlab`` is cheap: torch and transformers load on first use of a name below (PEP 562), so the
command line answers ``--help`` at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registry import add_plugin_loader
from .version import __version__

#: public name -> (module, attribute); ``None`` attribute = the module itself
_API: dict[str, tuple[str, str | None]] = {
    "load": ("headlab.models", "load"),
    "attach": ("headlab.engine.hf", "attach"),
    "attend": ("headlab.engine.attend", "attend"),
    "reference_attention": ("headlab.engine.reference", "reference_attention"),
    "scan": ("headlab.measure.scan", "scan"),
    "head_stats": ("headlab.measure.stats", "head_stats"),
    "kv_cache": ("headlab.sparsify.kvcache", "kv_cache"),
    "load_plan": ("headlab.patterns.headplan", "load_plan"),
    "hf": ("headlab.engine.hf", None),
    "patching": ("headlab.measure.patching", None),
    "edits": ("headlab.edits", None),
    "probes": ("headlab.probes", None),
    "patterns": ("headlab.patterns", None),
    "kernels": ("headlab.kernels", None),
}

__all__ = [
    "__version__",
    "load",
    "attach",
    "attend",
    "reference_attention",
    "scan",
    "head_stats",
    "kv_cache",
    "load_plan",
    "hf",
    "patching",
    "edits",
    "probes",
    "patterns",
    "kernels",
]
assert set(__all__) == {"__version__", *_API}


def _load_plugins() -> None:
    """Import the plug-in packages: they fill the engine's registries and extension points."""
    for mod in ("edits", "kernels", "patterns", "probes", "report.inline"):
        importlib.import_module(f"headlab.{mod}")


add_plugin_loader(_load_plugins)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'headlab' has no attribute {name!r}")
    module, attr = _API[name]
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from . import edits, kernels, patterns, probes
    from .engine import hf
    from .engine.attend import attend
    from .engine.hf import attach
    from .engine.reference import reference_attention
    from .measure import patching
    from .measure.scan import scan
    from .measure.stats import head_stats
    from .models import load
    from .patterns.headplan import load_plan
    from .sparsify.kvcache import kv_cache
