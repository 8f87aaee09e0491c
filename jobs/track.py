"""``ocean track``: run the Ocean tracker on a folder of frames or a video file."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jobs.common import UsageError, add_tracker_arguments, fail, main_for, tracker_overrides

log = logging.getLogger(__name__)

COMMAND = "track"
HELP = "track one target through a folder of frames or a video; write x,y,w,h per frame"
DESCRIPTION = """\
Track one target with a trained Ocean checkpoint and write its box in every frame.

Input: --frames DIR (the .jpg / .jpeg / .png files in DIR, sorted naturally: 2.jpg before 10.jpg) or
--video FILE (anything OpenCV can decode). --init x,y,w,h is the target in the FIRST frame: 0-based pixels,
top-left corner and size (8 values x1,y1,...,x4,y4 are taken as a VOT polygon and converted to the
official axis-aligned init box, ocean_facts §9.1).

Output: --out FILE gets one line `x,y,w,h` per frame, in the same 0-based convention; the first line is the
init box. OTB and LaSOT result files are 1-based: add 1 to x and y before scoring this file as one of
them (with `ocean score` or their toolkits); VOT and GOT-10k files are 0-based like this one. --render FILE.mp4 also writes a video with the box, frame index and score drawn in.

A frame that cannot be read keeps the previous box (the tracker does not see it); these frames are counted
and named at the end (with --strict the exit status is then 1). An unreadable FIRST
frame, a missing checkpoint, an empty folder or a bad --init stop with status 2 before tracking.

--checkpoint also takes an MLflow model logged by `ocean train` / `ocean evaluate`: models:/NAME@best (the
alias `ocean evaluate --run` sets), models:/NAME/VERSION or runs:/RUN_ID/model, read from --mlflow-uri
(default $MLFLOW_TRACKING_URI, else ./mlruns.db); its config comes with it.

