#!/usr/bin/env bash
# The kvpress venv of `headlab bench kv`: NVIDIA's kvpress (github.com/NVIDIA/kvpress) in its own venv, because
# kvpress 0.5.5 needs transformers < 5.3 and headlab runs a newer transformers.
#
#   bash scripts/kvpress_env.sh [VENV]      (default build/kvpress-venv; then --kvpress-python VENV/bin/python)
#
# Order matters: torch FIRST, pinned to the CPU build headlab's venv runs (a bare `torch` would pull a multi-GB
# CUDA build; 2.13.0 is the CPU build on this machine), then kvpress with the newest transformers it allows.
# headlab itself is NOT installed there: the child script (headlab/bench/kv_child.py) and the press adapter
# (headlab/sparsify/interop/press.py) import only torch, transformers and kvpress, and run from headlab's tree.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/build/kvpress-venv}"
main_py="$root/.venv/bin/python"
KVPRESS_VERSION="${KVPRESS_VERSION:-0.5.5}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.2.0}"  # kvpress 0.5.5: transformers >= 4.56, < 5.3

if [ -x "$main_py" ]; then
  base_py="${PYTHON:-$("$main_py" -c 'import sys; print(sys._base_executable)')}"
  torch_v="${TORCH_VERSION:-$("$main_py" -c 'import torch; print(torch.__version__.split("+")[0])')}"
else
  base_py="${PYTHON:-python3}"
  torch_v="${TORCH_VERSION:-2.13.0}"
fi

echo "kvpress venv: $venv (python $("$base_py" -c 'import platform; print(platform.python_version())'), torch $torch_v, transformers $TRANSFORMERS_VERSION, kvpress $KVPRESS_VERSION)" >&2
"$base_py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "torch==$torch_v"
"${pip[@]}" install "torch==$torch_v" "transformers==$TRANSFORMERS_VERSION" "kvpress==$KVPRESS_VERSION"
"${pip[@]}" check
"$venv/bin/python" - "$torch_v" "$TRANSFORMERS_VERSION" "$KVPRESS_VERSION" <<'PY'
import importlib.metadata as md
import sys

import torch
import transformers

want = dict(zip(("torch", "transformers", "kvpress"), sys.argv[1:]))
got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__, "kvpress": md.version("kvpress")}
if got != want:
    sys.exit(f"kvpress venv: got {got}, expected {want}")
from kvpress import KnormPress, SnapKVPress, StreamingLLMPress  # noqa: F401

print(f"kvpress venv ready: {sys.executable} ({got})")
PY
