"""One shard of the preparation job: packing a dataset plan into shards, their names and cost, the plan's
digest, and decoding, cropping and writing one shard.

No Ray here: :mod:`pipelines.prepare_data` runs :func:`write_shard` in the tasks of a Ray Data pipeline. Shard
names and files depend only on the plan and the :class:`CropSettings` (packing: :func:`pack_shards`); a
shard's parquet file, rejects and sidecar are each written atomically, in that order (:func:`write_shard`). A
pair whose frame is rejected is dropped and counted, never re-drawn (:func:`crop_shard`, which also defines
the per-shard accounting).

Coordinates: boxes in source pixels, ``x1, y1, x2, y2`` (``box_xyxy``); crop geometry as in
:mod:`data_prep.crops`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from data_prep.pairs import SEARCH, TEMPLATE, DatasetPlan, VideoWork
from data_prep.readers import rejections as R
from data_prep.tracks import FrameRef
from ocean.storage import OutputStore

# shards of about 50 MB at q90 (bytes per stored pair: BENCHMARKS.md, data preparation), large enough for
# efficient S3 reads and small enough that a task holds one shard in memory comfortably.
DEFAULT_SHARD_PAIRS = 2000
# parquet row groups: readers can stream a shard a few MB at a time
ROW_GROUP_ROWS = 256
# job-level reason for a YT-BB frame the video could not deliver (readers never decode; rejections.py)
UNDECODABLE_VIDEO_FRAME = "undecodable_video_frame"
CROP_FAILED = "crop_failed"
# frames of a dataset on S3 read ahead of their decode (_StoredFrames): threads, and frames in flight
# (BENCHMARKS.md, "Raw data from S3")
PREFETCH_THREADS = 8
PREFETCH_FRAMES = 32
# crops.decode_image reasons -> rejection reasons (rejections.py: the decode-stage reasons)
_DECODE_REASON = {
    "unreadable_file": R.MISSING_IMAGE,
    "empty": R.UNDECODABLE_IMAGE,
    "not_jpeg": R.UNDECODABLE_IMAGE,
    "corrupt_image": R.UNDECODABLE_IMAGE,
    "truncated_jpeg": R.TRUNCATED_IMAGE,
}


class ShardStore(Protocol):
    """Where shards go: :class:`ocean.storage.OutputStore` (a local folder or S3), or anything with its
    ``uri`` and ``filesystem`` / ``read`` / ``exists`` / ``write`` (atomic) methods."""

    uri: str

    def filesystem(self): ...

    def read(self, rel: str, fs=None) -> bytes | None: ...

    def exists(self, rel: str, fs=None) -> bool: ...

    def write(self, rel: str, data: bytes | memoryview, fs=None) -> None: ...


# --------------------------------------------------------------------------------------------------------
# Settings shipped to every task


@dataclass(frozen=True)
class CropSettings:
    """What a task needs to cut and encode crops (small, picklable).

    Attributes:
        template_side, search_side: stored crop sides in pixels (:func:`data_prep.crops.stored_sides`).
        context_amount, crop_size, exemplar_size: the crop511 frame (facts §7.1).
        jpeg_quality: 1..100.
        reduced_decode: decode a JPEG frame at 1/2, 1/4 or 1/8 when every crop it serves allows it
            (``data.reduced_decode``; :func:`data_prep.crops.decode_factor`, jpeg_decode.md).
    """

    template_side: int
    search_side: int
    context_amount: float
    crop_size: int
    exemplar_size: int
    jpeg_quality: int
    reduced_decode: bool = False

    @classmethod
    def from_config(cls, cfg, jpeg_quality: int | None = None) -> CropSettings:
        from data_prep.crops import stored_sides

        t_side, s_side = stored_sides(cfg.augment, cfg.model.exemplar_size, cfg.model.search_size,
                                      cfg.data.crop_size)
        q = int(cfg.data.jpeg_quality if jpeg_quality is None else jpeg_quality)
        if not 1 <= q <= 100:
            raise ValueError(f"JPEG quality {q} is not in [1, 100]")
        return cls(t_side, s_side, float(cfg.data.context_amount), int(cfg.data.crop_size),
                   int(cfg.model.exemplar_size), q, bool(cfg.data.reduced_decode))

    def side(self, role: str) -> int:
        return self.template_side if role == TEMPLATE else self.search_side


@dataclass
class ShardTask:
    """One shard's input: its name, the videos (with frames, crops and pairs) it covers and, for a dataset on
    S3, the store its frames are read from (``s3://`` frame paths; credentials travel inside it)."""

    dataset: str
    index: int
    job: str  # the job fingerprint the sidecar records
    videos: list[VideoWork]
    source: OutputStore | None = None

    @property
    def name(self) -> str:
        return shard_name(self.dataset, self.index)


def shard_name(dataset: str, index: int) -> str:
    """Shard ``index`` of ``dataset``: ``shard-<dataset>-<nnnnn>`` (files: :func:`shard_paths`); names follow
    from the plan only."""
    return f"shard-{dataset}-{index:05d}"


def shard_paths(name: str) -> dict[str, str]:
    """Paths of a shard's files relative to OUT."""
    return {"parquet": f"shards/{name}.parquet", "stats": f"stats/{name}.json", "rejects": f"rejects/{name}.jsonl"}



# --------------------------------------------------------------------------------------------------------
# Driver side: plan -> shards


def video_order_key(video: str) -> str:
    """The stable order of videos within a dataset's shards: ``sha1(video)`` (then the id itself)."""
    return hashlib.sha1(video.encode("utf-8")).hexdigest() + video


def pack_shards(plan: DatasetPlan, shard_pairs: int) -> list[np.ndarray]:
    """Each shard's draw numbers ``k`` (int64 arrays, a video's draws in draw order), in shard order.

    Videos in :func:`video_order_key` order (``sha1(video)``: a shard mixes unrelated videos and the order
    does not depend on the readers) are packed greedily: a video goes whole into the current shard
    when it fits (at most ``shard_pairs`` pairs per shard), else it starts a new shard; a video with more
    than ``shard_pairs`` pairs is cut into consecutive pieces of ``shard_pairs`` draws. Vectorised over draws
    (a Python loop over videos only), so packing millions of pairs holds a few int64 arrays.
    """
    if shard_pairs < 1:
        raise ValueError(f"shard_pairs must be >= 1, got {shard_pairs}")
    if len(plan) == 0:
        return []
    names = plan.video_names()
    rank = np.empty(len(names), dtype=np.int64)
    rank[sorted(range(len(names)), key=lambda v: video_order_key(names[v]))] = np.arange(len(names))
    draw_rank = rank[plan.video_of_track[plan.track_index]]
    order = np.lexsort((np.arange(len(plan), dtype=np.int64), draw_rank))  # by video rank, then draw order
    sizes = np.bincount(draw_rank, minlength=len(names))
    bounds: list[int] = []  # positions in `order` where a new shard starts
    pos = filled = 0
    for size in sizes[sizes > 0].tolist():
        for piece in [shard_pairs] * (size // shard_pairs) + ([size % shard_pairs] if size % shard_pairs else []):
            if filled and filled + piece > shard_pairs:
                bounds.append(pos)
                filled = 0
            filled += piece
            pos += piece
    return [np.asarray(s, dtype=np.int64) for s in np.split(order, bounds)]


def shard_cost(plan: DatasetPlan, draws: np.ndarray) -> int:
    """An estimate of a shard's work in units of about one search crop: distinct source frames to decode plus
    distinct search crops (a 433 px search crop costs ~9x a 145 px template crop, crops.stored_sides; decode,
    warp and encode are most of a task, BENCHMARKS.md). Frames are counted per track (flat
    track-table indices, no strings): a frame two tracks of one video share counts twice though it is decoded
    once. Only used to order the tasks."""
    template, search = plan.frame_indices(draws)
    search = np.unique(search)
    return int(len(np.union1d(template, search)) + len(search))


def plan_digest(plan: DatasetPlan, chunk: int = 1 << 15) -> str:
    """sha256 of a dataset plan: its draw arrays and the identity of every eligible track (its key, length,
    first and last frame ids, boxes), read from the track table ``chunk`` tracks at a time (a spilled table
    is read through its memory map, never copied whole)."""
    h = hashlib.sha256()
    for arr in (plan.track_index, plan.template_index, plan.search_index):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    table = plan.tracks
    fs = table.frame_start
    for a in range(0, table.num_tracks, chunk):
        b = min(a + chunk, table.num_tracks)
        idx = np.arange(a, b)
        boxes = np.ascontiguousarray(table.boxes_xyxy[fs[a]:fs[b]], dtype=np.float64)  # a mapped table: read here
        videos, track_ids = table.strings("video", idx), table.strings("track_id", idx)
        firsts = [r.frame_id for r in table.frame_refs(fs[a:b])]
        lasts = [r.frame_id for r in table.frame_refs(fs[a + 1:b + 1] - 1)]
        for j, t in enumerate(range(a, b)):
            h.update(f"{table.dataset}/{videos[j]}/{track_ids[j]}|{fs[t + 1] - fs[t]}|{firsts[j]}|{lasts[j]}\n"
                     .encode())
            h.update(boxes[fs[t] - fs[a]:fs[t + 1] - fs[a]].tobytes())
    return h.hexdigest()



# --------------------------------------------------------------------------------------------------------
# Task side: one shard


class _VideoFrames:
    """Frames of one video file at given timestamps, decoded sequentially (seek only when going back).

    The frame "at" ``t`` ms is frame ``round(t * fps / 1000)`` (the nearest frame; YT-BB timestamps are
    at 1 Hz, formats.md §1.6). A video on S3 (``s3://`` path, read through ``source``) is first fetched to a
    task-local temporary file, deleted by :meth:`close`; a missing object reads as a video that cannot open.
    """

    def __init__(self, path: str, source: OutputStore | None = None) -> None:
        import cv2

        from ocean.datapath import DataPath, LocalCopy

        self.cv2 = cv2
        self.path = path
        self.copy: LocalCopy | None = None
        local = path
        if source is not None and path.startswith("s3://"):
            try:
                self.copy = LocalCopy(DataPath(source, path[len("s3://"):]))
                local = self.copy.name
            except FileNotFoundError:
                local = ""
        self.cap = cv2.VideoCapture(local)
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS)) if self.cap.isOpened() else 0.0
        self.pos = -1  # index of the last frame returned

    def frame_at(self, timestamp_ms: int) -> tuple[np.ndarray | None, str]:
        cv2 = self.cv2
        if not self.cap.isOpened():
            return None, f"cannot open video {self.path}"
        if not self.fps > 0:
            self.cap.set(cv2.CAP_PROP_POS_MSEC, float(timestamp_ms))
            ok, img = self.cap.read()
            return (img, "") if ok and img is not None else (None, f"no frame at {timestamp_ms} ms")
        target = int(round(timestamp_ms * self.fps / 1000.0))
        if target <= self.pos:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, target)
            self.pos = target - 1
        while self.pos < target - 1:
            if not self.cap.grab():
                return None, f"video ends before frame {target} ({timestamp_ms} ms)"
            self.pos += 1
        ok, img = self.cap.read()
        self.pos += 1
        if not ok or img is None:
            return None, f"no frame {target} ({timestamp_ms} ms)"
        return img, ""

    def close(self) -> None:
        self.cap.release()
        if self.copy is not None:
            self.copy.close()