Tracker hyper-parameters, applied in this order: the checkpoint's `tracker` section (the defaults:
single size smoothing), --benchmark NAME (the official per-benchmark values of ocean_facts §9.3:
otb, vot2018, vot2019, got10k, lasot -- these select TracKit's double size smoothing, as tuned),
--config FILE (a configuration as `ocean config` prints it, YAML or JSON: only its tracker section),
--tracker-config FILE (YAML or JSON of TrackerConfig fields, or {"tracker": {...}}, e.g. what
`ocean tune-tracker` saves), then --set tracker.KEY=VALUE (repeatable). Values are type- and range-checked.
--set tracker.online=true adds the online update (paper Sec. 4.2); with --benchmark vot2018 / vot2019 the
preset is then the official online one (no p_o, ocean_facts §10.4).

The final line reports frames, the network's own speed (model fps: forward passes only), the tracker's
speed without file I/O (crops + network + post-processing), and the total speed with decoding and writing.

Example:
  ocean track --checkpoint runs/smoke/last.pt --frames data/Basketball/img --init 197,213,34,81 \\
      --benchmark otb --out basketball.txt --render basketball.mp4"""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="checkpoint file or URI (file://, s3://) written by training, or an MLflow model: "
                        "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model")
    p.add_argument("--mlflow-uri", metavar="URI",
                   help="MLflow store of a models:/ or runs:/ --checkpoint (default $MLFLOW_TRACKING_URI, "
                        "else ./mlruns.db)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--frames", metavar="DIR", help="folder of .jpg/.jpeg/.png frames (natural order)")
    src.add_argument("--video", metavar="FILE", help="video file decoded with OpenCV")
    p.add_argument("--init", required=True, metavar="x,y,w,h",
                   help="target in the first frame: 0-based top-left corner and size in pixels "
                        "(or 8 polygon values)")
    p.add_argument("--out", required=True, metavar="FILE", help="result file: one x,y,w,h line per frame")
    p.add_argument("--render", metavar="FILE.mp4", help="also write an mp4 with the boxes drawn in")
    p.add_argument("--render-fps", type=float, default=None,
                   help="frame rate of --render (default: the video's, or 30 for frame folders)")
    p.add_argument("--benchmark", choices=["otb", "vot2018", "vot2019", "got10k", "lasot"],
                   help="use that benchmark's official tracker hyper-parameters (ocean_facts §9.3)")
    add_tracker_arguments(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the network runs (default auto: cuda when available, else cpu)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when some frames could not be read (default: warn, status 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------------------------------------
# Helpers (importable for tests)


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically: ``2.jpg`` < ``10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frames(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` in natural order; UsageError when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--frames {folder}: not a folder")
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise UsageError(f"--frames {folder}: no {'/'.join(IMAGE_SUFFIXES)} files in this folder")
    return sorted(files, key=lambda f: natural_key(f.name))


def parse_init(text: str):
    """``"x,y,w,h"`` (commas and / or spaces) -> float64 ``(4,)`` xywh; 8 values = a VOT polygon."""
    import numpy as np

    from ocean.benchmarks.regions import polygon_to_init_box_xywh

    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise UsageError(f"--init {text!r}: expected numbers x,y,w,h") from None
    if values.size == 8:
        values = polygon_to_init_box_xywh(values)
    if values.size != 4 or not np.all(np.isfinite(values)) or values[2] <= 0 or values[3] <= 0:
        raise UsageError(f"--init {text!r}: expected x,y,w,h with w > 0 and h > 0 (0-based pixels)")
    return values


def build_tracker_config(base, benchmark: str | None, json_path: str | None, overrides: list[str],
                         config_path: str | None = None):
    """Checkpoint tracker section -> --benchmark preset -> --config / --tracker-config files -> --set (--help)."""
    from ocean.config import layered_tracker_config

    items = tracker_overrides(json_path, overrides, config_path=config_path)  # files checked, then --set
    try:
        return layered_tracker_config(base, benchmark, items)
    except ValueError as exc:
        raise UsageError(f"tracker hyper-parameters: {exc}") from None


def iter_folder(files: list[Path]) -> Iterator[tuple[str, object]]:
    """``(frame name, BGR uint8 image or None when unreadable)`` for each file."""
    import cv2

    for f in files:
        yield f.name, cv2.imread(str(f), cv2.IMREAD_COLOR)


def iter_video(path: str) -> Iterator[tuple[str, object]]:
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield f"frame {index}", frame
            index += 1
    finally:
        cap.release()


def open_video(path: str) -> tuple[int, float]:
    """``(frame count or 0 if unknown, fps or 0)``; UsageError when OpenCV cannot open it."""
    import cv2

    if not Path(path).is_file():
        raise UsageError(f"--video {path}: no such file")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise UsageError(f"--video {path}: OpenCV cannot open this video")
    count, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
    cap.release()
    return max(count, 0), fps if fps > 0 else 0.0


def draw_box(image, box_xywh, index: int, score: float | None):
    """A copy of ``image`` with the box (green), the frame index and the score drawn in."""
    import cv2

    out = image.copy()
    x, y, w, h = (float(v) for v in box_xywh)
    cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))),
                  (0, 255, 0), 2)
    label = f"#{index}" + ("" if score is None else f"  score {score:.3f}")
    cv2.putText(out, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def format_box(box_xywh) -> str:
    return ",".join(f"{float(v):.4f}" for v in box_xywh)


# ---------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as exc:
        return fail(COMMAND, exc)


def _run(args: argparse.Namespace) -> int:
    import cv2
    import torch
    from tqdm import tqdm

    from jobs.common import absolute
    from ocean.storage import write_bytes
    from ocean.tracker import OceanTracker

    for name in ("checkpoint", "frames", "video", "out", "render", "tracker_config"):  # as every command
        setattr(args, name, absolute(getattr(args, name, None)))
    init_box = parse_init(args.init)
    if args.frames is not None:
        files = list_frames(args.frames)
        total, source_fps = len(files), 0.0
        frames = iter_folder(files)
    else:
        total, source_fps = open_video(args.video)
        frames = iter_video(args.video)

    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
        if device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
    net, ocean_cfg = _load_network(args.checkpoint, args.mlflow_uri, device)
    cfg = build_tracker_config(ocean_cfg.tracker, args.benchmark, args.tracker_config, args.overrides, args.config)
    tracker = OceanTracker(net, cfg, device=device)

    lines: list[str] = []
    unreadable: list[str] = []
    writer = None
    writer_hw = (0, 0)
    net_seconds = tracker_seconds = 0.0
    tracked = 0
    t_start = time.perf_counter()
    progress = tqdm(total=total or None, unit="frame", disable=args.no_progress or args.quiet, file=sys.stderr)
    try:
        for index, (name, image) in enumerate(frames):
            score: float | None = None
            if index == 0:
                if image is None:
                    raise UsageError(f"cannot read the first frame ({name}); the tracker needs it to start")
                h_img, w_img = image.shape[:2]
                if init_box[0] >= w_img or init_box[1] >= h_img or init_box[0] + init_box[2] <= 0 \
                        or init_box[1] + init_box[3] <= 0:
                    raise UsageError(f"--init {args.init}: the box lies outside the {w_img}x{h_img} "
                                     "first frame")
                tracker.init(image, init_box)
                box = init_box
            elif image is None:
                unreadable.append(name)  # keep the previous box: the tracker cannot skip silently
            else:
                t0 = time.perf_counter()
                box, score = tracker.track(image)
                tracker_seconds += time.perf_counter() - t0
                net_seconds += tracker.last_net_seconds
                tracked += 1
            lines.append(format_box(box))
            if args.render and image is not None:  # an unreadable frame is left out of the video
                if writer is None:
                    writer, writer_hw = _open_writer(args.render, args.render_fps or source_fps or 30.0, image)
                if image.shape[:2] != writer_hw:
                    image = cv2.resize(image, (writer_hw[1], writer_hw[0]))
                writer.write(draw_box(image, box, index, score))
            progress.update(1)
    finally:
        progress.close()
        if writer is not None:
            writer.release()
    total_seconds = time.perf_counter() - t_start
    if not lines:
        raise UsageError(f"--video {args.video}: no frame could be decoded")

    write_bytes(args.out, ("\n".join(lines) + "\n").encode())
    model_fps = tracked / net_seconds if net_seconds > 0 else float("nan")
    tracker_fps = tracked / tracker_seconds if tracker_seconds > 0 else float("nan")
    print(f"frames {len(lines)} (tracked {tracked}, unreadable {len(unreadable)}), device {device}: "
          f"model {model_fps:.1f} fps, tracker {tracker_fps:.1f} fps (no I/O), "
          f"total {len(lines) / total_seconds:.1f} fps (I/O included); wrote {args.out}"
          + (f" and {args.render}" if args.render else ""))
    if tracker.nonfinite_frames:
        log.warning(f"the network gave no finite score in {tracker.nonfinite_frames} frames "
                    "(previous box kept)")
    if unreadable:
        shown = ", ".join(unreadable[:10]) + (" ..." if len(unreadable) > 10 else "")
        log.warning(f"{len(unreadable)} unreadable frames kept the previous box: {shown}")
        return 1 if args.strict else 0
    return 0


def _load_network(checkpoint: str, mlflow_uri: str | None, device: str):
    """The network and config of ``--checkpoint`` (a file, an object URI, or an MLflow model URI);
    UsageError naming the checkpoint and the reason."""
    from ocean.checkpoint import CheckpointError, load_model
    from ocean.storage import is_uri
    from pipelines.mlflow_models import is_model_uri

    if is_model_uri(checkpoint):
        return _load_mlflow_model(checkpoint, mlflow_uri, device)
    if not is_uri(checkpoint) and not Path(checkpoint).is_file():
        raise UsageError(f"--checkpoint {checkpoint}: no such file")
    try:
        return load_model(checkpoint, map_location=device)
    except CheckpointError as exc:  # names the file and the reason
        raise UsageError(str(exc)) from None
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UsageError(f"--checkpoint {checkpoint}: cannot load it ({exc})") from None


def _load_mlflow_model(model_uri: str, mlflow_uri: str | None, device: str):
    """``(network, OceanConfig)`` of an MLflow model URI (``pipelines.mlflow_models.load_logged_model``)."""
    import os

    from pipelines.mlflow_models import load_logged_model
    from pipelines.tracking import tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in job logs
    try:
        return load_logged_model(model_uri, tracking_uri(mlflow_uri), map_location=device)
    except ValueError as exc:
        raise UsageError(f"--checkpoint {exc}") from None


def _open_writer(path: str, fps: float, first_image):
    import cv2

    h, w = first_image.shape[:2]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise UsageError(f"--render {path}: OpenCV cannot write an mp4v video here")
    return writer, (h, w)


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
