"""Ray Train epochs with Ray Data's scheduling loop spinning or sleeping while idle, side by side.

Each training rank runs its input stream's ``StreamingExecutor`` thread in its own process. Once the
prefetch window is full, backpressure holds a finished task's output back, ``ray.wait`` returns at once and
Ray Data 2.60's loop steps without a pause and without doing anything; ``TrainSettings.data_idle_sleep_s`` (default
:data:`pipelines.raysession.IDLE_SCHEDULING_SLEEP_S`) makes it sleep instead
(:func:`pipelines.raysession.calm_idle_scheduling_loop`; docs/reference/ray_stack.md §2.9). This script runs
the same training (``ocean train`` on the same pair records, same seed) once with ``data_idle_sleep_s=0``
(Ray's own loop) and once with the default, in that order or reversed (``--calm-first``), and reports each
epoch's pairs/s, the ratio, and whether the per-epoch losses agree (the sleep changes when blocks are
fetched, never which)::

    python benchmarks/train_idle_loop.py --pairs WORK/pairs --epochs 3 [--workers 2] [--json out.json]

``WORK`` is a quickstart working folder (``ocean quickstart --workdir WORK``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_once(pairs: str, epochs: int, workers: int, idle_sleep_s: float, out: str) -> dict:
    from ocean.config import apply_overrides, smoke
    from pipelines.train import TrainSettings, train

    cfg = apply_overrides(smoke(), [f"optim.epochs={epochs}"])
    t0 = time.perf_counter()
    result = train(TrainSettings(pairs, out, cfg, workers=workers, data_idle_sleep_s=idle_sleep_s,
                                 mlflow_uri=f"sqlite:///{out}/mlflow.db", system_metrics=False))
    return {"idle_sleep_s": idle_sleep_s, "wall_s": time.perf_counter() - t0,
            "pairs_per_s": [h["pairs_per_s"] for h in result["history"]], "losses": result["losses"]}


def main(argv: list[str] | None = None) -> int:
    from pipelines.raysession import IDLE_SCHEDULING_SLEEP_S

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True, help="pair records (ocean prepare --preset smoke, or WORK/pairs)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (smoke preset otherwise)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    p.add_argument("--calm-first", action="store_true", help="run the sleeping loop first")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from machine import cpu_model

    order = [IDLE_SCHEDULING_SLEEP_S, 0.0] if args.calm_first else [0.0, IDLE_SCHEDULING_SLEEP_S]
    runs = []
    with tempfile.TemporaryDirectory(prefix="idle-loop-") as tmp:
        for i, sleep_s in enumerate(order):
            runs.append(run_once(args.pairs, args.epochs, args.workers, sleep_s, f"{tmp}/run{i}"))
            print(f"data_idle_sleep_s={sleep_s}: {runs[-1]['wall_s']:.1f} s, pairs/s per epoch "
                  f"{', '.join(f'{v:.1f}' for v in runs[-1]['pairs_per_s'])}", flush=True)
    spin = next(r for r in runs if r["idle_sleep_s"] == 0.0)
    calm = next(r for r in runs if r["idle_sleep_s"] > 0.0)
    ratios = [c / s for c, s in zip(calm["pairs_per_s"], spin["pairs_per_s"], strict=True)]
    same = all(abs(a - b) <= 1e-6 * max(1.0, abs(a)) for a, b in zip(calm["losses"], spin["losses"], strict=True))
    summary = {"machine": f"{cpu_model()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "loadavg_end": os.getloadavg(), "epochs": args.epochs, "workers": args.workers, "runs": runs,
               "ratio_per_epoch": ratios, "wall_ratio": spin["wall_s"] / calm["wall_s"], "same_losses": same}
    print(f"pairs/s, sleeping / spinning loop, per epoch: {', '.join(f'{r:.2f}x' for r in ratios)}; "
          f"wall {summary['wall_ratio']:.2f}x; same losses: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
