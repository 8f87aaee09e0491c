"""``ocean track``: run the Ocean tracker on a folder of frames or a video file."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobs.common import UsageError, add_tracker_arguments, fail, main_for, tracker_overrides

log = logging.getLogger(__name__)

COMMAND = "track"
HELP = "track one target through a folder of frames, a video file or a camera; write x,y,w,h per frame"
DESCRIPTION = """\
Track one target with a trained Ocean checkpoint and write its box in every frame.

Input: --frames DIR (the .jpg / .jpeg / .png files in DIR, sorted naturally: 2.jpg before 10.jpg),
--video FILE (anything OpenCV can decode, read one frame at a time) or --video INDEX (a camera: digits only,
0 is the first camera; a file named 0 is ./0). --init x,y,w,h is the target in the FIRST frame: 0-based
pixels, top-left corner and size (8 values x1,y1,...,x4,y4 are taken as a VOT polygon and converted to the
official axis-aligned init box, ocean_facts §9.1). Without --init the target is drawn with the mouse on the
first frame (Space or Enter accepts, c cancels); that needs a window (below).

Output: --out FILE gets one line `x,y,w,h` per frame, in the same 0-based convention; the first line is the
init box. OTB and LaSOT result files are 1-based: add 1 to x and y before scoring this file as one of
them (with `ocean score` or their toolkits); VOT and GOT-10k files are 0-based like this one.
--render FILE.mp4 also writes a video (mp4v) with the box, frame index and score drawn in, at the source's
frame rate: a video's own, 30 for a frame folder, a camera's as measured over its first 30 frames;
--render-fps overrides it.

Window: --show opens a live window with the box drawn in; q or Esc (or closing the window) stops tracking
and keeps what was written. Default: a window only when the target is selected in one (no --init); --no-show
never opens one. A window needs a display (DISPLAY or WAYLAND_DISPLAY) and an OpenCV with windows: the
project installs opencv-python-headless, which has none -- replace it with opencv-python of the same version
(docs/reference/video_io.md §1). When no window can be opened, --show or a missing --init stop with one line.

Stopping: q / Esc in the window, or Ctrl-C (SIGTERM alike) anywhere: the boxes of the frames tracked so far
and a playable mp4 are written; after Ctrl-C the exit status is 130 (SIGTERM: 143). A camera runs until then.

A frame that cannot be read keeps the previous box (the tracker does not see it); these frames are counted
and named at the end (with --strict the exit status is then 1). An unreadable FIRST frame, a missing
checkpoint or video, a video OpenCV cannot open, a camera that cannot be opened, an empty folder or a bad
--init stop with status 2 before tracking.

--checkpoint also takes an MLflow model logged by `ocean train` / `ocean evaluate`: models:/NAME@best (the
alias `ocean evaluate --run` sets), models:/NAME/VERSION or runs:/RUN_ID/model, read from --mlflow-uri
(default $MLFLOW_TRACKING_URI, else ./mlruns.db); its config comes with it.

