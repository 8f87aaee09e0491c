"""Training input pipeline: pairs / s / core from parquet through decode, augment and batching.

    python benchmarks/train_input.py [--pairs 512] [--epochs 3] [--cpus 2] [--batch 16]

Pair records are written first (natural-image-like frames from :mod:`crop_bytes`, stored crops 145 / 433 px
at q90, as ``ocean prepare`` writes them). Then, on a local Ray with ``--cpus`` logical CPUs:

* **bare loop**: ``data_prep.augment.augment_pairs`` over the same rows in this process, OpenCV on one
  thread (the practical per-core limit);
* **no consumer**: the training input pipeline of ``pipelines.train`` (``read_parquet`` ->
  ``select_and_augment`` in Ray Data tasks -> ``iter_torch_batches`` with prefetch) drained as fast as it goes;
  pairs / s / core = pairs / s divided by the CPUs Ray Data may use;
* **with consumer**: the same pipeline feeding ``ocean.engine.train_step`` of the smoke model in this process;
  the data-wait fraction is the time spent in ``next(batches)`` over the step time;
* **memory**: resident memory of this process and of every Ray process it started, after each epoch
  (it must not grow from epoch to epoch).

Prints a markdown table with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crop_bytes import natural_image  # noqa: E402

from data_prep.crops import crop_region, encode_jpeg, stored_sides  # noqa: E402
from data_prep.pairs import pair_id  # noqa: E402
from data_prep.records import build_table, side_fields  # noqa: E402
from ocean.config import AugmentConfig, smoke  # noqa: E402


def write_records(folder: Path, n: int, seed: int = 0, per_file: int = 128) -> list[str]:
    t_side, s_side = stored_sides(AugmentConfig())
    rng = np.random.default_rng(seed)
    rows, files = [], []
    for k in range(n):
        img = natural_image(rng)
        w, h = rng.uniform(40, 160, 2)
        x, y = rng.uniform(0, 640 - w), rng.uniform(0, 360 - h)
        box = [x, y, x + w, y + h]
        t, s = crop_region(img, box, t_side), crop_region(img, box, s_side)
        rows.append({"pair_id": pair_id("got10k", f"v{k}", "0", "0", "1", k), "dataset": "got10k",
                     "video": f"v{k}", "track": "0", "template_frame": "0", "search_frame": "1", "draw": k,
                     **side_fields("template", encode_jpeg(t.image, 90), t, box, (640, 360)),
                     **side_fields("search", encode_jpeg(s.image, 90), s, box, (640, 360))})
        if len(rows) == per_file or k == n - 1:
            path = folder / f"shard-{len(files):05d}.parquet"
            pq.write_table(build_table(rows), path)
            files.append(str(path))
            rows = []
    return files


def _proc_rss_and_parent(pid: int) -> tuple[float, int]:
    """(RSS bytes, parent pid) from /proc (Linux); (0, -1) if the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, -1
    rss, ppid = 0.0, -1
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = float(line.split()[1]) * 1024
        elif line.startswith("PPid:"):
            ppid = int(line.split()[1])
    return rss, ppid


