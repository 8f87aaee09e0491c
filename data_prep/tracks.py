"""The one form every dataset reader yields: a :class:`Track`.

A track is one object followed through one video (or a single-frame "video" for COCO / ImageNet DET).
Readers turn each dataset's own layout (formats.md) into tracks; everything downstream (crops, pair
sampling, the Ray preparation job) only sees tracks.

Coordinates are 0-based pixels of the source image; boxes are ``x1, y1, x2, y2`` floats
(``boxes_xyxy``), converted from each dataset's own convention by its reader (e.g. LaSOT's 1-based
``x,y,w,h`` becomes ``x-1, y-1, x-1+w, y-1+h``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DATASETS = ("got10k", "lasot", "vid", "det", "coco", "ytbb")


@dataclass(frozen=True)
class FrameRef:
    """Where one annotated frame's pixels come from.

    Either ``path`` (an image file) or ``video`` + ``timestamp_ms`` (decode the frame nearest that time,
    YouTube-BB videos). ``frame_id`` is the dataset's own frame identifier (file stem, frame index or
    timestamp) used in record ids.
    """

    frame_id: str
    path: str | None = None
    video: str | None = None
    timestamp_ms: int | None = None


@dataclass
class Track:
    """One object in one video.

    Attributes:
        dataset: one of :data:`DATASETS`.
        video: the video's id, unique within the dataset (a relative path such as
            ``train/GOT-10k_Train_000001`` or ``ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000``).
        track_id: the object's id within the video (``"0"`` when a video has one object).
        frames: the annotated frames, in time order.
        boxes_xyxy: ``(N, 4)`` float64, 0-based pixel corners; meaningless where ``present`` is False.
        present: ``(N,)`` bool, from the dataset's own flags (absence.label, full_occlusion / out_of_view,
            YT-BB ``absent``), never from box values.
        image_size: ``(width, height)`` when the annotation states it, else None.
        meta: free-form extras (class name, ...).
    """

    dataset: str
    video: str
    track_id: str
    frames: list[FrameRef]
    boxes_xyxy: np.ndarray
    present: np.ndarray
    image_size: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        self.present = np.asarray(self.present, dtype=bool).reshape(-1)
        if not (len(self.frames) == len(self.boxes_xyxy) == len(self.present)):
            raise ValueError(
                f"{self.dataset}:{self.video}:{self.track_id}: {len(self.frames)} frames, "
                f"{len(self.boxes_xyxy)} boxes, {len(self.present)} presence flags"
            )

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def key(self) -> str:
        """A stable id ``dataset/video/track_id``."""
        return f"{self.dataset}/{self.video}/{self.track_id}"


@dataclass
class Rejection:
    """An input item a reader or a job refused, with the reason (counted and written to ``rejects/``)."""

    dataset: str
    reason: str
    source: str
    detail: str = ""


_NO_TIMESTAMP = np.iinfo(np.int64).min  # TrackTable.timestamp_ms where a frame has none


def _concat_strings(chunks: list):
    """One Arrow string array from chunks; ``large_string`` only when the text passes 2 GiB (int32 offsets)."""
    import pyarrow as pa

    try:
        return pa.concat_arrays(chunks)
    except (pa.ArrowInvalid, OverflowError):
        return pa.concat_arrays([c.cast(pa.large_string()) for c in chunks])


class TrackTable:
    """One dataset's tracks as flat arrays: what planning and shard packing need, ~10x smaller than
    :class:`Track` objects (issue 4: the driver's memory must stay bounded for YouTube-BB / COCO).

    A :class:`Track` costs ~350 bytes per frame in Python objects (a :class:`FrameRef` with its own dict and
    strings) and ~1.5 kB of fixed overhead; here a frame is ~65 bytes (GOT-10k-like paths): its id and file
    name in Arrow string arrays, its folder / video file as an index into a de-duplicated list, box and flag
    in numpy arrays.
    ``Track.meta`` is not kept (nothing downstream of the readers uses it).

    Attributes:
        dataset: one of :data:`DATASETS`.
        num_tracks ``T``, num_frames ``F``.
        video, track_id: ``(T,)`` Arrow string arrays.
        frame_start: ``(T + 1,)`` int64; track ``t`` owns flat frames ``frame_start[t]:frame_start[t + 1]``.
        image_size: ``(T, 2)`` int32 ``(width, height)``, ``-1`` where unknown.
        frame_id, path_name: ``(F,)`` Arrow strings; a frame's path is ``dirs[path_dir] + path_name``.
        path_dir, source: ``(F,)`` int32 indices into ``dirs`` / ``sources`` (the video file of a frame given by
            video + timestamp), ``-1`` for none; ``source`` is None when no frame has a video file.
        timestamp_ms: ``(F,)`` int64, ``_NO_TIMESTAMP`` for none; None when no frame has one.
        boxes_xyxy: ``(F, 4)`` float64 source pixels; present: ``(F,)`` bool.
    """

    def __init__(self, dataset: str, video, track_id, frame_start: np.ndarray, image_size: np.ndarray,
                 frame_id, path_dir: np.ndarray, path_name, dirs: list[str], source: np.ndarray | None,
                 sources: list[str], timestamp_ms: np.ndarray | None, boxes_xyxy: np.ndarray,
                 present: np.ndarray) -> None:
        self.dataset = dataset
        self.video, self.track_id = video, track_id
        self.frame_start, self.image_size = frame_start, image_size
        self.frame_id, self.path_dir, self.path_name, self.dirs = frame_id, path_dir, path_name, dirs
        self.source, self.sources, self.timestamp_ms = source, sources, timestamp_ms
        self.boxes_xyxy, self.present = boxes_xyxy, present

    # ---------------------------------------------------------------- building

    @classmethod
    def from_tracks(cls, dataset: str, tracks, chunk_frames: int = 1 << 16) -> TrackTable:
        """Consume ``tracks`` (any iterable, e.g. a reader's generator) one at a time into a table.

        Python lists are flushed to Arrow / numpy every ``chunk_frames`` frames, so building holds at most
        one chunk of Python objects beside the compact arrays. Raises ValueError for a track of another dataset.
        """
        import pyarrow as pa

        str_chunks: dict[str, list] = {"video": [], "track_id": [], "frame_id": [], "path_name": []}
        num_chunks: dict[str, list] = {k: [] for k in ("lengths", "image_size", "path_dir", "source",
                                                          "timestamp_ms", "boxes", "present")}
        dir_index: dict[str, int] = {}
        source_index: dict[str, int] = {}
        cur = {k: [] for k in ("video", "track_id", "frame_id", "path_name", "lengths", "image_size",
                                "path_dir", "source", "timestamp_ms", "boxes", "present")}

        def flush() -> None:
            for k in str_chunks:
                str_chunks[k].append(pa.array(cur[k], type=pa.string()))
            num_chunks["lengths"].append(np.asarray(cur["lengths"], np.int64))
            num_chunks["image_size"].append(np.asarray(cur["image_size"], np.int32).reshape(-1, 2))
            num_chunks["path_dir"].append(np.asarray(cur["path_dir"], np.int32))
            num_chunks["source"].append(np.asarray(cur["source"], np.int32))
            num_chunks["timestamp_ms"].append(np.asarray(cur["timestamp_ms"], np.int64))
            if cur["boxes"]:  # one array per chunk instead of two per track
                num_chunks["boxes"].append(np.concatenate(cur["boxes"]).reshape(-1, 4))
                num_chunks["present"].append(np.concatenate(cur["present"]))
            for v in cur.values():
                v.clear()

        pending = 0
        for tr in tracks:
            if tr.dataset != dataset:
                raise ValueError(f"track {tr.key} is not in dataset {dataset!r}")
            cur["video"].append(tr.video)
            cur["track_id"].append(tr.track_id)
            cur["lengths"].append(len(tr.frames))
            cur["image_size"].append(tuple(tr.image_size) if tr.image_size is not None else (-1, -1))
            for ref in tr.frames:
                cur["frame_id"].append(ref.frame_id)
                if ref.path is None:
                    cur["path_dir"].append(-1)
                    cur["path_name"].append("")
                else:
                    cut = ref.path.rfind("/") + 1  # dirs keep their trailing "/": dirs[d] + name == path exactly
                    head = ref.path[:cut]
                    d = dir_index.get(head)
                    if d is None:
                        d = dir_index[head] = len(dir_index)
                    cur["path_dir"].append(d)
                    cur["path_name"].append(ref.path[cut:])
                if ref.video is None:
                    cur["source"].append(-1)
                else:
                    s = source_index.get(ref.video)
                    if s is None:
                        s = source_index[ref.video] = len(source_index)
                    cur["source"].append(s)
                cur["timestamp_ms"].append(_NO_TIMESTAMP if ref.timestamp_ms is None else int(ref.timestamp_ms))
            cur["boxes"].append(np.asarray(tr.boxes_xyxy, np.float64).reshape(-1, 4))
            cur["present"].append(np.asarray(tr.present, bool).reshape(-1))
            pending += len(tr.frames) + 1
            if pending >= chunk_frames:
                flush()
                pending = 0
        flush()

        # one column at a time, dropping its chunks as soon as it is joined: the peak is the table plus one
        # column's chunks, not twice the table
        def joined(key: str, empty: np.ndarray) -> np.ndarray:
            parts = num_chunks.pop(key)
            return np.concatenate(parts) if parts else empty

        def joined_strings(key: str):
            return _concat_strings(str_chunks.pop(key))

        lengths = joined("lengths", np.zeros(0, np.int64))
        source = joined("source", np.zeros(0, np.int32))
        timestamp_ms = joined("timestamp_ms", np.zeros(0, np.int64))
        return cls(
            dataset, joined_strings("video"), joined_strings("track_id"),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            joined("image_size", np.zeros((0, 2), np.int32)).reshape(-1, 2),
            joined_strings("frame_id"), joined("path_dir", np.zeros(0, np.int32)), joined_strings("path_name"),
            list(dir_index), source if source_index else None, list(source_index),
            None if (timestamp_ms == _NO_TIMESTAMP).all() else timestamp_ms,
            joined("boxes", np.zeros((0, 4))), joined("present", np.zeros(0, bool)),
        )

    def take(self, tracks: np.ndarray) -> TrackTable:
        """A table of the tracks ``tracks`` (int indices, in that order) with their frames."""
        import pyarrow as pa

        tracks = np.asarray(tracks, dtype=np.int64)
        if len(tracks) == self.num_tracks and (tracks == np.arange(self.num_tracks)).all():
            return self  # all of them, in order: no copy (the table is never modified)
        lengths = self.frame_start[tracks + 1] - self.frame_start[tracks]
        start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # flat frame indices of the kept tracks, in order: each track's range start..start+len
        frames = np.repeat(self.frame_start[tracks] - start[:-1], lengths) + np.arange(start[-1], dtype=np.int64)
        idx = pa.array(tracks)
        fidx = pa.array(frames)
        return TrackTable(
            self.dataset, self.video.take(idx), self.track_id.take(idx), start, self.image_size[tracks],
            self.frame_id.take(fidx), self.path_dir[frames], self.path_name.take(fidx), self.dirs,
            None if self.source is None else self.source[frames], self.sources,
            None if self.timestamp_ms is None else self.timestamp_ms[frames], self.boxes_xyxy[frames],
            self.present[frames])

    # ---------------------------------------------------------------- reading

    @property
    def num_tracks(self) -> int:
        return len(self.frame_start) - 1

    @property
    def num_frames(self) -> int:
        return int(self.frame_start[-1])

    def __len__(self) -> int:
        return self.num_tracks

    def lengths(self) -> np.ndarray:
        """``(T,)`` int64 frames per track."""
        return np.diff(self.frame_start)

    def frame_refs(self, frames: np.ndarray) -> list[FrameRef]:
        """:class:`FrameRef` s of flat frame indices ``frames`` (one Arrow gather per column)."""
        import pyarrow as pa

        frames = np.asarray(frames, dtype=np.int64)
        idx = pa.array(frames)
        ids = self.frame_id.take(idx).to_pylist()
        names = self.path_name.take(idx).to_pylist()
        dirs = self.path_dir[frames].tolist()
        sources = [-1] * len(frames) if self.source is None else self.source[frames].tolist()
        stamps = [_NO_TIMESTAMP] * len(frames) if self.timestamp_ms is None else self.timestamp_ms[frames].tolist()
        return [FrameRef(fid, None if d < 0 else self.dirs[d] + name, None if s < 0 else self.sources[s],
                         None if ts == _NO_TIMESTAMP else ts)
                for fid, name, d, s, ts in zip(ids, names, dirs, sources, stamps, strict=True)]

    def strings(self, column: str, tracks: np.ndarray) -> list[str]:
        """``video`` or ``track_id`` of tracks ``tracks`` as Python strings."""
        import pyarrow as pa

        return getattr(self, column).take(pa.array(np.asarray(tracks, dtype=np.int64))).to_pylist()

    def track(self, t: int) -> Track:
        """Track ``t`` as a :class:`Track` (``meta`` empty)."""
        a, b = int(self.frame_start[t]), int(self.frame_start[t + 1])
        w, h = (int(v) for v in self.image_size[t])
        return Track(self.dataset, self.video[t].as_py(), self.track_id[t].as_py(),
                     self.frame_refs(np.arange(a, b)), self.boxes_xyxy[a:b].copy(), self.present[a:b].copy(),
                     None if w < 0 else (w, h))

    def __getitem__(self, t: int) -> Track:
        if not -self.num_tracks <= int(t) < self.num_tracks:
            raise IndexError(f"track {t} out of range ({self.num_tracks} tracks)")
        return self.track(int(t) % self.num_tracks)

    def __iter__(self):
        for t in range(self.num_tracks):
            yield self.track(t)

    def nbytes(self) -> int:
        """Bytes held by the arrays (Arrow buffers + numpy), not counting the de-duplicated folder lists."""
        arrow = sum(a.nbytes for a in (self.video, self.track_id, self.frame_id, self.path_name))
        arrays = (self.frame_start, self.image_size, self.path_dir, self.source, self.timestamp_ms,
                  self.boxes_xyxy, self.present)
        return int(arrow + sum(a.nbytes for a in arrays if a is not None))
