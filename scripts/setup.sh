#!/usr/bin/env bash
# Set up gahb on a fresh Debian machine, then (unless --install-only) run the main job.
#
#   bash scripts/setup.sh                 # install everything, then run the main job
#   bash scripts/setup.sh --install-only  # install only (what CI does before the tests)
#
# Installs: the Debian package dataset-fashion-mnist (the built-in real data), PyTorch's CPU
# build pinned to 2.13.0 (so that no multi-GB CUDA build is pulled in), gahb itself in editable
# mode with its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

run_main=1
[[ "${1:-}" == "--install-only" ]] && run_main=0

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

if [[ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
  echo "[setup] installing Debian package dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

PY=${PYTHON:-python3}
echo "[setup] installing torch==2.13.0 (CPU build) and gahb[dev]"
# Installing torch first and pinned: gahb's own requirement is a range that 2.13.0 satisfies,
# so pip then installs no other torch.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev]"
$PY -c "import torch, gahb; print(f'[setup] gahb {gahb.__version__}, torch {torch.__version__}')"

if [[ $run_main -eq 1 ]]; then
  echo "[setup] running the main job: bash scripts/main_job.sh"
  bash scripts/main_job.sh
fi