def decode_frame(ref: FrameRef, videos: dict[str, _VideoFrames], source: OutputStore | None = None,
                 stored: _StoredFrames | None = None, factor: int = 1,
                 ) -> tuple[np.ndarray | None, str | None, str, int, tuple[int, int]]:
    """``(image (H, W, 3) uint8 BGR, None, "", used, (width, height))`` or ``(None, reason, detail, 1, (0, 0))``
    for one frame; never raises on bad or missing data. ``factor`` > 1 asks for the image decoded at
    1/``factor`` (:func:`data_prep.crops.decode_scaled`; ``used`` says whether it was, ``(width, height)``
    is always the full-resolution size; video frames are decoded whole). An ``s3://`` frame is read straight
    from ``source`` (bytes -> ``cv2.imdecode``; through ``stored`` when given, which has it fetched ahead); an
    object that is gone is ``missing_image``, as a missing local file is. Other storage errors (endpoint down)
    raise, so that the task fails and is retried rather than writing a shard of rejections."""
    from data_prep.crops import decode_image, decode_scaled

    if ref.path is not None:
        if source is not None and ref.path.startswith("s3://"):
            data = stored.get(ref.path) if stored is not None else _read_stored(ref.path, source)
            src, name = data, ref.path
        else:
            src, name = ref.path, None
        used = 1
        if src is None:
            image, problem = None, "unreadable_file"
        elif factor == 1:
            image, problem = decode_image(src, name=name)
        else:
            image, problem, used, size = decode_scaled(src, factor, name=name)
        if image is None:
            return None, _DECODE_REASON.get(problem, R.UNDECODABLE_IMAGE), str(problem), 1, (0, 0)
        if used == 1:
            size = (int(image.shape[1]), int(image.shape[0]))
        return image, None, "", used, size
    if ref.video is None or ref.timestamp_ms is None:
        return None, R.MISSING_IMAGE, "frame has neither a path nor a video timestamp", 1, (0, 0)
    reader = videos.get(ref.video)
    if reader is None:
        reader = videos[ref.video] = _VideoFrames(ref.video, source)
    image, detail = reader.frame_at(int(ref.timestamp_ms))
    if image is None:
        return None, UNDECODABLE_VIDEO_FRAME, detail, 1, (0, 0)
    return image, None, "", 1, (int(image.shape[1]), int(image.shape[0]))


