#!/usr/bin/env bash
# The main job on the built-in default data (Fashion-MNIST from the Debian package, plus
# synthetic images): `gahb reproduce --preset quick`, i.e. the transition, Jacobian/GAHB, C^alpha,
# manifold and shuffled studies at a small scale, and one self-contained HTML report.
#
#   bash scripts/main_job.sh [OUT]      # default OUT=runs/reproduce-quick
#
# Re-running reuses finished sections and resumes interrupted training.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/reproduce-quick}
start=$(date +%s)

echo "== data: Fashion-MNIST pool (dedup, cached after the first run)"
gahb data prepare fashion-mnist --no-progress

echo "== reproduce: quick preset -> $OUT"
gahb reproduce --preset quick --threads "${GAHB_THREADS:-2}" --out "$OUT"

echo "main job done in $(( $(date +%s) - start )) s; open $OUT/report.html"
