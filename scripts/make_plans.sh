#!/usr/bin/env bash
# The per-head plans behind docs/plans.md and the README's sparsity table: every method at three KV
# budgets, for 4096 and 8192 tokens. Profiles are cached ($HEADLAB_CACHE/profiles), so only the first
# budget of a method profiles (retrieval ~16 min, moa ~28 min, duo ~24 min on a loaded 2-core machine);
# the rest take seconds. Usage: [LENGTHS="4096 8192"] bash scripts/make_plans.sh [OUTDIR]
set -euo pipefail
OUT=${1:-results/sparsify-plans}
mkdir -p "$OUT"
HL=${HEADLAB:-headlab}
for n in ${LENGTHS:-4096 8192}; do
  for b in 0.25 0.35 0.5; do
    $HL sparsify plan --method uniform   --kv-budget $b --length $n --out "$OUT/uniform-$b-$n.json"
    $HL sparsify plan --method random    --kv-budget $b --length $n --out "$OUT/random-$b-$n.json" --seed 0
    $HL sparsify plan --method retrieval --kv-budget $b --length $n --out "$OUT/retrieval-$b-$n.json"
    $HL sparsify plan --method moa       --kv-budget $b --length $n --out "$OUT/moa-$b-$n.json"
    $HL sparsify plan --method duo       --kv-budget $b --length $n --out "$OUT/duo-$b-$n.json" \
      --opt steps=24 --opt items=8 --opt train_lengths=768 --opt train_window=128 --opt lr=0.08
  done
done
