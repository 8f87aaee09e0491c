"""Frames in and out for ``ocean track``: frame sources (image files, a video file, a camera) read one frame
at a time, whether OpenCV can open a window here, the live window, and the mp4 writer (video_io.md)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

FALLBACK_FPS = 30.0  # a frame folder or a video without a frame rate is written at 30 fps (video_io.md §3)
MEASURE_FRAMES = 30  # a camera's rate is measured over its first 30 frames, held until then (video_io.md §3)
MP4V_MAX_DENOMINATOR = 65535  # mp4v's largest time-base denominator (video_io.md §3)
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27: Esc (video_io.md §4)


def writable_fps(fps: float) -> float:
    """``fps`` rounded to a rate ``mp4v`` accepts: the most decimals (two at most) whose time-base denominator,
    round(fps x 10^d), stays within :data:`MP4V_MAX_DENOMINATOR`; at least 0.01 (video_io.md §3)."""
    fps = max(float(fps), 0.01)
    for decimals in (2, 1):
        if round(fps * 10 ** decimals) <= MP4V_MAX_DENOMINATOR:
            return round(fps, decimals)
    return float(min(round(fps), MP4V_MAX_DENOMINATOR))


class VideoError(ValueError):
    """An input or output the user named cannot be used; the message is one line for them."""


def parse_video_arg(text: str) -> int | str:
    """``--video`` value: digits only -> a camera index (OpenCV's own convention), else a file path
    (a file named ``0`` is ``./0``)."""
    text = text.strip()
    if not text:
        raise VideoError("an empty name: give a video file or a camera index such as 0")
    return int(text) if re.fullmatch(r"\d+", text) else text


@contextlib.contextmanager
def _native_stderr_to_debug_log():
    """OpenCV and FFmpeg print open failures from C (``[ WARN:0] ... can't open camera by index``, ``moov atom
    not found``) straight to file descriptor 2: hold them for the debug log so that the user reads one line."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace").strip()
            if text:
                log.debug("OpenCV: %s", " | ".join(text.splitlines()))


@dataclass
class FrameSource:
    """Frames as ``(name, BGR uint8 image or None when unreadable)``, read one at a time (never the whole
    video in memory). ``total``: the frame count when known (None for a camera); ``fps``: the source's frame
    rate (0 when unknown; a camera's nominal rate is not trusted, video_io.md §3); ``live``: a camera."""

    description: str
    total: int | None
    fps: float
    live: bool
    _frames: Iterator[tuple[str, np.ndarray | None]]
    _release: Callable[[], None] = field(default=lambda: None)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray | None]]:
        return self._frames

    def close(self) -> None:
        self._release()


def folder_source(files: Sequence[Path], description: str) -> FrameSource:
    """The image files in the given order; an unreadable one yields None."""

    def frames():
        for f in files:
            yield f.name, cv2.imread(str(f), cv2.IMREAD_COLOR)

    return FrameSource(description, len(files), 0.0, False, frames())


def open_video_source(video: int | str) -> FrameSource:
    """A video file (a path) or a camera (an int index) opened with ``cv2.VideoCapture``; VideoError when
    the file is missing or OpenCV cannot open it, or the camera cannot be opened (the message does not
    repeat the name)."""
    if isinstance(video, str) and not Path(video).is_file():
        raise VideoError("no such file")
    with _native_stderr_to_debug_log():
        cap = cv2.VideoCapture(video)
        opened = cap.isOpened()
    if not opened:
        cap.release()
        if isinstance(video, int):
            raise VideoError(f"camera {video} cannot be opened (no camera with this index here, or another "
                             "program holds it)")
        raise VideoError("OpenCV cannot open this file as a video")
    live = isinstance(video, int)
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    description = f"camera {video}" if live else str(video)

    def frames():
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield f"frame {index}", frame
            index += 1

    return FrameSource(description, None if live or count <= 0 else count,
                       0.0 if live or not fps > 0 else fps, live, frames(), cap.release)


# ---------------------------------------------------------------------------------------------------------
# Windows


def gui_backend() -> str:
    """The ``GUI:`` entry of OpenCV's build information: ``NONE`` in the headless wheels, else e.g. ``GTK3``,
    ``QT5``, ``WIN32UI``, ``COCOA`` (video_io.md §1); ``UNKNOWN`` when the entry is missing."""
    m = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return m.group(1) if m else "UNKNOWN"


