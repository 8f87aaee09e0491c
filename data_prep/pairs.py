"""Template / search pair sampling, planned once on the driver, deterministic from a seed (facts §7.4).

:func:`plan_pairs` turns the datasets' tracks and a :class:`ocean.config.DataConfig` into a :class:`PairPlan`:
per dataset a compact :class:`DatasetPlan` (int32 arrays over a table of the eligible tracks), grouped by
video into :class:`VideoWork` items for the crop tasks. The plan depends only on the tracks, the seed and the
pair counts: not on the readers' order, on other datasets, on the number of workers, on chunking or on
spilling. Memory is O(tracks + pairs), never O(annotated frames). The sampling steps: :func:`plan_dataset`.
How many pairs a dataset can supply (:func:`pair_bound`) caps what :func:`plan_pairs` draws (facts §7.6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.tracks import FrameRef, Track, TrackTable, track_ranges

TEMPLATE = "template"
SEARCH = "search"


def pair_id(dataset: str, video: str, track_id: str, template_frame: str, search_frame: str, k: int) -> str:
    """Stable 16-hex-digit id of the ``k``-th pair drawn for ``dataset``."""
    key = f"{dataset}/{video}/{track_id}/{template_frame}/{search_frame}/{k}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def dataset_rng(seed: int, dataset: str) -> np.random.Generator:
    """The generator of one dataset's plan: ``SeedSequence([seed, sha1(dataset)[:8] as int])``."""
    tag = int(hashlib.sha1(dataset.encode("utf-8")).hexdigest()[:8], 16)
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag]))


@dataclass(frozen=True)
class Pair:
    """One planned pair; indices are positions in ``Track.frames``."""

    pair_id: str
    dataset: str
    video: str
    track_id: str
    template_index: int
    search_index: int
    template_frame: str
    search_frame: str
    draw: int  # k, the draw number within the dataset


@dataclass
class VideoWork:
    """Everything one video contributes to the plan (small and picklable: one Ray task's input).

    Attributes:
        frames: distinct frames to decode, ``frame_id -> FrameRef`` in time order.
        crops: the crops to cut, ``(track_id, frame_id, role) -> box_xyxy`` (source pixels, a 4-tuple),
            role :data:`TEMPLATE` or :data:`SEARCH` (the two are stored at different sizes).
        pairs: the pairs of this video in draw order.
    """

    dataset: str
    video: str
    frames: dict[str, FrameRef] = field(default_factory=dict)
    crops: dict[tuple[str, str, str], tuple[float, float, float, float]] = field(default_factory=dict)
    pairs: list[Pair] = field(default_factory=list)


