"""`ocean track --video`: a video file read frame by frame gives the same boxes as its frames in a folder, the
rendered mp4, stopping (q in the window, Ctrl-C) keeps the results and a playable mp4, camera indexes, the
window checks, and every bad input as one line with exit status 2 (ocean.video, jobs.track).

No display and no camera exist on the test machines, and the project's OpenCV is headless: real windows are
replaced by a window object that presses q or draws a box (the job's loop is real); a camera is tested up
to its clear error, and its frame-rate measurement through ocean.video.Mp4Writer with a given clock."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from jobs.cli import main
from ocean import video as video_mod

N_FRAMES, SIZE, FPS = 6, (160, 120), 25.0  # (w, h)


def _square_frames(n=N_FRAMES, seed=0):
    """A textured bright square moving right and down over a grey textured background; its boxes (xywh)."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    background = rng.integers(40, 110, size=(h, w, 3), dtype=np.uint8)
    frames, boxes = [], []
    for f in range(n):
        x, y, side = 20 + 6 * f, 25 + 3 * f, 30
        img = background.copy()
        img[y:y + side, x:x + side] = 190 + rng.integers(0, 60, size=(side, side, 3), dtype=np.uint8)
        frames.append(img)
        boxes.append((x, y, side, side))
    return frames, boxes