def window_unavailable(environ=None, platform: str | None = None, backend: str | None = None) -> str | None:
    """None when an OpenCV window can be opened here, else why not (one line, video_io.md §1)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    backend = gui_backend() if backend is None else backend
    if backend.upper() == "NONE":
        return (f"this OpenCV {cv2.__version__} is a headless build without windows (replace "
                f"opencv-python-headless with opencv-python=={_wheel_version()} to get them)")
    if not platform.startswith(("win", "darwin", "cygwin")) \
            and not environ.get("DISPLAY") and not environ.get("WAYLAND_DISPLAY"):
        return "no display here (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    return None


def _wheel_version() -> str:
    from importlib import metadata

    for dist in ("opencv-python-headless", "opencv-contrib-python-headless"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return cv2.__version__


class LiveWindow:
    """One OpenCV window: :meth:`select_box` (drag a box, Space or Enter accepts, c cancels) and
    :meth:`show` (False once the user pressed q or Esc or closed the window)."""

    def __init__(self, title: str):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise VideoError(f"OpenCV cannot open a window: {str(exc).strip().splitlines()[-1]}") from None

    def select_box(self, image: np.ndarray) -> np.ndarray | None:
        """The box the user drew on ``image`` (float64 xywh), None when cancelled (an empty box)."""
        x, y, w, h = cv2.selectROI(self.title, image, showCrosshair=True, fromCenter=False)
        return None if w <= 0 or h <= 0 else np.array([x, y, w, h], dtype=np.float64)

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1  # closed with its button: stop

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


# ---------------------------------------------------------------------------------------------------------
# Rendering


def draw_box(image: np.ndarray, box_xywh, index: int, score: float | None) -> np.ndarray:
    """A copy of ``image`` with the box (green), the frame index and the score drawn in."""
    out = image.copy()
    x, y, w, h = (float(v) for v in box_xywh)
    cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))),
                  (0, 255, 0), 2)
    label = f"#{index}" + ("" if score is None else f"  score {score:.3f}")
    cv2.putText(out, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class Mp4Writer:
    """Frames into ``path`` with OpenCV's FFmpeg writer and the ``mp4v`` codec, the one MP4 codec the
    opencv-python wheels can write (video_io.md §2). Every frame takes the size of the first (resized).

    ``fps`` None: the rate is measured from the arrival times of the first :data:`MEASURE_FRAMES` frames
    (a camera, whose nominal rate is not what the tracking loop receives), which are held until then.
    The file plays only after :meth:`close` (the mp4 index is written last, video_io.md §2)."""

    def __init__(self, path: str, fps: float | None, clock: Callable[[], float] = time.monotonic):
        self.path, self.fps, self.clock = path, fps, clock
        self._writer = None
        self._size: tuple[int, int] | None = None  # (w, h)
        self._held: list[np.ndarray] = []
        self._times: list[float] = []
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        if self._size is None:
            self._size = (image.shape[1], image.shape[0])
        elif (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size)
        if self._writer is None:
            if self.fps is None:  # measuring: hold the frame and its arrival time
                self._held.append(image)
                self._times.append(self.clock())
                if len(self._held) == MEASURE_FRAMES:
                    self._open(self.measured_fps())
                    self._flush_held()
                return
            self._open(self.fps)
        self._put(image)

    def _flush_held(self) -> None:
        for held in self._held:
            self._put(held)
        self._held.clear()

    def measured_fps(self) -> float:
        """Frames per second over the held frames; :data:`FALLBACK_FPS` with fewer than two or no time."""
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return FALLBACK_FPS
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    def check(self) -> None:
        """VideoError now when OpenCV cannot write ``path`` (a tiny trial file, removed again)."""
        fps, size = self.fps, self._size
        self._size = (16, 16)
        try:
            self._open(FALLBACK_FPS)
            self._writer.release()
            self._writer = None
            Path(self.path).unlink(missing_ok=True)
        finally:
            self.fps, self._size = fps, size

    def _open(self, fps: float) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fps = writable_fps(fps)
        with _native_stderr_to_debug_log():
            writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), fps, self._size)
        if not writer.isOpened():
            raise VideoError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self._writer, self.fps = writer, fps

    def _put(self, image: np.ndarray) -> None:
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        """Write what is held (at the rate measured so far) and finish the file; safe to call twice."""
        if self._writer is None and self._held:
            self._open(self.measured_fps())
            self._flush_held()
        if self._writer is not None:
            self._writer.release()
            self._writer = None
