"""How far a checkpoint's box size is off after one step from the true state, per sequence.

For every frame after the first, the tracker's state is set to that frame's ground truth (centre and size)
and the frame is tracked once: the raw size the network predicts at the chosen cell (before the size
smoothing, ``ocean.tracker.update_size``'s ``pred_wh``) is compared with the truth, as
sqrt(predicted area / true area), and the chosen centre is counted as on target when it lies within half a
box (sqrt of the true area) of the true centre. A ratio above 1 on most frames is a size bias that the
tracker compounds frame after frame (BENCHMARKS.md "Generalisation": the IoU loss's pull towards larger
boxes)::

    PYTHONPATH=. python benchmarks/size_bias.py --checkpoint CKPT [--checkpoint CKPT ...] --otb ROOT
        [--otb ROOT ...] [--set tracker.key=value ...] [--json out.json] [--follow]

``--otb`` roots are OTB-layout benchmarks (the held-out scenes ``WORK/heldout``, the synthetic OTB
``WORK/synthetic/benchmarks/otb``). The tracker: the checkpoint's tracker section with the ``otb`` preset
(facts §9.3) over it, then ``--set``, as ``ocean evaluate`` layers them (a smoke checkpoint searches 3 scales,
facts §9.6; ``--set tracker.scales=1`` for the regression alone).

A bias is one question; whether the regression measures the target's size at all is another. ``--follow``
also starts each frame from the true centre with a wrong size (the true width and height times 0.8, then
times 1.25) and fits, over every frame and start, how much of the error the raw prediction corrects: the
slope (through the origin) of log(predicted / state) on log(true / state), sizes as sqrt(w h). 1 is a
regression that reads the size off the image whatever the state; 0 is one that returns the state's size
times a constant, the crop being cut to the state's size (a prior in crop pixels), which leaves the
target's scale changes to nothing but that constant. (The aspect cannot be tested this way: the square
crop hardly depends on the state's aspect, so a fixed shape in crop pixels would score as well as a
measured one.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextmanager
def raw_predictions(checkpoint: str, overrides: list[str]):
    """``(net, cfg, seen)`` while open: the checkpoint's network (eval), its tracker section with the ``otb``
    preset and ``overrides`` over it, and a list to which every ``tracker.track`` call appends the raw size it predicted (image
    pixels, before the smoothing: ``ocean.tracker.update_size``'s ``pred_wh``). The spy is removed on exit."""
    import ocean.tracker as tracker_module
    from ocean.checkpoint import load_model
    from ocean.config import layered_tracker_config

    net, ocean_cfg = load_model(checkpoint)
    net.eval()
    cfg = layered_tracker_config(ocean_cfg.tracker, "otb", overrides)  # as `ocean evaluate` layers it
    seen: list[np.ndarray] = []
    update_size = tracker_module.update_size

    def spy(size_wh, pred_wh, lr_eff, mode):
        seen.append(np.asarray(pred_wh, dtype=np.float64))
        return update_size(size_wh, pred_wh, lr_eff, mode)

    tracker_module.update_size = spy
    try:
        yield net, cfg, seen
    finally:
        tracker_module.update_size = update_size


def one_step_sizes(checkpoint: str, root: str, overrides: list[str]) -> dict:
    """``{sequence: {"ratio_median", "ratio_p25", "ratio_p75", "on_target"}}`` plus ``"all"``: the geometric
    mean of the ratios over every frame and the fraction of frames on target."""
    import torch

    from ocean.benchmarks.protocols import load_image
    from ocean.benchmarks.readers import read_otb
    from ocean.tracker import OceanTracker

    out: dict = {}
    logs, hits = [], []
    with raw_predictions(checkpoint, overrides) as (net, cfg, seen), torch.inference_mode():
        for seq in read_otb(Path(root)):
            gt = np.asarray(seq.gt_xywh, dtype=np.float64)
            tracker = OceanTracker(net, cfg)
            tracker.init(load_image(seq.frames[0]), gt[0])
            ratios, on = [], []
            for f in range(1, len(seq.frames)):
                tracker.state.center_xy = gt[f, :2] + gt[f, 2:] / 2
                tracker.state.size_wh = gt[f, 2:].copy()
                seen.clear()
                box, _ = tracker.track(load_image(seq.frames[f]))
                if not seen:  # a frame without a finite score keeps the state: nothing predicted
                    continue
                area = float(np.prod(gt[f, 2:]))
                ratios.append(float(np.sqrt(np.prod(seen[-1]) / area)))
                err = box[:2] + box[2:] / 2 - gt[f, :2] - gt[f, 2:] / 2
                on.append(bool(np.hypot(*err) < 0.5 * np.sqrt(area)))
            r = np.array(ratios)
            out[seq.name] = {"ratio_median": round(float(np.median(r)), 3),
                             "ratio_p25": round(float(np.percentile(r, 25)), 3),
                             "ratio_p75": round(float(np.percentile(r, 75)), 3),
                             "on_target": round(float(np.mean(on)), 3)}
            logs += list(np.log(r))
            hits += on
    out["all"] = {"ratio_geomean": round(float(np.exp(np.mean(logs))), 3), "on_target": round(float(np.mean(hits)), 3),
                  "frames": len(logs)}
    return out


FOLLOW_FACTORS = (0.8, 1.25)  # the wrong starting sizes (--follow; module docstring): symmetric in log


def follow_slopes(checkpoint: str, root: str, overrides: list[str],
                  factors: tuple[float, ...] = FOLLOW_FACTORS) -> dict:
    """``{"size_slope", "samples"}``: the least-squares slope through the origin of log(predicted / state) on
    log(true / state) over every frame and wrong start (module docstring)."""
    import torch

    from ocean.benchmarks.protocols import load_image
    from ocean.benchmarks.readers import read_otb
    from ocean.tracker import OceanTracker

    pairs = []  # (log(true / state), log(predicted / state)), sizes as sqrt(w h)
    with raw_predictions(checkpoint, overrides) as (net, cfg, seen), torch.inference_mode():
        for seq in read_otb(Path(root)):
            gt = np.asarray(seq.gt_xywh, dtype=np.float64)
            tracker = OceanTracker(net, cfg)
            tracker.init(load_image(seq.frames[0]), gt[0])
            for f in range(1, len(seq.frames)):
                image = load_image(seq.frames[f])
                for k in factors:
                    state = gt[f, 2:] * k
                    tracker.state.center_xy = gt[f, :2] + gt[f, 2:] / 2
                    tracker.state.size_wh = state.copy()
                    seen.clear()
                    tracker.track(image)
                    if seen:
                        pairs.append((-np.log(k), np.log(np.sqrt(np.prod(seen[-1]) / np.prod(state)))))

    a = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    slope = float((a[:, 0] * a[:, 1]).sum() / (a[:, 0] ** 2).sum()) if len(a) else float("nan")
    return {"size_slope": slope, "samples": len(a)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, help="a project checkpoint (repeatable)")
    p.add_argument("--otb", action="append", required=True, help="an OTB-layout root (repeatable)")
    p.add_argument("--set", action="append", default=[], dest="overrides", help="tracker.key=value")
    p.add_argument("--json", default=None, help="also write every figure here")
    p.add_argument("--follow", action="store_true",
                   help="also fit how much of a wrong starting size the raw prediction corrects")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OCEAN_THREADS", "2")))
    results: dict = {}
    extra = " size followed |" if a.follow else ""
    print("| checkpoint | benchmark | raw size / truth (geometric mean) | centre on target | frames |" + extra)
    print("|---|---|---|---|---|" + ("---|" if a.follow else ""))
    for ckpt in a.checkpoint:
        for root in a.otb:
            r = one_step_sizes(ckpt, root, a.overrides)
            cells = ""
            if a.follow:
                r["follow"] = follow_slopes(ckpt, root, a.overrides)
                cells = f" {r['follow']['size_slope']:.2f} |"
            results[f"{ckpt} | {root}"] = r
            print(f"| {ckpt} | {root} | {r['all']['ratio_geomean']:.3f} | {r['all']['on_target']:.2f} | "
                  f"{r['all']['frames']} |" + cells, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
