"""Spilled track tables (per-frame columns memory-mapped from a job-local folder) and chunked planning:
the plan, its task inputs and its digest are bit-identical to the in-memory ones (data_prep/tracks.py,
data_prep/pairs.py, data_prep/listing.py, pipelines/prepare.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from data_prep.listing import list_and_plan
from data_prep.pairs import dataset_rng, plan_dataset
from data_prep.readers import read_tracks
from data_prep.shards import pack_shards, plan_digest
from data_prep.tracks import FrameRef, Track, TrackTable, take_strings, track_ranges
from ocean.config import smoke
from pipelines.prepare import PrepareSettings, run_prepare

NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")


def _random_tracks(rng: np.random.Generator, dataset: str) -> list[Track]:
    """Several videos of 1-3 tracks, 0-11 frames each, presence all / none / ~30 %, image files and video
    timestamps mixed, in a shuffled order (readers give any order); frame ids and names vary per track, so a
    frame gathered from the wrong track shows."""
    tracks = []
    for v in range(int(rng.integers(1, 9))):
        video = f"set{int(rng.integers(0, 3))}/video_{v:03d}"
        for track_id in rng.permutation(int(rng.integers(1, 4))).tolist():
            n = int(rng.integers(0, 12))
            present = rng.random(n) < rng.choice([0.0, 0.3, 1.0])
            first = int(rng.integers(0, 10**6))  # frame ids and file names differ between tracks
            frames = [FrameRef(f"{first + i:07d}", path=f"/d/{video}/{first + i:07d}.jpg") if rng.random() < 0.7
                      else FrameRef(str(first + 1000 * i), video=f"/v/{video}.mp4", timestamp_ms=first + 1000 * i)
                      for i in range(n)]
            tracks.append(Track(dataset, video, str(track_id), frames, rng.random((n, 4)) * 100, present,
                                (640, 360) if rng.random() < 0.5 else None))
    rng.shuffle(tracks)
    return tracks


def _assert_same_plan(a, b) -> None:
    for name in ("track_index", "template_index", "search_index", "video_of_track"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).dtype == getattr(b, name).dtype
    assert (a.dataset, a.requested, a.num_videos, a.ineligible_tracks) == (
        b.dataset, b.requested, b.num_videos, b.ineligible_tracks)
    assert list(a.pairs()) == list(b.pairs())
    assert a.videos() == b.videos()
    for draws in pack_shards(a, 5) if len(a) else []:
        assert a.videos(draws) == b.videos(draws)  # one shard task's input
    for x, y in zip(a.tracks, b.tracks, strict=True):  # the eligible tracks, in (video, track_id) order
        assert (x.key, x.frames, x.image_size) == (y.key, y.frames, y.image_size)
        assert np.array_equal(x.boxes_xyxy, y.boxes_xyxy) and np.array_equal(x.present, y.present)
    assert plan_digest(a) == plan_digest(b)


def _assert_spilled(table: TrackTable, under: Path) -> None:
    assert table.folder is not None and table.folder.parent == under and table.folder.is_dir()
    if table.num_frames:
        assert isinstance(table.boxes_xyxy, np.memmap) and isinstance(table.present, np.memmap)
        assert isinstance(table.frame_id, pa.ChunkedArray)


def _reference_steps(plan, seed: int, frame_range: int) -> None:
    """The draws re-derived one pair at a time from plan_dataset's steps 1-4 (facts §7.4)."""
    rng = dataset_rng(seed, plan.dataset)
    n = len(plan)
    if n == 0:
        return
    picks = np.concatenate([rng.permutation(plan.num_videos) for _ in range(-(-n // plan.num_videos))])[:n]
    u = rng.random((n, 3))
    for k in range(n):
        video_tracks = np.flatnonzero(plan.video_of_track == picks[k])  # 1. the video, then 2. a track of it
        assert plan.track_index[k] == video_tracks[int(np.floor(u[k, 0] * len(video_tracks)))]
        positions = np.flatnonzero(plan.tracks[int(plan.track_index[k])].present)
        t = positions[int(np.floor(u[k, 1] * len(positions)))]  # 3. a present template frame
        window = positions[(positions >= t - frame_range) & (positions <= t + frame_range)]
        assert (plan.template_index[k], plan.search_index[k]) == (t, window[int(np.floor(u[k, 2] * len(window)))])


def test_track_ranges_and_chunked_string_gather_hand_computed():
    fs = np.array([0, 3, 3, 10, 12, 20])
    # tracks of 3, 0, 7, 2, 8 frames, at most 5 per range: a longer track gets a range of its own
    assert list(track_ranges(fs, 5)) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert list(track_ranges(fs, 100)) == [(0, 5)]
    assert list(track_ranges(np.array([0]), 5)) == []
    words = [f"w{i}" for i in range(10)]
    chunked = pa.chunked_array([pa.array(words[:4]), pa.array([], pa.string()), pa.array(words[4:5]),
                                pa.array(words[5:])])
    for index in ([9, 0, 4, 4, 3, 5, 0], [1, 2, 6, 7], [], [4]):
        got = take_strings(chunked, np.array(index, dtype=np.int64))
        assert isinstance(got, pa.Array) and got.to_pylist() == [words[i] for i in index]
        assert take_strings(pa.array(words), np.array(index, dtype=np.int64)).to_pylist() == [words[i] for i in index]


def test_spilled_table_round_trips_and_lives_in_its_folder(tmp_path):
    rng = np.random.default_rng(0)
    tracks = _random_tracks(rng, "ytbb")
    tracks = [t for t in tracks if len(t)] + [t for t in tracks if not len(t)]
    memory = TrackTable.from_tracks("ytbb", tracks, chunk_frames=6)
    spilled = TrackTable.from_tracks("ytbb", iter(tracks), chunk_frames=6, spill_dir=tmp_path)
    _assert_spilled(spilled, tmp_path)
    assert memory.folder is None and spilled.frame_id.num_chunks > 2
    assert sorted(p.name for p in spilled.folder.iterdir()) == [
        "boxes_xyxy.bin", "path_dir.bin", "present.bin", "source.bin", "strings.arrow", "timestamp_ms.bin"]
    for a, b, original in zip(spilled, memory, tracks, strict=True):
        assert (a.key, a.frames, a.image_size) == (b.key, b.frames, b.image_size) == (
            original.key, original.frames, original.image_size)
        assert np.array_equal(a.boxes_xyxy, original.boxes_xyxy) and np.array_equal(a.present, original.present)
    assert spilled.present_counts(4).tolist() == [int(t.present.sum()) for t in tracks]
    order = np.array([3, 0, 5, 5, 1])
    picked = spilled.take(order, spill_dir=tmp_path, chunk_frames=4)
    _assert_spilled(picked, tmp_path)
    assert [t.key for t in picked] == [tracks[i].key for i in order]
    assert [t.frames for t in picked] == [tracks[i].frames for i in order]
    # image files only, no timestamps: those columns are not kept (nor their files)
    plain = TrackTable.from_tracks("got10k", [Track("got10k", "g", "0", [FrameRef("1", path="/a/1.jpg")],
                                                    [[1.0, 2.0, 3.0, 4.0]], [True])], spill_dir=tmp_path)
    assert plain.source is None and plain.timestamp_ms is None
    assert not (plain.folder / "source.bin").exists() and not (plain.folder / "timestamp_ms.bin").exists()
    empty = TrackTable.from_tracks("got10k", iter(()), spill_dir=tmp_path)
    assert (empty.num_tracks, empty.num_frames, empty.boxes_xyxy.shape, len(empty.frame_id)) == (0, 0, (0, 4), 0)


@pytest.mark.parametrize("seed", range(8))
def test_spilled_chunked_plan_is_bit_identical_to_the_in_memory_plan(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    tracks = _random_tracks(rng, "vid")
    frame_range = int(rng.integers(0, 6))
    num_pairs = int(rng.integers(0, 120))
    memory = plan_dataset("vid", tracks, num_pairs, frame_range, seed)
    table = TrackTable.from_tracks("vid", tracks, chunk_frames=int(rng.integers(1, 9)), spill_dir=tmp_path)
    spilled = plan_dataset("vid", table, num_pairs, frame_range, seed, chunk_frames=int(rng.integers(1, 9)))
    _assert_same_plan(memory, spilled)
    assert memory.ineligible_tracks == sum(not t.present.any() for t in tracks)
    if spilled.num_videos:
        if spilled.tracks is not table:
            _assert_spilled(spilled.tracks, tmp_path)  # the eligible copy went beside the listing's table
        _reference_steps(spilled, seed, frame_range)
    # from Track objects straight into a spill folder, and one chunk per track: the same plan again
    again = plan_dataset("vid", iter(tracks), num_pairs, frame_range, seed, spill_dir=tmp_path, chunk_frames=1)
    _assert_same_plan(memory, again)


def test_spilled_plans_of_the_synthetic_datasets_are_bit_identical(synth_root, tmp_path):
    cfg = smoke()
    for name in NAMES:
        tracks = list(read_tracks(name, synth_root / name))
        frame_range = int(cfg.data.frame_range[name])
        memory = plan_dataset(name, tracks, 300, frame_range, seed=3)
        table = TrackTable.from_tracks(name, iter(tracks), chunk_frames=16, spill_dir=tmp_path)
        spilled = plan_dataset(name, table, 300, frame_range, seed=3, chunk_frames=16)
        _assert_same_plan(memory, spilled)
        _reference_steps(spilled, 3, frame_range)


def test_list_and_plan_keeps_only_the_plans_spilled_table(tmp_path):
    cfg = smoke()

    def tracks(order):
        return [Track("got10k", f"v{i}", "0", [FrameRef(f"{j}", path=f"/x/v{i}/{j}.jpg") for j in range(4)],
                      np.ones((4, 4)), [i != 1] * 4) for i in order]

    # v1 has no present frame: the plan copies the eligible tracks, and the listing's folder is deleted
    plan, shards, n_tracks, n_frames = list_and_plan("got10k", iter(tracks([2, 0, 1])), cfg, 0, 20, 8,
                                                     spill_dir=tmp_path)
    assert (n_tracks, n_frames, plan.ineligible_tracks) == (3, 12, 1)
    assert [p.name for p in tmp_path.iterdir()] == [plan.tracks.folder.name]
    assert [t.video for t in plan.tracks] == ["v0", "v2"]
    reference, ref_shards, _, _ = list_and_plan("got10k", iter(tracks([2, 0, 1])), cfg, 0, 20, 8)
    _assert_same_plan(reference, plan)
    assert [s.tolist() for s in shards] == [s.tolist() for s in ref_shards]
    # already eligible and in order: the listing's table is the plan's, and stays
    other = tmp_path / "other"
    other.mkdir()
    plan, _, _, _ = list_and_plan("got10k", iter(tracks([0, 2])), cfg, 0, 20, 8, spill_dir=other)
    assert [p.name for p in other.iterdir()] == [plan.tracks.folder.name]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list_and_plan("got10k", iter(()), cfg, 0, 20, 8, spill_dir=empty) == (None, [], 0, 0)
    assert list(empty.iterdir()) == []


def test_run_prepare_removes_its_spill_folder_after_the_job_and_on_error(tmp_path, monkeypatch):
    import data_prep.listing as listing_module

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp puts the job's spill folder
    (tmp_path / "got10k").mkdir()
    seen = []

    def no_tracks(name, root, **_):  # an empty dataset: listing only, no shard, no Ray
        seen.extend(p.name for p in scratch.iterdir())
        return iter(())

    monkeypatch.setattr(listing_module, "read_tracks", no_tracks)
    manifest, _ = run_prepare(PrepareSettings({"got10k": str(tmp_path / "got10k")}, str(tmp_path / "out"), smoke(),
                                              pairs={"got10k": 5}, progress=False, log=None, listing="driver"))
    assert manifest["datasets"]["got10k"]["pairs_planned"] == 0
    assert len(seen) == 1 and seen[0].startswith("ocean-prepare-")  # there while listing
    assert list(scratch.iterdir()) == []

    def broken(name, root, **_):
        yield Track("got10k", "v", "0", [FrameRef("0", path="/x/0.jpg")], np.ones((1, 4)), [True])
        raise RuntimeError("annotation server gone")

    monkeypatch.setattr(listing_module, "read_tracks", broken)
    with pytest.raises(RuntimeError, match="annotation server gone"):
        run_prepare(PrepareSettings({"got10k": str(tmp_path / "got10k")}, str(tmp_path / "out2"), smoke(),
                                    pairs={"got10k": 5}, progress=False, log=None, listing="driver"))
    assert list(scratch.iterdir()) == []


def test_spill_folder_removes_folders_of_dead_jobs_on_this_host_only(tmp_path):
    import socket
    import subprocess
    import sys

    from data_prep.listing import SPILL_PREFIX, spill_folder

    host = socket.gethostname().replace("-", "_")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)  # exited: its folder is a leftover of a killed job
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = tmp_path / f"{SPILL_PREFIX}{host}-{dead_pid}-abc123"
        (left / "got10k-x").mkdir(parents=True)
        (left / "got10k-x" / "boxes.bin").write_bytes(b"\0" * 64)
        running = tmp_path / f"{SPILL_PREFIX}{host}-{alive.pid}-def456"
        running.mkdir()
        other_host = tmp_path / f"{SPILL_PREFIX}otherhost-{dead_pid}-ghi789"
        other_host.mkdir()
        unrelated = tmp_path / "ocean-prepare-notes"
        unrelated.mkdir()
        new = Path(spill_folder(str(tmp_path)))
        assert not left.exists()
        assert running.is_dir() and other_host.is_dir() and unrelated.is_dir()
        assert new.parent == tmp_path and new.name.startswith(f"{SPILL_PREFIX}{host}-{os.getpid()}-")
        assert spill_folder(str(tmp_path)) != str(new) and new.is_dir()  # this process's folders are kept
    finally:
        alive.kill()
        alive.wait()
