"""The data-preparation job: dataset downloads -> parquet pair shards on a local disk or S3, on Ray.

What it does (issue 4):

1. **List** every dataset's tracks on the driver with :func:`data_prep.readers.read_tracks` (annotations only;
   a COCO JSON is parsed here once and never shipped to tasks), one dataset at a time, streamed into a
   compact :class:`data_prep.tracks.TrackTable` (flat arrays: ~65 bytes per annotated frame instead of ~350
   bytes as Python objects; :func:`list_and_plan`). Its per-frame columns are **spilled** to a job-local
   folder (:func:`spill_folder`: ``$TMPDIR/ocean-prepare-<host>-<pid>-*`` on the driver's disk, ~65 bytes per
   annotated frame; removed when the job ends, also on error, and by the next job on the host if the job was
   killed) and memory-mapped, so the driver's anonymous memory is O(tracks + pairs), not O(annotated
   frames). ``benchmarks/prep_throughput.py``, 200 k pairs, anonymous memory held / peak: GOT-10k-like
   tracks of 100 frames, 2 M frames 69 / 85 MB spilled vs 280 / 337 MB in memory, 6 M frames 71 / 100 MB vs
   526 / 921 MB; 300 k COCO-like one-frame tracks (O(tracks) by nature) 89 / 130 MB vs 108 / 177 MB.
   Reader rejections are counted and written to ``OUT/rejects/reader-<dataset>.jsonl``.
2. **Plan** the pairs with :func:`data_prep.pairs.plan_pairs` (deterministic from the seed; facts §7.4),
   reading the spilled per-frame columns a chunk at a time (:mod:`data_prep.pairs`, "Memory"); a plan keeps
   its eligible tracks' spilled table, read again when each shard's task input is built.
3. **Pack** each dataset's pairs into shards of at most ``shard_pairs`` pairs: the dataset's videos are
   ordered by ``sha1(video)`` (so a shard mixes unrelated videos and the order does not depend on the
   readers) and packed greedily, a whole video per shard unless the video alone has more than
   ``shard_pairs`` pairs (then it is cut into pieces of ``shard_pairs`` pairs in draw order). Shard ``n`` of a
   dataset is ``OUT/shards/shard-<dataset>-<nnnnn>.parquet``: the names follow from the plan only.
4. **Crop** in Ray tasks, one task per shard (:func:`process_shard`): each needed source frame is decoded
   once per shard (frames of one video in time order; YT-BB frames straight from the video at the
   annotated timestamp), every crop it serves is cut with :func:`data_prep.crops.crop_region` at the stored
   side the augmentation needs (:func:`data_prep.crops.stored_sides`), JPEG-encoded, and the pair table
   (:class:`data_prep.records.PairTableBuilder`: each crop stored once, a pair as two crop indices) is
   written as one parquet file. Largest shards go first (:func:`shard_cost`); a shard task keeps one core
   busy (one OpenCV thread, :func:`shard_task_cpus`) and the malloc thresholds of
   :func:`pipelines.raysession.keep_large_buffers_in_heap`. Throughput: 0.93-0.95 of a bare OpenCV loop's
   frames per CPU second on 640x360 / 1280x720 frames (BENCHMARKS.md).
5. Write ``OUT/manifest.json`` **last**, rebuilt from the per-shard sidecars ``OUT/stats/<shard>.json``.

Why Ray tasks and not Ray Data: the unit of work is a whole shard whose output is a file the task writes
itself (Ray Data's writer names files randomly, ray_stack.md §2), the input is a small plan rather than a
dataset to read, and the driver needs every shard's exact result for the manifest. Plain tasks give that
with a bounded window of in-flight tasks (streaming, constant driver memory), retries on worker / node loss,
and none of the 2-core actor-pool / read-task deadlocks (ray_stack.md §2).

Resuming: a shard is done when its sidecar exists and names this job's fingerprint (a digest of the
config, seed and plan, also kept in ``OUT/job.json``). The parquet file, the shard's rejects and then the
sidecar are written atomically in that order, so a killed run leaves either a complete shard or one that
is redone; a finished job re-run skips every shard and leaves every file as it was. Re-using ``OUT`` with a
different plan (other seed, pairs, config or data) is refused.

Accounting (per dataset, in the manifest):

* ``frames_read`` = source frame decodes attempted (a frame needed by one shard is decoded once; a frame
  needed by two shards -- only when a huge video is split -- counts twice) = ``frames_used`` +
  ``sum(rejected.values())``; ``rejected`` holds the decode-stage reasons (``undecodable_image``,
  ``truncated_image``, ``missing_image``, ``undecodable_video_frame``). Reader-stage rejections are in
  ``reader_rejected`` (the reasons of :mod:`data_prep.readers.rejections`).
* ``pairs_planned`` = ``pairs_written`` + ``sum(pairs_dropped.values())``. A pair whose template or search
  frame was rejected (or whose crop failed) is **dropped and counted** under that frame's reason, not
  re-drawn: re-drawing would make a pair's existence depend on which files happen to be broken, the pool is
  already ``pool_factor`` times what an epoch uses (DataConfig), and TK's own re-draw on a missing file is
  biased (facts §7.4).

Coordinates: boxes in source pixels, ``x1, y1, x2, y2`` (``box_xyxy``); crop geometry as in
:mod:`data_prep.crops`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_prep.pairs import SEARCH, TEMPLATE, DatasetPlan, VideoWork, pair_counts, plan_pairs
from data_prep.readers import RejectionLog, read_tracks
from data_prep.readers import rejections as R
from data_prep.tracks import DATASETS, FrameRef, Track, TrackTable
from pipelines.storage import OutputStore

MANIFEST_SCHEMA_VERSION = 1
# ~25 KB per pair at q90 (benchmarks/prep_throughput.py) -> shards of about 50 MB, large enough for
# efficient S3 reads and small enough that a task holds one shard in memory comfortably.
DEFAULT_SHARD_PAIRS = 2000
# parquet row groups: readers can stream a shard in ~6 MB pieces
ROW_GROUP_ROWS = 256
# job-level reason for a YT-BB frame the video could not deliver (readers never decode; rejections.py)
UNDECODABLE_VIDEO_FRAME = "undecodable_video_frame"
CROP_FAILED = "crop_failed"
# crops.decode_image reasons -> rejection reasons (rejections.py: the decode-stage reasons)
_DECODE_REASON = {
    "unreadable_file": R.MISSING_IMAGE,
    "empty": R.UNDECODABLE_IMAGE,
    "not_jpeg": R.UNDECODABLE_IMAGE,
    "corrupt_image": R.UNDECODABLE_IMAGE,
    "truncated_jpeg": R.TRUNCATED_IMAGE,
}


class JobMismatch(RuntimeError):
    """``OUT`` already holds the output of a different job (other seed, pairs, config or data)."""


class ShardFailed(RuntimeError):
    """One or more shard tasks raised; the others are on disk and a re-run finishes the job."""


# --------------------------------------------------------------------------------------------------------
# Settings shipped to every task


@dataclass(frozen=True)
class CropSettings:
    """What a task needs to cut and encode crops (small, picklable).

    Attributes:
        template_side, search_side: stored crop sides in pixels (:func:`data_prep.crops.stored_sides`).
        context_amount, crop_size, exemplar_size: the crop511 frame (facts §7.1).
        jpeg_quality: 1..100.
    """

    template_side: int
    search_side: int
    context_amount: float
    crop_size: int
    exemplar_size: int
    jpeg_quality: int

    @classmethod
    def from_config(cls, cfg, jpeg_quality: int | None = None) -> CropSettings:
        from data_prep.crops import stored_sides

        t_side, s_side = stored_sides(cfg.augment, cfg.model.exemplar_size, cfg.model.search_size,
                                      cfg.data.crop_size)
        q = int(cfg.data.jpeg_quality if jpeg_quality is None else jpeg_quality)
        if not 1 <= q <= 100:
            raise ValueError(f"JPEG quality {q} is not in [1, 100]")
        return cls(t_side, s_side, float(cfg.data.context_amount), int(cfg.data.crop_size),
                   int(cfg.model.exemplar_size), q)

    def side(self, role: str) -> int:
        return self.template_side if role == TEMPLATE else self.search_side


@dataclass
class ShardTask:
    """One shard's input: its name and the videos (with frames, crops and pairs) it covers."""

    dataset: str
    index: int
    job: str  # the job fingerprint the sidecar records
    videos: list[VideoWork]

    @property
    def name(self) -> str:
        return shard_name(self.dataset, self.index)


