"""Success AUC of OpenCV's CSRT / KCF trackers and of Ocean checkpoints on the held-out scenes (and any OTB root).

Usage::

    PYTHONPATH=. python benchmarks/heldout_scores.py [--root DIR] [--checkpoint CKPT ...] [--otb ROOT ...]
        [--opencv csrt,kcf] [--set tracker.key=value ...] [--online-features CKPT] [--json FILE]

``--root`` (default ``/tmp/heldout-otb``) is written with :func:`data_prep.heldout_scenes.write_heldout_otb`
when it is missing. Every tracker runs the one-pass protocol of ``ocean evaluate`` (init on frame 1 with the
ground truth) and is scored with the project's OPE metrics (pysot's success AUC, precision at 20 px). Ocean
checkpoints use their tracker section with the ``otb`` preset (facts §9.3) over it, plus ``--set``, as
``ocean evaluate`` does (a smoke checkpoint since 2026-12-06 searches 3 scales, facts §9.6). CSRT and KCF need OpenCV's contrib
build (``opencv-contrib-python-headless``, not a project dependency); without it those rows say
"unavailable". Prints a markdown table with the machine's load; ``--json`` keeps the per-sequence AUCs.

``--online-features CKPT`` (with ``--set tracker.online=true``) fits the online module (paper Sec. 4.2) on the
features of CKPT's network instead of each ``--checkpoint``'s own: crossing a trained and an untrained
network says which of the Siamese branch and the online features does what on unseen scenes (BENCHMARKS.md
"Generalisation", "Which part of the online tracker generalises").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocean.benchmarks.metrics import ope_sequence, ope_summary  # noqa: E402
from ocean.benchmarks.protocols import load_image  # noqa: E402
from ocean.benchmarks.readers import read_otb  # noqa: E402


def _opencv_factory(name: str):
    import cv2

    make = getattr(cv2, f"Tracker{name.upper()}_create", None)
    if make is None and hasattr(cv2, "legacy"):
        make = getattr(cv2.legacy, f"Tracker{name.upper()}_create", None)
    return make


def _track_opencv(make, seq) -> np.ndarray:
    boxes = np.zeros((len(seq.frames), 4))
    tracker = None
    for f, path in enumerate(seq.frames):
        img = load_image(path)
        if f == 0:
            tracker = make()
            init = tuple(int(round(v)) for v in seq.init_box_xywh)
            tracker.init(img, init)
            boxes[0] = seq.init_box_xywh
            continue
        ok, box = tracker.update(img)
        boxes[f] = np.asarray(box, float) if ok else boxes[f - 1]  # a lost frame keeps the last box
    return boxes


def _track_ocean(checkpoint: str, overrides: list[str], online_features: str | None = None):
    from ocean.benchmarks.protocols import drive, protocol_steps, track_result
    from ocean.checkpoint import load_model
    from ocean.config import layered_tracker_config
    from ocean.online import build_online
    from ocean.tracker import OceanTracker

    net, ocean_cfg = load_model(checkpoint)
    net.eval()
    # as `ocean evaluate`: the checkpoint's tracker section, the otb preset over it, then --set
    cfg = layered_tracker_config(ocean_cfg.tracker, "otb", overrides)
    if online_features is not None and not cfg.online:
        raise SystemExit("--online-features needs --set tracker.online=true")
    features = None
    if online_features is not None:
        features, _ = load_model(online_features)
        features.eval()

    def track(seq):  # as ocean.benchmarks.protocols.track_sequence, with the online module's net swapped in
        tracker = OceanTracker(net, cfg, online=build_online(features, cfg) if features is not None else None)
        return track_result(drive(protocol_steps("otb", seq), tracker), tracker.nonfinite_frames)["boxes_xywh"]

    return track


def score(track, sequences) -> dict:
    per, aucs = [], {}
    for seq in sequences:
        pred = track(seq)
        s = ope_sequence(seq.gt_xywh, pred)
        per.append(s)
        aucs[seq.name] = round(s.success_auc, 4)
    summary = ope_summary(per)
    return {"success_auc": summary["success_auc"], "precision": summary["precision"], "per_sequence": aucs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/tmp/heldout-otb", help="held-out OTB root (written when missing)")
    p.add_argument("--otb", action="append", default=[], help="more OTB roots to score (e.g. real clips)")
    p.add_argument("--checkpoint", action="append", default=[])
    p.add_argument("--opencv", default="csrt,kcf", help="comma list of OpenCV trackers ('' for none)")
    p.add_argument("--set", action="append", default=[], dest="overrides", help="tracker.key=value")
    p.add_argument("--online-features", default=None, metavar="CKPT",
                   help="fit the online module on this checkpoint's network (needs --set tracker.online=true)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OCEAN_THREADS", "2")))
    if not (Path(a.root) / "attributes.json").exists():
        from data_prep.heldout_scenes import write_heldout_otb

        write_heldout_otb(a.root)
    roots = {"heldout": a.root, **{Path(r).name or r: r for r in a.otb}}
    trackers = {}
    for name in [n for n in a.opencv.split(",") if n]:
        make = _opencv_factory(name)
        trackers[f"OpenCV {name.upper()}"] = (lambda seq, m=make: _track_opencv(m, seq)) if make else None
    for ckpt in a.checkpoint:
        label = f"Ocean {ckpt}" + (f", online on {a.online_features}" if a.online_features else "")
        trackers[label] = _track_ocean(ckpt, a.overrides, a.online_features)
    results: dict = {"load_before": os.getloadavg(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    lines = ["| tracker | benchmark | success AUC | precision | seconds |", "|---|---|---|---|---|"]
    for tname, track in trackers.items():
        for bname, root in roots.items():
            if track is None:
                lines.append(f"| {tname} | {bname} | unavailable (needs opencv-contrib) | | |")
                continue
            t0 = time.time()
            r = score(track, read_otb(Path(root)))
            r["seconds"] = round(time.time() - t0, 1)
            results[f"{tname} | {bname}"] = r
            lines.append(f"| {tname} | {bname} | {r['success_auc']:.3f} | {r['precision']:.3f} | {r['seconds']} |")
            print(lines[-1], flush=True)
    results["load_after"] = os.getloadavg()
    print("\n".join(lines))
    print(f"load average before {results['load_before']}, after {results['load_after']}; {results['when']}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