def _write_video(path: Path, frames, fps=FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    assert writer.isOpened()
    for img in frames:
        writer.write(img)
    writer.release()
    return path


def _decode(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    fps, out = cap.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out, fps


def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from ocean.checkpoint import save_checkpoint
    from ocean.config import smoke
    from ocean.model import build_model

    torch.manual_seed(0)
    cfg = smoke()
    path = tmp_path_factory.mktemp("ckpt") / "smoke.pt"
    save_checkpoint(str(path), build_model(cfg.model), cfg)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, tuple]:
    frames, boxes = _square_frames()
    return _write_video(tmp_path_factory.mktemp("clip") / "square.mp4", frames), boxes[0]


def _track(checkpoint, *extra: str) -> int:
    return main(["track", "--checkpoint", str(checkpoint), "--no-progress", *extra])


@pytest.fixture(scope="module")
def file_run(checkpoint, clip, tmp_path_factory) -> tuple[list[str], Path, str]:
    """`ocean track --video` on the whole clip: its result lines, its render, its stdout."""
    import contextlib
    import io

    video, box = clip
    folder = tmp_path_factory.mktemp("file_run")
    out, render = folder / "video.txt", folder / "out" / "render.mp4"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert _track(checkpoint, "--video", str(video), "--init", ",".join(map(str, box)), "--out", str(out),
                      "--render", str(render)) == 0
    return _read_lines(out), render, stdout.getvalue()


def test_video_equals_its_frames_in_a_folder_and_renders(checkpoint, clip, file_run, tmp_path):
    video, (x, y, w, h) = clip
    init = f"{x},{y},{w},{h}"
    lines, render, stdout = file_run
    assert f"frames {N_FRAMES} " in stdout
    # the same decoded frames as image files: the same tracker and checkpoint give the same boxes
    decoded, _ = _decode(video)
    assert len(decoded) == N_FRAMES
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(decoded):
        assert cv2.imwrite(str(folder / f"{i + 1}.png"), img)  # png: lossless, the same pixels
    out_f, render_f = tmp_path / "folder.txt", tmp_path / "folder.mp4"
    assert _track(checkpoint, "--frames", str(folder), "--init", init, "--out", str(out_f),
                  "--render", str(render_f)) == 0
    assert len(lines) == N_FRAMES and lines == _read_lines(out_f)
    assert lines[0] == ",".join(f"{float(v):.4f}" for v in (x, y, w, h))
    # the rendered videos open, with one frame per input frame, the input's size and frame rate
    for path, fps in ((render, FPS), (render_f, video_mod.FALLBACK_FPS)):
        frames, got_fps = _decode(path)
        assert len(frames) == N_FRAMES and frames[0].shape[:2] == (SIZE[1], SIZE[0])
        assert got_fps == pytest.approx(fps)
    # the box is drawn in (green on the first frame's init box edge)
    first = _decode(render)[0][0].astype(int)
    assert first[y, x + w // 2, 1] > first[y, x + w // 2, 0] + 60


def test_bad_inputs_one_line_exit_2(checkpoint, clip, tmp_path, capfd, monkeypatch):
    video, (x, y, w, h) = clip
    (tmp_path / "garbage.mp4").write_bytes(b"not a video at all" * 10)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "o.txt"
    good = ["--video", str(video), "--out", str(out)]
    cases = [
        (["--video", str(tmp_path / "missing.mp4"), "--init", "1,2,3,4", "--out", str(out)], "no such file"),
        (["--video", str(tmp_path / "garbage.mp4"), "--init", "1,2,3,4", "--out", str(out)],
         "cannot open this file as a video"),
        (["--video", "99", "--init", "1,2,3,4", "--out", str(out)], "camera 99 cannot be opened"),
        (["--video", " ", "--init", "1,2,3,4", "--out", str(out)], "camera index"),
        ([*good, "--init", "500,10,30,30"], "outside the 160x120 first frame"),
        ([*good, "--init", "1,2,30,30", "--show"], "--show: "),
        (good, "--init x,y,w,h is needed, as no window can be opened"),
        ([*good, "--no-show"], "--no-show needs --init"),
        ([*good, "--init", "1,2,30,30", "--render", str(tmp_path / "r.mp4"), "--render-fps", "0"],
         "--render-fps 0.0: expected a frame rate > 0"),
        ([*good, "--init", "1,2,30,30", "--render", "s3://bucket/r.mp4"], "a local file"),
    ]
    if Path("/dev/video99").exists():
        cases = [c for c in cases if "camera 99" not in c[1]]
    for extra, message in cases:
        assert _track(checkpoint, *extra) == 2, extra
        captured = capfd.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, captured.err)  # OpenCV's own warnings held back
        assert err[0].startswith("ocean track: error: ")
    assert not out.exists()


def test_window_checks():
    unavailable = video_mod.window_unavailable
    assert "headless" in unavailable({"DISPLAY": ":0"}, "linux", "NONE")
    assert "opencv-python==" in unavailable({"DISPLAY": ":0"}, "linux", "NONE")
    assert "no display" in unavailable({}, "linux", "GTK3")
    assert unavailable({"DISPLAY": ":0"}, "linux", "GTK3") is None
    assert unavailable({"WAYLAND_DISPLAY": "wayland-0"}, "linux", "QT5") is None
    assert unavailable({}, "win32", "WIN32UI") is None and unavailable({}, "darwin", "COCOA") is None
    # this machine's OpenCV: the pinned wheel is headless, and the build information says so
    assert video_mod.gui_backend() != "UNKNOWN"
    if video_mod.gui_backend() == "NONE":
        with pytest.raises(video_mod.VideoError, match="cannot open a window"):
            video_mod.LiveWindow("test")


def test_camera_index_parsing_and_error():
    parse = video_mod.parse_video_arg
    assert parse("0") == 0 and parse(" 12 ") == 12
    assert parse("./0") == "./0" and parse("clip.mp4") == "clip.mp4" and parse("-1") == "-1"
    with pytest.raises(video_mod.VideoError):
        parse("")
    if not Path("/dev/video99").exists():
        with pytest.raises(video_mod.VideoError, match="camera 99 cannot be opened"):
            video_mod.open_video_source(99)


def test_measured_frame_rate(tmp_path):
    """A camera's rate (no fps given) is measured from its frames' arrival; fewer frames than the measure
    window are written at the rate measured so far when the writer closes (q, Ctrl-C, end of stream)."""
    frames, _ = _square_frames(n=3)
    ticks = iter(np.arange(0, 100, 0.1))  # a frame every 0.1 s: 10 fps
    path = tmp_path / "cam.mp4"
    writer = video_mod.Mp4Writer(str(path), None, clock=lambda: float(next(ticks)))
    for i in range(video_mod.MEASURE_FRAMES + 5):
        writer.write(frames[i % 3])
        assert path.exists() == (i + 1 >= video_mod.MEASURE_FRAMES)  # held until measured
    writer.close()
    writer.close()  # twice is harmless
    decoded, fps = _decode(path)
    assert len(decoded) == video_mod.MEASURE_FRAMES + 5 and fps == pytest.approx(10.0)

    ticks = iter([0.0, 0.25, 0.5, 0.75])
    short = video_mod.Mp4Writer(str(tmp_path / "short.mp4"), None, clock=lambda: next(ticks))
    for img in frames:
        short.write(img)
    short.close()
    decoded, fps = _decode(tmp_path / "short.mp4")
    assert len(decoded) == 3 and fps == pytest.approx(4.0) and short.fps == pytest.approx(4.0)

    one = video_mod.Mp4Writer(str(tmp_path / "one.mp4"), None, clock=lambda: 0.0)
    one.write(cv2.resize(frames[0], (80, 60)))
    one.write(frames[1])  # another size: resized to the first
    one.close()
    decoded, fps = _decode(tmp_path / "one.mp4")
    assert len(decoded) == 2 and decoded[1].shape[:2] == (60, 80) and fps == video_mod.FALLBACK_FPS
    with pytest.raises(video_mod.VideoError, match="cannot write"):
        video_mod.Mp4Writer(str(tmp_path / "r.unknown_container"), None).check()


@pytest.mark.parametrize("rate", [173.4567, 70.123, 65.7, 0.004, 8000.25, 70000.0])
def test_any_measured_rate_can_be_written(tmp_path, rate):
    """A measured rate has every digit; mp4v refuses a time base whose denominator passes 65535 (OpenCV
    opened nothing at 173.4567 fps, and `ocean track` on a camera stopped with "cannot write" whenever
    the tracking loop ran faster than ~65 fps). The writer rounds the rate to one it can write."""
    frames, _ = _square_frames(n=3)
    ticks = iter(np.arange(4) / rate)
    path = tmp_path / "fast.mp4"
    writer = video_mod.Mp4Writer(str(path), None, clock=lambda: float(next(ticks)))
    for img in frames:
        writer.write(img)
    writer.close()
    decoded, fps = _decode(path)
    assert len(decoded) == 3
    assert writer.fps == pytest.approx(max(rate, 0.01), rel=1e-3) or rate > video_mod.MP4V_MAX_DENOMINATOR
    assert fps == pytest.approx(writer.fps, rel=1e-3)
    assert video_mod.writable_fps(173.4567) == 173.46 and video_mod.writable_fps(8000.25) == 8000.0
    assert video_mod.writable_fps(655.3) == 655.3 and video_mod.writable_fps(6000.25) == 6000.2


class _ScriptedWindow:
    """Stands in for ocean.video.LiveWindow (no display here): draws ``box`` when asked to select, and
    'presses q' when shown frame ``quit_at`` (0-based, counting shown frames)."""

    def __init__(self, box, quit_at):
        self.box, self.quit_at, self.shown, self.closed = box, quit_at, [], False

    def __call__(self, title):
        assert title.startswith("ocean track: ")
        return self

    def select_box(self, image):
        return None if self.box is None else np.array(self.box, dtype=np.float64)

    def show(self, image):
        self.shown.append(image)
        return len(self.shown) - 1 != self.quit_at

    def close(self):
        self.closed = True


def test_q_in_the_window_keeps_what_was_written(checkpoint, clip, file_run, tmp_path, monkeypatch, capsys):
    video, box = clip
    monkeypatch.setattr(video_mod, "window_unavailable", lambda: None)
    # no --init: the box is selected in the window; q while frame 2 is shown: frames 0-2 are kept
    window = _ScriptedWindow(box, quit_at=2)
    monkeypatch.setattr(video_mod, "LiveWindow", window)
    out, render = tmp_path / "q.txt", tmp_path / "q.mp4"
    assert _track(checkpoint, "--video", str(video), "--out", str(out), "--render", str(render)) == 0
    lines = _read_lines(out)
    assert lines == file_run[0][:3] and len(window.shown) == 3 and window.closed
    assert "stopped by q" in capsys.readouterr().out
    assert len(_decode(render)[0]) == 3
    # cancelling the selection: one line, exit 2, nothing written
    monkeypatch.setattr(video_mod, "LiveWindow", _ScriptedWindow(None, quit_at=-1))
    assert _track(checkpoint, "--video", str(video), "--out", str(tmp_path / "c.txt")) == 2
    assert "no target was selected" in capsys.readouterr().err
    assert not (tmp_path / "c.txt").exists()


def test_ctrl_c_keeps_results_and_a_playable_mp4(checkpoint, clip, file_run, tmp_path, monkeypatch, capsys):
    """A real SIGINT to this process after the second tracked frame: exit status 130, the frames tracked so
    far in the results, the same frames in an mp4 that opens."""
    from ocean.tracker import OceanTracker

    video, box = clip
    init = ",".join(map(str, box))
    original, calls = OceanTracker.track, []

    def track_then_interrupt(self, image):
        result = original(self, image)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Python's handler raises KeyboardInterrupt here
        return result

    monkeypatch.setattr(OceanTracker, "track", track_then_interrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        out, render = tmp_path / "c.txt", tmp_path / "c.mp4"
        assert _track(checkpoint, "--video", str(video), "--init", init, "--out", str(out),
                      "--render", str(render)) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    captured = capsys.readouterr()
    assert "stopped by SIGINT" in captured.out and "stopped by SIGINT" in captured.err
    lines = _read_lines(out)
    assert 1 < len(lines) < N_FRAMES and lines == file_run[0][:len(lines)]
    frames, fps = _decode(render)
    assert len(frames) == len(lines) and fps == pytest.approx(FPS)


def test_camera_like_source_runs_live(checkpoint, clip, file_run, tmp_path, monkeypatch, capsys, caplog):
    """`--video 0` through the job with the file's frames posing as camera 0 (no camera here): no frame
    count, the render's rate measured from the frames' arrival, the same boxes as the file."""
    import dataclasses

    video, box = clip
    init = ",".join(map(str, box))
    real_open, opened = video_mod.open_video_source, []

    def as_camera(index):
        assert index == 0  # "0" was read as a camera index
        opened.append(index)
        return dataclasses.replace(real_open(str(video)), description="camera 0", total=None, fps=0.0, live=True)

    monkeypatch.setattr(video_mod, "open_video_source", as_camera)
    out, render = tmp_path / "cam.txt", tmp_path / "cam.mp4"
    with caplog.at_level("INFO"):
        assert _track(checkpoint, "--video", "0", "--init", init, "--out", str(out), "--render", str(render)) == 0
    assert opened == [0] and _read_lines(out) == file_run[0]
    assert "camera 0: tracking until q" in caplog.text
    frames, fps = _decode(render)
    printed = re.search(r"\((\d+) frames at ([\d.]+) fps\)", capsys.readouterr().out)
    assert len(frames) == N_FRAMES == int(printed.group(1))
    assert fps == pytest.approx(float(printed.group(2)), rel=0.05, abs=0.06)  # the measured rate, written
