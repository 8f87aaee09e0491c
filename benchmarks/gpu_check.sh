#!/usr/bin/env bash
# The GPU check (issue 15 item 6) on a lent GPU machine, in under 8 minutes; results in $OUT (or
# benchmarks/results/gpu-<date>/): gpu_check.json, gpu_check.md, eval_batched.json, the CUDA tests' log.
#
#   bash benchmarks/gpu_check.sh [CHECKPOINT]     # CHECKPOINT: trained weights for the tracker dtypes
#
# The GPU machine may lack packages this project installs (Ray, MLflow): the check needs only torch,
# torchvision, OpenCV, numpy and pyarrow. PY picks the interpreter (default: .venv's, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
out=${OUT:-benchmarks/results/gpu-$(date +%Y-%m-%d)}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
ckpt=()
[ $# -ge 1 ] && ckpt=(--checkpoint "$1")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/nvidia-smi.csv" 2>&1
# 1. the numbers: training step (AMP bf16, batch 32), fed by every CPU core, tracker fp32/bf16/fp16, JPEG decode
timeout 300 "$PY" benchmarks/gpu_check.py --device cuda --out "$out" "${ckpt[@]}"
status=$?
# 2. batched evaluation on the device: K sequences per forward against one at a time (goal >= 5x frames/s)
timeout 120 "$PY" benchmarks/eval_batched.py --preset paper --device cuda --batches 1,8,32 --sequences 32 \
  --frames 30 --repeats 1 --threads 4 --json "$out/eval_batched.json" > "$out/eval_batched.txt" 2>&1 || status=1
cat "$out/eval_batched.txt"
# 3. the same numbers as the CPU on CUDA (tests/gpu): forward, tracker boxes, online module
timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/gpu > "$out/tests_gpu.log" 2>&1 || status=1
tail -3 "$out/tests_gpu.log"
exit $status
