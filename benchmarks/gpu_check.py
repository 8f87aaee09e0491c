"""The GPU check (issue 15 item 6): what a lent accelerator does with this code, in one short run.

    python benchmarks/gpu_check.py --device cuda --out results/   # on a GPU machine (benchmarks/gpu_check.sh)
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gc   # the same code paths, tiny sizes (CI)

Sections, each timed on its own and recorded even when another one fails (its error is kept instead):

* ``train``: ``ocean.engine.train_step`` of the paper network (``--tiny``: smoke) on a fixed in-memory batch
  of ``--batch`` pairs (32, the official batch: docs/reference/ocean_facts.md §8) with AMP (``--amp``,
  bf16 by default), once with the backbone frozen (epoch 1) and once with its last layers training (the
  last epoch, facts §8). pairs/s per device. Goal >= 430 pairs/s (issue 15 item 6: ten times the ~43
  pairs/s TracKit reports on a V100).
* ``fed``: the same step fed by ``--input-procs`` CPU processes (default: every core) that read pair
  records from parquet and decode + augment them (``data_prep.augment.augment_pairs``, what the training
  stream's Ray Data tasks run, pipelines/train_input.py; here a process pool so that the check needs no
  Ray on the GPU machine). Reports pairs/s and the data-wait fraction (time the step waited for a batch
  over the step time): whether that many cores keep the device fed.
* ``tracker``: ``OceanTracker`` frames/s on 640x480 synthetic frames at fp32, bf16 and fp16 (autocast
  around the network only; the tracker's arithmetic stays float64) and the largest box difference
  against fp32 in pixels. Goal >= 300 frames/s.
* ``jpeg``: JPEG decode of the records' crops: ``torchvision.io.decode_jpeg`` on the device (batched)
  against OpenCV on one CPU thread; images/s and megapixels/s.

Writes ``gpu_check.json`` (every number, the machine, the date) and ``gpu_check.md`` (a table for
BENCHMARKS.md) under ``--out``; prints the table. Exit status 0 when every section ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TRAIN_GOAL = 430  # pairs/s per GPU: the goal of issue 15 item 6 (ten times TracKit's ~43 on a V100)
FPS_GOAL = 300  # tracker frames/s (issue 15 item 6)


# --------------------------------------------------------------------------------------------------------
# helpers


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(name: str):
    import torch

    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def config(preset: str, batch: int):
    from ocean.config import apply_overrides, paper, smoke

    cfg = {"paper": paper, "smoke": smoke}[preset]()
    return apply_overrides(cfg, [f"optim.batch_size={batch}"])


def records(folder: Path, n: int) -> list[str]:
    """``n`` pair records as ``ocean prepare`` stores them (benchmarks/train_input.py's writer)."""
    from train_input import write_records

    return write_records(folder, n, per_file=n)


def read_rows(path: str) -> dict:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {k: np.asarray(v, dtype=object) if k.endswith("_jpeg") else np.asarray(v)
            for k, v in table.to_pydict().items()}


def augmented_batch(rows: dict, idx: np.ndarray, seed: int) -> dict:
    """Rows ``idx`` decoded and augmented into a train_step batch (numpy)."""
    from data_prep.augment import augment_pairs
    from ocean.config import AugmentConfig

    out = augment_pairs({k: v[idx] for k, v in rows.items()}, AugmentConfig(), seed)
    return {"template": out["template"], "search": out["search"], "search_box": out["search_box"],
            "search_shift": out["shift"]}


def to_torch(batch: dict) -> dict:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def train_setup(cfg, device, epoch: int):
    import torch

    from ocean.engine import apply_bn_policy, build_optimizer, set_trainable
    from ocean.model import build_model

    torch.manual_seed(0)
    net = build_model(cfg.model).to(device)
    set_trainable(net, cfg.optim, epoch)
    net.train()
    apply_bn_policy(net, cfg.optim, epoch)
    return net, build_optimizer(net, cfg.optim, epoch)


# --------------------------------------------------------------------------------------------------------
# sections


def check_train(args, device, rows) -> dict:
    from ocean.engine import train_step

    cfg = config(args.preset, args.batch)
    batch = to_torch(augmented_batch(rows, np.arange(args.batch) % len(rows["pair_id"]), 0))
    out = {"preset": args.preset, "batch": args.batch, "amp": args.amp, "goal_pairs_per_s": TRAIN_GOAL}
    for label, epoch in (("backbone_frozen", 1), ("backbone_training", cfg.optim.epochs)):
        net, opt = train_setup(cfg, device, epoch)
        times, skipped = [], 0
        for step in range(args.warmup + args.steps):
            sync(device)
            t0 = time.perf_counter()
            res = train_step(net, batch, cfg, opt, device=device, amp_dtype=amp_dtype(args.amp))
            sync(device)
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
                skipped += res.skipped
        step_s = statistics.median(times)
        out[label] = {"epoch": epoch, "step_ms": 1000 * step_s, "pairs_per_s": args.batch / step_s,
                      "skipped_steps": skipped, "loss": res.losses.get("total")}
        if device.type == "cuda":
            import torch

            out[label]["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _produce(path: str, batch: int, seeds: list[int], queue) -> None:
    """An input process: decode + augment one batch per seed from the records at ``path``."""
    import cv2

    cv2.setNumThreads(1)
    rows = read_rows(path)
    n = len(rows["pair_id"])
    for seed in seeds:
        idx = np.random.default_rng(seed).integers(0, n, batch)
        queue.put(augmented_batch(rows, idx, seed))


def check_fed(args, device, paths) -> dict:
    from ocean.engine import train_step

    cfg = config(args.preset, args.batch)
    net, opt = train_setup(cfg, device, cfg.optim.epochs)
    total = args.warmup + args.steps
    ctx = mp.get_context("spawn")
    queue = ctx.Queue(maxsize=2 * args.input_procs)
    seeds = [list(range(k, total, args.input_procs)) for k in range(args.input_procs)]
    procs = [ctx.Process(target=_produce, args=(paths[k % len(paths)], args.batch, seeds[k], queue), daemon=True)
             for k in range(args.input_procs)]
    for p in procs:
        p.start()
    wait = busy = 0.0
    try:
        for step in range(total):
            t0 = time.perf_counter()
            batch = to_torch(queue.get(timeout=600))
            t1 = time.perf_counter()
            train_step(net, batch, cfg, opt, device=device, amp_dtype=amp_dtype(args.amp))
            sync(device)
            if step >= args.warmup:
                wait += t1 - t0
                busy += time.perf_counter() - t1
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return {"input_procs": args.input_procs, "steps": args.steps, "batch": args.batch,
            "pairs_per_s": args.steps * args.batch / (wait + busy), "data_wait_fraction": wait / (wait + busy)}


def check_tracker(args, device) -> dict:
    import torch
    from tracker_speed import synthetic_frames

    from ocean.config import tracker_config
    from ocean.model import build_model
    from ocean.tracker import OceanTracker

    frames, boxes = synthetic_frames(args.frames + 1)
    if args.checkpoint:  # trained weights: an untrained network's flat scores make dtype differences meaningless
        from ocean.checkpoint import load_model

        net, _ = load_model(args.checkpoint)
        net = net.eval().to(device)
    else:
        torch.manual_seed(0)
        net = build_model(config(args.preset, 1).model).eval().to(device)

    class Autocast:  # the network under autocast; the tracker sees the same interface
        def __init__(self, dtype):
            self.dtype = dtype

        def parameters(self):
            return net.parameters()

        def template(self, z):
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None):
                net.template(z)

        def track(self, x):
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None):
                return net.track(x)

    out = {"network": args.checkpoint or f"{args.preset} (untrained)", "frames": args.frames, "goal_fps": FPS_GOAL}
    reference = None
    for name in args.dtypes.split(","):
        tracker = OceanTracker(Autocast(amp_dtype(name if name != "fp32" else "none")), tracker_config("otb"),
                               device=device)
        tracker.init(frames[0], boxes[0])
        got, times = [], []
        for frame in frames[1:]:
            sync(device)
            t0 = time.perf_counter()
            got.append(tracker.track(frame)[0])
            sync(device)
            times.append(time.perf_counter() - t0)
        got = np.stack(got)
        reference = got if reference is None else reference
        out[name] = {"fps": 1.0 / statistics.median(times[min(3, len(times) - 1):]),
                     "max_box_diff_px": float(np.abs(got - reference).max())}
    return out


