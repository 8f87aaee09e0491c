"""``ocean vot-tracker`` / ``python -m jobs.vot_tracker``: the Ocean tracker as a TraX server for the VOT toolkit."""

from __future__ import annotations

import argparse
import logging

from jobs.common import UsageError, add_tracker_arguments, fail, main_for

log = logging.getLogger(__name__)

COMMAND = "vot-tracker"
HELP = "serve the Ocean tracker over the TraX protocol, for the VOT toolkit (`vot evaluate`)"
DESCRIPTION = """\
Run the Ocean tracker as a TraX server (the protocol the VOT toolkit speaks with a tracker process over its
stdin / stdout): the toolkit starts this command once per sequence run, sends the first frame and the target,
then one frame at a time, and reads back one box per frame. It is meant to be started BY the toolkit, from
a trackers.ini entry (deploy/vot/trackers.ini, docs/toolkits.md):

  [Ocean]
  label = Ocean
  protocol = trax
  command = /path/to/ocean-ray/.venv/bin/python -m jobs.vot_tracker --checkpoint /abs/ckpt.pt --benchmark vot2018

Regions: the target may come as a rectangle (used as it is, 0-based x,y,w,h) or as a polygon (the VOT
short-term ground truth), which becomes the official init box exactly as `ocean evaluate` makes it
(ocean_facts §9.1); every reply is a rectangle, with the tracker's score as the `confidence` property.
Frames are read from the file paths the toolkit sends (TraX `path` images, the `color` channel). The
protocol and the toolkit's side of it: docs/reference/formats.md §3.2.

Tracker hyper-parameters are layered as for `ocean track`: the checkpoint's tracker section, --benchmark's
official preset (default vot2018, ocean_facts §9.3), --config, --tracker-config, then --set tracker.KEY=VALUE.
A bad checkpoint or value stops with one line and status 2 before the TraX handshake, so the toolkit shows
that line in its tracker log."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ocean.config import TRACKER_PRESETS

    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="checkpoint file or URI, or an MLflow model (models:/NAME@ALIAS, runs:/RUN_ID/model)")
    p.add_argument("--mlflow-uri", metavar="URI", help="MLflow store of a models:/ or runs:/ --checkpoint")
    p.add_argument("--benchmark", type=str.lower, choices=sorted(TRACKER_PRESETS), default="vot2018",
                   help="whose official tracker hyper-parameters to use (default vot2018; ocean_facts §9.3)")
    add_tracker_arguments(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the network runs (default auto: cuda when available, else cpu)")


def run(args: argparse.Namespace) -> int:
    try:
        tracker = _build(args)
    except UsageError as exc:
        return fail(COMMAND, exc)
    serve(tracker)
    return 0


def _build(args: argparse.Namespace):
    """The tracker, built as ``ocean track`` builds it (its checkpoint loading and hyper-parameter layers)."""
    from jobs.common import absolute
    from jobs.track import _load_network, build_tracker_config
    from ocean.integrations import resolve_device
    from ocean.tracker import OceanTracker

    for name in ("checkpoint", "tracker_config", "config"):  # the toolkit starts us in a temporary folder
        setattr(args, name, absolute(getattr(args, name, None)))
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device {exc}") from None
    net, ocean_cfg = _load_network(args.checkpoint, args.mlflow_uri, device)
    cfg = build_tracker_config(ocean_cfg.tracker, args.benchmark, args.tracker_config, args.overrides, args.config)
    return OceanTracker(net, cfg, device=device)


def region_to_box(region):
    """A TraX rectangle -> float64 ``(4,)`` x,y,w,h as given; a polygon -> the official init box
    (ocean_facts §9.1, :func:`ocean.benchmarks.regions.polygon_to_init_box_xywh`); ValueError otherwise."""
    import numpy as np
    from trax import Region

    from ocean.benchmarks.regions import polygon_to_init_box_xywh

    if region.type == Region.RECTANGLE:
        return np.asarray(region.bounds(), dtype=np.float64)
    if region.type == Region.POLYGON:
        return polygon_to_init_box_xywh(np.asarray(list(region), dtype=np.float64).ravel())
    raise ValueError(f"TraX region of type {region.type!r}: this tracker takes a rectangle or a polygon")


def _read_frame(images) -> object:
    import cv2

    image = images.get("color")
    if image is None:
        raise ValueError("the TraX request has no color image")
    path = image.path() if callable(image.path) else image.path
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError(f"cannot read the frame {path}")
    return frame


def serve(tracker) -> None:
    """Answer TraX requests until the client quits: INITIALIZE (re)starts ``tracker`` on the frame and
    region, FRAME tracks; both reply with one rectangle and the score as ``confidence``."""
    from trax import Image, Rectangle, Region, TraxStatus
    from trax.server import Server

    with Server([Region.RECTANGLE, Region.POLYGON], [Image.PATH], ["color"], tracker_name="Ocean",
                tracker_description="Ocean (ECCV 2020), ocean-ray", tracker_family="siamese") as server:
        while True:
            request = server.wait()
            if request.type == TraxStatus.QUIT:
                break
            frame = _read_frame(request.image)
            if request.type == TraxStatus.INITIALIZE:
                if len(request.objects) != 1:
                    raise ValueError(f"{len(request.objects)} objects to track: this tracker follows one")
                box = region_to_box(request.objects[0][0])
                tracker.init(frame, box)
                score = 1.0
            else:
                box, score = tracker.track(frame)
            x, y, w, h = (float(v) for v in box)
            server.status([(Rectangle.create(x, y, w, h), {"confidence": f"{float(score):.6f}"})])


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
