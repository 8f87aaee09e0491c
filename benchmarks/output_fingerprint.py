"""Fingerprint what the jobs produce, through the `ocean` command line only, so two code versions compare.

For fixed inputs and seed it records: the sha256 of every prepared shard (from the manifest), the parameter
digest of a one-epoch smoke training, the scores of `ocean evaluate` (local loop and Ray workers) and of
`ocean score` on the evaluation's result files. A refactor that must not change behaviour gives the same
JSON before and after (compare with `diff` or `--compare OLD.json`).

    python benchmarks/output_fingerprint.py --work /tmp/fp --json before.json
    python benchmarks/output_fingerprint.py --work /tmp/fp2 --json after.json --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = {"otb": "otb", "vot2018": "vot2018/sequences", "got10k": "got10k/val", "lasot": "lasot"}
DATASETS = ("got10k", "lasot", "vid", "det", "coco", "ytbb")


def ocean(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "jobs.cli", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the Ray workers import the same checkout's code
    subprocess.run(cmd, check=True, cwd=cwd, env=env)


def state_digest(path: Path) -> str:
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob["model"] if "model" in blob else blob["state_dict"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def without_speed(value):
    """A score dict without its measured speeds (``speed_fps``), at any depth."""
    if isinstance(value, dict):
        return {k: without_speed(v) for k, v in value.items() if k != "speed_fps"}
    return value


def drop_timing_csv(text: str) -> str:
    """The CSV without the columns that vary run to run (timings, the worker's host:pid)."""
    rows = [line.split(",") for line in text.splitlines()]
    keep = [i for i, name in enumerate(rows[0])
            if not any(t in name for t in ("fps", "second", "time", "worker"))]
    return "\n".join(",".join(r[i] for i in keep if i < len(r)) for r in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, type=Path, help="scratch folder (created)")
    p.add_argument("--json", required=True, type=Path, help="where to write the fingerprint")
    p.add_argument("--compare", type=Path, help="a fingerprint to compare with (exit 1 when they differ)")
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent,
                   help="the checkout whose code runs (default: this one)")
    args = p.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    repo = args.repo.resolve()
    synth = work / "synth"
    if not (synth / "synth_manifest.json").exists():
        ocean("synth", "--out", str(synth), "--size", "tiny", "--seed", "0", cwd=repo)
    pairs = work / "pairs"
    ocean("prepare", *[a for d in DATASETS for a in ("--dataset", f"{d}={synth / d}")], "--out", str(pairs),
          "--preset", "smoke", "--seed", "0", "--shard-pairs", "100", "--no-progress", cwd=repo)
    manifest = json.loads((pairs / "manifest.json").read_text())
    shards = {s["path"]: s["sha256"] for s in manifest["shards"]}

    run = work / "run"
    ocean("train", "--data", str(pairs), "--out", str(run), "--preset", "smoke", "--epochs", "1",
          "--workers", "2", "--seed", "0", "--mlflow-uri", f"sqlite:///{work / 'mlflow.db'}", cwd=repo)
    ckpt = sorted((run / "checkpoints").glob("epoch-*.pt"))[-1]

    bench = synth / "benchmarks"
    roots = [a for b, sub in BENCHMARKS.items() for a in ("--benchmark", f"{b}={bench / sub}")]
    evaluations, result_files = {}, {}
    for mode in ("local", "ray"):
        out = work / f"eval-{mode}"
        ocean("evaluate", "--checkpoint", str(ckpt), *roots, "--out", str(out), "--no-mlflow", "--quiet",
              *(["--local"] if mode == "local" else []), cwd=repo)
        evaluations[mode] = {"per_sequence.csv": drop_timing_csv((out / "per_sequence.csv").read_text()),
                             "summary.md": (out / "summary.md").read_text()}
        result_files[mode] = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                              for p in sorted(out.rglob("results/**/*")) if p.is_file() and "time" not in p.name}

    scored = {}
    for b, sub in BENCHMARKS.items():
        out = work / f"score-{b}.json"
        ocean("score", "--benchmark", b, "--dataset", str(bench / sub), "--results",
              str(work / "eval-local" / ckpt.stem / b / "results"), "--json", str(out), cwd=repo)
        scored[b] = without_speed(json.loads(out.read_text()))

    fingerprint = {"shards": shards, "manifest_totals": manifest["totals"], "manifest_datasets": {
        name: {k: v for k, v in d.items() if k != "root"} for name, d in manifest["datasets"].items()}, "train_state_sha256": state_digest(ckpt), "checkpoint": ckpt.name,
                   "evaluate": evaluations, "result_files": result_files, "score": scored}
    args.json.write_text(json.dumps(fingerprint, indent=1, sort_keys=True, default=str))
    print(f"fingerprint -> {args.json}")
    if args.compare:
        old = json.loads(args.compare.read_text())
        same = {k: old.get(k) == fingerprint.get(k) for k in fingerprint}
        print(json.dumps(same, indent=1))
        return 0 if all(same.values()) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
