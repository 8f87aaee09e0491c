"""Batch-evaluation throughput: sequences per second with 1 and 2 (or more) Ray workers, and the model-load cost.

``pipelines.evaluate.evaluate`` on the synthetic one-pass benchmarks (OTB, GOT-10k, LaSOT layouts of
``data_prep.synthetic``; VOT is left out because its re-initialisations make sequence costs uneven) with
``--checkpoints`` untrained checkpoints of ``--preset`` (speed does not depend on the weights):

* ``seq/s``: sequences per second of the tracking phase (the Ray actors are started and their imports done
  before the clock starts: ``timing.worker_startup_seconds`` is reported apart);
* ``speed-up``: seq/s with K workers over seq/s with 1 worker; the goal is >= 0.8 K;
* ``loads`` / ``load s`` / ``load share``: how many times a model was loaded, the seconds spent loading, and
  their share of the workers' busy time (model loads happen once per worker per checkpoint: amortised over
  that checkpoint's sequences);
* ``CPU s / seq``: CPU seconds a worker process spent per sequence (``time.process_time``). Other processes
  on a shared machine slow seq/s down but hardly change this: if it stays flat from 1 to K workers, the
  workers do not get in each other's way and seq/s scales with K on an idle machine with K free cores;
* a local loop (no Ray, one process) as the reference.

Each configuration is run ``--repeats`` times, interleaved, on one Ray instance (``ray.init(num_cpus=max(4, cores))``, the
project's default) and the median is reported. The machine's load average is printed before and after:
the numbers only mean something on an otherwise idle machine.

    python benchmarks/eval_scaling.py [--workers 1,2] [--checkpoints 2] [--size tiny] [--repeats 2]
                                      [--preset smoke] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)


def make_inputs(work: Path, size: str, n_ckpts: int, preset_name: str) -> tuple[list[str], dict[str, str]]:
    import torch

    from data_prep.synthetic import generate
    from ocean.checkpoint import save_checkpoint
    from ocean.config import preset
    from ocean.model import build_model

    generate(work / "synth", size=size)
    b = work / "synth" / "benchmarks"
    benchmarks = {"otb": str(b / "otb"), "got10k": str(b / "got10k" / "val"), "lasot": str(b / "lasot")}
    cfg = preset(preset_name)
    ckpts = []
    for i in range(n_ckpts):
        torch.manual_seed(i)
        path = work / "ckpts" / f"epoch-{i + 1:04d}.pt"
        save_checkpoint(str(path), build_model(cfg.model), cfg, epoch=i + 1)
        ckpts.append(str(path))
    return ckpts, benchmarks


def one_run(ckpts, benchmarks, out: Path, workers: int, local: bool) -> dict:
    from pipelines.evaluate import EvaluateSettings, evaluate

    report = evaluate(
        EvaluateSettings(ckpts, benchmarks, str(out), workers=workers, local=local, log_mlflow=False, progress=False)
    )
    t = report["timing"]
    busy = t["tracking_seconds"] * t["workers"]
    return {
        "seq_per_s": t["sequences_per_second"],
        "tracking_s": t["tracking_seconds"],
        "startup_s": t["worker_startup_seconds"],
        "cpu_per_seq": t["cpu_seconds_per_sequence"],
        "loads": t["model_loads"],
        "load_s": t["model_load_seconds"],
        "load_share": t["model_load_seconds"] / busy if busy else None,
        "sequences": t["sequences"],
        "frames": t["frames"],
        "workers": t["workers"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="comma list of Ray worker counts (default 1,2)")
    ap.add_argument("--checkpoints", type=int, default=2)
    ap.add_argument("--size", default="tiny", choices=["tiny", "small"], help="synthetic benchmark size")
    ap.add_argument("--preset", default="smoke", choices=["smoke", "paper"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-local", action="store_true", help="skip the local-loop reference")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance (ray_stack.md §6)

    import ray

    from pipelines.raysession import ensure_ray

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="ocean-eval-scaling-"))
    ckpts, benchmarks = make_inputs(work, args.size, args.checkpoints, args.preset)
    ensure_ray(None)
    configs = [("local loop", 1, True)] if not args.no_local else []
    configs += [
        (f"Ray, {k} worker{'s' if k > 1 else ''}", k, False)
        for k in (int(x) for x in args.workers.split(","))
    ]
    rows = []
    try:
        # Interleaved (1 worker, 2 workers, 1, 2, ...) so that load from other processes hits all alike.
        runs_by_config: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
        for r in range(args.repeats):
            for label, k, local in configs:
                out = work / f"out-{label.replace(' ', '_').replace(',', '')}-{r}"
                runs_by_config[label].append(one_run(ckpts, benchmarks, out, k, local))
        for label, k, local in configs:
            runs = runs_by_config[label]
            med = {
                key: statistics.median(r[key] for r in runs) if runs[0][key] is not None else None
                for key in runs[0]
            }
            rows.append(
                {
                    "config": label,
                    "k": k,
                    "local": local,
                    **med,
                    "all_seq_per_s": [r["seq_per_s"] for r in runs],
                }
            )
    finally:
        ray.shutdown()
    load_after = os.getloadavg()

    base = next((r["seq_per_s"] for r in rows if not r["local"] and r["k"] == 1), None)
    print(f"\n## Batch evaluation scaling ({time.strftime('%Y-%m-%d %H:%M %Z')})\n")
    print(
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}; "
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min)"
    )
    print(
        f"Work: {args.checkpoints} x `{args.preset}` checkpoints x {rows[0]['sequences'] // args.checkpoints} "
        f"sequences ({args.size} synthetic OTB / GOT-10k / LaSOT, {rows[0]['frames']} frames in all); "
        f"median of {args.repeats} runs; 1 torch thread and 1 Ray CPU per worker.\n"
    )
    print(
        "| config | seq/s | speed-up vs 1 worker (goal >= 0.8 K) | tracking s | worker start-up s "
        "| CPU s / seq | model loads | load s | load share |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = "" if r["local"] or not base else f"{r['seq_per_s'] / base:.2f} (goal {0.8 * r['k']:.1f})"
        share = "" if r["load_share"] is None else f"{100 * r['load_share']:.1f} %"
        print(
            f"| {r['config']} | {r['seq_per_s']:.3f} | {speed} | {r['tracking_s']:.1f} | {r['startup_s']:.1f} "
            f"| {r['cpu_per_seq']:.2f} | {r['loads']:g} | {r['load_s']:.2f} | {share} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "load_before": load_before,
                    "load_after": load_after,
                    "cpus": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d"),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
