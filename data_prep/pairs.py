"""Template / search pair sampling, planned once on the driver, deterministic from a seed.

:func:`plan_pairs` samples, for every dataset, ``USE = pairs_per_epoch[dataset] * pool_factor`` pairs
(or an explicit per-dataset count) the way the official sampler does (facts §7.4):

1. The dataset's videos (sorted by id, so the reader's order does not matter) are listed USE times by
   repeatedly shuffling all of them and truncating the concatenation to USE: every video is drawn about
   ``USE / num_videos`` times.
2. For each drawn video a track is picked uniformly among its tracks.
3. The template frame is drawn uniformly over the track's frames that are *present* (the dataset's own
   presence flags, :class:`~data_prep.tracks.Track`); a track without a present frame is not eligible and a
   video without an eligible track is dropped (as TK ``subData._clean`` drops empty tracks / videos).
4. The search frame is drawn uniformly over the present frames whose list positions lie in
   ``[t - RANGE, t + RANGE]`` clipped to the list, ``t`` being the template's position and RANGE
   ``DataConfig.frame_range[dataset]``. RANGE counts positions in the track's frame list, not frame
   numbers (facts §7.4). The search frame can be earlier than, later than or the same as the template.
   Single-frame tracks (COCO, ImageNet DET) therefore give same-image pairs, which differ only by their
   augmentation.

Every dataset draws from its own generator seeded with ``(seed, sha1(dataset))``, so one dataset's plan does
not change when another dataset is added or resized, and the plan does not depend on how many workers run
later. Each pair gets a stable id, ``sha1("dataset/video/track/template_frame/search_frame/k")[:16]`` with
``k`` the draw number within its dataset.

The plan is compact (three int32 arrays per dataset); :meth:`DatasetPlan.videos` groups it by video into
:class:`VideoWork` items that carry the distinct frames a video needs (decode each once), the crops to cut
from them and the pairs to write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from data_prep.tracks import FrameRef, Track

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

    Attributes:
        tracks: eligible tracks (at least one present frame), sorted by (video, track_id).
        track_index, template_index, search_index: ``(P,)`` int32, pair ``k`` uses
            ``tracks[track_index[k]].frames[template_index[k]]`` etc.
        requested: the USE asked for; ``len(self)`` is smaller only when the dataset has no eligible video.
        num_videos: eligible videos.
        ineligible_tracks: tracks dropped for having no present frame.
    """

    dataset: str
    tracks: list[Track]
    track_index: np.ndarray
    template_index: np.ndarray
    search_index: np.ndarray
    requested: int
    num_videos: int
    ineligible_tracks: int = 0

    def __len__(self) -> int:
        return int(len(self.track_index))

    def pair(self, k: int) -> Pair:
        tr = self.tracks[int(self.track_index[k])]
        ti, si = int(self.template_index[k]), int(self.search_index[k])
        tf, sf = tr.frames[ti].frame_id, tr.frames[si].frame_id
        return Pair(pair_id(self.dataset, tr.video, tr.track_id, tf, sf, k), self.dataset, tr.video,
                    tr.track_id, ti, si, tf, sf, k)

    def pairs(self) -> Iterator[Pair]:
        for k in range(len(self)):
            yield self.pair(k)

    def videos(self) -> list[VideoWork]:
        """The plan grouped by video (videos in id order; frames, crops in time order; pairs in draw order)."""
        order = np.argsort(self.track_index, kind="stable")
        out: list[VideoWork] = []
        current: VideoWork | None = None
        needed: dict[str, set[int]] = {}
        by_track: dict[str, Track] = {}
        for k in order:
            tr = self.tracks[int(self.track_index[k])]
            if current is None or current.video != tr.video:
                if current is not None:
                    _fill_frames(current, needed, by_track)
                current = VideoWork(self.dataset, tr.video)
                out.append(current)
                needed, by_track = {}, {}
            pr = self.pair(int(k))
            current.pairs.append(pr)
            by_track[tr.track_id] = tr
            needed.setdefault(tr.track_id, set()).update((pr.template_index, -1 - pr.search_index))
        if current is not None:
            _fill_frames(current, needed, by_track)
        for work in out:
            work.pairs.sort(key=lambda p: p.draw)
        return out


def _fill_frames(work: VideoWork, needed: dict[str, set[int]], by_track: dict[str, Track]) -> None:
    # needed holds template positions as i >= 0 and search positions as -1 - i
    entries: list[tuple[int, str, str, str]] = []
    for track_id, codes in needed.items():
        tr = by_track[track_id]
        for code in codes:
            idx, role = (code, TEMPLATE) if code >= 0 else (-1 - code, SEARCH)
            ref = tr.frames[idx]
            work.frames.setdefault(ref.frame_id, ref)
            work.crops[(track_id, ref.frame_id, role)] = tuple(float(v) for v in tr.boxes_xyxy[idx])
            entries.append((idx, ref.frame_id, track_id, role))
    # time order of frames: by position in their track (tracks of one video share the time line)
    first_pos: dict[str, int] = {}
    for idx, frame_id, _, _ in entries:
        first_pos[frame_id] = min(idx, first_pos.get(frame_id, idx))
    work.frames = dict(sorted(work.frames.items(), key=lambda kv: (first_pos[kv[0]], kv[0])))
    work.crops = dict(sorted(work.crops.items(), key=lambda kv: (first_pos[kv[0][1]], kv[0])))