def shard_name(dataset: str, index: int) -> str:
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

    Videos in :func:`video_order_key` order are packed greedily: a video goes whole into the current shard
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
    warp and encode are ~95 % of a task, benchmarks/prep_throughput.py). Frames are counted per track (flat
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
    at 1 Hz, formats.md §1.6).
    """

    def __init__(self, path: str) -> None:
        import cv2

        self.cv2 = cv2
        self.path = path
        self.cap = cv2.VideoCapture(path)
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


def decode_frame(ref: FrameRef, videos: dict[str, _VideoFrames]) -> tuple[np.ndarray | None, str | None, str]:
    """``(image (H, W, 3) uint8 BGR, None, "")`` or ``(None, reason, detail)`` for one frame; never raises."""
    from data_prep.crops import decode_image

    if ref.path is not None:
        image, problem = decode_image(ref.path)
        if image is None:
            return None, _DECODE_REASON.get(problem, R.UNDECODABLE_IMAGE), str(problem)
        return image, None, ""
    if ref.video is None or ref.timestamp_ms is None:
        return None, R.MISSING_IMAGE, "frame has neither a path nor a video timestamp"
    reader = videos.get(ref.video)
    if reader is None:
        reader = videos[ref.video] = _VideoFrames(ref.video)
    image, detail = reader.frame_at(int(ref.timestamp_ms))
    if image is None:
        return None, UNDECODABLE_VIDEO_FRAME, detail
    return image, None, ""


def _source(ref: FrameRef) -> str:
    return ref.path if ref.path is not None else f"{ref.video}@{ref.timestamp_ms}ms"


def crop_shard(task: ShardTask, settings: CropSettings) -> tuple[pa.Table, dict, list[dict]]:
    """Decode, crop and encode one shard in this process.

    Returns ``(table, counts, rejects)``: the shard's pair table (:data:`data_prep.records.PAIR_SCHEMA`,
    validated; pairs in the task's order), counters (``frames_read``, ``frames_used``, ``rejected``,
    ``crops``, ``crops_failed``, ``pairs_planned``, ``pairs_written``, ``pairs_dropped``) and the rejected
    items (dicts with dataset, reason, source, detail, video, frame).
    """
    from data_prep.crops import crop_region, encode_jpeg, mean_color
    from data_prep.records import PairTableBuilder

    builder = PairTableBuilder()
    rejects: list[dict] = []
    rejected: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    frames_read = frames_used = crops = crops_failed = pairs_planned = 0
    # one render buffer per stored side, reused by every crop of the shard: a fresh ~0.5 MB array per crop
    # fragments the heap while the shard's JPEG bytes accumulate, and the page faults that follow cost ~5 %
    # of the task's CPU time (profiled against the bare loop, benchmarks/prep_throughput.py)
    buffers = {side: np.empty((side, side, 3), np.uint8) for side in {settings.template_side, settings.search_side}}
    for work in task.videos:
        crops_of: dict[str, list[tuple[str, str, tuple]]] = {}
        for (track_id, frame_id, role), box in work.crops.items():
            crops_of.setdefault(frame_id, []).append((track_id, role, box))
        sides: dict[tuple[str, str, str], int | str] = {}  # crop key -> crop index in the builder, or the reason
        videos: dict[str, _VideoFrames] = {}
        try:
            for frame_id, ref in work.frames.items():
                frames_read += 1
                image, reason, detail = decode_frame(ref, videos)
                if image is None:
                    rejected[reason] += 1
                    rejects.append({"dataset": task.dataset, "reason": reason, "source": _source(ref),
                                    "detail": detail, "video": work.video, "frame": frame_id})
                    for track_id, role, _ in crops_of.get(frame_id, ()):
                        sides[(track_id, frame_id, role)] = reason
                    continue
                frames_used += 1
                padding = mean_color(image)  # facts §7.1: the per-image mean colour
                size = (int(image.shape[1]), int(image.shape[0]))
                for track_id, role, box in crops_of.get(frame_id, ()):
                    try:
                        side = settings.side(role)
                        crop = crop_region(image, box, side, context_amount=settings.context_amount,
                                           crop_size=settings.crop_size, exemplar_size=settings.exemplar_size,
                                           padding=padding, out=buffers[side])
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
    counts = {
        "frames_read": frames_read, "frames_used": frames_used, "rejected": dict(sorted(rejected.items())),
        "crops": crops, "crops_failed": crops_failed, "pairs_planned": pairs_planned,
        "pairs_written": len(builder), "pairs_dropped": dict(sorted(dropped.items())),
    }
    return builder.table(), counts, rejects


def parquet_bytes(table: pa.Table) -> pa.Buffer:
    """The shard file of a :data:`data_prep.records.PAIR_SCHEMA` table: JPEG columns uncompressed (JPEG does
    not compress further), other columns zstd, row groups of :data:`ROW_GROUP_ROWS`."""
    import pyarrow.parquet as pq

    compression = {name: ("NONE" if name.endswith("_jpeg") else "ZSTD") for name in table.schema.names}
    # an Arrow in-memory sink, not io.BytesIO: the same bytes without a Python call per page (~1 % of a task);
    # the buffer goes to the store and to sha256 as it is (no copy into a Python bytes object)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression, row_group_size=ROW_GROUP_ROWS)
    return sink.getvalue()


def process_shard(store: OutputStore, task: ShardTask, settings: CropSettings) -> dict:
    """Run one shard in a worker: crop, write parquet, rejects and sidecar (in that order); return the sidecar.

    Idempotent: the files depend only on the task, and each write is atomic. The returned dict has the
    sidecar fields plus ``runtime`` (pid, node, wall start / end, CPU seconds, peak RSS of this process), not stored.
    """
    import cv2

    from pipelines.raysession import keep_large_buffers_in_heap

    cv2.setNumThreads(1)  # parallelism comes from Ray tasks; one OpenCV thread per task
    keep_large_buffers_in_heap()  # a fresh mmap + page faults per decoded frame otherwise (~25 % of a task)
    wall0, c0 = time.time(), time.process_time()
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
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except ImportError:
        node = "local"
    return {**sidecar, "runtime": {"pid": os.getpid(), "node": node, "start": wall0, "end": time.time(),
                                   "cpu_seconds": time.process_time() - c0, "peak_rss_mb": peak_kb / 1024.0}}


# --------------------------------------------------------------------------------------------------------
# Ray


def _run_tasks(store: OutputStore, tasks: Iterable[ShardTask], total: int, settings: CropSettings, *,
               task_cpus: float, max_in_flight: int | None, on_result: Callable[[dict], None],
               progress: bool, initial: int) -> list[str]:
    """Submit shard tasks with at most ``max_in_flight`` running; return the names of failed shards."""
    import ray
    from tqdm import tqdm

    remote = ray.remote(process_shard).options(num_cpus=task_cpus, max_retries=3, retry_exceptions=False)
    if max_in_flight is None:
        max_in_flight = max(2, int(2 * ray.cluster_resources().get("CPU", 2) / max(task_cpus, 1e-3)))
    store_ref = ray.put(store)
    settings_ref = ray.put(settings)
    pending: dict = {}
    failed: list[str] = []
    bar = tqdm(total=total, initial=initial, desc="shards", unit="shard", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)

    def collect(block: bool) -> None:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
        for ref in ready:
            name = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # a bug or a lost node after retries: report, finish the others
                failed.append(name)
                print(f"shard {name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                      file=sys.stderr)
            else:
                on_result(result)
            bar.update(1)

    try:
        for task in tasks:
            while len(pending) >= max_in_flight:
                collect(block=True)
            pending[remote.remote(store_ref, task, settings_ref)] = task.name
        while pending:
            collect(block=True)
    finally:
        bar.close()
    return failed


# --------------------------------------------------------------------------------------------------------
# The job


@dataclass
class _DatasetState:
    name: str
    root: str
    tracks: int = 0
    annotated_frames: int = 0
    reader_log: RejectionLog = dataclasses.field(default_factory=RejectionLog)
    plan: DatasetPlan | None = None
    requested: int = 0
    shards: list[np.ndarray] = dataclasses.field(default_factory=list)


def list_and_plan(dataset: str, tracks: Iterable[Track], cfg, seed: int, num_pairs: int, shard_pairs: int,
                  spill_dir: str | Path | None = None) -> tuple[DatasetPlan | None, list[np.ndarray], int, int]:
    """One dataset's listing and plan on the driver: ``(plan or None, shards, tracks, annotated frames)``.

    ``tracks`` (a reader's generator) is consumed one track at a time into a compact
    :class:`~data_prep.tracks.TrackTable`, so the driver never holds the dataset as Python objects; the plan
    keeps only the eligible tracks' table, and shards are int64 draw arrays (:func:`pack_shards`).

    With ``spill_dir`` (a local folder; :func:`run_prepare` gives a job-local one) both tables are spilled
    there, their per-frame columns memory-mapped from files, and the listing's table is deleted once the plan
    holds its own copy: the driver's anonymous memory is O(tracks + pairs), not O(annotated frames).
    """
    table = TrackTable.from_tracks(dataset, tracks, spill_dir=spill_dir)
    n_tracks, n_frames = table.num_tracks, table.num_frames
    plan = None
    if n_tracks:
        plan = plan_pairs(table, cfg.data, seed, {dataset: num_pairs}, spill_dir=spill_dir).datasets[dataset]
    if table.folder is not None and (plan is None or plan.tracks is not table):
        shutil.rmtree(table.folder)  # the listing's files; the plan has its own (mapped pages stay valid)
    del table
    if plan is None:
        return None, [], 0, 0
    return plan, pack_shards(plan, shard_pairs), n_tracks, n_frames


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _write_if_changed(store: OutputStore, rel: str, data: bytes, fs) -> None:
    if store.read(rel, fs) != data:
        store.write(rel, data, fs)


def _sum_counters(dicts: Iterable[dict]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def run_prepare(datasets: dict[str, str], out: str, cfg, *, pairs: dict[str, int] | None = None, seed: int = 0,
                shard_pairs: int = DEFAULT_SHARD_PAIRS, jpeg_quality: int | None = None,
                ray_address: str | None = None, reader_options: dict[str, dict] | None = None,
                task_cpus: float | None = None, max_in_flight: int | None = None, progress: bool = True,
                log: Callable[[str], None] | None = print) -> tuple[dict, dict]:
    """The job; returns ``(manifest, run_info)``. See :func:`prepare` for the arguments.

    ``run_info`` (not stored) holds what varies between runs: ``shards_run``, ``shards_skipped``,
    ``seconds`` (all), ``seconds_listing`` (list + plan), ``seconds_crop`` (submitting the first shard task to
    the last result, Ray start excluded), ``driver_cpu_seconds_crop`` (the driver's CPU time in that phase),
    ``timeline`` (per shard task: shard, pid, start / end in seconds from the phase's start, CPU seconds),
    ``task_cpus`` (CPUs each shard task reserved), ``workers`` (per pid: node, shards, seconds, CPU seconds in
    shard tasks, peak RSS in MB),
    ``nodes`` (distinct Ray nodes that ran shards) and ``driver_peak_rss_mb``.
    """
    t_start = time.perf_counter()
    say = log or (lambda _msg: None)
    roots = _dataset_roots(datasets)
    settings = CropSettings.from_config(cfg, jpeg_quality)
    store = OutputStore.from_uri(out)
    store.check_writable()  # fail fast: missing bucket, unreachable endpoint, no write access
    fs = store.filesystem()
    spill_dir = spill_folder()
    try:
        states = _list_datasets(roots, cfg, seed, pair_counts(cfg.data, pairs), shard_pairs, reader_options,
                                spill_dir, say)  # 1-2
        t_listed = time.perf_counter()
        job_doc = _job_document(states, roots, cfg, settings, seed, shard_pairs, reader_options)
        _claim_output(store, job_doc, fs)
        digest = job_doc["fingerprint"]
        done = _done_shards(store, states, digest, fs)  # 3
        total = sum(len(st.shards) for st in states.values())
        say(f"{total} shards, {len(done)} already done" if done else f"{total} shards")
        # largest shards first (longest-processing-time order): the last tasks to start are the short ones, so
        # workers finish together instead of one long shard running alone at the end
        todo = sorted((-shard_cost(st.plan, draws), name, i) for name, st in states.items()
                      for i, draws in enumerate(st.shards) if shard_name(name, i) not in done)
        tasks = (ShardTask(name, i, digest, states[name].plan.videos(states[name].shards[i])) for _, name, i in todo)
        crop = _CropPhase(done)
        if todo:  # 4
            crop.run(store, tasks, total, settings, ray_address=ray_address, task_cpus=task_cpus,
                     max_in_flight=max_in_flight, progress=progress)
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    if crop.failed:
        raise ShardFailed(f"{len(crop.failed)} of {total} shards failed ({', '.join(crop.failed[:5])}"
                          f"{', ...' if len(crop.failed) > 5 else ''}); the others are stored: re-run the same "
                          "command to finish the job")

    # 5. reader rejects, then the manifest (last)
    for name, st in states.items():
        rel = f"rejects/reader-{name}.jsonl"
        if st.reader_log.items:
            lines = "".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n" for r in st.reader_log.items)
            _write_if_changed(store, rel, lines.encode("utf-8"), fs)
    manifest = build_manifest(states, done, job_doc, roots)
    _write_if_changed(store, "manifest.json", _json_bytes(manifest), fs)
    run_info = {
        "seconds": time.perf_counter() - t_start, "seconds_listing": t_listed - t_start,
        **crop.info(), "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    run_info["shards_skipped"] = total - run_info["shards_run"]
    return manifest, run_info


def _dataset_roots(datasets: dict[str, str]) -> dict[str, str]:
    """``{name: absolute root}`` in name order; unknown names, no dataset or a missing folder raise."""
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    if not datasets:
        raise ValueError("no dataset given (NAME=ROOT)")
    roots = {}
    for name, root in sorted(datasets.items()):
        path = Path(root).expanduser().resolve()  # tasks on other nodes / cwds need absolute paths
        if not path.is_dir():
            raise FileNotFoundError(f"{name}: dataset root {root} is not a folder")
        roots[name] = str(path)
    return roots


SPILL_PREFIX = "ocean-prepare-"


def spill_folder(base: str | None = None) -> str:
    """A fresh job-local folder for spilled annotation columns, ``<tmp>/ocean-prepare-<host>-<pid>-XXXXXXXX``.

    Folders that jobs on this host left behind when they were killed (a SIGKILL skips ``finally``) are removed
    first: those whose process no longer exists. A folder of another host (a shared ``/tmp``) is left alone.
    """
    base = base or tempfile.gettempdir()
    host = socket.gethostname().replace("-", "_")
    for path in Path(base).glob(f"{SPILL_PREFIX}{host}-*-*"):
        pid = path.name[len(SPILL_PREFIX) + len(host) + 1:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{host}-{os.getpid()}-", dir=base)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _list_datasets(roots: dict[str, str], cfg, seed: int, counts: dict[str, int], shard_pairs: int,
                   reader_options: dict[str, dict] | None, spill_dir: str,
                   say: Callable[[str], None]) -> dict[str, _DatasetState]:
    """Steps 1-2: list and plan one dataset at a time (the driver holds annotations only, spilled)."""
    states: dict[str, _DatasetState] = {}
    for name, root in roots.items():
        st = states[name] = _DatasetState(name, root)
        st.requested = int(counts.get(name, 0))
        tracks = read_tracks(name, root, on_reject=st.reader_log, **(reader_options or {}).get(name, {}))
        st.plan, st.shards, st.tracks, st.annotated_frames = list_and_plan(
            name, tracks, cfg, seed, st.requested, shard_pairs, spill_dir=spill_dir)
        say(f"{name}: {st.tracks} tracks, {st.annotated_frames} annotated frames, "
            f"{len(st.plan) if st.plan else 0} pairs planned in {len(st.shards)} shards")
    return states


def _job_document(states: dict[str, _DatasetState], roots: dict[str, str], cfg, settings: CropSettings, seed: int,
                  shard_pairs: int, reader_options: dict[str, dict] | None) -> dict:
    """The job's identity, kept in ``OUT/job.json``: its config and a fingerprint of config, seed and plans."""
    from data_prep.records import SCHEMA_VERSION as PAIR_SCHEMA_VERSION
    from ocean.config import to_dict

    job_config = {
        "seed": int(seed), "preset": cfg.preset, "shard_pairs": int(shard_pairs),
        "pairs_requested": {n: st.requested for n, st in states.items()},
        "crop": dataclasses.asdict(settings), "data": to_dict(cfg.data), "augment": to_dict(cfg.augment),
        "reader_options": {n: {k: (list(v) if isinstance(v, tuple) else v) for k, v in o.items()}
                           for n, o in sorted((reader_options or {}).items()) if n in roots},
    }
    digest = hashlib.sha256(json.dumps(
        {"manifest_schema": MANIFEST_SCHEMA_VERSION, "pair_schema": PAIR_SCHEMA_VERSION, "config": job_config,
         "plans": {n: (plan_digest(st.plan) if st.plan else None) for n, st in states.items()}},
        sort_keys=True).encode()).hexdigest()
    return {"fingerprint": digest, "config": job_config, "datasets": sorted(roots)}


def _claim_output(store: OutputStore, job_doc: dict, fs) -> None:
    """Write ``OUT/job.json``, or check that the one there is this job's (else :class:`JobMismatch`)."""
    previous = store.read("job.json", fs)
    if previous is None:
        store.write("job.json", _json_bytes(job_doc), fs)
        return
    old = json.loads(previous).get("fingerprint", "?")
    if old != job_doc["fingerprint"]:
        raise JobMismatch(
            f"{store.uri} already holds pairs prepared with a different plan (job {old[:12]}, "
            f"this one {job_doc['fingerprint'][:12]}): other datasets, seed, pair counts, config or input data. "
            "Use a new --out, or delete the old output first.")


def _done_shards(store: OutputStore, states: dict[str, _DatasetState], digest: str, fs) -> dict[str, dict]:
    """Step 3: the sidecars of shards already done by this job (sidecar present, same job, parquet present)."""
    done: dict[str, dict] = {}
    for name, st in states.items():
        for i in range(len(st.shards)):
            sname = shard_name(name, i)
            raw = store.read(shard_paths(sname)["stats"], fs)
            if raw is None:
                continue
            side = json.loads(raw)
            if side.get("job") == digest and store.exists(side["path"], fs):
                done[sname] = side
    return done


def shard_task_cpus() -> float:
    """CPUs a shard task reserves by default: 1, except on a one-node cluster with more logical CPUs than this
    machine has cores, where it is logical CPUs / cores, so that no more shard tasks run at once than there are
    cores. A shard task keeps one core busy (one OpenCV thread), and the local Ray of
    :mod:`pipelines.raysession` has at least 4 logical CPUs (ray_stack.md §2): 4 shard tasks time-sliced on 2
    cores took 6 % more CPU per frame and gave 4 % fewer frames/s than 2 (``benchmarks/prep_throughput.py
    --cpus 4`` vs ``--cpus 2``, BENCHMARKS.md). On several nodes the other nodes' cores are not known here
    (``ray start`` gives a node one logical CPU per core), so it stays 1.
    """
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cores = os.cpu_count() or 1
    if len(nodes) != 1:
        return 1.0
    logical = float(nodes[0].get("Resources", {}).get("CPU", 0.0))
    return logical / cores if logical > cores else 1.0


class _CropPhase:
    """Step 4 on Ray, and what it measured: results go into ``done``; each shard task run's ``runtime`` (pid,
    node, start / end, CPU seconds, peak RSS) is kept, per worker process figures are derived from them."""

    def __init__(self, done: dict[str, dict]) -> None:
        self.done = done
        self.failed: list[str] = []
        self.runs: list[dict] = []  # per shard task: its ``runtime`` and shard name
        self.seconds = self.driver_cpu_seconds = 0.0
        self.epoch = time.time()
        self.task_cpus: float | None = None

    def run(self, store: OutputStore, tasks: Iterable[ShardTask], total: int, settings: CropSettings, *,
            ray_address: str | None, task_cpus: float | None, max_in_flight: int | None, progress: bool) -> None:
        from pipelines.raysession import ensure_ray

        started_ray = ensure_ray(ray_address, quiet=False)
        task_cpus = self.task_cpus = shard_task_cpus() if task_cpus is None else task_cpus
        t0, self.epoch, cpu0 = time.perf_counter(), time.time(), time.process_time()
        try:
            self.failed = _run_tasks(store, tasks, total, settings, task_cpus=task_cpus,
                                     max_in_flight=max_in_flight, on_result=self._on_result, progress=progress,
                                     initial=len(self.done))
            self.seconds, self.driver_cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            if started_ray:
                import ray

                ray.shutdown()

    def _on_result(self, result: dict) -> None:
        self.runs.append({"shard": result["shard"], **result.pop("runtime")})
        self.done[result["shard"]] = result

    def info(self) -> dict:
        workers: dict[int, dict] = {}
        for r in self.runs:
            w = workers.setdefault(r["pid"], {"node": r["node"], "shards": 0, "seconds": 0.0, "cpu_seconds": 0.0,
                                              "peak_rss_mb": 0.0})
            w["shards"] += 1
            w["seconds"] += r["end"] - r["start"]
            w["cpu_seconds"] += r["cpu_seconds"]
            w["peak_rss_mb"] = max(w["peak_rss_mb"], r["peak_rss_mb"])
        timeline = [{"shard": r["shard"], "pid": r["pid"], "start": r["start"] - self.epoch,
                     "end": r["end"] - self.epoch, "cpu_seconds": r["cpu_seconds"]} for r in self.runs]
        return {"seconds_crop": self.seconds, "driver_cpu_seconds_crop": self.driver_cpu_seconds,
                "task_cpus": self.task_cpus, "workers": workers, "timeline": timeline,
                "nodes": len({w["node"] for w in workers.values()}), "shards_run": len(self.runs)}


def build_manifest(states: dict[str, _DatasetState], done: dict[str, dict], job_doc: dict,
                   roots: dict[str, str]) -> dict:
    """The manifest from the listing and the shard sidecars (deterministic: no times, hosts or credentials)."""
    from data_prep.records import SCHEMA_VERSION as PAIR_SCHEMA_VERSION

    shards: list[dict] = []
    per_dataset: dict[str, dict] = {}
    for name, st in states.items():
        sides = [done[shard_name(name, i)] for i in range(len(st.shards))]
        rejected = _sum_counters(s["rejected"] for s in sides)
        dropped = _sum_counters(s["pairs_dropped"] for s in sides)
        entry = {
            "root": roots[name], "tracks": st.tracks, "annotated_frames": st.annotated_frames,
            "reader_rejected": st.reader_log.by_reason(),
            "videos": st.plan.num_videos if st.plan else 0,
            "frames_read": sum(s["frames_read"] for s in sides),
            "frames_used": sum(s["frames_used"] for s in sides),
            "rejected": rejected,
            "crops": sum(s["crops"] for s in sides), "crops_failed": sum(s["crops_failed"] for s in sides),
            "pairs_requested": st.requested, "pairs_planned": len(st.plan) if st.plan else 0,
            "pairs_written": sum(s["rows"] for s in sides), "pairs_dropped": dropped,
            "shards": len(sides), "bytes": sum(s["bytes"] for s in sides),
        }
        if entry["frames_read"] != entry["frames_used"] + sum(rejected.values()):
            raise AssertionError(f"{name}: frames do not reconcile: {entry}")
        if entry["pairs_planned"] != entry["pairs_written"] + sum(dropped.values()):
            raise AssertionError(f"{name}: pairs do not reconcile: {entry}")
        per_dataset[name] = entry
        for s in sides:
            shards.append({"path": s["path"], "dataset": name, "rows": s["rows"], "bytes": s["bytes"],
                           "sha256": s["sha256"], "pair_ids_sha256": s["pair_ids_sha256"],
                           "rejects": s["rejects_path"]})
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION, "pair_schema_version": PAIR_SCHEMA_VERSION,
        "job": job_doc["fingerprint"], "config": {**job_doc["config"], "datasets": roots},
        "datasets": per_dataset, "shards": shards,
        "reader_rejects": [f"rejects/reader-{n}.jsonl" for n, st in states.items() if st.reader_log.items],
        "totals": {
            "pairs_written": sum(d["pairs_written"] for d in per_dataset.values()),
            "bytes": sum(d["bytes"] for d in per_dataset.values()), "shards": len(shards),
        },
    }


def prepare(datasets: dict[str, str], out: str, cfg, *, pairs: dict[str, int] | None = None, seed: int = 0,
            shard_pairs: int = DEFAULT_SHARD_PAIRS, jpeg_quality: int | None = None,
            ray_address: str | None = None, reader_options: dict[str, dict] | None = None,
            task_cpus: float | None = None, max_in_flight: int | None = None, progress: bool = True,
            log: Callable[[str], None] | None = print) -> dict:
    """Prepare parquet pair shards from dataset downloads; return the manifest (also at ``out/manifest.json``).

    Args:
        datasets: ``{name: root}`` with name in :data:`data_prep.tracks.DATASETS`.
        out: a folder, ``file://`` URI or ``s3://bucket/prefix`` (endpoint from ``AWS_ENDPOINT_URL`` or
            ``?endpoint_override=host:port&scheme=http``).
        cfg: :class:`ocean.config.OceanConfig` (``data``: pair counts, ranges, crop frame, JPEG quality;
            ``augment``: the stored crop sides; ``model``: exemplar / search sizes).
        pairs: per-dataset pair counts overriding ``pairs_per_epoch * pool_factor``.
        seed: the plan's seed.
        shard_pairs: most pairs per shard.
        jpeg_quality: overrides ``cfg.data.jpeg_quality``.
        ray_address: a Ray cluster to use (default ``$RAY_ADDRESS``, else a local Ray; an already initialised
            Ray is used as it is).
        reader_options: per-dataset reader keyword arguments (e.g. ``{"ytbb": {"media": "videos"}}``).
        task_cpus: CPUs each shard task reserves (default :func:`shard_task_cpus`: 1, or logical CPUs per core
            on a one-node cluster with more logical CPUs than cores).
        max_in_flight: shard tasks submitted at once (default twice the cluster's CPUs / task_cpus).
        progress: show a tqdm bar of shards on stderr.
        log: where one-line messages go (None: silent).

    Raises:
        pipelines.storage.StorageError: the output cannot be written (before any work).
        JobMismatch: ``out`` holds a different job.
        ShardFailed: some shard tasks raised (the rest is stored; re-run to finish).
    """
    manifest, _ = run_prepare(datasets, out, cfg, pairs=pairs, seed=seed, shard_pairs=shard_pairs,
                              jpeg_quality=jpeg_quality, ray_address=ray_address, reader_options=reader_options,
                              task_cpus=task_cpus, max_in_flight=max_in_flight, progress=progress, log=log)
    return manifest


def summary_table(manifest: dict) -> str:
    """A markdown table of the manifest's per-dataset counts."""
    head = ("| dataset | tracks | frames read | used | rejected | pairs planned | written | dropped | shards | MB |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for name, d in manifest["datasets"].items():
        lines.append(
            f"| {name} | {d['tracks']} | {d['frames_read']} | {d['frames_used']} | {sum(d['rejected'].values())} "
            f"| {d['pairs_planned']} | {d['pairs_written']} | {sum(d['pairs_dropped'].values())} | {d['shards']} "
            f"| {d['bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


def rejection_lines(manifest: dict) -> list[str]:
    """One line per dataset with rejections: ``name: reader {reason: n} decode {reason: n} dropped {...}``."""
    out = []
    for name, d in manifest["datasets"].items():
        if d["reader_rejected"] or d["rejected"] or d["pairs_dropped"]:
            out.append(f"{name}: reader {d['reader_rejected']}, decode {d['rejected']}, "
                       f"pairs dropped {d['pairs_dropped']}")
    return out


__all__ = ["prepare", "run_prepare", "pack_shards", "process_shard", "crop_shard",
           "summary_table", "JobMismatch", "ShardFailed", "CropSettings", "ShardTask",
           "DEFAULT_SHARD_PAIRS", "MANIFEST_SCHEMA_VERSION"]