def check_jpeg(args, device, rows) -> dict:
    import cv2
    import torch
    from torchvision.io import decode_jpeg

    blobs = [bytes(b) for b in rows["search_jpeg"][: args.images]]
    pixels = sum(int(np.prod(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR).shape[:2])) for b in blobs)
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    for b in blobs:
        cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
    cpu_s = time.perf_counter() - t0
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    decode_jpeg(tensors[:2], device=device)  # warm-up (CUDA: nvjpeg handles)
    sync(device)
    t0 = time.perf_counter()
    decoded = decode_jpeg(tensors, device=device)
    sync(device)
    dev_s = time.perf_counter() - t0
    assert decoded[0].device.type == device.type
    return {"images": len(blobs), "megapixels": pixels / 1e6,
            "opencv_1_thread": {"images_per_s": len(blobs) / cpu_s, "mpix_per_s": pixels / 1e6 / cpu_s},
            f"torchvision_{device.type}": {"images_per_s": len(blobs) / dev_s, "mpix_per_s": pixels / 1e6 / dev_s}}


# --------------------------------------------------------------------------------------------------------
# report


def machine(device) -> dict:
    import torch

    info = {"host": platform.node(), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
            "date": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            "load_average": list(os.getloadavg()), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def table(results: dict) -> str:
    lines = [f"GPU check -- {results['machine'].get('gpu', results['machine']['device'])}, "
             f"{results['machine']['cpu_cores']} CPU cores, torch {results['machine']['torch']}, "
             f"{results['machine']['date']}", "", "| check | result | goal |", "|---|---|---|"]
    r = results["sections"]

    def ok(name):
        return "error" not in r.get(name, {"error": "not run"})

    if ok("train"):
        t = r["train"]
        for label in ("backbone_frozen", "backbone_training"):
            lines.append(f"| train_step {t['preset']} batch {t['batch']} AMP {t['amp']}, {label.replace('_', ' ')} | "
                         f"{t[label]['pairs_per_s']:.3g} pairs/s ({t[label]['step_ms']:.1f} ms/step) | "
                         f">= {TRAIN_GOAL} |")
    if ok("fed"):
        f = r["fed"]
        lines.append(f"| train_step fed by {f['input_procs']} CPU processes | {f['pairs_per_s']:.3g} pairs/s, "
                     f"data wait {100 * f['data_wait_fraction']:.0f}% | wait ~0% |")
    if ok("tracker"):
        t = r["tracker"]
        for name in [k for k in ("fp32", "bf16", "fp16") if k in t]:
            lines.append(f"| tracker, {t['network']}, {name} | {t[name]['fps']:.3g} frames/s, box diff vs fp32 "
                         f"{t[name]['max_box_diff_px']:.3f} px | >= {FPS_GOAL} |")
    if ok("jpeg"):
        j = r["jpeg"]
        for key in [k for k in j if isinstance(j[k], dict)]:
            lines.append(f"| JPEG decode {key.replace('_', ' ')} ({j['images']} crops) | "
                         f"{j[key]['images_per_s']:.0f} images/s, {j[key]['mpix_per_s']:.0f} Mpix/s | |")
    for name, sec in r.items():
        if "error" in sec:
            lines.append(f"| {name} | FAILED: {sec['error'].strip().splitlines()[-1]} | |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="torch device (default cuda)")
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json / gpu_check.md")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: the smoke network, a few steps (CI on CPU)")
    ap.add_argument("--amp", choices=("bf16", "fp16", "none"), default="bf16", help="training autocast dtype")
    ap.add_argument("--sections", default="train,fed,tracker,jpeg", help="comma-separated subset to run")
    ap.add_argument("--input-procs", type=int, default=None, help="CPU input processes for 'fed' (default: all)")
    ap.add_argument("--checkpoint", default=None, help="trained weights for the tracker section (path or URI)")
    ap.add_argument("--dtypes", default="fp32,bf16,fp16", help="tracker dtypes; the first is the reference")
    args = ap.parse_args(argv)
    unknown = set(args.sections.split(",")) - {"train", "fed", "tracker", "jpeg"}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    if set(args.dtypes.split(",")) - {"fp32", "bf16", "fp16"}:
        ap.error(f"--dtypes takes fp32, bf16, fp16, got {args.dtypes!r}")
    sizes = dict(preset="smoke", batch=2, steps=1, warmup=0, frames=2, images=8, records=8) if args.tiny else \
        dict(preset="paper", batch=32, steps=30, warmup=5, frames=300, images=512, records=512)
    for k, v in sizes.items():
        setattr(args, k, v)
    args.input_procs = args.input_procs or (2 if args.tiny else os.cpu_count() or 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --tiny for the CPU run)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = device.type == "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(device), "tiny": args.tiny, "sections": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = records(Path(tmp), args.records)
        rows = read_rows(paths[0])
        jobs = {"train": lambda: check_train(args, device, rows), "fed": lambda: check_fed(args, device, paths),
                "tracker": lambda: check_tracker(args, device), "jpeg": lambda: check_jpeg(args, device, rows)}
        for name in args.sections.split(","):
            t0 = time.perf_counter()
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            try:
                results["sections"][name] = jobs[name]()
            except Exception:  # recorded, and the other sections still run
                results["sections"][name] = {"error": traceback.format_exc()}
            results["sections"][name]["seconds"] = time.perf_counter() - t0
            (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))  # kept if a later one hangs
    text = table(results)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    return 1 if any("error" in s for s in results["sections"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