def ray_rss_mb() -> tuple[float, float]:
    """(this process RSS, sum of RSS of its descendant processes: raylet, Ray workers) in MiB."""
    me = os.getpid()
    info = {int(p.name): _proc_rss_and_parent(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, (_, ppid) in info.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, list(children.get(me, []))
    while stack:
        pid = stack.pop()
        total += info[pid][0]
        stack.extend(children.get(pid, []))
    return info[me][0] / 2**20, total / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=8,
                    help="copies of the record files read per epoch (longer epochs from the same records)")
    ap.add_argument("--cpus", type=int, default=2, help="logical CPUs for Ray Data (default 2)")
    ap.add_argument("--batch", type=int, default=16, help="batch size (smoke preset global batch)")
    ap.add_argument("--consumer-steps", type=int, default=12, help="smoke training steps measured")
    args = ap.parse_args()

    import cv2
    import torch

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    from data_prep.augment import augment_pairs
    from ocean.engine import build_optimizer, train_step
    from ocean.model import build_model
    from pipelines.train import _epoch_batches, pair_keys

    cfg = smoke()
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = write_records(Path(tmp), args.pairs)
        import shutil

        base = list(files)
        for r in range(1, args.repeat):  # longer epochs from the same records (Ray reads a path once)
            for f in base:
                copy = f.replace(".parquet", f"-copy{r}.parquet")
                shutil.copyfile(f, copy)
                files.append(copy)
        print(f"wrote {args.pairs} pair records in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        # bare loop, one thread
        cv2.setNumThreads(1)
        table = pq.read_table(files[0])
        batch = {k: np.asarray(v, dtype=object) if k.endswith("_jpeg") else np.asarray(v)
                 for k, v in table.to_pydict().items()}
        t0 = time.perf_counter()
        out = augment_pairs(batch, cfg.augment, 1)
        bare = len(out["valid"]) / (time.perf_counter() - t0)
        rows_out.append(("bare augment_pairs loop, 1 thread", f"{bare:.0f}", f"{bare:.0f}", "", ""))
        cv2.setNumThreads(0)

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        import pyarrow.fs as pafs

        fs = pafs.LocalFileSystem()
        keys = np.concatenate([pair_keys(pq.read_table(f, columns=["pair_id"]).column("pair_id").to_pylist())
                               for f in files])
        mem = []
        for epoch in range(args.epochs):
            t0 = time.perf_counter()
            n, t_first = 0, None
            for b in _epoch_batches(files, fs, keys, cfg, 0, epoch, 0, args.batch, prefetch=4):
                n += len(b["valid"])
                if t_first is None:
                    t_first, n_first = time.perf_counter(), n
            t_end = time.perf_counter()
            steady = (n - n_first) / max(t_end - t_first, 1e-9)
            mem.append(ray_rss_mb())
            rows_out.append((f"Ray Data, no consumer, epoch {epoch + 1} ({n} pairs, first batch after "
                             f"{t_first - t0:.1f} s)", f"{n / (t_end - t0):.0f} ({steady:.0f} after start-up)",
                             f"{n / (t_end - t0) / args.cpus:.0f} ({steady / args.cpus:.0f})",
                             f"{mem[-1][0]:.0f}", f"{mem[-1][1]:.0f}"))

        # with a consumer: the smoke model's training step in this process (it competes for the same cores)
        torch.manual_seed(0)
        torch.set_num_threads(1)
        net = build_model(cfg.model)
        opt = build_optimizer(net, cfg.optim, 1)
        net.train()
        wait = total = 0.0
        steps = 0
        it = iter(_epoch_batches(files, fs, keys, cfg, 0, 99, 0, args.batch, prefetch=4))
        next(it)  # start-up excluded
        while steps < args.consumer_steps:
            t0 = time.perf_counter()
            try:
                b = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            b.pop("valid")
            train_step(net, b, cfg, opt)
            t2 = time.perf_counter()
            wait += t1 - t0
            total += t2 - t0
            steps += 1
        rate = steps * args.batch / total
        rows_out.append((f"Ray Data + smoke train_step (batch {args.batch}, 1 torch thread)", f"{rate:.1f}",
                         f"{rate / args.cpus:.1f}", f"data wait {100 * wait / total:.0f}% of step time",
                         f"step {1000 * total / steps:.0f} ms"))
        ray.shutdown()

    print(f"\nTraining input pipeline -- {platform.node()} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores), {datetime.date.today().isoformat()}, {args.pairs} pairs, "
          f"Ray Data on {args.cpus} logical CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| pipeline | pairs/s | pairs/s/core | driver RSS MiB | Ray processes RSS MiB |")
    print("|---|---|---|---|---|")
    for r in rows_out:
        print("| " + " | ".join(r) + " |")
    growth = mem[-1][1] - mem[0][1] if len(mem) > 1 else 0.0
    print(f"\nRay process memory change from epoch 1 to epoch {len(mem)}: {growth:+.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