def plan_dataset(dataset: str, tracks: Iterable[Track], num_pairs: int, frame_range: int,
                 seed: int) -> DatasetPlan:
    """Sample ``num_pairs`` pairs of one dataset (module docstring, facts §7.4).

    Args:
        tracks: the dataset's tracks (any order; those of other datasets raise ValueError).
        num_pairs: USE, pairs to draw (>= 0).
        frame_range: RANGE in list positions (>= 0).
        seed: base seed; the generator is :func:`dataset_rng` ``(seed, dataset)``.
    """
    if num_pairs < 0 or frame_range < 0:
        raise ValueError(f"{dataset}: num_pairs ({num_pairs}) and frame_range ({frame_range}) must be >= 0")
    eligible: list[Track] = []
    ineligible = 0
    for tr in tracks:
        if tr.dataset != dataset:
            raise ValueError(f"track {tr.key} is not in dataset {dataset!r}")
        if tr.present.any():
            eligible.append(tr)
        else:
            ineligible += 1
    eligible.sort(key=lambda t: (t.video, t.track_id))
    keys = [(t.video, t.track_id) for t in eligible]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{dataset}: duplicate (video, track_id) among the tracks")
    videos: list[list[int]] = []  # per video, indices into eligible
    for i, tr in enumerate(eligible):
        if not videos or eligible[videos[-1][0]].video != tr.video:
            videos.append([])
        videos[-1].append(i)

    rng = dataset_rng(seed, dataset)
    n = num_pairs if videos else 0
    track_index = np.empty(n, dtype=np.int32)
    template_index = np.empty(n, dtype=np.int32)
    search_index = np.empty(n, dtype=np.int32)
    if n:
        # 1. USE video picks: shuffle all videos repeatedly and truncate -- TK subData._shuffle (facts §7.4)
        reps = -(-n // len(videos))
        picks = np.concatenate([rng.permutation(len(videos)) for _ in range(reps)])[:n]
        # Steps 2-4 turn three uniforms per pair into indices, vectorised (floor(u * m) is uniform on 0..m-1).
        u = rng.random((n, 3))
        video_start = np.array([members[0] for members in videos], dtype=np.int64)
        video_size = np.array([len(members) for members in videos], dtype=np.int64)
        ti = video_start[picks] + np.floor(u[:, 0] * video_size[picks]).astype(np.int64)  # 2. random track
        # Present positions of all tracks concatenated; key = position + track * band keeps each track's
        # entries in their own band, so one searchsorted finds every RANGE window (clipped to the track).
        present_pos = [np.flatnonzero(tr.present) for tr in eligible]
        count = np.array([len(p) for p in present_pos], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        flat = np.concatenate(present_pos).astype(np.int64)
        band = max(len(tr) for tr in eligible) + 2 * frame_range + 2
        keys = flat + np.repeat(np.arange(len(eligible), dtype=np.int64) * band, count)
        t = flat[start[ti] + np.floor(u[:, 1] * count[ti]).astype(np.int64)]  # 3. template: present frame
        lo = np.searchsorted(keys, ti * band + t - frame_range, side="left")
        hi = np.searchsorted(keys, ti * band + t + frame_range, side="right")
        s = flat[lo + np.floor(u[:, 2] * (hi - lo)).astype(np.int64)]  # 4. search: present, within RANGE
        track_index[:], template_index[:], search_index[:] = ti, t, s
    return DatasetPlan(dataset, eligible, track_index, template_index, search_index, int(num_pairs),
                       len(videos), ineligible)


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


def plan_pairs(tracks: Iterable[Track], data, seed: int,
               pairs: dict[str, int] | None = None) -> PairPlan:
    """Plan the pairs of every dataset present in ``tracks``.

    Args:
        tracks: tracks of one or more datasets.
        data: :class:`ocean.config.DataConfig` (pairs_per_epoch, pool_factor, frame_range).
        seed: base seed.
        pairs: per-dataset pair counts overriding ``pairs_per_epoch * pool_factor``.
    """
    by_dataset: dict[str, list[Track]] = {}
    for tr in tracks:
        by_dataset.setdefault(tr.dataset, []).append(tr)
    counts = pair_counts(data, pairs)
    plans: dict[str, DatasetPlan] = {}
    for name in sorted(by_dataset):
        if name not in data.frame_range:
            raise KeyError(f"no frame_range for dataset {name!r} in DataConfig (known: {sorted(data.frame_range)})")
        if name not in counts:
            raise KeyError(f"no pair count for dataset {name!r}: set DataConfig.pairs_per_epoch or pass pairs")
        plans[name] = plan_dataset(name, by_dataset[name], counts[name], int(data.frame_range[name]), seed)
    return PairPlan(plans, int(seed))
