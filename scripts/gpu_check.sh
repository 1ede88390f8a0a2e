#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): numeric tests on CUDA, the fast paths' GPU rows, a short
# torchrun DDP paper-preset training, and the GPU's fp32/bf16 matrix-product peaks, in one JSON.
#
#   bash scripts/gpu_check.sh [--out runs/gpu_check.json]     # a machine with CUDA GPUs (< 10 min)
#   bash scripts/gpu_check.sh --dry-run                       # the CPU rehearsal (CI runs it through the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 benchmarks/gpu_check.py "$@"