def _read_stored(uri: str, source: OutputStore) -> bytes | None:
    """The bytes of an ``s3://`` object of ``source``, None when it is not there."""
    from ocean.datapath import DataPath

    try:
        return DataPath(source, uri[len("s3://"):]).read_bytes()
    except FileNotFoundError:
        return None


class _StoredFrames:
    """The ``s3://`` frame files of a task, fetched in its decode order by :data:`PREFETCH_THREADS` threads,
    at most :data:`PREFETCH_FRAMES` ahead of the decode (bounded memory: a few MB of JPEG bytes). Reading
    a frame is two requests in series (HEAD, GET: ray_stack.md §3.4); fetched ahead, their latency overlaps
    the decoding and cropping of earlier frames. Nothing is started for a local dataset."""

    def __init__(self, task: ShardTask) -> None:
        from collections import deque

        self.source = task.source
        paths = [] if self.source is None or PREFETCH_FRAMES < 1 else [
            r.path for w in task.videos for r in w.frames.values() if r.path is not None and r.path.startswith("s3://")]
        self.pending = deque(paths)
        self.futures: dict = {}
        self.pool = None
        if paths:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="ocean-frames")
            self._fill()

    def _fill(self) -> None:
        while self.pending and len(self.futures) < PREFETCH_FRAMES:
            path = self.pending.popleft()
            if path not in self.futures:
                self.futures[path] = self.pool.submit(_read_stored, path, self.source)

    def get(self, path: str) -> bytes | None:
        """The frame's bytes (None when the object is gone); a storage error other than a missing object raises."""
        future = self.futures.pop(path, None)
        data = future.result() if future is not None else _read_stored(path, self.source)
        if self.pool is not None:
            self._fill()
        return data

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _source(ref: FrameRef) -> str:
    return ref.path if ref.path is not None else f"{ref.video}@{ref.timestamp_ms}ms"


