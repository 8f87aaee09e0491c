"""A Ray training beside busy processes, with Ray's worker niceness (15) and with the local instance's (0).

Ray starts every worker process (tasks, actors, Ray Train ranks) at niceness 15 (the raylet's
``worker_niceness``), so an ordinary process at niceness 0 on the same machine gets ~28 times their share of
a contended core (CFS weights 1024 against 36). :func:`pipelines.raysession.ensure_ray` now starts its local
instance with niceness 0 (``RAY_worker_niceness`` overrides it; docs/reference/ray_stack.md §11). This script
runs the same one-epoch smoke training (``ocean train`` on a quickstart's pair records, 2 workers) alone and
beside ``--busy`` busy loops, once per niceness, each in a fresh Ray instance, and reports the seconds to the
first training step, the epoch's time and its pairs/s::

    python benchmarks/worker_niceness.py --pairs WORK/pairs [--busy 0,2] [--niceness 15,0] [--limit 300]
        [--json out.json]

A run that has not finished its epoch after ``--limit`` seconds is stopped (SIGTERM) and reported with the
steps it reached. The busy loops are this script's own child processes, ended by their ids.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r"epoch 1/1 step (\d+)/(\d+)")
DONE = re.compile(r"epoch 1/1 loss \S+ lr \S+ ([\d.]+) pairs/s .* took (\S+);")


def _seconds(text: str) -> float:
    """``48s`` / ``4m09s`` (pipelines.progress's durations) in seconds."""
    m = re.fullmatch(r"(?:(\d+)m)?(\d+)s", text)
    return float(int(m.group(1) or 0) * 60 + int(m.group(2))) if m else float("nan")


def run_once(pairs: str, busy: int, niceness: int, limit: float, workers: int) -> dict:
    """One ``ocean train`` of one epoch with ``busy`` busy loops beside it; what its console said, when."""
    env = {**os.environ, "RAY_worker_niceness": str(niceness)}
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    out = tempfile.mkdtemp(prefix="ocean-nice-")
    cmd = [sys.executable, "-m", "jobs.cli", "train", "--preset", "smoke", "--data", pairs, "--out", out,
           "--set", "optim.epochs=1", "--workers", str(workers), "--seed", "0", "--no-system-metrics"]
    t0 = time.perf_counter()
    lines: list[tuple[float, str]] = []  # (seconds since start, console line), filled by a reader thread
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = threading.Thread(target=lambda: [lines.append((time.perf_counter() - t0, line)) for line in proc.stdout],
                              daemon=True)
    reader.start()
    try:
        while proc.poll() is None and time.perf_counter() - t0 < limit:
            time.sleep(0.5)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
        shutil.rmtree(out, ignore_errors=True)
    first_step = steps = total = pairs_s = epoch_s = None
    for t, line in lines:
        if (m := STEP.search(line)) is not None:
            steps, total = int(m.group(1)), int(m.group(2))
            first_step = t if first_step is None else first_step
        if (m := DONE.search(line)) is not None:
            pairs_s, epoch_s = float(m.group(1)), _seconds(m.group(2))
    return {"busy": busy, "niceness": niceness, "wall_s": round(time.perf_counter() - t0, 1),
            "finished": finished and proc.returncode == 0, "first_step_s": first_step, "steps": steps,
            "of": total, "epoch_s": epoch_s, "pairs_per_s": pairs_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True, help="pair records (a quickstart's WORK/pairs)")
    p.add_argument("--busy", default="0,2", help="comma-separated counts of busy loops beside the training")
    p.add_argument("--niceness", default="15,0", help="comma-separated RAY_worker_niceness values")
    p.add_argument("--limit", type=float, default=300.0, help="seconds before a run is stopped")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    try:
        busy = [int(x) for x in a.busy.split(",")]
        nice = [int(x) for x in a.niceness.split(",")]
    except ValueError:
        p.error("--busy and --niceness take comma-separated integers")
    rows = []
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    for b in busy:
        for n in nice:
            row = run_once(a.pairs, b, n, a.limit, a.workers)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| busy loops | worker niceness | first progress line (10 s into the epoch) | epoch | pairs/s | finished |\n|---|---|---|---|---|---|")
    for r in rows:
        first = f"{r['first_step_s']:.0f} s" if r["first_step_s"] is not None else f"none in {r['wall_s']:.0f} s"
        epoch = f"{r['epoch_s']:.0f} s" if r["epoch_s"] is not None else f"{r['steps'] or 0}/{r['of'] or '?'} steps"
        pairs_s = f"{r['pairs_per_s']:.1f}" if r["pairs_per_s"] is not None else "-"
        print(f"| {r['busy']} | {r['niceness']} | {first} | {epoch} | {pairs_s} | {r['finished']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
