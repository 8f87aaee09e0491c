"""Time per frame added by the online module (paper Sec. 4.2, facts §10), on CPU.

For each preset (paper, smoke; untrained weights -- speed does not depend on them) and online feature
choice, on synthetic 640x480 frames with a moving textured target (S = 255):

  * ``offline_ms``: ``OceanTracker.track`` without the online module (median per frame);
  * ``online_ms``: the same tracker with ``OnlineClassifier`` (median over all frames);
  * ``plain_ms`` / ``update_ms``: online frames without / with a Gauss-Newton optimisation (every
    ``train_skipping`` = 10th frame or a hard negative, facts §10.2), medians;
  * ``init_s``: the online ``init`` (augmented samples, 25 GN iterations) once.

Offline and online trackers run interleaved frame by frame so that load from other processes hits both.

    python benchmarks/online_speed.py [--frames 31] [--threads 2] [--presets paper,smoke]
        [--features layer2,layeronline] [--flush-denormal] [--json out.json]

``--flush-denormal`` sets ``torch.set_flush_denormal(True)``: with the trained smoke checkpoint subnormal
activations make the Siamese net much slower per frame on x86 CPUs (BENCHMARKS.md, online update); off by
default so the numbers stay comparable with benchmarks/tracker_speed.py.
The header gives the 1-minute load average: other processes make the timings noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import numpy as np
import torch


def synthetic_frames(n: int, width: int = 640, height: int = 480, seed: int = 0) -> tuple[list, list]:
    """``n`` BGR uint8 frames with a 60x45 textured target moving diagonally, and its xywh boxes."""
    rng = np.random.default_rng(seed)
    background = rng.integers(30, 140, size=(height, width, 3), dtype=np.uint8)
    tex = rng.integers(150, 255, size=(45, 60, 3), dtype=np.uint8)
    frames, boxes = [], []
    for f in range(n):
        x = 100 + (3 * f) % (width - 260)
        y = 100 + int(20 * math.sin(f / 5))
        img = background.copy()
        img[y:y + 45, x:x + 60] = tex
        frames.append(img)
        boxes.append(np.array([x, y, 60, 45], dtype=np.float64))
    return frames, boxes


def measure(preset: str, features: str, n_frames: int) -> dict:
    from ocean.config import OnlineConfig, TrackerConfig
    from ocean.config import preset as get_preset
    from ocean.model import build_model
    from ocean.online import OnlineClassifier
    from ocean.tracker import OceanTracker

    torch.manual_seed(0)
    net = build_model(get_preset(preset).model).eval()
    cfg = TrackerConfig()
    frames, boxes = synthetic_frames(n_frames)
    off = OceanTracker(net, cfg)
    online = OnlineClassifier(net, OnlineConfig(features=features))
    on = OceanTracker(net, cfg, online=online)
    off.init(frames[0], boxes[0])
    t0 = time.perf_counter()
    on.init(frames[0], boxes[0])
    init_s = time.perf_counter() - t0
    t_off, t_plain, t_update = [], [], []
    for img in frames[1:]:
        t0 = time.perf_counter()
        off.track(img)
        t1 = time.perf_counter()
        before = online.optimisations
        on.track(img)
        t2 = time.perf_counter()
        t_off.append(t1 - t0)
        (t_update if online.optimisations > before else t_plain).append(t2 - t1)
    med = lambda v: 1000 * statistics.median(v) if v else float("nan")  # noqa: E731
    return {"preset": preset, "features": features, "offline_ms": med(t_off),
            "online_ms": med(t_plain + t_update), "plain_ms": med(t_plain), "update_ms": med(t_update),
            "added_ms": med(t_plain + t_update) - med(t_off), "plain_frames": len(t_plain),
            "update_frames": len(t_update), "init_s": init_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=31, help="frames per run, the first one is init (default 31)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--presets", default="paper,smoke")
    ap.add_argument("--features", default="layer2,layeronline", help="online feature choices to time")
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    rows = [measure(p, f, args.frames) for p in args.presets.split(",") for f in args.features.split(",")]
    print(f"Online module time per frame, CPU ({platform.processor() or platform.machine()}, "
          f"{args.threads} threads, torch {torch.__version__}), {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{platform.node()}, load average {os.getloadavg()[0]:.1f}"
          f"{', denormals flushed' if args.flush_denormal else ''}; S = 255, 640x480 frames, median ms\n")
    print("| preset | features | offline | online | added | plain frame | update frame (n) | init s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['features']} | {r['offline_ms']:.1f} | {r['online_ms']:.1f} | "
              f"{r['added_ms']:.1f} | {r['plain_ms']:.1f} | {r['update_ms']:.1f} ({r['update_frames']}) | "
              f"{r['init_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
