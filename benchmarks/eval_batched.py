"""Batched multi-sequence evaluation (``ocean evaluate --batch-sequences K``) against one sequence at a time.

One process, one torch thread (one core; ``--threads``), the evaluation worker's own loop
(:func:`pipelines.eval_workers.run_local`: frame loading, crops, network, score-to-box, protocol) over the
same synthetic one-pass sequences (``--sequences`` of seeded random lengths around ``--frames``) with an
untrained checkpoint of ``--preset`` (speed does not depend on the weights). Batch sizes are run
interleaved, ``--repeats`` times, and the medians are compared:

* ``seq/s`` and ``frames/s`` of each batch size, and the ratio over batch 1 (CPU goal: >= 1.5x seq/s per
  core at equal cores; GPU goal: >= 5x frames/s);
* ``max box diff``: the largest box difference of any frame against batch 1 (the contract: <= 1e-4 px);
* the network alone (``--forward``): one search forward of K crops against K stacked templates vs K
  forwards of one, for the whole network and for the backbone only, which says where a missing speed-up
  goes (a batch only pays where per-call overhead or small convolutions dominate).

    python benchmarks/eval_batched.py [--preset paper] [--batches 1,2,4] [--sequences 8] [--frames 12]
                                      [--repeats 2] [--device cpu|cuda] [--threads 1] [--scales 1]
                                      [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)


def make_sequences(folder: Path, n: int, frames: int, seed: int):
    """``n`` sequences of 640x360 frames, lengths drawn around ``frames``: a textured background with a
    coloured box moving and changing size."""
    import cv2
    import numpy as np

    from ocean.benchmarks.sequence import Sequence

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(max(2, frames // 2), frames * 3 // 2 + 1))
        bg = cv2.resize(rng.integers(0, 256, (45, 80, 3), dtype=np.uint8), (640, 360))
        w, h = (int(v) for v in rng.integers(30, 90, 2))
        x, y = (float(v) for v in rng.integers(100, 300, 2))
        (folder / f"s{i}").mkdir(parents=True)
        paths, gt = [], []
        for f in range(length):
            img = bg.copy()
            x, y = x + rng.normal(0, 4), y + rng.normal(0, 3)
            xi, yi = int(np.clip(x, 0, 640 - w)), int(np.clip(y, 0, 360 - h))
            img[yi:yi + h, xi:xi + w] = (40 + 10 * i % 200, 200, 60)  # i < 20: the colours of earlier runs
            paths.append(folder / f"s{i}" / f"{f:04d}.jpg")
            cv2.imwrite(str(paths[-1]), img)
            gt.append([xi, yi, w, h])
        out.append(Sequence(f"s{i}", "otb", paths, np.array(gt, dtype=np.float64)))
    return out


def run_once(items, threads: int, device: str, batch: int) -> tuple[float, dict]:
    from pipelines.eval_workers import run_local

    results = {}
    t0 = time.perf_counter()
    run_local(items, threads, device, lambda r: results.__setitem__(r.sequence, r), batch=batch)
    seconds = time.perf_counter() - t0
    bad = [r.error for r in results.values() if r.error]
    if bad:
        raise RuntimeError(f"batch {batch}: {bad[0]}")
    return seconds, {n: r.track for n, r in results.items()}


def forward_only(net, batch: int, search: int, repeats: int, device: str) -> dict[str, float]:
    """Median seconds of one K-crop forward vs K one-crop forwards (whole network, backbone only)."""
    import torch

    from ocean.batch_tracker import stack_rows

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    z = torch.rand(batch, 3, 127, 127, device=device) * 255
    x = torch.rand(batch, 3, search, search, device=device) * 255
    times: dict[str, list[float]] = {"single": [], "batched": [], "backbone_single": [], "backbone_batched": []}
    with torch.inference_mode():
        ks = [net.template_kernels(z[i:i + 1]) for i in range(batch)]
        kb = stack_rows(ks)
        calls = {
            "single": lambda: [net.track_with(ks[i], x[i:i + 1]) for i in range(batch)],
            "batched": lambda: net.track_with(kb, x),
            "backbone_single": lambda: [net._features(x[i:i + 1]) for i in range(batch)],
            "backbone_batched": lambda: net._features(x),
        }
        for f in calls.values():  # warm-up (kernel selection per shape)
            f()
        for _ in range(repeats):
            for name, f in calls.items():
                sync()
                t0 = time.perf_counter()
                f()
                sync()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batches", default="1,2,4", help="batch sizes; 1 is the reference and always run")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--frames", type=int, default=12, help="typical sequence length (lengths vary +-50 %%)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the worker's; 1 = one core)")
    ap.add_argument("--forward-repeats", type=int, default=3, help="0 skips the network-alone table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runtime", choices=("eager", "fast", "onnx"), default="eager",
                    help="tracker.runtime (README, 'Inference runtimes'); default eager")
    ap.add_argument("--scales", type=int, default=1,
                    help="tracker.scales: search crops per frame (ocean_facts §9.6; the smoke preset's tracker "
                         "searches 3); a K-sequence batch then carries K x scales crops")
    ap.add_argument("--json")
    a = ap.parse_args()

    import numpy as np
    import torch

    from ocean.batch_tracker import boxes_difference
    from ocean.checkpoint import load_model, save_checkpoint
    from ocean.config import preset, tracker_config
    from ocean.model import build_model
    from pipelines.eval_workers import WorkItem

    batches = sorted({1, *(int(b) for b in a.batches.split(","))})
    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="eval_batched_"))
    cfg = preset(a.preset)
    torch.manual_seed(a.seed)
    ckpt = str(work / "epoch-0001.pt")
    save_checkpoint(ckpt, build_model(cfg.model), cfg, epoch=1)
    seqs = make_sequences(work / "seqs", a.sequences, a.frames, a.seed)
    tcfg = dataclasses.replace(tracker_config("otb"), runtime=a.runtime, scales=a.scales)
    items = [WorkItem(ckpt, "otb", s, tcfg) for s in sorted(seqs, key=lambda s: -len(s))]  # as work_items
    frames = sum(len(s) for s in seqs)
    print(f"{a.preset} preset, {a.scales} scale(s), {len(seqs)} sequences / {frames} frames, {a.threads} torch thread(s), "
          f"device {a.device}, {cpu_model()}, {os.cpu_count()} cores, load {load0[0]:.2f}")

    run_once(items[:1], a.threads, a.device, 1)  # warm-up: imports, first model load, kernel selection
    seconds: dict[int, list[float]] = {b: [] for b in batches}
    tracks: dict[int, dict] = {}
    for _ in range(a.repeats):
        for b in batches:
            s, tracks[b] = run_once(items, a.threads, a.device, b)
            seconds[b].append(s)
    rows = []
    base = statistics.median(seconds[1])
    for b in batches:
        med = statistics.median(seconds[b])
        diff = max(boxes_difference(tracks[1][n], tracks[b][n]) for n in tracks[1])
        rows.append({"batch": b, "seconds": med, "seq_per_s": len(seqs) / med, "frames_per_s": frames / med,
                     "ratio": base / med, "max_box_diff_px": diff, "runs": seconds[b]})
    print("| batch K | seq/s | frames/s | vs K=1 | max box diff (px) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['seq_per_s']:.3f} | {r['frames_per_s']:.2f} | {r['ratio']:.2f}x | "
              f"{r['max_box_diff_px']:.2e} |")

    forward = []
    if a.forward_repeats > 0:
        torch.set_num_threads(a.threads)
        net, _ = load_model(ckpt, map_location=a.device)
        search = int(tcfg.small_sz)
        print(f"\nnetwork alone, search {search}: K one-crop forwards / one K-crop forward (ms)")
        print("| K | whole net | ratio | backbone | ratio | backbone share at K=1 |\n|---|---|---|---|---|---|")
        for b in batches[1:]:
            t = forward_only(net, b, search, a.forward_repeats, a.device)
            forward.append({"batch": b, **t})
            print(f"| {b} | {t['single'] * 1e3:.0f} / {t['batched'] * 1e3:.0f} | {t['single'] / t['batched']:.2f}x | "
                  f"{t['backbone_single'] * 1e3:.0f} / {t['backbone_batched'] * 1e3:.0f} | "
                  f"{t['backbone_single'] / t['backbone_batched']:.2f}x | "
                  f"{t['backbone_single'] / t['single']:.0%} |")
    load1 = os.getloadavg()
    print(f"\nload average {load0[0]:.2f} -> {load1[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "preset": a.preset, "scales": a.scales, "device": a.device, "threads": a.threads, "sequences": len(seqs), "frames": frames,
            "cpu": cpu_model(), "cores": os.cpu_count(), "load": [load0[0], load1[0]], "rows": rows,
            "forward": forward, "lengths": [len(s) for s in seqs],
        }, indent=2, default=float))
    shutil.rmtree(work, ignore_errors=True)
    del np


if __name__ == "__main__":
    main()
