#!/usr/bin/env bash
# GPU check (issue #16 item 3) on a machine with an NVIDIA GPU: CUDA vs CPU inference of the organ
# model, the Dice change under mixed precision, and one device per user's process. Needs torch's CUDA
# build: `MEDIMG_TORCH=cuda scripts/bootstrap.sh` (auto-selected where nvidia-smi lists a GPU).
# Writes benchmarks/results/gpu_inference_speedup.json and gpu_amp_dice_delta.json.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi -L || { echo "gpu_check: nvidia-smi lists no GPU here; nothing to check" >&2; exit 2; }
PY=$(realpath "${PYTHON:-.venv/bin/python}")
cd benchmarks
exec "$PY" gpu_check.py "$@"
