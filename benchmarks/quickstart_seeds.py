"""Run the default quickstart for several seeds and tabulate its scores: how far one run sits from its own mean.

Issue 14 item 5 judges the quickstart by one run, and one training run's held-out score moves by +-0.05 with
its seed (BENCHMARKS.md "Generalisation"). ``--seed`` changes everything a quickstart draws: the synthetic
data, the pair sampling, the augmentation and the initial weights; the held-out scenes stay the same (their
own seed). Usage::

    python benchmarks/quickstart_seeds.py --root /tmp/qss --seeds 0,1,2 [--json FILE] [-- QUICKSTART ARGS]

Each seed runs ``ocean quickstart --seed S --workdir ROOT/sS`` in its own process, one after the other (a
finished working folder is reused, as the quickstart itself does), then the script prints one markdown row
per seed and the mean and standard deviation of every score. Arguments after ``--`` go to every quickstart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# (column, benchmark of summary.json, metric): the quickstart's summary table, trained model
COLUMNS = (
    ("held-out AUC", "heldout", "success_auc"),
    ("held-out, online", "heldout_online", "success_auc"),
    ("synthetic OTB AUC", "otb", "success_auc"),
    ("VOT2018 EAO", "vot2018", "eao"),
    ("GOT-10k AO", "got10k", "ao"),
    ("LaSOT AUC", "lasot", "success_auc"),
)


def run_seed(root: Path, seed: int, extra: list[str]) -> dict:
    """One quickstart (skipped when ``ROOT/sS/summary.json`` exists); its summary plus the wall time."""
    work = root / f"s{seed}"
    summary = work / "summary.json"
    wall = None
    if not summary.exists():
        t0 = time.time()
        cmd = [sys.executable, "-m", "jobs.cli", "quickstart", "--seed", str(seed), "--workdir", str(work), *extra]
        log = root / f"s{seed}.log"
        print(f"seed {seed}: {' '.join(cmd[2:])} (log {log})", flush=True)
        with open(log, "w") as out:
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
        if rc != 0:
            raise SystemExit(f"seed {seed}: the quickstart exited {rc}; see {log}")
        wall = time.time() - t0
    data = json.loads(summary.read_text())
    scores = {name: data["benchmarks"].get(bench, {}).get("trained", {}).get(metric) for name, bench, metric in COLUMNS}
    return {"seed": seed, "scores": scores, "final_loss": data.get("training", {}).get("final_loss"), "wall_s": wall}


def table(rows: list[dict]) -> str:
    """Markdown: one row per seed, then mean and standard deviation (population) of each column."""
    names = [c[0] for c in COLUMNS]
    lines = ["| seed | " + " | ".join(names) + " | final loss |", "|---" * (len(names) + 2) + "|"]
    for r in rows:
        cells = [f"{r['scores'][n]:.3f}" if r["scores"][n] is not None else "-" for n in names]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {r['final_loss']:.3f} |")
    for label, fn in (("mean", np.mean), ("std", np.std)):
        cells = []
        for n in names:
            vals = [r["scores"][n] for r in rows if r["scores"][n] is not None]
            cells.append(f"{fn(vals):.3f}" if vals else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="one working folder per seed goes under it (ROOT/sS)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated quickstart seeds (default 0,1,2)")
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(own)
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds: comma-separated integers, got {a.seeds!r}")
    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    rows = [run_seed(root, s, extra) for s in seeds]
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