def crop_shard(task: ShardTask, settings: CropSettings) -> tuple[pa.Table, dict, list[dict]]:
    """Decode, crop and encode one shard in this process.

    Each needed source frame is decoded once (frames of one video in time order; YT-BB frames straight from
    the video at the annotated timestamp), every crop it serves is cut with
    :func:`data_prep.crops.crop_region` at the stored side the augmentation needs
    (:func:`data_prep.crops.stored_sides`), JPEG-encoded, and the pair table
    (:class:`data_prep.records.PairTableBuilder`: each crop stored once, a pair as two crop indices) is built.

    Accounting (per shard, summed per dataset by :mod:`data_prep.manifest`): ``frames_read`` = source frame
    decodes attempted = ``frames_used`` + ``sum(rejected.values())`` (decode-stage reasons:
    ``undecodable_image``, ``truncated_image``, ``missing_image``, ``undecodable_video_frame``);
    ``pairs_planned`` = ``pairs_written`` + ``sum(pairs_dropped.values())``. A pair whose template or search
    frame was rejected (or whose crop failed) is **dropped and counted** under that frame's reason, not
    re-drawn: re-drawing would make a pair's existence depend on which files happen to be broken, the pool is
    already ``pool_factor`` times what an epoch uses (DataConfig), and TK's own re-draw on a missing file is
    biased (facts §7.4).

    Returns ``(table, counts, rejects)``: the shard's pair table (:data:`data_prep.records.PAIR_SCHEMA`,
    validated; pairs in the task's order), counters (``frames_read``, ``frames_used``, ``rejected``,
    ``crops``, ``crops_failed``, ``pairs_planned``, ``pairs_written``, ``pairs_dropped``; with
    ``settings.reduced_decode`` also ``decoded_at``: frames used per decode factor, ``{"1": n, "2": n, ...}``)
    and the rejected items (dicts with dataset, reason, source, detail, video, frame).

    With ``settings.reduced_decode`` a JPEG frame is decoded at 1/f, f from :func:`data_prep.crops.decode_factor`
    over the boxes of every crop it serves, and its crops are rendered from that image (jpeg_decode.md).
    """
    from data_prep.crops import crop_region, decode_factor, encode_jpeg
    from data_prep.records import PairTableBuilder
    from ocean.geometry import mean_color

    builder = PairTableBuilder()
    rejects: list[dict] = []
    rejected: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    frames_read = frames_used = crops = crops_failed = pairs_planned = 0
    decoded_at: Counter[str] = Counter()
    # one render buffer per stored side, reused by every crop of the shard: a fresh ~0.5 MB array per crop
    # fragments the heap while the shard's JPEG bytes accumulate, and page faults follow (BENCHMARKS.md)
    buffers = {side: np.empty((side, side, 3), np.uint8) for side in {settings.template_side, settings.search_side}}
    stored = _StoredFrames(task)  # s3:// frames fetched ahead, in threads, while earlier ones decode
    try:
        for work in task.videos:
            crops_of: dict[str, list[tuple[str, str, tuple]]] = {}
            for (track_id, frame_id, role), box in work.crops.items():
                crops_of.setdefault(frame_id, []).append((track_id, role, box))
            sides: dict[tuple[str, str, str], int | str] = {}  # crop key -> crop index in the builder, or the reason
            videos: dict[str, _VideoFrames] = {}
            try:
                for frame_id, ref in work.frames.items():
                    frames_read += 1
                    factor = 1
                    if settings.reduced_decode:
                        factor = decode_factor([box for _, _, box in crops_of.get(frame_id, ())],
                                               settings.context_amount, settings.crop_size, settings.exemplar_size)
                    image, reason, detail, used, size = decode_frame(ref, videos, task.source, stored, factor)
                    if image is None:
                        rejected[reason] += 1
                        rejects.append({"dataset": task.dataset, "reason": reason, "source": _source(ref),
                                        "detail": detail, "video": work.video, "frame": frame_id})
                        for track_id, role, _ in crops_of.get(frame_id, ()):
                            sides[(track_id, frame_id, role)] = reason
                        continue
                    frames_used += 1
                    decoded_at[str(used)] += 1
                    padding = mean_color(image)  # facts §7.1: the per-image mean colour
                    for track_id, role, box in crops_of.get(frame_id, ()):
                        try:
                            side = settings.side(role)
                            crop = crop_region(image, box, side, context_amount=settings.context_amount,
                                               crop_size=settings.crop_size, exemplar_size=settings.exemplar_size,
                                               padding=padding, out=buffers[side], decode_factor=used)
                            jpeg = encode_jpeg(crop.image, settings.jpeg_quality)
                        except ValueError as exc:
                            crops_failed += 1
                            sides[(track_id, frame_id, role)] = CROP_FAILED
                            rejects.append({"dataset": task.dataset, "reason": CROP_FAILED, "source": _source(ref),
                                            "detail": f"track {track_id} {role}: {exc}", "video": work.video,
                                            "frame": frame_id})
                            continue
                        crops += 1
                        sides[(track_id, frame_id, role)] = builder.add_crop(jpeg, crop, box, size)
            finally:
                for reader in videos.values():
                    reader.close()
            for pair in work.pairs:
                pairs_planned += 1
                t = sides.get((pair.track_id, pair.template_frame, TEMPLATE), CROP_FAILED)
                s = sides.get((pair.track_id, pair.search_frame, SEARCH), CROP_FAILED)
                if isinstance(t, str) or isinstance(s, str):
                    dropped[t if isinstance(t, str) else s] += 1
                    continue
                builder.add_pair(pair, t, s)
    finally:
        stored.close()
    counts = {
        "frames_read": frames_read, "frames_used": frames_used, "rejected": dict(sorted(rejected.items())),
        "crops": crops, "crops_failed": crops_failed, "pairs_planned": pairs_planned,
        "pairs_written": len(builder), "pairs_dropped": dict(sorted(dropped.items())),
    }
    if settings.reduced_decode:
        counts["decoded_at"] = dict(sorted(decoded_at.items()))
    return builder.table(), counts, rejects