Tracker hyper-parameters, applied in this order: the checkpoint's `tracker` section (the defaults:
single size smoothing), --benchmark NAME (the official per-benchmark values of ocean_facts §9.3 for
otb, vot2018, vot2019, got10k, lasot; SOTS's values for the others, §9.5 -- these select
TracKit's double size smoothing, as tuned),
--config FILE (a configuration as `ocean config` prints it, YAML or JSON: only its tracker section),
--tracker-config FILE (YAML or JSON of TrackerConfig fields, or {"tracker": {...}}, e.g. what
`ocean tune-tracker` saves), then --set tracker.KEY=VALUE (repeatable). Values are type- and range-checked.
--set tracker.online=true adds the online update (paper Sec. 4.2); with --benchmark vot2018 / vot2019 the
preset is then the official online one (no p_o, ocean_facts §10.4).

The final line reports frames, the network's own speed (model fps: forward passes only), the tracker's
speed without file I/O (crops + network + post-processing), and the total speed with decoding and writing.

Examples:
  ocean track --checkpoint runs/smoke/last.pt --frames data/Basketball/img --init 197,213,34,81 \\
      --benchmark otb --out basketball.txt --render basketball.mp4
  ocean track --checkpoint runs/smoke/last.pt --video clip.mp4 --init 40,60,80,50 --out clip.txt
  ocean track --checkpoint runs/smoke/last.pt --video 0 --out webcam.txt --render webcam.mp4  # select, q quits"""

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
    src.add_argument("--video", metavar="FILE|INDEX",
                     help="video file decoded with OpenCV, or a camera index (digits only: 0 is the first camera)")
    p.add_argument("--init", metavar="x,y,w,h",
                   help="target in the first frame: 0-based top-left corner and size in pixels "
                        "(or 8 polygon values); without it, drawn with the mouse in a window")
    p.add_argument("--out", required=True, metavar="FILE", help="result file: one x,y,w,h line per frame")
    p.add_argument("--render", metavar="FILE.mp4", help="also write an mp4 with the boxes drawn in")
    p.add_argument("--render-fps", type=float, default=None, metavar="FPS",
                   help="frame rate of --render (default: the video's, 30 for frame folders, a camera's "
                        "measured rate)")
    p.add_argument("--show", action=argparse.BooleanOptionalAction, default=None,
                   help="a live window with the box; q or Esc stops, keeping what was written (default: only "
                        "when the target is selected in the window, i.e. without --init)")
    from ocean.config import TRACKER_PRESETS

    p.add_argument("--benchmark", choices=sorted(TRACKER_PRESETS),
                   help="use that benchmark's tracker hyper-parameters (ocean_facts §9.3, §9.5)")
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


def format_box(box_xywh) -> str:
    return ",".join(f"{float(v):.4f}" for v in box_xywh)


def video_argument(text: str) -> int | str:
    """``--video``: a camera index (digits only) or an absolute file path; UsageError when empty."""
    from jobs.common import absolute
    from ocean.video import VideoError, parse_video_arg

    try:
        video = parse_video_arg(text)
    except VideoError as exc:
        raise UsageError(f"--video {text!r}: {exc}") from None
    return video if isinstance(video, int) else absolute(video)


def window_wanted(show: bool | None, init_given: bool) -> bool:
    """Whether to open a window (``--show`` / ``--no-show``, default: only to select the target); UsageError
    when one is needed and cannot be opened here (ocean.video.window_unavailable gives the reason)."""
    from ocean.video import window_unavailable

    if show is False and not init_given:
        raise UsageError("--no-show needs --init x,y,w,h: without it the target is selected in a window")
    if init_given and not show:
        return False
    reason = window_unavailable()
    if reason is None:
        return True
    if not init_given:
        raise UsageError(f"--init x,y,w,h is needed, as no window can be opened to select the target: {reason}")
    raise UsageError(f"--show: {reason}")


def _open_source(args: argparse.Namespace):
    from ocean.video import VideoError, folder_source, open_video_source

    if args.frames is not None:
        return folder_source(list_frames(args.frames), args.frames)
    try:
        return open_video_source(args.video)
    except VideoError as exc:
        raise UsageError(f"--video {args.video}: {exc}") from None


def _check_render(path: str | None, fps: float | None) -> None:
    import math

    from ocean.storage import is_uri

    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise UsageError(f"--render-fps {fps}: expected a frame rate > 0")
    if path is not None and is_uri(path):
        raise UsageError(f"--render {path}: a local file (OpenCV writes it itself); copy it to storage afterwards")


# ---------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from ocean.video import VideoError

    try:
        return _run(args)
    except UsageError as exc:
        return fail(COMMAND, exc)
    except VideoError as exc:  # the --render file cannot be written
        return fail(COMMAND, f"--render {exc}")


def _run(args: argparse.Namespace) -> int:
    import torch

    from jobs.common import absolute
    from ocean.tracker import OceanTracker

    if args.video is not None:
        args.video = video_argument(args.video)
    for name in ("checkpoint", "frames", "out", "render", "tracker_config"):  # as every command
        setattr(args, name, absolute(getattr(args, name, None)))
    init_box = parse_init(args.init) if args.init is not None else None
    show = window_wanted(args.show, init_box is not None)
    _check_render(args.render, args.render_fps)
    source = _open_source(args)  # checked before the network loads; _track closes it (else its destructor)

    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
        if device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
    net, ocean_cfg = _load_network(args.checkpoint, args.mlflow_uri, device)
    cfg = build_tracker_config(ocean_cfg.tracker, args.benchmark, args.tracker_config, args.overrides, args.config)
    tracker = OceanTracker(net, cfg, device=device)
    return _track(args, source, tracker, init_box, show, device)


@dataclass
class _Outcome:
    """What a tracking loop produced: one result line per frame, the counts, and why it stopped early."""

    lines: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    tracked: int = 0
    net_seconds: float = 0.0
    tracker_seconds: float = 0.0
    waited_seconds: float = 0.0  # selecting the target in the window
    stopped: str | None = None  # "q" (the window), "SIGINT" (Ctrl-C) or "SIGTERM"


def _track(args, source, tracker, init_box, show: bool, device: str) -> int:
    """Track ``source`` frame by frame; the results and the mp4 are written also when stopped (q, Ctrl-C)."""
    from tqdm import tqdm

    from ocean.storage import write_bytes
    from ocean.video import FALLBACK_FPS, LiveWindow, Mp4Writer, VideoError, draw_box
    from pipelines.raysession import received_signal

    if source.live:
        log.info(f"{source.description}: tracking until q / Esc in the window or Ctrl-C")
    writer = None
    if args.render:
        writer = Mp4Writer(args.render, args.render_fps or (None if source.live else source.fps or FALLBACK_FPS))
        if source.live:
            writer.check()  # its first frames are held to measure the rate: find a bad --render now
    window = None
    if show:
        try:
            window = LiveWindow(f"ocean track: {source.description}")
        except VideoError as exc:
            raise UsageError(str(exc)) from None
    out, interrupted = _Outcome(), None
    t_start = time.perf_counter()
    progress = tqdm(total=source.total, unit="frame", disable=args.no_progress or args.quiet, file=sys.stderr)
    try:
        for index, (name, image) in enumerate(source):
            score: float | None = None
            if index == 0:
                box = init_box = _start(args, tracker, name, image, init_box, window, out)
            elif image is None:
                out.unreadable.append(name)  # keep the previous box: the tracker cannot skip silently
            else:
                t0 = time.perf_counter()
                box, score = tracker.track(image)
                out.tracker_seconds += time.perf_counter() - t0
                out.net_seconds += tracker.last_net_seconds
                out.tracked += 1
            out.lines.append(format_box(box))
            progress.update(1)
            if image is not None and (writer is not None or window is not None):
                drawn = draw_box(image, box, index, score)  # an unreadable frame is left out of the video
                if writer is not None:
                    writer.write(drawn)
                if window is not None and not window.show(drawn):
                    out.stopped = "q"
                    break
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (pipelines.raysession.stop_on_signals)
        interrupted, out.stopped = exc, signal.Signals(received_signal() or signal.SIGINT).name
    finally:
        source.close()
        progress.close()
        if window is not None:
            window.close()
        if writer is not None:
            writer.close()  # the mp4 index is written here: the file plays also after Ctrl-C
    total_seconds = time.perf_counter() - t_start - out.waited_seconds
    if not out.lines and interrupted is None:
        raise UsageError(f"{source.description}: no frame could be decoded")
    if out.lines:
        write_bytes(args.out, ("\n".join(out.lines) + "\n").encode())
    _report(args, source, out, device, total_seconds, writer, tracker.nonfinite_frames)
    if interrupted is not None:
        raise interrupted
    if out.unreadable:
        return 1 if args.strict else 0
    return 0


def _start(args, tracker, name: str, image, init_box, window, out: _Outcome):
    """The first frame: select the target in the window when --init is missing, check it, init the tracker."""
    if image is None:
        raise UsageError(f"cannot read the first frame ({name}); the tracker needs it to start")
    h_img, w_img = image.shape[:2]
    if init_box is None:
        t0 = time.perf_counter()
        init_box = window.select_box(image)
        out.waited_seconds = time.perf_counter() - t0
        if init_box is None:
            raise UsageError("no target was selected in the first frame (selection cancelled); nothing tracked")
        log.info(f"selected --init {','.join(f'{v:g}' for v in init_box)}")  # to repeat the run
    elif init_box[0] >= w_img or init_box[1] >= h_img or init_box[0] + init_box[2] <= 0 \
            or init_box[1] + init_box[3] <= 0:
        raise UsageError(f"--init {args.init}: the box lies outside the {w_img}x{h_img} first frame")
    tracker.init(image, init_box)
    return init_box


def _report(args, source, out: _Outcome, device: str, total_seconds: float, writer, nonfinite: int) -> None:
    """The final line, and warnings for unreadable frames, non-finite scores and a short video."""
    n = len(out.lines)
    model_fps = out.tracked / out.net_seconds if out.net_seconds > 0 else float("nan")
    tracker_fps = out.tracked / out.tracker_seconds if out.tracker_seconds > 0 else float("nan")
    total_fps = n / total_seconds if total_seconds > 0 else float("nan")
    wrote = [args.out] if n else []
    if writer is not None and writer.frames_written:
        wrote.append(f"{args.render} ({writer.frames_written} frames at {writer.fps:.1f} fps)")
    stopped = f", stopped by {out.stopped}" if out.stopped else ""
    print(f"frames {n} (tracked {out.tracked}, unreadable {len(out.unreadable)}{stopped}), device {device}: "
          f"model {model_fps:.1f} fps, tracker {tracker_fps:.1f} fps (no I/O), "
          f"total {total_fps:.1f} fps (I/O included); wrote {' and '.join(wrote) or 'nothing'}")
    if nonfinite:
        log.warning(f"the network gave no finite score in {nonfinite} frames (previous box kept)")
    if out.unreadable:
        shown = ", ".join(out.unreadable[:10]) + (" ..." if len(out.unreadable) > 10 else "")
        log.warning(f"{len(out.unreadable)} unreadable frames kept the previous box: {shown}")
    if source.total is not None and args.video is not None and not out.stopped and n < source.total:
        log.warning(f"{source.description}: its header announces {source.total} frames, {n} could be decoded")


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


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
