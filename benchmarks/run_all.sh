#!/usr/bin/env bash
# Runs every benchmark in turn on this machine and keeps the output in benchmarks/results/<date>.log.
# Run it on an otherwise idle machine; BENCHMARKS.md records the numbers with machine and date.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p benchmarks/results
log="benchmarks/results/$(date +%Y-%m-%d).log"
{
  echo "# $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
  for cmd in \
    "benchmarks/model_speed.py --repeats 5" \
    "benchmarks/model_speed.py --runtimes eager,fast,onnx --repeats 15" \
    "benchmarks/stem_pool.py --threads 1" \
    "benchmarks/train_step.py --threads 1" \
    "benchmarks/tracker_speed.py --runs 20" \
    "benchmarks/crop_bytes.py" \
    "benchmarks/prep_throughput.py --size small --pairs 400 --shard-pairs 200 --repeats 3" \
    "benchmarks/prep_throughput.py --size small --pairs 2000 --shard-pairs 200 --repeats 3 --plan-tracks 0" \
    "benchmarks/prep_throughput.py --size medium --pairs 2000 --shard-pairs 500 --repeats 3 --plan-tracks 0" \
    "benchmarks/prep_throughput.py --size small --frame-size 1280x720 --pairs 400 --shard-pairs 200 --repeats 3 --plan-tracks 0" \
    "benchmarks/train_input.py --epochs 5 --copies 8" \
    "benchmarks/eval_scaling.py --size small --repeats 2" \
    "benchmarks/eval_batched.py --preset paper --sequences 6 --frames 6 --repeats 3 --batches 2,4" \
    "benchmarks/online_speed.py --presets paper,smoke --frames 31"; do
    echo; echo "## python $cmd   (load $(cut -d' ' -f1-3 /proc/loadavg))"
    timeout 1200 $PY $cmd 2>&1 | grep -v "^\(WARNING\|INFO\|(raylet)\)" | tail -40
  done
} | tee "$log"
# The online module's AUC gain needs a trained checkpoint (e.g. the quickstart's) and held-out synthetic sets:
#   ocean synth --out /tmp/s21 --seed 21 --size small
#   python benchmarks/online_gain.py --checkpoint ocean-work/runs/checkpoints/epoch-0010.pt --data /tmp/s21
# Generalisation (issue 14): a trained checkpoint on the held-out scenes and the real OTB clips, beside
# OpenCV CSRT / KCF (needs opencv-contrib-python-headless first on PYTHONPATH, not a project dependency):
#   python benchmarks/heldout_scores.py --checkpoint ocean-work/runs/checkpoints/epoch-0010.pt \
#       --otb ../shared/data/real_sequences/otb --json heldout.json
# Ray Data's idle scheduling loop in a training rank, spinning vs sleeping (needs a quickstart's pair records):
#   python benchmarks/train_idle_loop.py --pairs ocean-work/pairs --epochs 10 --json idle_loop.json
