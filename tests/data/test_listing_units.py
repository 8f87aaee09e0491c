"""Listing split into units (data_prep/readers UNIT_READERS) and tables merged from parts
(data_prep/tracks.TableBuilder): whatever the split, the merged table and the rejections equal one serial read
(pipelines/listing.py relies on this to list on Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.listing import read_table
from data_prep.readers import UNIT_READERS, RejectionLog, list_units, read_tracks, read_units
from data_prep.tracks import FrameRef, TableBuilder, Track, TrackTable
from pipelines.listing import read_group, unit_groups

NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")


def assert_same_table(a: TrackTable, b: TrackTable) -> None:
    for col in ("frame_start", "image_size", "path_dir", "source", "timestamp_ms", "boxes_xyxy", "present"):
        x, y = getattr(a, col), getattr(b, col)
        assert (x is None) == (y is None), col
        if x is not None:
            assert np.array_equal(np.asarray(x), np.asarray(y)), col
    for col in ("video", "track_id", "frame_id", "path_name"):
        assert getattr(a, col).to_pylist() == getattr(b, col).to_pylist(), col
    assert a.dirs == b.dirs and a.sources == b.sources


def _tracks(rng: np.random.Generator, n: int) -> list[Track]:
    """Tracks with image files in 4 folders, video timestamps in 3 videos, or neither, 0-5 frames each."""
    out = []
    for i in range(n):
        frames = []
        for k in range(int(rng.integers(0, 6))):
            kind = rng.integers(0, 3)
            if kind == 0:
                frames.append(FrameRef(f"{i}-{k}", path=f"/d{int(rng.integers(0, 4))}/{i}-{k}.jpg"))
            elif kind == 1:
                frames.append(FrameRef(f"{i}-{k}", video=f"/v{int(rng.integers(0, 3))}.mp4", timestamp_ms=k * 40))
            else:
                frames.append(FrameRef(f"{i}-{k}"))
        out.append(Track("ytbb", f"video{i}", str(i % 3), frames, rng.random((len(frames), 4)),
                         rng.random(len(frames)) < 0.7, None if i % 2 else (640, 480)))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spill", [False, True])
def test_tables_merged_from_parts_equal_one_table(seed, spill, tmp_path):
    rng = np.random.default_rng(seed)
    tracks = _tracks(rng, int(rng.integers(0, 30)))
    whole = TrackTable.from_tracks("ytbb", tracks, chunk_frames=int(rng.integers(1, 9)))
    cuts = sorted(rng.integers(0, len(tracks) + 1, size=int(rng.integers(0, 5))).tolist())
    builder = TableBuilder("ytbb", chunk_frames=int(rng.integers(1, 9)), spill_dir=tmp_path if spill else None)
    for a, b in zip([0, *cuts], [*cuts, len(tracks)], strict=True):
        if rng.random() < 0.3:  # tracks one by one and whole tables mix
            for tr in tracks[a:b]:
                builder.add(tr)
        else:
            builder.add_table(TrackTable.from_tracks("ytbb", tracks[a:b], chunk_frames=int(rng.integers(1, 9))))
    merged = builder.finish()
    assert merged.num_tracks == len(tracks)
    assert_same_table(whole, merged)
    assert (merged.folder is not None) == spill


def test_a_table_of_another_dataset_is_refused():
    builder = TableBuilder("got10k")
    with pytest.raises(ValueError, match="'vid' table"):
        builder.add_table(TrackTable.from_tracks("vid", []))


@pytest.mark.parametrize("name", NAMES)
def test_units_read_apart_equal_the_serial_reader(name, synth, tmp_path):
    """Every dataset of the broken tiny tree (bad XML, missing images, NaN boxes, ...): the units read in
    random groups give the reader's own tracks and rejections, in the same order."""
    root = str(synth[0] / name)
    serial_log = RejectionLog()
    serial = read_table(name, root, {}, serial_log, str(tmp_path))
    units = list_units(name, root)
    if name not in UNIT_READERS:
        assert units is None  # one annotation file, parsed once on the driver
        return
    assert units and len(units) == len(set(units))
    tracks_log = RejectionLog()
    assert ([t.key for t in read_units(name, root, units, on_reject=tracks_log)]
            == [t.key for t in read_tracks(name, root)])
    assert tracks_log.items == serial_log.items
    rng = np.random.default_rng(0)
    builder, log = TableBuilder(name, spill_dir=tmp_path), RejectionLog()
    for group in unit_groups(units, int(rng.integers(1, 4))):
        table, rejections = read_group(name, root, group, {})
        builder.add_table(table)
        for r in rejections:
            log(r)
    assert_same_table(serial, builder.finish())
    assert log.items == serial_log.items and len(log.items) > 0


@pytest.mark.parametrize(("n", "workers"), [(0, 1), (1, 4), (7, 2), (100, 1), (5000, 2), (5000, 64)])
def test_unit_groups_cover_every_unit_once_in_order(n, workers):
    units = [f"u{i}" for i in range(n)]
    groups = unit_groups(units, workers)
    assert [u for g in groups for u in g] == units
    assert all(0 < len(g) <= 64 for g in groups)
    if n >= 16 * workers:
        assert len(groups) >= 4 * workers  # enough tasks to spread over the workers
