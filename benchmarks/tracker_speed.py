"""Tracker time per frame vs the network's forward time alone (the tracker's overhead ratio).

For each preset (paper, smoke; untrained weights -- speed does not depend on them) and search size S
(255, 287; small_sz = big_sz = S so the size rule cannot switch), on synthetic 640x480 frames with a moving
textured target:

  * ``net_ms``: ``net.track(x)`` alone on a ready (1, 3, S, S) float tensor, template stored once;
  * ``tracker_ms``: ``OceanTracker.track(frame)``: the search crop (pad + resize), the tensor conversion,
    the same forward, sigmoid / penalty / window / argmax / size update / clipping;
  * ``overhead = tracker_ms / net_ms`` (1.00 = the tracker adds nothing) and ``overhead_ms``.

``--scales 1,3`` also times the tracker with a scale search (``tracker.scales``, ocean_facts §9.6: n search
crops in one batched forward, the smoke preset's default is 3) against the same one-crop forward, so its
ratio is the search's whole cost per frame, network included.

The two measurements are interleaved frame by frame (net, tracker, net, tracker, ...) so that load from
other processes hits both alike; each is the median of ``--runs`` frames after ``--warmup`` frames. File
I/O (decoding frames) is deliberately excluded: ``ocean track`` reports it separately.

    python benchmarks/tracker_speed.py [--runs 20] [--threads 2] [--presets paper,smoke] [--scales 1,3]
                                       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import numpy as np
import torch


def synthetic_frames(n: int, width: int = 640, height: int = 480, seed: int = 0) -> tuple[list, list]:
    """``n`` BGR uint8 frames with a 60x45 textured target moving diagonally, and its xywh boxes."""
    rng = np.random.default_rng(seed)
    background = rng.integers(30, 140, size=(height, width, 3), dtype=np.uint8)
    frames, boxes = [], []
    for f in range(n):
        x = 100 + (3 * f) % (width - 260)
        y = 100 + int(20 * math.sin(f / 5))
        img = background.copy()
        img[y:y + 45, x:x + 60] = rng.integers(120, 255, size=(45, 60, 3), dtype=np.uint8)
        frames.append(img)
        boxes.append(np.array([x, y, 60, 45], dtype=np.float64))
    return frames, boxes


def measure(preset_name: str, search_size: int, runs: int, warmup: int, device: str, scales: int = 1) -> dict:
    from ocean.config import preset, tracker_config
    from ocean.crop import get_subwindow
    from ocean.model import build_model
    from ocean.tracker import OceanTracker

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    net = build_model(preset(preset_name).model).to(dev).eval()
    cfg = tracker_config(small_sz=search_size, big_sz=search_size, scales=scales)
    frames, boxes = synthetic_frames(warmup + runs + 1)
    tracker = OceanTracker(net, cfg, device=dev)
    tracker.init(frames[0], boxes[0])  # stores the template (once)

    net_ms, tracker_ms, inner_net_ms = [], [], []
    for i, frame in enumerate(frames[1:]):
        # the network alone, on a crop of this frame prepared beforehand
        st = tracker.state
        patch = get_subwindow(frame, tuple(st.center_xy), search_size, search_size, st.avg_chans)
        x = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1))).to(dev).float()[None]
        sync()
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = net.track(x)
            out["cls"].cpu()
            sync()
            t_net = time.perf_counter() - t0
        # the whole tracker step
        t0 = time.perf_counter()
        tracker.track(frame)
        sync()
        t_trk = time.perf_counter() - t0
        if i >= warmup:
            net_ms.append(t_net * 1000)
            tracker_ms.append(t_trk * 1000)
            inner_net_ms.append(tracker.last_net_seconds * 1000)
    net_med, trk_med = statistics.median(net_ms), statistics.median(tracker_ms)
    return {
        "preset": preset_name, "search_size": search_size, "scales": scales, "device": device, "runs": runs,
        "net_ms": net_med, "tracker_ms": trk_med, "tracker_net_ms": statistics.median(inner_net_ms),
        "overhead": trk_med / net_med, "overhead_ms": trk_med - net_med,
        "tracker_fps": 1000.0 / trk_med, "net_fps": 1000.0 / net_med,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="paper,smoke", help="comma list of model presets")
    parser.add_argument("--sizes", default="255,287", help="comma list of search sizes")
    parser.add_argument("--scales", default="1", help="comma list of tracker.scales (search crops per frame)")
    parser.add_argument("--runs", type=int, default=20, help="timed frames per case (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    rows = [measure(p, int(s), args.runs, args.warmup, args.device, int(n))
            for p in args.presets.split(",") for s in args.sizes.split(",") for n in args.scales.split(",")]
    print(f"tracker vs network, {args.device}, torch {torch.__version__}, threads {args.threads}, "
          f"median of {args.runs} frames, {platform.processor() or platform.machine()}\n")
    print("| preset | S | scales | net ms (one crop) | tracker ms | overhead ms | overhead ratio | tracker fps |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['search_size']} | {r['scales']} | {r['net_ms']:.1f} | {r['tracker_ms']:.1f} | "
              f"{r['overhead_ms']:.1f} | {r['overhead']:.3f} | {r['tracker_fps']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "torch": torch.__version__, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
