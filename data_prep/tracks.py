"""The one form every dataset reader yields, a :class:`Track`, and its compact form, a :class:`TrackTable`.

A track is one object followed through one video (or a single-frame "video" for COCO / ImageNet DET).
Readers turn each dataset's own layout (formats.md §1) into tracks; everything downstream (crops, pair
sampling, the Ray preparation job) only sees tracks. Coordinates are 0-based pixels of the source image;
boxes are ``x1, y1, x2, y2`` floats (``boxes_xyxy``), converted from each dataset's own convention by its
reader (e.g. LaSOT's 1-based ``x,y,w,h`` becomes ``x-1, y-1, x-1+w, y-1+h``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

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


# The per-frame columns of a TrackTable: numpy ones (dtype, shape of one row) and Arrow string ones.
_FRAME_ARRAYS: dict[str, tuple[type, tuple[int, ...]]] = {
    "boxes_xyxy": (np.float64, (4,)), "present": (np.bool_, ()), "path_dir": (np.int32, ()),
    "source": (np.int32, ()), "timestamp_ms": (np.int64, ()),
}
_FRAME_STRINGS = ("frame_id", "path_name")


def track_ranges(frame_start: np.ndarray, max_frames: int) -> Iterator[tuple[int, int]]:
    """Consecutive track ranges ``(a, b)`` covering ``0..T`` with at most ``max_frames`` frames each (a
    longer track gets a range of its own), from ``frame_start`` ``(T + 1,)`` as in :class:`TrackTable`."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    num_tracks = len(frame_start) - 1
    a = 0
    while a < num_tracks:
        b = int(np.searchsorted(frame_start, frame_start[a] + max_frames, side="right")) - 1
        b = min(max(b, a + 1), num_tracks)
        yield a, b
        a = b


def take_strings(column, index: np.ndarray):
    """``column[index]`` of an Arrow string Array or ChunkedArray as one Array, ``index`` int64 ``(N,)``.

    A ChunkedArray (a memory-mapped column) is gathered chunk by chunk, touching only the chunks hit:
    pyarrow's own ``ChunkedArray.take`` concatenates every chunk first, i.e. copies the whole column into
    anonymous memory.
    """
    import pyarrow as pa

    index = np.asarray(index, dtype=np.int64)
    if isinstance(column, pa.Array):
        return column.take(pa.array(index))
    bounds = np.concatenate([[0], np.cumsum([len(c) for c in column.chunks], dtype=np.int64)])
    chunk_of = np.searchsorted(bounds, index, side="right") - 1
    order = np.argsort(chunk_of, kind="stable")
    cuts = np.searchsorted(chunk_of[order], np.arange(len(bounds)))  # order[cuts[c]:cuts[c + 1]] hit chunk c
    pieces = [column.chunk(c).take(pa.array(index[order[cuts[c]:cuts[c + 1]]] - bounds[c]))
              for c in range(column.num_chunks) if cuts[c] < cuts[c + 1]]
    gathered = _concat_strings(pieces) if pieces else pa.array([], pa.string())
    if (order == np.arange(len(order))).all():
        return gathered  # the index was already in chunk order (e.g. sorted)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return gathered.take(pa.array(back))