@dataclass
class DatasetPlan:
    """The pairs of one dataset as arrays into :attr:`tracks`.

    The plan is compact (three int32 arrays per dataset, over a :class:`~data_prep.tracks.TrackTable` of the
    eligible tracks: flat arrays, no Python object per frame); :meth:`videos` groups it by video into
    :class:`VideoWork` items that carry the distinct frames a video needs (decode each once), the crops to
    cut from them and the pairs to write.

    Attributes:
        tracks: eligible tracks (at least one present frame), sorted by (video, track_id), as a compact
            :class:`~data_prep.tracks.TrackTable` (``tracks[i]`` gives a :class:`Track`).
        track_index, template_index, search_index: ``(P,)`` int32, pair ``k`` uses
            ``tracks[track_index[k]].frames[template_index[k]]`` etc.
        requested: the USE asked for; ``len(self)`` is smaller only when the plan was capped at
            :attr:`bound` or the dataset has no eligible video.
        num_videos: eligible videos.
        ineligible_tracks: tracks dropped for having no present frame.
        video_of_track: ``(T,)`` int32, the video number (0..num_videos-1, in video id order) of each track.
        bound: the distinct pairs the tracks can supply at this RANGE (:func:`pair_bound`, facts §7.6).
    """

    dataset: str
    tracks: TrackTable
    track_index: np.ndarray
    template_index: np.ndarray
    search_index: np.ndarray
    requested: int
    num_videos: int
    ineligible_tracks: int = 0
    video_of_track: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    bound: int = 0

    @property
    def capped(self) -> bool:
        """Fewer pairs planned than requested: the data cannot supply them (:attr:`bound`, facts §7.6)."""
        return len(self) < self.requested

    def __len__(self) -> int:
        return int(len(self.track_index))

    def video_names(self) -> list[str]:
        """The eligible videos' ids, in video number order."""
        if self.num_videos == 0:
            return []
        first = np.flatnonzero(np.diff(self.video_of_track, prepend=-1))  # first track of every video
        return self.tracks.strings("video", first)

    def pair(self, k: int) -> Pair:
        t = int(self.track_index[k])
        ti, si = int(self.template_index[k]), int(self.search_index[k])
        start = int(self.tracks.frame_start[t])
        tf, sf = (r.frame_id for r in self.tracks.frame_refs(np.array([start + ti, start + si])))
        video, track_id = self.tracks.video[t].as_py(), self.tracks.track_id[t].as_py()
        return Pair(pair_id(self.dataset, video, track_id, tf, sf, k), self.dataset, video, track_id, ti, si,
                    tf, sf, k)

    def pairs(self) -> Iterator[Pair]:
        for k in range(len(self)):
            yield self.pair(k)

    def frame_indices(self, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(template, search)`` flat frame indices into :attr:`tracks` (``(M,)`` int64) of draws ``draws``."""
        draws = np.asarray(draws, dtype=np.int64)
        base = self.tracks.frame_start[self.track_index[draws].astype(np.int64)]
        return base + self.template_index[draws].astype(np.int64), base + self.search_index[draws].astype(np.int64)

    def videos(self, draws: np.ndarray | None = None) -> list[VideoWork]:
        """Draws grouped by video: per video its distinct frames, crops and pairs (one shard's task input).

        Args:
            draws: ``(M,)`` draw numbers (one shard, :func:`data_prep.shards.pack_shards`); None = the
                whole plan, videos in id order.

        Frames are in time order (video timestamp, else position in the track); crops keyed
        ``(track_id, frame_id, role)`` with the source box; pairs in the order of ``draws`` (draw order
        within a video when ``draws`` is None). The frames are gathered from :attr:`tracks` in one go.
        """
        if draws is None:
            draws = np.argsort(self.video_of_track[self.track_index], kind="stable")
        draws = np.asarray(draws, dtype=np.int64)
        table = self.tracks
        tracks = self.track_index[draws].astype(np.int64)
        t_pos, s_pos = self.template_index[draws], self.search_index[draws]
        flat, inverse = np.unique(np.concatenate(self.frame_indices(draws)), return_inverse=True)
        refs = table.frame_refs(flat)
        boxes = [tuple(b) for b in table.boxes_xyxy[flat].tolist()]
        n = len(draws)
        t_ref, s_ref = inverse[:n].tolist(), inverse[n:].tolist()
        videos, track_ids = table.strings("video", tracks), table.strings("track_id", tracks)
        out: dict[str, VideoWork] = {}
        first_pos: dict[tuple[str, str], tuple[int, int]] = {}
        for j, k in enumerate(draws.tolist()):
            video, track_id = videos[j], track_ids[j]
            ti, si = int(t_pos[j]), int(s_pos[j])
            t_frame, s_frame = refs[t_ref[j]].frame_id, refs[s_ref[j]].frame_id
            pair = Pair(pair_id(self.dataset, video, track_id, t_frame, s_frame, k), self.dataset, video,
                        track_id, ti, si, t_frame, s_frame, k)
            work = out.get(video)
            if work is None:
                work = out[video] = VideoWork(self.dataset, video)
            work.pairs.append(pair)
            for idx, u, role in ((ti, t_ref[j], TEMPLATE), (si, s_ref[j], SEARCH)):
                ref = refs[u]
                work.frames.setdefault(ref.frame_id, ref)
                work.crops[(track_id, ref.frame_id, role)] = boxes[u]
                ts = ref.timestamp_ms if ref.timestamp_ms is not None else idx
                prev = first_pos.get((video, ref.frame_id))
                first_pos[(video, ref.frame_id)] = (ts, idx) if prev is None else min(prev, (ts, idx))
        for work in out.values():
            work.frames = dict(sorted(work.frames.items(), key=lambda kv: (first_pos[(work.video, kv[0])], kv[0])))
        return list(out.values())


def pair_bound(table: TrackTable, frame_range: int, chunk_frames: int = 1 << 20) -> int:
    """The number of distinct pairs :func:`plan_dataset` can draw from ``table`` at RANGE ``frame_range``
    (facts §7.6): the ordered (template, search) pairs of present frames of one track whose list positions
    differ by at most RANGE, summed over the tracks.

    A track of ``n`` present frames, all within RANGE of each other, gives ``n * n`` (a single-frame track,
    COCO / ImageNet DET, gives 1: the frame with itself); a long track about ``n * (2 * RANGE + 1)``. Exact,
    in O(frames) time: per present frame the present frames of its clipped window, from a running count,
    ``chunk_frames`` frames at a time (a spilled table is read through its memory map).
    """
    if frame_range < 0:
        raise ValueError(f"frame_range must be >= 0, got {frame_range}")
    fs = table.frame_start
    total = 0
    for a, b in track_ranges(fs, chunk_frames):
        base = int(fs[a])
        present = np.asarray(table.present[base:int(fs[b])], dtype=bool)
        idx = np.flatnonzero(present)  # present frames of tracks a..b-1, positions in this range
        if not len(idx):
            continue
        before = np.concatenate([[0], np.cumsum(present, dtype=np.int64)])  # before[i]: present in [0, i)
        starts, ends = fs[a:b] - base, fs[a + 1:b + 1] - base  # each track's frames: starts[j]..ends[j]-1
        owner = np.searchsorted(ends, idx, side="right")  # the track of each present frame
        lo = np.maximum(idx - frame_range, starts[owner])
        hi = np.minimum(idx + frame_range + 1, ends[owner])
        total += int((before[hi] - before[lo]).sum())
    return total


def plan_dataset(dataset: str, tracks: Iterable[Track] | TrackTable, num_pairs: int, frame_range: int,
                 seed: int, spill_dir: str | Path | None = None, chunk_frames: int = 1 << 18,
                 cap: bool = False) -> DatasetPlan:
    """Sample ``num_pairs`` pairs of one dataset the way the official sampler does (facts §7.4).

    With ``USE = num_pairs`` (:func:`plan_pairs`: ``pairs_per_epoch[dataset] * pool_factor`` or an explicit
    per-dataset count):

    1. The dataset's videos (sorted by id, so the reader's order does not matter) are listed USE times by
       repeatedly shuffling all of them and truncating the concatenation to USE: every video is drawn about
       ``USE / num_videos`` times.
    2. For each drawn video a track is picked uniformly among its tracks.
    3. The template frame is drawn uniformly over the track's frames that are *present* (the dataset's own
       presence flags, :class:`~data_prep.tracks.Track`); a track without a present frame is not eligible
       and a video without an eligible track is dropped (as TK ``subData._clean`` drops empty tracks /
       videos).
    4. The search frame is drawn uniformly over the present frames whose list positions lie in
       ``[t - RANGE, t + RANGE]`` clipped to the list, ``t`` being the template's position and RANGE
       ``DataConfig.frame_range[dataset]``. RANGE counts positions in the track's frame list, not frame
       numbers (facts §7.4). The search frame can be earlier than, later than or the same as the template.
       Single-frame tracks (COCO, ImageNet DET) therefore give same-image pairs, which differ only by their
       augmentation.

    With ``cap``, USE is ``min(num_pairs, pair_bound(tracks, RANGE))``: never more pairs than the distinct
    pairs the data can supply (facts §7.6); the draws are the steps above with that USE (still with
    replacement, as the official sampler draws). :attr:`DatasetPlan.bound` is that bound either way.

    Every dataset draws from its own generator seeded with ``(seed, sha1(dataset))``, so one dataset's plan
    does not change when another dataset is added or resized, and the plan does not depend on how many
    workers run later. Each pair gets a stable id,
    ``sha1("dataset/video/track/template_frame/search_frame/k")[:16]`` with ``k`` the draw number within
    its dataset.

    Memory is bounded whatever the dataset's size: planning keeps O(tracks + pairs) in anonymous memory,
    never O(annotated frames): per track the (video, track_id) sort keys, ``frame_start``, the present-frame
    count and the video number (the sort, the eligibility test and the video / track picks need them for
    every track); per pair the three int32 plan arrays and, while drawing, the pair's three uniforms. The
    per-frame columns are only read ``chunk_frames`` at a time: computing the bound, counting present frames,
    copying the eligible tracks in (video, track_id) order (:meth:`~data_prep.tracks.TrackTable.take`; written
    chunk by chunk into the spill folder when the table is spilled, see :class:`~data_prep.tracks.TrackTable`), and
    drawing template / search frames (the draws sorted by track, one range of tracks at a time, reading only
    ranges some draw needs). The plan does not depend on ``chunk_frames`` or on spilling: a RANGE window
    never leaves its track, and every draw uses the same uniforms in the same arithmetic
    (tests/data/test_plan_spill.py).

    Args:
        tracks: the dataset's tracks (any order), as :class:`Track` s (those of other datasets raise
            ValueError) or a :class:`~data_prep.tracks.TrackTable` (the compact form the job uses).
        num_pairs: USE, pairs to draw (>= 0).
        frame_range: RANGE in list positions (>= 0).
        seed: base seed; the generator is :func:`dataset_rng` ``(seed, dataset)``.
        spill_dir: a local folder for the plan's table of eligible tracks (and for the table of ``tracks``
            when they are :class:`Track` s): spilled tables, memory-mapped (above). Default: beside
            a spilled ``tracks`` table, else in memory.
        chunk_frames: frames handled at a time when counting present frames, copying the eligible tracks and
            drawing template / search frames (bounds the temporaries); the plan does not depend on it.
        cap: draw at most :func:`pair_bound` pairs (:func:`plan_pairs` does; the sampler alone does not).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if num_pairs < 0 or frame_range < 0:
        raise ValueError(f"{dataset}: num_pairs ({num_pairs}) and frame_range ({frame_range}) must be >= 0")
    table = tracks if isinstance(tracks, TrackTable) else TrackTable.from_tracks(dataset, tracks,
                                                                                 spill_dir=spill_dir)
    if table.dataset != dataset:
        raise ValueError(f"tracks of {table.dataset!r} given for dataset {dataset!r}")
    if spill_dir is None and table.folder is not None:
        spill_dir = table.folder.parent
    bound = pair_bound(table, frame_range, chunk_frames)  # facts §7.6
    # eligible: at least one present frame (TK subData._clean drops empty tracks, facts §7.2)
    n_present = table.present_counts(chunk_frames)
    candidates = np.flatnonzero(n_present > 0)
    ineligible = table.num_tracks - len(candidates)
    # sorted by (video, track_id); Arrow sorts UTF-8 bytes, which is Python's code point order
    keys = pa.table({"v": table.video.take(pa.array(candidates)), "t": table.track_id.take(pa.array(candidates))})
    order = candidates[pc.sort_indices(keys, sort_keys=[("v", "ascending"), ("t", "ascending")]).to_numpy()]
    del keys
    eligible = table.take(order, spill_dir=spill_dir, chunk_frames=chunk_frames)
    count = n_present[order]  # (T,) present frames of each eligible track
    n_tracks = eligible.num_tracks
    if n_tracks > 1:
        same_video = pc.equal(eligible.video[1:], eligible.video[:-1]).to_numpy(zero_copy_only=False)
        same_track = pc.equal(eligible.track_id[1:], eligible.track_id[:-1]).to_numpy(zero_copy_only=False)
        if (same_video & same_track).any():
            raise ValueError(f"{dataset}: duplicate (video, track_id) among the tracks")
        new_video = np.concatenate([[True], ~same_video])
    else:
        new_video = np.ones(n_tracks, bool)
    video_start = np.flatnonzero(new_video)  # first track of each video, in video order
    video_of_track = (np.cumsum(new_video) - 1).astype(np.int32)
    num_videos = len(video_start)

    rng = dataset_rng(seed, dataset)
    n = (min(num_pairs, bound) if cap else num_pairs) if num_videos else 0
    track_index = np.empty(n, dtype=np.int32)
    template_index = np.empty(n, dtype=np.int32)
    search_index = np.empty(n, dtype=np.int32)
    if n:
        # 1. USE video picks: shuffle all videos repeatedly and truncate -- TK subData._shuffle (facts §7.4)
        reps = -(-n // num_videos)
        picks = np.concatenate([rng.permutation(num_videos) for _ in range(reps)])[:n]
        # Steps 2-4 turn three uniforms per pair into indices, vectorised (floor(u * m) is uniform on 0..m-1).
        u = rng.random((n, 3))
        video_size = np.diff(np.concatenate([video_start, [n_tracks]])).astype(np.int64)
        ti = video_start[picks].astype(np.int64) + np.floor(u[:, 0] * video_size[picks]).astype(np.int64)  # 2.
        t, s = _draw_frames(eligible, count, ti, u[:, 1], u[:, 2], frame_range, chunk_frames)  # 3.-4.
        track_index[:], template_index[:], search_index[:] = ti, t, s
    return DatasetPlan(dataset, eligible, track_index, template_index, search_index, int(num_pairs),
                       num_videos, ineligible, video_of_track, bound)


def _draw_frames(table: TrackTable, count: np.ndarray, ti: np.ndarray, u_template: np.ndarray,
                 u_search: np.ndarray, frame_range: int, chunk_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps 3-4 of :func:`plan_dataset`: ``(template, search)`` positions ``(P,)`` int64 of draws on tracks
    ``ti`` ``(P,)``, from uniforms ``u_template``, ``u_search`` ``(P,)`` in [0, 1).

    ``count`` ``(T,)`` is each track's number of present frames (>= 1). The draws are sorted by track and
    the tracks visited in ranges of at most ``chunk_frames`` frames (one track may be longer), reading only
    the ranges some draw needs: temporaries are O(chunk + pairs + tracks), and each draw's result does not
    depend on the chunking (a window never leaves its track).
    """
    template = np.empty(len(ti), np.int64)
    search = np.empty(len(ti), np.int64)
    by_track = np.argsort(ti, kind="stable")
    ti_sorted = ti[by_track]
    fs = table.frame_start
    band = int(table.lengths().max()) + 2 * frame_range + 2  # > any position + RANGE: windows stay in a band
    for a, b in track_ranges(fs, chunk_frames):
        lo_draw, hi_draw = np.searchsorted(ti_sorted, [a, b])
        if lo_draw == hi_draw:
            continue
        draws = by_track[lo_draw:hi_draw]
        # present positions of tracks a..b-1 concatenated; key = position + (track - a) * band keeps each
        # track's entries in their own band, so one searchsorted finds every RANGE window (clipped to the track)
        present_flat = np.flatnonzero(table.present[fs[a]:fs[b]]) + fs[a]  # flat frame indices, track by track
        owner = np.searchsorted(fs[a:b + 1], present_flat, side="right") - 1  # track - a
        flat = present_flat - fs[a:b][owner]  # positions within each track
        start = np.concatenate([[0], np.cumsum(count[a:b])[:-1]])
        keys = flat + owner.astype(np.int64) * band
        local = ti[draws] - a
        t = flat[start[local] + np.floor(u_template[draws] * count[ti[draws]]).astype(np.int64)]  # 3. present
        lo = np.searchsorted(keys, local * band + t - frame_range, side="left")
        hi = np.searchsorted(keys, local * band + t + frame_range, side="right")
        template[draws] = t
        search[draws] = flat[lo + np.floor(u_search[draws] * (hi - lo)).astype(np.int64)]  # 4. within RANGE
    return template, search


@dataclass
class PairPlan:
    """Per-dataset plans (:class:`DatasetPlan`) in dataset-name order."""

    datasets: dict[str, DatasetPlan]
    seed: int

    def __len__(self) -> int:
        return sum(len(p) for p in self.datasets.values())

    def pairs(self) -> Iterator[Pair]:
        for plan in self.datasets.values():
            yield from plan.pairs()

    def videos(self) -> Iterator[VideoWork]:
        for plan in self.datasets.values():
            yield from plan.videos()


def pair_counts(data, overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Pairs to prepare per dataset: ``DataConfig.pairs_per_epoch * pool_factor`` unless overridden."""
    counts = {name: int(n) * int(data.pool_factor) for name, n in data.pairs_per_epoch.items()}
    for name, n in (overrides or {}).items():
        if int(n) < 0:
            raise ValueError(f"pairs for {name} must be >= 0, got {n}")
        counts[name] = int(n)
    return counts


def plan_pairs(tracks: Iterable[Track] | TrackTable, data, seed: int, pairs: dict[str, int] | None = None,
               spill_dir: str | Path | None = None, cap: bool = True) -> PairPlan:
    """Plan the pairs of every dataset present in ``tracks``.

    Each dataset's count (:func:`pair_counts`, default or explicit) is capped at the distinct pairs its
    tracks can supply (:func:`pair_bound`, facts §7.6); each plan records ``requested`` and ``bound``, and
    :attr:`DatasetPlan.capped` says whether the cap bit. Where the data suffices the plan is the uncapped one.

    Args:
        tracks: tracks of one or more datasets, or one dataset's :class:`~data_prep.tracks.TrackTable`.
        data: :class:`ocean.config.DataConfig` (pairs_per_epoch, pool_factor, frame_range).
        seed: base seed.
        pairs: per-dataset pair counts overriding ``pairs_per_epoch * pool_factor``.
        spill_dir: where the plans' track tables are spilled (:func:`plan_dataset`); None: in memory.
        cap: cap each count at the bound (the job always does; False plans the counts as given).
    """
    by_dataset: dict[str, list[Track] | TrackTable] = {}
    if isinstance(tracks, TrackTable):
        by_dataset[tracks.dataset] = tracks
    else:
        for tr in tracks:
            by_dataset.setdefault(tr.dataset, []).append(tr)
    counts = pair_counts(data, pairs)
    plans: dict[str, DatasetPlan] = {}
    for name in sorted(by_dataset):
        if name not in data.frame_range:
            raise KeyError(f"no frame_range for dataset {name!r} in DataConfig (known: {sorted(data.frame_range)})")
        if name not in counts:
            raise KeyError(f"no pair count for dataset {name!r}: set DataConfig.pairs_per_epoch or pass pairs")
        plans[name] = plan_dataset(name, by_dataset[name], counts[name], int(data.frame_range[name]), seed,
                                   spill_dir=spill_dir, cap=cap)
    return PairPlan(plans, int(seed))
