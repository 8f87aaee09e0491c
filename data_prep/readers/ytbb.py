"""YouTube-BoundingBoxes reader (formats.md §1.6).

One track per ``(youtube_id, class_id, object_id)``, streamed from the CSV one video's rows at a time, with
frames from extracted JPEGs or from the downloaded videos (``media``); no frame is decoded. A missing video
is normal for YT-BB: each of its tracks is one ``missing_video`` rejection. The root layout, the CSV
columns, the media modes and the streaming rule: :func:`read_tracks`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.readers import rejections as R
from data_prep.readers.image_header import image_size as header_image_size
from data_prep.tracks import FrameRef, Rejection, Track
from ocean.datapath import AnyPath, LocalCopy, as_path, listdir, open_text

DATASET = "ytbb"
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
_N_FIELDS = 10  # formats.md §1.6: the ten CSV columns
# formats.md §1.6 names present / absent; the real validation CSV also has "uncertain" rows (with -1 boxes,
# real_samples/youtube_bb_subset lines 80, 105, 302-305): read them as not present.
_PRESENCE = ("present", "absent", "uncertain")


class _Row:
    __slots__ = ("yid", "ts", "class_id", "class_name", "object_id", "present", "coords", "src")

    def __init__(self, fields: list[str], src: str) -> None:
        self.yid = fields[0].strip()
        self.ts = int(fields[1])
        self.class_id = int(fields[2])
        self.class_name = fields[3].strip()
        self.object_id = int(fields[4])
        presence = fields[5].strip()
        if presence not in _PRESENCE or not self.yid:
            raise ValueError(f"object_presence {presence!r}")
        self.present = presence == "present"
        self.coords = tuple(float(v) for v in fields[6:10])  # xmin, xmax, ymin, ymax
        self.src = src


class _FrameFinder:
    """Resolves ``(youtube_id, timestamp_ms)`` to an extracted frame file (see :func:`read_tracks`)."""

    def __init__(self, frames_dir: AnyPath, yid: str) -> None:
        self.frames_dir = frames_dir
        self.yid = yid
        sub = frames_dir / yid
        self.sub_names = set(listdir(sub)) if sub.is_dir() else None

    def find(self, ts: int) -> AnyPath | None:
        if self.sub_names is not None:
            for stem in (str(ts), f"{self.yid}_{ts}"):
                for ext in FRAME_EXTENSIONS:
                    if stem + ext in self.sub_names:
                        return self.frames_dir / self.yid / (stem + ext)
            return None
        for ext in FRAME_EXTENSIONS:
            p = self.frames_dir / f"{self.yid}_{ts}{ext}"
            if p.is_file():
                return p
        return None


def _video_size(path: AnyPath) -> tuple[int, int] | None:
    """The container's frame size (OpenCV reads the header only; no frame is decoded). A video on S3 is
    fetched to a temporary local file first (OpenCV reads files) and deleted after."""
    import cv2

    try:
        copy = LocalCopy(path)
    except FileNotFoundError:
        return None
    with copy as local:
        cap = cv2.VideoCapture(local)
        try:
            if not cap.isOpened():
                return None
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            return (w, h) if w > 0 and h > 0 else None
        finally:
            cap.release()


def _rows(csv_path: AnyPath, on_reject: R.OnReject) -> Iterator[_Row]:
    with open_text(csv_path, errors="replace", newline="") as f:
        for line_no, fields in enumerate(csv.reader(f), start=1):
            src = f"{csv_path}:{line_no}"
            if not fields or all(not x.strip() for x in fields):
                continue
            if line_no == 1 and len(fields) > 1 and fields[1].strip() == "timestamp_ms":
                continue  # a header line added by a re-save (real_samples/youtube_bb_subset)
            try:
                if len(fields) != _N_FIELDS:
                    raise ValueError(f"{len(fields)} fields")
                yield _Row(fields, src)
            except ValueError as err:
                on_reject(Rejection(DATASET, R.MALFORMED_LINE, src, str(err)[:120]))


def _video_groups(rows: Iterator[_Row], on_reject: R.OnReject) -> Iterator[tuple[str, list[_Row]]]:
    done: set[str] = set()
    current: list[_Row] = []
    for row in rows:
        if current and row.yid != current[0].yid:
            done.add(current[0].yid)
            yield current[0].yid, current
            current = []
        if row.yid in done:
            on_reject(Rejection(DATASET, R.NON_CONTIGUOUS_VIDEO, row.src, row.yid))
            continue
        current.append(row)
    if current:
        yield current[0].yid, current


def read_tracks(
    root: str | Path,
    *,
    split: str = "train",
    csv_path: str | Path | None = None,
    media: str = "auto",
    videos_dir: str | Path | None = None,
    frames_dir: str | Path | None = None,
    on_reject: R.OnReject = R.ignore_rejection,
) -> Iterator[Track]:
    """Yield YT-BB tracks lazily, one video's rows at a time (no frame is decoded).

    Root layout::

        ROOT/
          yt_bb_detection_train.csv            # no header (a header line, as in re-saved copies, is skipped)
          yt_bb_detection_validation.csv
          videos/<youtube_id>.mp4              # downloaded videos (.mp4, .webm, .mkv, .avi also accepted)
          frames/<youtube_id>/<timestamp_ms>.jpg   # and/or extracted frames, one per annotated timestamp

    CSV columns: ``youtube_id, timestamp_ms, class_id, class_name, object_id, object_presence, xmin, xmax,
    ymin, ymax`` with coordinates as fractions of the frame size (note the x, x, y, y order); absent rows
    carry -1; the real files also hold ``uncertain`` rows (-1 too), read as not present. A track is
    ``(youtube_id, class_id, object_id)``: ``video = youtube_id``, ``track_id = "<class_id>_<object_id>"``,
    frame id = ``str(timestamp_ms)``.

    Media, chosen by ``media``: ``"frames"`` reads the extracted-frames folder, where a frame may be named
    ``<frames_dir>/<id>/<ts>.jpg`` (the convention this project writes), ``<frames_dir>/<id>/<id>_<ts>.jpg``
    or ``<frames_dir>/<id>_<ts>.jpg`` (``.jpeg`` / ``.png`` also accepted), and frame sizes come from the JPEG
    header of the video's first frame; ``"videos"`` gives :class:`FrameRef` s with ``video`` +
    ``timestamp_ms`` and the size from the container (OpenCV reads the header only); ``"auto"`` (default)
    takes frames when the frames folder exists, else videos. A video that is not there is normal for YT-BB
    (formats.md §1.6): each of its tracks is one ``missing_video`` rejection. Absent rows keep a zero box.

    Streaming: the CSV is read row by row and grouped by consecutive ``youtube_id`` (the released files list
    each video's rows together); rows of a video that reappears after other videos are rejected as
    ``non_contiguous_video`` rather than held in memory.

    Args:
        root: the YT-BB folder (or the CSV file itself); a path or ``s3://`` URI (a video on S3 is fetched
            to a temporary file to read its frame size, then deleted).
        split: ``"train"`` or ``"validation"``: selects ``yt_bb_detection_<split>.csv``.
        csv_path: explicit CSV (overrides ``split``).
        media: ``"auto"``, ``"frames"`` or ``"videos"`` (above).
        videos_dir / frames_dir: default ``ROOT/videos`` and ``ROOT/frames``.
        on_reject: called with each :class:`Rejection`.
    """
    root = as_path(root)
    base = root.parent if root.is_file() else root
    csv_file = as_path(csv_path) if csv_path else (root if root.is_file() else root / f"yt_bb_detection_{split}.csv")
    if not csv_file.is_file():
        raise FileNotFoundError(f"YT-BB CSV not found: {csv_file}")
    vdir = as_path(videos_dir) if videos_dir else base / "videos"
    fdir = as_path(frames_dir) if frames_dir else base / "frames"
    if media == "auto":
        media = "frames" if fdir.is_dir() else "videos"
    if media not in ("frames", "videos"):
        raise ValueError(f"media must be 'auto', 'frames' or 'videos', not {media!r}")
    if not (fdir if media == "frames" else vdir).is_dir():
        raise FileNotFoundError(
            f"YT-BB {media} folder not found: {fdir if media == 'frames' else vdir} "
            "(download videos into ROOT/videos or extract frames into ROOT/frames/<youtube_id>/<ms>.jpg)"
        )
    for yid, rows in _video_groups(_rows(csv_file, on_reject), on_reject):
        yield from _video_tracks(yid, rows, media, vdir, fdir, on_reject)


def _video_tracks(
    yid: str, rows: list[_Row], media: str, vdir: AnyPath, fdir: AnyPath, on_reject: R.OnReject
) -> Iterator[Track]:
    reject = lambda reason, src, detail="": on_reject(Rejection(DATASET, reason, str(src), detail))  # noqa: E731
    per_track: dict[tuple[int, int], list[_Row]] = {}
    for row in rows:
        per_track.setdefault((row.class_id, row.object_id), []).append(row)

    video_path: AnyPath | None = None
    finder: _FrameFinder | None = None
    size: tuple[int, int] | None = None
    media_problem: str | None = None
    if media == "videos":
        video_path = next((vdir / (yid + e) for e in VIDEO_EXTENSIONS if (vdir / (yid + e)).is_file()), None)
        if video_path is None:
            media_problem = R.MISSING_VIDEO
        else:
            size = _video_size(video_path)
            media_problem = None if size else R.UNREADABLE_VIDEO
    else:
        finder = _FrameFinder(fdir, yid)
        found = [p for p in (finder.find(r.ts) for r in rows) if p is not None]
        if not found:
            media_problem = R.MISSING_VIDEO
        else:
            size = next((s for s in (header_image_size(p) for p in found[:3]) if s), None)
            media_problem = None if size else R.UNKNOWN_IMAGE_SIZE
    if media_problem:
        where = video_path or (vdir / f"{yid}.mp4" if media == "videos" else fdir / yid)
        for (class_id, object_id), track_rows in sorted(per_track.items()):
            reject(media_problem, where, f"track {class_id}_{object_id}, {len(track_rows)} rows")
        return
    assert size is not None
    w, h = size
    for (class_id, object_id), track_rows in sorted(per_track.items()):
        track_rows.sort(key=lambda r: r.ts)
        frames: list[FrameRef] = []
        boxes: list[tuple[float, float, float, float]] = []
        present: list[bool] = []
        last_ts: int | None = None
        for row in track_rows:
            if row.ts == last_ts:
                reject(R.DUPLICATE_TIMESTAMP, row.src, f"{yid} {row.ts}")
                continue
            xmin, xmax, ymin, ymax = row.coords  # formats.md §1.6: x, x, y, y order, fractions of the frame
            if row.present:
                if not all(math.isfinite(v) for v in row.coords):
                    reject(R.NON_FINITE_BOX, row.src, str(row.coords))
                    continue
                problem = R.box_problem((xmin, ymin, xmax, ymax), (1, 1))
                if problem:
                    reject(problem, row.src, str(row.coords))
                    continue
                box = (xmin * w, ymin * h, xmax * w, ymax * h)
            else:
                box = (0.0, 0.0, 0.0, 0.0)  # absent / uncertain: -1 sentinels carry no box
            if finder is not None:
                path = finder.find(row.ts)
                if path is None:
                    reject(R.MISSING_IMAGE, fdir / yid / f"{row.ts}.jpg", "no extracted frame")
                    continue
                frame = FrameRef(frame_id=str(row.ts), path=str(path))
            else:
                frame = FrameRef(frame_id=str(row.ts), video=str(video_path), timestamp_ms=row.ts)
            last_ts = row.ts
            frames.append(frame)
            boxes.append(box)
            present.append(row.present)
        if frames:
            yield Track(
                DATASET,
                yid,
                f"{class_id}_{object_id}",
                frames,
                np.array(boxes),
                np.array(present),
                size,
                {"class_id": class_id, "class_name": track_rows[0].class_name, "object_id": object_id},
            )
