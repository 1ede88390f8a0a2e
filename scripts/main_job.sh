#!/usr/bin/env bash
# The main job on the built-in default data (Fashion-MNIST from the Debian package):
# prepare the pool, train a small blind bias-free UNet on S1 at N=1000, draw samples from its
# implicit prior, restore an inpainted test image, and analyse its Jacobian (adaptive basis).
#
#   bash scripts/main_job.sh [OUT]      # default OUT=runs/quickstart
#
# Everything lands in OUT; the figures shown in the README are copied to docs/results/quickstart.
# Re-running resumes/reuses finished steps (training resumes from its last checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
RUN=$OUT/train_fm_s1_n1000
PUB=docs/results/quickstart
mkdir -p "$OUT" "$PUB"
start=$(date +%s)

echo "== 1/5 data: Fashion-MNIST pool (dedup, cached)"
gahb data prepare fashion-mnist --no-progress

echo "== 2/5 train: unet-small on S1, N=1000 (quick preset)"
gahb train --dataset fashion-mnist --n 1000 --subset s1 --preset quick --model-preset unet-small \
  --threads "${GAHB_THREADS:-2}" --out "$RUN"

echo "== 3/5 sample: 16 samples, paper sampler preset, seeds 0..15"
gahb sample --checkpoint "$RUN" --num 16 --seed 0 --preset paper --out "$OUT/samples" --no-progress

echo "== 4/5 restore: inpaint a missing block of held-out test image 0"
python3 - "$OUT/test0.png" <<'PY'
import sys
from gahb.data import load_split, save_image
save_image(sys.argv[1], load_split("fashion-mnist", n=1, progress=False).test[0])
PY
gahb restore --checkpoint "$RUN" --image "$OUT/test0.png" --task inpaint --seed 0 --out "$OUT/restore" --no-progress

echo "== 5/5 jacobian: adaptive basis of held-out test image 0 at sigma = 0.05, 0.1, 0.2"
gahb jacobian --checkpoint "$RUN" --dataset fashion-mnist --index 0 --sigma 0.05 0.1 0.2 \
  --method dense --out "$OUT/jacobian" --quiet

cp "$RUN/metrics.jsonl" "$OUT/samples/samples.png" "$PUB/"
cp "$OUT"/jacobian/*.png "$OUT"/jacobian/*.json "$PUB/" 2>/dev/null || true
echo "main job done in $(( $(date +%s) - start )) s; outputs in $OUT, README figures in $PUB"