class FrameColumns:
    """The per-frame columns of a table being built, appended chunk by chunk, held in RAM or spilled.

    Without ``folder`` the chunks stay in memory and :meth:`finish` concatenates them. With ``folder``, each
    chunk is appended to files there as soon as it arrives -- ``<name>.bin`` (raw numpy rows, native byte order)
    for boxes, presence, folder / video-file index and timestamp, and ``strings.arrow`` (an Arrow IPC file,
    one record batch per chunk) for frame ids and file names -- and :meth:`finish` memory-maps them:
    ``np.memmap`` arrays and Arrow ChunkedArrays over ``pa.memory_map``. Their pages are file-backed, so
    the kernel can drop them and reread them from the disk, instead of anonymous memory the driver holds.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.rows = 0
        self._parts: dict[str, list] = {}  # in RAM: column -> chunks
        self._files: dict[str, BinaryIO] = {}  # spilled: column -> its open .bin file
        self._strings_file = None  # spilled: strings.arrow
        self._strings = None  # spilled: its Arrow IPC writer

    def append(self, chunk: dict) -> None:
        """Add one chunk: ``{column: (n, ...) numpy array or Arrow string array}``, the same columns each time."""
        import pyarrow as pa

        n = len(next(iter(chunk.values())))
        if self.folder is None:
            for name, values in chunk.items():
                self._parts.setdefault(name, []).append(values)
        else:
            for name, values in chunk.items():
                if name in _FRAME_ARRAYS:
                    f = self._files.get(name)
                    if f is None:
                        f = self._files[name] = open(self.folder / f"{name}.bin", "wb")
                    f.write(np.ascontiguousarray(values, dtype=_FRAME_ARRAYS[name][0]).tobytes())
            names = [k for k in _FRAME_STRINGS if k in chunk]
            batch = pa.record_batch([chunk[k].cast(pa.string()) for k in names], names=names)
            if self._strings is None:
                self._strings_file = pa.OSFile(str(self.folder / "strings.arrow"), "wb")
                self._strings = pa.ipc.new_file(self._strings_file, batch.schema)
            self._strings.write_batch(batch)
        self.rows += n

    def finish(self, drop: set[str] | frozenset[str] = frozenset()) -> dict:
        """``{column: array}`` of every column appended but those in ``drop`` (discarded, their file deleted):
        numpy arrays (``np.memmap`` when spilled) and Arrow string arrays (ChunkedArrays when spilled).
        Chunks held in RAM are joined one column at a time, dropping each column's chunks as soon as it is
        joined (peak: the table plus one column's chunks)."""
        import pyarrow as pa

        out: dict = {}
        if self.folder is None:
            for name in list(self._parts):
                parts = self._parts.pop(name)
                if name in drop:
                    continue
                if name in _FRAME_ARRAYS:
                    out[name] = np.concatenate(parts)
                else:
                    out[name] = _concat_strings(parts)
            return out
        for name, f in self._files.items():
            f.close()
            dtype, row = _FRAME_ARRAYS[name]
            path = self.folder / f"{name}.bin"
            if name in drop:
                path.unlink()
                continue
            out[name] = (np.memmap(path, dtype=dtype, mode="r", shape=(self.rows, *row)) if self.rows
                         else np.zeros((0, *row), dtype))
        if self._strings is not None:
            self._strings.close()
            self._strings_file.close()
            table = pa.ipc.open_file(pa.memory_map(str(self.folder / "strings.arrow"))).read_all()
            for name in table.column_names:
                out[name] = table.column(name) if self.rows else pa.array([], pa.string())
        return out


class TrackTable:
    """One dataset's tracks as flat arrays: what planning and shard packing need, far smaller than
    :class:`Track` objects, so the driver's memory stays bounded for YouTube-BB / COCO.

    A :class:`Track` holds a :class:`FrameRef` per frame (a Python object with its own dict and strings);
    here a frame is its id and file name in Arrow string arrays, its folder / video file as an index into a
    de-duplicated list, box and flag in numpy arrays. ``Track.meta`` is not kept (nothing downstream of the
    readers uses it).

    **Spilled tables** (``from_tracks(..., spill_dir=...)``, ``take(..., spill_dir=...)``): the per-frame
    columns -- everything of size ``F`` -- live in files of a folder of their own under ``spill_dir``
    (:class:`FrameColumns`: raw numpy rows and one Arrow IPC file) and are memory-mapped, read-only; only
    the per-track columns (``T`` rows: video, track id, frame_start, image size -- the (video, track_id) sort
    keys and frame ranges planning needs) and the folder / video-file lists stay in anonymous memory, which
    then does not grow with annotated frames (BENCHMARKS.md, driver memory of listing and planning); mapped
    pages are file-backed, so the kernel drops them under pressure and rereads them when needed. Every
    reader below works on both forms (:func:`take_strings` gathers mapped strings chunk by chunk). A table never deletes its folder: whoever made ``spill_dir`` removes it.

    Attributes:
        dataset: one of :data:`DATASETS`.
        num_tracks ``T``, num_frames ``F``.
        video, track_id: ``(T,)`` Arrow string arrays.
        frame_start: ``(T + 1,)`` int64; track ``t`` owns flat frames ``frame_start[t]:frame_start[t + 1]``.
        image_size: ``(T, 2)`` int32 ``(width, height)``, ``-1`` where unknown.
        frame_id, path_name: ``(F,)`` Arrow strings (ChunkedArrays when spilled); a frame's path is
            ``dirs[path_dir] + path_name``.
        path_dir, source: ``(F,)`` int32 indices into ``dirs`` / ``sources`` (the video file of a frame given by
            video + timestamp), ``-1`` for none; ``source`` is None when no frame has a video file.
        timestamp_ms: ``(F,)`` int64, ``_NO_TIMESTAMP`` for none; None when no frame has one.
        boxes_xyxy: ``(F, 4)`` float64 source pixels; present: ``(F,)`` bool.
        folder: the folder holding the per-frame columns of a spilled table, else None.
    """

    def __init__(self, dataset: str, video, track_id, frame_start: np.ndarray, image_size: np.ndarray,
                 frame_id, path_dir: np.ndarray, path_name, dirs: list[str], source: np.ndarray | None,
                 sources: list[str], timestamp_ms: np.ndarray | None, boxes_xyxy: np.ndarray,
                 present: np.ndarray, folder: Path | None = None) -> None:
        self.dataset = dataset
        self.video, self.track_id = video, track_id
        self.frame_start, self.image_size = frame_start, image_size
        self.frame_id, self.path_dir, self.path_name, self.dirs = frame_id, path_dir, path_name, dirs
        self.source, self.sources, self.timestamp_ms = source, sources, timestamp_ms
        self.boxes_xyxy, self.present = boxes_xyxy, present
        self.folder = folder

    # ---------------------------------------------------------------- building

    @staticmethod
    def _frame_columns(dataset: str, spill_dir: str | Path | None) -> FrameColumns:
        """A :class:`FrameColumns` in RAM, or in a new folder ``<dataset>-*`` under ``spill_dir``."""
        if spill_dir is None:
            return FrameColumns(None)
        import tempfile

        return FrameColumns(Path(tempfile.mkdtemp(prefix=f"{dataset}-", dir=spill_dir)))

    @classmethod
    def from_tracks(cls, dataset: str, tracks, chunk_frames: int = 1 << 16,
                    spill_dir: str | Path | None = None) -> TrackTable:
        """Consume ``tracks`` (any iterable, e.g. a reader's generator) one at a time into a table.

        Python lists are flushed to Arrow / numpy every ``chunk_frames`` frames, so building holds at most
        one chunk of Python objects beside the compact arrays; with ``spill_dir`` (an existing local folder)
        each flushed chunk's per-frame columns go straight to files there and the table is spilled (class
        docstring). Raises ValueError for a track of another dataset.
        """
        builder = TableBuilder(dataset, chunk_frames, spill_dir)
        for tr in tracks:
            builder.add(tr)
        return builder.finish()

    def take(self, tracks: np.ndarray, spill_dir: str | Path | None = None,
             chunk_frames: int = 1 << 16) -> TrackTable:
        """A table of the tracks ``tracks`` (int indices, in that order) with their frames.

        The frames are gathered ``chunk_frames`` at a time into a :class:`FrameColumns`: with ``spill_dir``
        the new table is spilled there (its per-frame columns written chunk by chunk, never whole in memory).
        """
        tracks = np.asarray(tracks, dtype=np.int64)
        if len(tracks) == self.num_tracks and (tracks == np.arange(self.num_tracks)).all():
            return self  # all of them, in order: no copy (the table is never modified)
        lengths = self.frame_start[tracks + 1] - self.frame_start[tracks]
        start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out = self._frame_columns(self.dataset, spill_dir)
        for a, b in track_ranges(start, chunk_frames):
            # flat frame indices of the kept tracks a..b-1, in order: each track's range start..start+len
            frames = (np.repeat(self.frame_start[tracks[a:b]] - start[a:b], lengths[a:b])
                      + np.arange(start[a], start[b], dtype=np.int64))
            out.append(self._frames_of(frames))
        if not len(tracks):
            out.append(self._frames_of(np.zeros(0, np.int64)))
        cols = out.finish()
        return TrackTable(
            self.dataset, take_strings(self.video, tracks), take_strings(self.track_id, tracks), start,
            self.image_size[tracks], cols["frame_id"], cols["path_dir"], cols["path_name"], self.dirs,
            cols.get("source"), self.sources, cols.get("timestamp_ms"), cols["boxes_xyxy"], cols["present"],
            out.folder)

    def _frames_of(self, frames: np.ndarray) -> dict:
        """The per-frame columns of flat frames ``frames`` (int64), gathered into memory."""
        out = {name: take_strings(getattr(self, name), frames) for name in _FRAME_STRINGS}
        for name in _FRAME_ARRAYS:
            column = getattr(self, name)
            if column is not None:
                out[name] = np.asarray(column[frames])
        return out

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

    def present_counts(self, chunk_frames: int = 1 << 20) -> np.ndarray:
        """``(T,)`` int64 present frames per track, reading ``chunk_frames`` frames at a time."""
        counts = np.zeros(self.num_tracks, np.int64)
        fs = self.frame_start
        for a, b in track_ranges(fs, chunk_frames):
            before = np.concatenate([[0], np.cumsum(self.present[fs[a]:fs[b]], dtype=np.int64)])
            counts[a:b] = before[fs[a + 1:b + 1] - fs[a]] - before[fs[a:b] - fs[a]]
        return counts

    def frame_refs(self, frames: np.ndarray) -> list[FrameRef]:
        """:class:`FrameRef` s of flat frame indices ``frames`` (one Arrow gather per column)."""
        frames = np.asarray(frames, dtype=np.int64)
        ids = take_strings(self.frame_id, frames).to_pylist()
        names = take_strings(self.path_name, frames).to_pylist()
        dirs = self.path_dir[frames].tolist()
        sources = [-1] * len(frames) if self.source is None else self.source[frames].tolist()
        stamps = [_NO_TIMESTAMP] * len(frames) if self.timestamp_ms is None else self.timestamp_ms[frames].tolist()
        return [FrameRef(fid, None if d < 0 else self.dirs[d] + name, None if s < 0 else self.sources[s],
                         None if ts == _NO_TIMESTAMP else ts)
                for fid, name, d, s, ts in zip(ids, names, dirs, sources, stamps, strict=True)]

    def strings(self, column: str, tracks: np.ndarray) -> list[str]:
        """``video`` or ``track_id`` of tracks ``tracks`` as Python strings."""
        return take_strings(getattr(self, column), tracks).to_pylist()

    def track(self, t: int) -> Track:
        """Track ``t`` as a :class:`Track` (``meta`` empty)."""
        a, b = int(self.frame_start[t]), int(self.frame_start[t + 1])
        w, h = (int(v) for v in self.image_size[t])
        return Track(self.dataset, self.video[t].as_py(), self.track_id[t].as_py(),
                     self.frame_refs(np.arange(a, b)), np.array(self.boxes_xyxy[a:b]), np.array(self.present[a:b]),
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


class TableBuilder:
    """Builds one :class:`TrackTable` from tracks (:meth:`add`) and from whole tables (:meth:`add_table`), in
    the order given.

    Adding a table made from some tracks gives exactly the table that adding those tracks one by one gives
    (same values, same de-duplicated folder and video-file lists in first-appearance order): this is how tables
    listed in parallel, one per group of sequence folders, are merged in the folders' order.
    """

    def __init__(self, dataset: str, chunk_frames: int = 1 << 16, spill_dir: str | Path | None = None) -> None:
        self.dataset = dataset
        self.chunk_frames = chunk_frames
        self._str_chunks: dict[str, list] = {"video": [], "track_id": []}
        self._lengths: list[np.ndarray] = []
        self._image_size: list[np.ndarray] = []
        self._frames = TrackTable._frame_columns(dataset, spill_dir)
        self._dir_index: dict[str, int] = {}
        self._source_index: dict[str, int] = {}
        self._any_timestamp = False
        self._cur: dict[str, list] = {k: [] for k in (
            "video", "track_id", "frame_id", "path_name", "lengths", "image_size", "path_dir", "source",
            "timestamp_ms", "boxes", "present")}
        self._pending = 0

    def add(self, tr: Track) -> None:
        """Append one track. Raises ValueError for a track of another dataset."""
        if tr.dataset != self.dataset:
            raise ValueError(f"track {tr.key} is not in dataset {self.dataset!r}")
        cur = self._cur
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
                cur["path_dir"].append(_index_of(self._dir_index, ref.path[:cut]))
                cur["path_name"].append(ref.path[cut:])
            cur["source"].append(-1 if ref.video is None else _index_of(self._source_index, ref.video))
            cur["timestamp_ms"].append(_NO_TIMESTAMP if ref.timestamp_ms is None else int(ref.timestamp_ms))
        cur["boxes"].append(np.asarray(tr.boxes_xyxy, np.float64).reshape(-1, 4))
        cur["present"].append(np.asarray(tr.present, bool).reshape(-1))
        self._pending += len(tr.frames) + 1
        if self._pending >= self.chunk_frames:
            self._flush()

    def add_table(self, table: TrackTable) -> None:
        """Append every track of ``table`` (of the same dataset), ``chunk_frames`` frames at a time, its folder
        and video-file indices renumbered into this table's lists."""
        if table.dataset != self.dataset:
            raise ValueError(f"a {table.dataset!r} table cannot join a {self.dataset!r} table")
        self._flush()
        dir_map = np.array([_index_of(self._dir_index, d) for d in table.dirs] + [-1], np.int32)
        source_map = np.array([_index_of(self._source_index, v) for v in table.sources] + [-1], np.int32)
        for column in self._str_chunks:
            values = getattr(table, column)
            self._str_chunks[column].append(values.combine_chunks() if hasattr(values, "combine_chunks") else values)
        self._lengths.append(table.lengths())
        self._image_size.append(np.asarray(table.image_size, np.int32).reshape(-1, 2))
        for a, b in track_ranges(table.frame_start, self.chunk_frames):
            frames = np.arange(table.frame_start[a], table.frame_start[b], dtype=np.int64)
            cols = table._frames_of(frames)
            n = len(frames)
            source = cols.get("source", np.full(n, -1, np.int32))
            stamps = cols.get("timestamp_ms", np.full(n, _NO_TIMESTAMP, np.int64))
            self._any_timestamp = self._any_timestamp or bool((stamps != _NO_TIMESTAMP).any())
            self._frames.append({
                "frame_id": cols["frame_id"], "path_name": cols["path_name"],
                "path_dir": dir_map[cols["path_dir"]],  # -1 (no file) maps to the map's last entry, -1
                "source": source_map[source], "timestamp_ms": stamps,
                "boxes_xyxy": np.asarray(cols["boxes_xyxy"], np.float64).reshape(-1, 4),
                "present": np.asarray(cols["present"], bool),
            })

    def _flush(self) -> None:
        import pyarrow as pa

        cur = self._cur
        if not cur["lengths"] and self._frames.rows:
            return  # nothing new since the last flush (an empty flush is kept only for an empty table)
        for k in self._str_chunks:
            self._str_chunks[k].append(pa.array(cur[k], type=pa.string()))
        self._lengths.append(np.asarray(cur["lengths"], np.int64))
        self._image_size.append(np.asarray(cur["image_size"], np.int32).reshape(-1, 2))
        timestamp_ms = np.asarray(cur["timestamp_ms"], np.int64)
        self._any_timestamp = self._any_timestamp or bool((timestamp_ms != _NO_TIMESTAMP).any())
        self._frames.append({
            "frame_id": pa.array(cur["frame_id"], type=pa.string()),
            "path_name": pa.array(cur["path_name"], type=pa.string()),
            "path_dir": np.asarray(cur["path_dir"], np.int32),
            "source": np.asarray(cur["source"], np.int32),
            "timestamp_ms": timestamp_ms,
            # one array per chunk instead of two per track
            "boxes_xyxy": np.concatenate(cur["boxes"]).reshape(-1, 4) if cur["boxes"] else np.zeros((0, 4)),
            "present": np.concatenate(cur["present"]) if cur["present"] else np.zeros(0, bool),
        })
        for v in cur.values():
            v.clear()
        self._pending = 0

    def finish(self) -> TrackTable:
        """The table (spilled when a ``spill_dir`` was given). The builder is spent."""
        self._flush()
        unused = (({"source"} if not self._source_index else set())
                  | ({"timestamp_ms"} if not self._any_timestamp else set()))
        cols = self._frames.finish(drop=unused)
        lengths = np.concatenate(self._lengths)
        return TrackTable(
            self.dataset, _concat_strings(self._str_chunks["video"]), _concat_strings(self._str_chunks["track_id"]),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            np.concatenate(self._image_size).reshape(-1, 2),
            cols["frame_id"], cols["path_dir"], cols["path_name"], list(self._dir_index), cols.get("source"),
            list(self._source_index), cols.get("timestamp_ms"), cols["boxes_xyxy"], cols["present"],
            self._frames.folder,
        )


def _index_of(index: dict[str, int], key: str) -> int:
    """``key``'s number in ``index``, a new one (the next) for a key not seen yet."""
    i = index.get(key)
    if i is None:
        i = index[key] = len(index)
    return i
