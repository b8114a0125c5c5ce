#!/usr/bin/env bash
# The peers' venv of `headlab bench peers`: TransformerLens and nnsight beside headlab, with the same torch and
# transformers as headlab's own venv (.venv), so that every tool runs the same kernels on the same weights.
#
#   bash scripts/peers_env.sh [VENV]        (default build/peers-venv; then --peers-python VENV/bin/python)
#
# Order matters: torch first (a bare `torch` would pull a multi-GB CUDA build; 2.13.0 is the CPU build here),
# then transformers pinned to headlab's, then the peers, then headlab itself (editable, with its own light
# dependencies: matplotlib, scipy, gguf, ...; torch and transformers already satisfy it and are not touched).
# TransformerLens is pinned to 3.9.0: 4.x removed HookedTransformer (only the TransformerBridge is left), and
# 3.9.0 has both and needs transformers >= 5.9. nnsight 0.8.1 works with any transformers 5.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/build/peers-venv}"
main_py="$root/.venv/bin/python"
TL_VERSION="${TL_VERSION:-3.9.0}"
NNSIGHT_VERSION="${NNSIGHT_VERSION:-0.8.1}"

if [ -x "$main_py" ]; then
  base_py="${PYTHON:-$("$main_py" -c 'import sys; print(sys._base_executable)')}"
  torch_v="${TORCH_VERSION:-$("$main_py" -c 'import torch; print(torch.__version__.split("+")[0])')}"
  tf_v="${TRANSFORMERS_VERSION:-$("$main_py" -c 'import transformers; print(transformers.__version__)')}"
else
  base_py="${PYTHON:-python3}"
  torch_v="${TORCH_VERSION:-2.13.0}"
  tf_v="${TRANSFORMERS_VERSION:-5.25.0}"
fi

echo "peers venv: $venv (python $("$base_py" -c 'import platform; print(platform.python_version())'), torch $torch_v, transformers $tf_v, transformer-lens $TL_VERSION, nnsight $NNSIGHT_VERSION)" >&2
"$base_py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "torch==$torch_v"
"${pip[@]}" install "transformers==$tf_v" "transformer-lens==$TL_VERSION" "nnsight==$NNSIGHT_VERSION"
"${pip[@]}" install -e "$root"
"${pip[@]}" check
# the pins must have held: the peers run the same torch and transformers as headlab
"$venv/bin/python" - "$torch_v" "$tf_v" <<'PY'
import sys

import torch
import transformers

want_torch, want_tf = sys.argv[1:]
got = (torch.__version__.split("+")[0], transformers.__version__)
if got != (want_torch, want_tf):
    sys.exit(f"peers venv: torch {got[0]}, transformers {got[1]}; expected {want_torch}, {want_tf}")
from transformer_lens import HookedTransformer  # noqa: F401
from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
import nnsight  # noqa: F401

print(f"peers venv ready: {sys.executable}")
PY
