"""Stored crops (crop511 frame), JPEG safety, pair planning and parquet pair records."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.crops import (
    crop511,
    crop_region,
    decode_image,
    encode_jpeg,
    stored_side,
    stored_sides,
)
from data_prep.pairs import pair_id, plan_dataset, plan_pairs
from data_prep.records import (
    PAIR_SCHEMA,
    SCHEMA_VERSION_KEY,
    PairTableBuilder,
    RecordError,
    build_table,
    bytes_per_pair,
    make_record,
    side_fields,
    validate_table,
)
from data_prep.tracks import FrameRef, Track, TrackTable
from ocean.config import AugmentConfig, DataConfig
from ocean.geometry import context_size

MARK = (0, 0, 255)  # pure red in BGR, absent from the grey texture


def textured(h: int = 360, w: int = 640, seed: int = 0) -> np.ndarray:
    """Grey-ish texture (values 40..200 in every channel, nearly equal channels) without any pure red."""
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    g = (g - g.min()) / (g.max() - g.min())
    base = (40 + 160 * g).astype(np.uint8)
    return np.dstack([base, base, np.clip(base.astype(int) - 10, 0, 255).astype(np.uint8)])


# ------------------------------------------------------------------------------------------------------
# geometry


def test_context_size_hand_computed():
    # w = 100, h = 50: p = 75, s_z = sqrt(175 * 125) = 147.902...
    assert context_size([110 - 10, 70 - 20]) == pytest.approx(math.sqrt(175 * 125))


def test_stored_side_formula_hand_computed():
    # template: L = 127 * 1.05 + 2 * 4 = 141.35 -> half = ceil(70.675) + 1 = 72 -> side 145
    assert stored_side(127, 4.0, 0.05) == 145
    # search: L = 255 * 1.18 + 2 * 64 = 428.9 -> half = ceil(214.45) + 1 = 216 -> side 433
    assert stored_side(255, 64.0, 0.18) == 433
    # no augmentation: L = 127 -> half = 64 + 1 -> 131
    assert stored_side(127, 0.0, 0.0) == 131
    # larger than the 511 frame: clipped
    assert stored_side(255, 200.0, 0.5) == 511
    assert stored_sides(AugmentConfig()) == (145, 433)


def test_crop_region_equals_centre_of_crop511():
    img = textured()
    box = [200.3, 100.7, 330.2, 190.1]
    full = crop511(img, box)
    assert full.shape == (511, 511, 3)
    for side in (145, 433):
        c = crop_region(img, box, side)
        o = c.geometry.offset
        assert o == (511 - side) // 2
        diff = np.abs(full[o:o + side, o:o + side].astype(int) - c.image.astype(int))
        assert diff.max() <= 1  # float rounding of the translated warp
        assert (diff > 0).mean() < 1e-3
        # official box: centred at 255 - offset, size (w, h) * 127 / s_z
        s_z = context_size((box[2] - box[0], box[3] - box[1]))
        w, h = 129.9 * 127 / s_z, 89.4 * 127 / s_z
        np.testing.assert_allclose(c.box_xyxy, [255 - o - w / 2, 255 - o - h / 2, 255 - o + w / 2, 255 - o + h / 2])


def test_target_lands_where_the_box_says():
    img = textured()
    box = [250.0, 120.0, 330.0, 180.0]  # 80 x 60 solid red rectangle, pixels 250..329 x 120..179
    img[120:180, 250:330] = MARK
    for side in (145, 433, 511):
        c = crop_region(img, box, side, box_mode="exact")
        red = (c.image[..., 2] > 200) & (c.image[..., 0] < 60) & (c.image[..., 1] < 60)
        ys, xs = np.nonzero(red)
        # the red pixel block [250, 330) maps to [to_crop(249.5), to_crop(329.5)] in pixel-centre terms
        (ex1, ey1), (ex2, ey2) = c.geometry.to_crop(np.array([[249.5, 119.5], [329.5, 179.5]]))
        assert abs(xs.min() - ex1) <= 1.0 and abs(xs.max() - ex2) <= 1.0
        assert abs(ys.min() - ey1) <= 1.0 and abs(ys.max() - ey2) <= 1.0
        # the stored box (exact mode) covers the red block within a pixel
        x1, y1, x2, y2 = c.box_xyxy
        assert abs(x1 - xs.min()) <= 1.0 and abs(x2 - xs.max()) <= 1.5
        assert abs(y1 - ys.min()) <= 1.0 and abs(y2 - ys.max()) <= 1.5
        # centre of the box at the 511 frame centre
        assert (x1 + x2) / 2 == pytest.approx(255 - c.geometry.offset, abs=1e-6)
        # inside the box: red; round trip to source pixels
        cy, cx = int((y1 + y2) / 2), int((x1 + x2) / 2)
        assert tuple(c.image[cy, cx]) == MARK
        np.testing.assert_allclose(c.geometry.to_source(c.geometry.to_crop(np.array([[3.0, 4.0]]))), [[3.0, 4.0]])


def test_mean_colour_padding_outside_the_image():
    img = textured()
    box = [0.0, 0.0, 60.0, 60.0]  # at the corner: the crop's top-left falls outside the image
    c = crop_region(img, box, 511)
    mean = cv2.mean(img)[:3]
    np.testing.assert_allclose(c.image[0, 0].astype(float), mean, atol=1.0)


def test_bad_boxes_raise():
    img = textured()
    for bad in ([10, 10, 10, 30], [10, 10, 5, 30], [np.nan, 0, 10, 10]):
        with pytest.raises(ValueError):
            crop_region(img, bad, 145)


def test_render_buffer_reuse_and_box_forms_give_identical_crops():
    img = textured()
    box = (200.3, 100.7, 330.2, 190.1)
    fresh = crop_region(img, box, 433)
    # hand-computed geometry (facts §7.1): w = 129.9, h = 89.4, p = 109.65, s_z = sqrt(239.55 * 199.05)
    s_z = math.sqrt((129.9 + 109.65) * (89.4 + 109.65))
    assert fresh.geometry.s_x == pytest.approx(s_z * 511 / 127, rel=1e-12)
    assert fresh.geometry.center_xy == pytest.approx((265.25, 145.4), abs=1e-12)
    dirty = np.full((433, 433, 3), 7, np.uint8)  # every pixel must be overwritten
    for form in (box, list(box), np.array(box), np.array([box])):
        again = crop_region(img, form, 433, out=dirty)
        assert again.image is dirty
        assert np.array_equal(again.image, fresh.image)
        assert np.array_equal(again.box_xyxy, fresh.box_xyxy) and again.geometry == fresh.geometry
    with pytest.raises(ValueError, match="out must be"):
        crop_region(img, box, 145, out=dirty)  # wrong side


# ------------------------------------------------------------------------------------------------------
# JPEG


def test_jpeg_round_trip_and_quality():
    img = textured(128, 128)
    q95, q50 = encode_jpeg(img, 95), encode_jpeg(img, 50)
    assert len(q50) < len(q95)
    dec, err = decode_image(q95)
    assert err is None and dec.shape == img.shape
    assert np.abs(dec.astype(int) - img.astype(int)).mean() < 3
    with pytest.raises(ValueError):
        encode_jpeg(img, 0)


def test_corrupt_and_truncated_jpeg_rejected(tmp_path):
    data = encode_jpeg(textured(64, 64), 90)
    assert decode_image(data[: len(data) // 2]) == (None, "truncated_jpeg")
    assert decode_image(b"") == (None, "empty")
    garbage = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"  # JPEG markers around garbage
    img, err = decode_image(garbage)
    assert img is None and err == "corrupt_image"
    p = tmp_path / "x.jpg"
    p.write_bytes(b"GIF89a not a jpeg")
    assert decode_image(p) == (None, "not_jpeg")
    assert decode_image(tmp_path / "missing.jpg") == (None, "unreadable_file")
    p.write_bytes(data + b"\x00\x00")  # zero padding after EOI is fine
    img, err = decode_image(p)
    assert err is None and img.shape == (64, 64, 3)


# ------------------------------------------------------------------------------------------------------
# pairs


def make_track(dataset: str, video: str, track_id: str, n: int, present=None) -> Track:
    frames = [FrameRef(f"{i:06d}", path=f"/data/{video}/{i:06d}.jpg") for i in range(n)]
    boxes = np.array([[i, i, i + 10.0, i + 20.0] for i in range(n)])
    return Track(dataset, video, track_id, frames, boxes, np.ones(n, bool) if present is None else present)


def test_pair_sampling_range_presence_and_determinism():
    present = np.zeros(40, bool)
    present[::4] = True  # frames 0, 4, 8, ...
    tracks = [make_track("got10k", f"v{i}", "0", 30 + i) for i in range(5)]
    tracks += [make_track("got10k", "v2", "1", 40, present), make_track("got10k", "v9", "0", 5, np.zeros(5, bool))]
    plan = plan_dataset("got10k", tracks, 600, frame_range=3, seed=7)
    assert len(plan) == 600 and plan.num_videos == 5 and plan.ineligible_tracks == 1
    for p in plan.pairs():
        tr = next(t for t in plan.tracks if t.video == p.video and t.track_id == p.track_id)
        assert abs(p.template_index - p.search_index) <= 3
        assert tr.present[p.template_index] and tr.present[p.search_index]
        assert p.template_frame == tr.frames[p.template_index].frame_id
    # the sparse track: template and search both multiples of 4, within RANGE -> |d| in {0}; RANGE 4 allows 4
    sparse = [p for p in plan.pairs() if p.video == "v2" and p.track_id == "1"]
    assert sparse and all(p.template_index == p.search_index for p in sparse)
    # every video picked 600 / 5 = 120 times (repeated shuffles, truncated)
    counts = {v: 0 for v in ("v0", "v1", "v2", "v3", "v4")}
    for p in plan.pairs():
        counts[p.video] += 1
    assert set(counts.values()) == {120}
    # same seed, shuffled input order -> identical plan; another seed -> different
    again = plan_dataset("got10k", list(reversed(tracks)), 600, frame_range=3, seed=7)
    assert [p.pair_id for p in again.pairs()] == [p.pair_id for p in plan.pairs()]
    other = plan_dataset("got10k", tracks, 600, frame_range=3, seed=8)
    assert [p.pair_id for p in other.pairs()] != [p.pair_id for p in plan.pairs()]
    # the search frame reaches both ends of the window somewhere
    d = np.array([p.search_index - p.template_index for p in plan.pairs()])
    assert d.min() == -3 and d.max() == 3


def test_single_frame_tracks_give_same_image_pairs():
    tracks = [make_track("coco", f"img{i}", str(j), 1) for i in range(4) for j in range(3)]
    plan = plan_dataset("coco", tracks, 50, frame_range=1, seed=0)
    assert len(plan) == 50
    assert all(p.template_index == p.search_index == 0 for p in plan.pairs())


def test_pair_id_stable_and_distinct():
    # sha1("got10k/v1/0/000001/000003/5")[:16], computed once and pinned
    import hashlib

    expect = hashlib.sha1(b"got10k/v1/0/000001/000003/5").hexdigest()[:16]
    assert pair_id("got10k", "v1", "0", "000001", "000003", 5) == expect
    assert pair_id("got10k", "v1", "0", "000001", "000003", 6) != expect
    plan = plan_dataset("vid", [make_track("vid", "a", "0", 20)], 100, 100, seed=1)
    ids = [p.pair_id for p in plan.pairs()]
    assert len(set(ids)) == 100 and all(len(i) == 16 for i in ids)


def test_plan_counts_and_dataset_independence():
    data = DataConfig(pairs_per_epoch={"got10k": 10, "coco": 5}, frame_range={"got10k": 100, "coco": 1},
                      pool_factor=3)
    got = [make_track("got10k", f"v{i}", "0", 10) for i in range(3)]
    coco = [make_track("coco", f"c{i}", "0", 1) for i in range(3)]
    plan = plan_pairs(got + coco, data, seed=3)
    # got10k: 30 requested, 3 tracks x 10^2 distinct pairs; coco: 15 requested, 3 one-object images (facts §7.6)
    assert len(plan.datasets["got10k"]) == 30 and len(plan.datasets["coco"]) == 3
    assert (plan.datasets["coco"].requested, plan.datasets["coco"].bound, plan.datasets["coco"].capped) == (15, 3, True)
    assert (plan.datasets["got10k"].bound, plan.datasets["got10k"].capped) == (300, False)
    assert len(plan_pairs(got + coco, data, seed=3, cap=False).datasets["coco"]) == 15
    alone = plan_pairs(got, data, seed=3)
    assert [p.pair_id for p in alone.datasets["got10k"].pairs()] == [p.pair_id for p in plan.datasets["got10k"].pairs()]
    override = plan_pairs(got, data, seed=3, pairs={"got10k": 4})
    assert len(override) == 4
    with pytest.raises(KeyError):
        plan_pairs([make_track("ytbb", "y", "0", 3)], data, seed=0)


def test_track_table_round_trip_across_chunks_and_plans_like_track_objects():
    odd = Track("ytbb", "v/1", "7", [FrameRef("1000", path="/a/b/1000.jpg"),
                                      FrameRef("2000", video="/vids/v1.mp4", timestamp_ms=2000),
                                      FrameRef("3000", path="rel//x.jpg"), FrameRef("4000", path="noslash.jpg")],
                np.arange(16.0).reshape(4, 4) + 0.125, [True, False, True, True], (640, 360))
    tracks = [make_track("ytbb", f"v{i}", str(i % 2), 3 + i) for i in range(5)] + [odd]
    table = TrackTable.from_tracks("ytbb", iter(tracks), chunk_frames=4)  # several chunks, one track each
    assert (table.num_tracks, table.num_frames) == (6, 3 + 4 + 5 + 6 + 7 + 4)
    assert table.frame_start.tolist() == [0, 3, 7, 12, 18, 25, 29]
    for original, back in zip(tracks, table, strict=True):
        assert (back.video, back.track_id, back.frames, back.image_size) == (
            original.video, original.track_id, original.frames, original.image_size)
        assert np.array_equal(back.boxes_xyxy, original.boxes_xyxy)
        assert np.array_equal(back.present, original.present)
    assert table.dirs[-2:] == ["rel//", ""]  # folder + name rebuilds every path exactly
    assert table.sources == ["/vids/v1.mp4"] and table.timestamp_ms is not None
    picked = table.take(np.array([5, 0]))
    assert [t.video for t in picked] == ["v/1", "v0"] and picked[0].frames == odd.frames
    assert table.take(np.arange(6)) is table
    plain = TrackTable.from_tracks("got10k", [make_track("got10k", "g", "0", 2)])
    assert plain.source is None and plain.timestamp_ms is None  # no per-frame arrays for unused fields
    with pytest.raises(ValueError, match="not in dataset"):
        TrackTable.from_tracks("vid", tracks)
    # a plan over the table is the plan over the Track objects
    a = plan_dataset("ytbb", tracks, 64, frame_range=2, seed=5)
    b = plan_dataset("ytbb", table, 64, frame_range=2, seed=5)
    assert [p.pair_id for p in a.pairs()] == [p.pair_id for p in b.pairs()]
    assert a.video_names() == sorted({t.video for t in tracks}) and a.video_of_track.tolist() == [0, 1, 2, 3, 4, 5]


def test_videos_group_frames_once():
    tracks = [make_track("vid", "a", "0", 30), make_track("vid", "a", "1", 30), make_track("vid", "b", "0", 30)]
    plan = plan_dataset("vid", tracks, 200, 5, seed=2)
    works = plan.videos()
    assert [w.video for w in works] == ["a", "b"]
    assert sum(len(w.pairs) for w in works) == 200
    for w in works:
        needed = {f for p in w.pairs for f in (p.template_frame, p.search_frame)}
        assert set(w.frames) == needed  # each distinct frame listed once
        assert list(w.frames) == sorted(w.frames)  # time order
        for p in w.pairs:
            assert (p.track_id, p.template_frame, "template") in w.crops
            assert (p.track_id, p.search_frame, "search") in w.crops
        key = next(iter(w.crops))
        tr = next(t for t in tracks if t.video == w.video and t.track_id == key[0])
        assert w.crops[key] == tuple(tr.boxes_xyxy[int(key[1])])


# ------------------------------------------------------------------------------------------------------
# records


def _records(n: int = 3) -> list[dict]:
    img = textured()
    track = make_track("got10k", "v0", "0", 10)
    plan = plan_dataset("got10k", [track], n, 100, seed=0)
    out = []
    for p in plan.pairs():
        box_t = [200.0, 100.0, 300.0, 180.0]
        t = crop_region(img, box_t, 145)
        s = crop_region(img, box_t, 433)
        out.append(make_record(p, side_fields("template", encode_jpeg(t.image, 90), t, box_t, (640, 360)),
                               side_fields("search", encode_jpeg(s.image, 90), s, box_t, (640, 360))))
    return out


def test_record_table_parquet_round_trip(tmp_path):
    records = _records()
    table = build_table(records)
    assert table.schema.equals(PAIR_SCHEMA, check_metadata=True)
    pq.write_table(table, tmp_path / "part-0.parquet")
    back = pq.read_table(tmp_path / "part-0.parquet")
    validate_table(back)
    assert back.schema.field("search_box").type == pa.list_(pa.float32(), 4)
    assert back.column("pair_id").to_pylist() == [r["pair_id"] for r in records]
    assert back.column("search_jpeg").to_pylist()[1] == records[1]["search_jpeg"]
    np.testing.assert_allclose(back.column("template_box").to_pylist()[0], records[0]["template_box"], rtol=1e-6)
    assert back.column("template_side").to_pylist() == [145] * 3
    assert back.column("search_offset").to_pylist() == [39] * 3
    stats = bytes_per_pair(back)
    t_len = [len(r["template_jpeg"]) for r in records]
    s_len = [len(r["search_jpeg"]) for r in records]
    assert stats["count"] == 3
    assert stats["mean"] == pytest.approx(np.mean(np.add(t_len, s_len)))
    assert stats["template_mean"] == pytest.approx(np.mean(t_len))


def test_pair_table_builder_equals_row_table_with_shared_crops():
    """The job's columnar builder gives the same table as row dicts, a crop used by several pairs stored once
    per pair row, in the order the pairs were added."""
    img = textured()
    track = make_track("got10k", "v0", "0", 10)
    pairs = list(plan_dataset("got10k", [track], 4, 100, seed=1).pairs())
    box_a, box_b = [200.0, 100.0, 300.0, 180.0], [150.5, 90.25, 260.0, 200.0]
    t = crop_region(img, box_a, 145)
    s_a, s_b = crop_region(img, box_a, 433), crop_region(img, box_b, 433)
    jpeg = {"t": encode_jpeg(t.image, 90), "a": encode_jpeg(s_a.image, 90), "b": encode_jpeg(s_b.image, 90)}
    builder = PairTableBuilder()
    it = builder.add_crop(jpeg["t"], t, box_a, (640, 360))
    ia = builder.add_crop(jpeg["a"], s_a, box_a, (640, 360))
    ib = builder.add_crop(jpeg["b"], s_b, box_b, (640, 360))
    assert (it, ia, ib) == (0, 1, 2)
    search_of = [(ia, s_a, "a", box_a), (ib, s_b, "b", box_b), (ib, s_b, "b", box_b), (ia, s_a, "a", box_a)]
    rows = []
    for p, (i, crop, key, box) in zip(pairs, search_of, strict=True):
        builder.add_pair(p, it, i)
        rows.append(make_record(p, side_fields("template", jpeg["t"], t, box_a, (640, 360)),
                                side_fields("search", jpeg[key], crop, box, (640, 360))))
    assert len(builder) == 4 and builder.pair_ids() == [p.pair_id for p in pairs]
    table = builder.table()
    assert table.equals(build_table(rows), check_metadata=True)
    assert table.column("search_jpeg").to_pylist() == [jpeg["a"], jpeg["b"], jpeg["b"], jpeg["a"]]
    assert PairTableBuilder().table().num_rows == 0
    dup = PairTableBuilder()
    i = dup.add_crop(jpeg["t"], t, box_a, (640, 360))
    dup.add_pair(pairs[0], i, i)
    dup.add_pair(pairs[0], i, i)
    with pytest.raises(RecordError, match="duplicate"):
        dup.table()


def test_record_validation_errors():
    records = _records(2)
    with pytest.raises(RecordError, match="missing"):
        build_table([{k: v for k, v in records[0].items() if k != "search_box"}])
    bad = dict(records[0], search_box=[10.0, 10.0, 5.0, 20.0])
    with pytest.raises(RecordError, match="search_box"):
        build_table([bad])
    with pytest.raises(RecordError, match="duplicate"):
        build_table([records[0], records[0]])
    with pytest.raises(RecordError, match="empty template_jpeg"):
        build_table([dict(records[0], template_jpeg=b"")])
    with pytest.raises(RecordError):
        build_table([dict(records[0], template_box=[1.0, 2.0])])
    table = build_table(records)
    with pytest.raises(RecordError, match="schema version"):
        validate_table(table.replace_schema_metadata({SCHEMA_VERSION_KEY: b"99"}))
    with pytest.raises(RecordError, match="no ocean.schema_version"):
        validate_table(table.replace_schema_metadata(None))
    with pytest.raises(RecordError, match="missing column"):
        validate_table(table.drop_columns(["draw"]))
