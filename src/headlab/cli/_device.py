"""``--device``, ``--dtype`` and ``--device-map``: the options of every command that loads a model."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer


def device_option() -> Any:
    return typer.Option(None, "--device", help="where the model runs: cpu, cuda, cuda:1, mps (default: cpu)")


def dtype_option() -> Any:
    return typer.Option(None, "--dtype", help="model weights and activations: float32 (default), bfloat16, float16")


def device_map_option() -> Any:
    return typer.Option(
        None,
        "--device-map",
        help="spread layers over devices with accelerate: auto, balanced, "
        'sequential, or a JSON object {"module name": "device"} (not with --device)',
    )


def load_model(name: str, device: Optional[str] = None, dtype: Optional[str] = None, device_map: Optional[str] = None):
    """``headlab.load`` with the CLI's option values; bad values raise ValueError naming them."""
    from ..models import load

    return load(name, dtype=dtype, device=device, device_map=parse_device_map(device_map))


def parse_device_map(text: Optional[str]) -> Any:
    if text is None or not text.strip().startswith("{"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"--device-map {text!r} is not valid JSON ({exc.msg}); give auto, balanced, sequential, "
            'a device, or {"module name": "device"}'
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"--device-map {text!r} must be a JSON object")
    return value