def parquet_bytes(table: pa.Table) -> pa.Buffer:
    """The shard file of a :data:`data_prep.records.PAIR_SCHEMA` table: JPEG columns uncompressed (JPEG does
    not compress further), other columns zstd, row groups of :data:`ROW_GROUP_ROWS`."""
    import pyarrow.parquet as pq

    compression = {name: ("NONE" if name.endswith("_jpeg") else "ZSTD") for name in table.schema.names}
    # an Arrow in-memory sink, not io.BytesIO: the same bytes without a Python call per page;
    # the buffer goes to the store and to sha256 as it is (no copy into a Python bytes object)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression, row_group_size=ROW_GROUP_ROWS)
    return sink.getvalue()



def write_shard(store: ShardStore, task: ShardTask, settings: CropSettings) -> dict:
    """Crop one shard and write its parquet file, rejects and sidecar (in that order); return the sidecar.

    Idempotent: the files depend only on the task, and each write is atomic, so a killed run leaves either a
    complete shard or one that is redone.
    """
    fs = store.filesystem()
    paths = shard_paths(task.name)
    table, counts, rejects = crop_shard(task, settings)
    data = parquet_bytes(table)
    ids = "\n".join(table.column("pair_id").to_pylist())
    if rejects:
        store.write(paths["rejects"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects).encode(), fs)
    store.write(paths["parquet"], data, fs)
    sidecar = {
        "shard": task.name, "dataset": task.dataset, "index": task.index, "job": task.job,
        "path": paths["parquet"], "rows": table.num_rows, "bytes": data.size,
        "sha256": hashlib.sha256(data).hexdigest(), "pair_ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
        "videos": len(task.videos), "rejects_path": paths["rejects"] if rejects else None, **counts,
    }
    store.write(paths["stats"], (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode(), fs)
    return sidecar
