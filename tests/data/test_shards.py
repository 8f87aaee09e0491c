"""One shard of the preparation job and its plan (data_prep/shards.py, data_prep/listing.py): shard packing
and cost, listing and plan digest, decoding and cropping a shard with broken frames and YT-BB videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep.listing import list_and_plan
from data_prep.pairs import plan_pairs
from data_prep.readers import read_tracks
from data_prep.shards import CropSettings, ShardTask, crop_shard, pack_shards, plan_digest, shard_cost
from data_prep.tracks import FrameRef, Track
from ocean.config import smoke

BG = (90, 90, 90)  # BGR background of the hand-made frames
TARGET = (20, 200, 240)  # BGR solid target colour


def _plan_of(videos: dict[str, int], pairs_n: int, frames: int = 10, seed: int = 0):
    """A plan over hand-made tracks: ``videos`` maps video id -> number of tracks."""
    tracks = []
    for video, n_tracks in videos.items():
        for t in range(n_tracks):
            refs = [FrameRef(f"{i:04d}", path=f"/nowhere/{video}/{i:04d}.jpg") for i in range(frames)]
            boxes = np.tile([10.0, 10.0, 30.0, 40.0], (frames, 1))
            tracks.append(Track("got10k", video, str(t), refs, boxes, np.ones(frames, bool)))
    cfg = smoke()
    return plan_pairs(tracks, cfg.data, seed, {"got10k": pairs_n}).datasets["got10k"]


def test_pack_shards_covers_every_draw_once_and_bounds_shard_size():
    plan = _plan_of({f"v{i}": 1 + i % 2 for i in range(7)}, pairs_n=50)
    shards = pack_shards(plan, shard_pairs=8)
    draws = np.concatenate(shards)
    assert sorted(draws.tolist()) == list(range(50))  # every pair once
    assert all(1 <= len(s) <= 8 for s in shards)
    # 7 videos drawn 50 times by repeated shuffles: 7 or 8 pairs each (facts §7.4), so no video is split
    video_of = [plan.tracks[plan.track_index[k]].video for k in range(50)]
    for s in shards:
        for video in {video_of[k] for k in s}:
            assert sum(v == video for v in video_of) == sum(video_of[k] == video for k in s)
    assert [s.tolist() for s in pack_shards(plan, 8)] == [s.tolist() for s in shards]  # deterministic


def test_shard_cost_counts_distinct_frames_and_search_crops():
    plan = _plan_of({"a": 2}, 0)
    plan.track_index = np.array([0, 0, 1, 0], np.int32)  # hand-set draws over 2 tracks of 10 frames
    plan.template_index = np.array([1, 1, 1, 5], np.int32)
    plan.search_index = np.array([3, 1, 3, 3], np.int32)
    # draws 0, 1: track 0 frames {1, 3}; search crops {0:3, 0:1} -> 2 + 2
    assert shard_cost(plan, np.array([0, 1])) == 4
    # draws 0, 2: counted per track (an estimate: two tracks' shared frame is decoded once): {0:1, 0:3, 1:1, 1:3};
    # search {0:3, 1:3}
    assert shard_cost(plan, np.array([0, 2])) == 6
    # draws 0, 3: frames {0:1, 0:3, 0:5}; one search crop (0:3, used twice)
    assert shard_cost(plan, np.array([0, 3])) == 4
    assert shard_cost(plan, np.array([0, 1, 2, 3])) > shard_cost(plan, np.array([1]))


def test_pack_shards_splits_a_video_larger_than_a_shard():
    plan = _plan_of({"only": 1}, pairs_n=23)
    shards = pack_shards(plan, shard_pairs=10)
    assert [len(s) for s in shards] == [10, 10, 3]
    assert np.concatenate(shards).tolist() == list(range(23))  # one video: draw order kept
    videos = plan.videos(shards[2])
    assert [len(v.pairs) for v in videos] == [3]
    needed = {p.template_frame for p in videos[0].pairs} | {p.search_frame for p in videos[0].pairs}
    assert set(videos[0].frames) == needed  # only the frames this piece needs


def test_list_and_plan_streams_tracks_into_a_table_and_plans_like_the_track_list():
    cfg = smoke()
    tracks = [Track("got10k", f"v{i}", "0", [FrameRef(f"{j:04d}", path=f"/nowhere/v{i}/{j:04d}.jpg")
                                            for j in range(5 + i)],
                    np.tile([10.0, 10.0, 30.0, 40.0], (5 + i, 1)), np.ones(5 + i, bool)) for i in range(4)]
    consumed = []

    def reader():  # a generator, as the readers are: list_and_plan must not need a list
        for tr in tracks:
            consumed.append(tr.video)
            yield tr

    plan, shards, n_tracks, n_frames = list_and_plan("got10k", reader(), cfg, 3, 30, shard_pairs=8)
    assert consumed == ["v0", "v1", "v2", "v3"] and (n_tracks, n_frames) == (4, 5 + 6 + 7 + 8)
    reference = plan_pairs(tracks, cfg.data, 3, {"got10k": 30}).datasets["got10k"]
    assert [p.pair_id for p in plan.pairs()] == [p.pair_id for p in reference.pairs()]
    assert [s.tolist() for s in shards] == [s.tolist() for s in pack_shards(reference, 8)]
    assert list_and_plan("got10k", iter(()), cfg, 3, 30, shard_pairs=8) == (None, [], 0, 0)


def test_plan_digest_is_the_per_track_formula_whatever_the_chunk():
    import hashlib

    plan = _plan_of({f"v{i}": 1 + i % 3 for i in range(5)}, pairs_n=30, frames=6)
    h = hashlib.sha256()
    for arr in (plan.track_index, plan.template_index, plan.search_index):
        h.update(arr.astype(np.int64).tobytes())
    for tr in plan.tracks:  # key | frames | first id | last id, then the boxes (data_prep/shards.py)
        h.update(f"{tr.key}|{len(tr)}|{tr.frames[0].frame_id}|{tr.frames[-1].frame_id}\n".encode())
        h.update(tr.boxes_xyxy.tobytes())
    assert plan_digest(plan) == plan_digest(plan, chunk=2) == h.hexdigest()


def _write_frame(path: Path, box_xyxy, size=(320, 240), fmt=".png") -> None:
    img = np.full((size[1], size[0], 3), BG, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box_xyxy)
    img[y1:y2, x1:x2] = TARGET  # pixels x1..x2-1, y1..y2-1: the box [x1, x2] x [y1, y2] in corner coordinates
    ok, buf = cv2.imencode(fmt, img)
    assert ok
    path.write_bytes(buf.tobytes())


def test_stored_crops_put_the_target_where_the_stored_box_says_and_broken_frames_drop_pairs(tmp_path):
    # video of 4 frames, one 40 x 40 target at different places; frame 2 truncated, frame 3 corrupt
    boxes = [(100, 80, 140, 120), (150, 120, 190, 160), (60, 40, 100, 80), (60, 40, 100, 80)]
    refs = []
    for i, box in enumerate(boxes):
        p = tmp_path / f"{i}.jpg"
        _write_frame(p, box, fmt=".jpg")
        refs.append(FrameRef(str(i), path=str(p)))
    data = (tmp_path / "2.jpg").read_bytes()
    (tmp_path / "2.jpg").write_bytes(data[: len(data) // 2])  # no FF D9 end marker
    (tmp_path / "3.jpg").write_bytes(b"\x00garbage" * 50)
    track = Track("got10k", "vid0", "0", refs, np.array(boxes, float), np.ones(4, bool))
    cfg = smoke()
    plan = plan_pairs([track], cfg.data, 3, {"got10k": 40}).datasets["got10k"]
    settings = CropSettings.from_config(cfg, jpeg_quality=95)
    assert (settings.template_side, settings.search_side) == (145, 433)  # crops.py docstring
    task = ShardTask("got10k", 0, "test", plan.videos(pack_shards(plan, 100)[0]))
    table, counts, rejects = crop_shard(task, settings)
    rows = table.to_pylist()

    pairs = list(plan.pairs())
    used_frames = {p.template_frame for p in pairs} | {p.search_frame for p in pairs}
    assert {"0", "1", "2", "3"} <= used_frames  # seed 3 / 40 pairs touch every frame: the test means something
    assert counts["frames_read"] == 4 and counts["frames_used"] == 2
    assert counts["rejected"] == {"truncated_image": 1, "undecodable_image": 1}
    assert {(r["frame"], r["reason"]) for r in rejects} == {("2", "truncated_image"), ("3", "undecodable_image")}
    bad = {"2": "truncated_image", "3": "undecodable_image"}
    expected_drops: dict[str, int] = {}
    for p in pairs:
        reason = bad.get(p.template_frame) or bad.get(p.search_frame)
        if reason:
            expected_drops[reason] = expected_drops.get(reason, 0) + 1
    assert counts["pairs_dropped"] == dict(sorted(expected_drops.items()))
    # 40 requested, capped at the 4 x 4 distinct pairs of one 4-frame track (facts §7.6)
    assert (plan.requested, plan.bound) == (40, 16)
    assert counts["pairs_planned"] == 16 == len(rows) + sum(expected_drops.values())
    assert sorted(r["pair_id"] for r in rows) == sorted(p.pair_id for p in pairs
                                                         if p.template_frame in "01" and p.search_frame in "01")

    # hand-computed boxes (facts §7.1 / §7.5): w = h = 40, p = 40, s_z = 80, size in the 511 frame 40 * 127 / 80
    # = 63.5, centred at 255 - offset; template offset (511 - 145) / 2 = 183, search (511 - 433) / 2 = 39
    row = rows[0]
    assert row["template_box"] == pytest.approx([72 - 31.75, 72 - 31.75, 72 + 31.75, 72 + 31.75])
    assert row["search_box"] == pytest.approx([216 - 31.75, 216 - 31.75, 216 + 31.75, 216 + 31.75])
    for role, side in (("template", 145), ("search", 433)):
        img = cv2.imdecode(np.frombuffer(row[f"{role}_jpeg"], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (side, side, 3)
        x1, y1, x2, y2 = row[f"{role}_box"]
        inside = img[int(y1) + 3:int(y2) - 3, int(x1) + 3:int(x2) - 3].reshape(-1, 3).astype(int)
        assert np.abs(inside - TARGET).max() < 25  # JPEG q95 error on a flat colour
        ring = np.concatenate([img[int(y1) - 4, int(x1):int(x2)], img[int(y2) + 4, int(x1):int(x2)],
                               img[int(y1):int(y2), int(x1) - 4], img[int(y1):int(y2), int(x2) + 4]]).astype(int)
        assert np.abs(ring - BG).max() < 25  # just outside the box: background
        assert row[f"{role}_side"] == side and row[f"{role}_offset"] == (511 - side) // 2


    # every stored JPEG is byte-for-byte the crop rendered on its own (the task reuses one render buffer per
    # side; a crop overwritten before it was encoded would show here)
    from data_prep.crops import crop_region, decode_image, encode_jpeg

    images = {str(i): decode_image(tmp_path / f"{i}.jpg")[0] for i in range(2)}
    for row in rows:
        for role, side in (("template", 145), ("search", 433)):
            frame = row[f"{role}_frame"]
            alone = crop_region(images[frame], boxes[int(frame)], side)
            assert row[f"{role}_jpeg"] == encode_jpeg(alone.image, 95)

def test_ytbb_frames_are_decoded_from_the_video_at_the_annotated_timestamp(synth):
    from data_prep.crops import crop_region

    root, synth_manifest = synth
    if "videos" not in synth_manifest["ytbb_media"]:
        pytest.skip("this OpenCV cannot write mp4v videos")
    cfg = smoke()
    settings = CropSettings.from_config(cfg)
    tracks = list(read_tracks("ytbb", root / "ytbb", media="videos"))
    plan = plan_pairs(tracks, cfg.data, 1, {"ytbb": 12}).datasets["ytbb"]
    rows, reads = [], 0
    for draws in pack_shards(plan, 100):
        table, c, j = crop_shard(ShardTask("ytbb", 0, "t", plan.videos(draws)), settings)
        assert not j and c["frames_used"] == c["frames_read"]
        rows += table.to_pylist()
        reads += c["frames_read"]
    assert len(rows) == 12 and reads > 0
    video_of = {tr.video: tr.frames[0].video for tr in tracks}
    for row in rows[:4]:
        cap = cv2.VideoCapture(video_of[row["video"]])
        fps = cap.get(cv2.CAP_PROP_FPS)
        frames = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img)
        stored = cv2.imdecode(np.frombuffer(row["search_jpeg"], np.uint8), cv2.IMREAD_COLOR).astype(int)
        i = round(int(row["search_frame"]) * fps / 1000)  # frame id = timestamp in ms (ytbb reader)
        diffs = {}
        for j in (i - 1, i, i + 1):
            if 0 <= j < len(frames):
                crop = crop_region(frames[j], row["search_source_box"], 433, padding=cv2.mean(frames[j])[:3])
                diffs[j] = np.abs(crop.image.astype(int) - stored).mean()
        assert min(diffs, key=diffs.get) == i and diffs[i] < 2.0  # that frame, up to the JPEG q90 error


def test_job_fingerprint_follows_what_shapes_the_shards_not_the_training_time_augmentation():
    from data_prep.manifest import job_document
    from ocean.config import apply_overrides

    def fingerprint(overrides):
        cfg = apply_overrides(smoke(), overrides)
        return job_document({}, {}, cfg, CropSettings.from_config(cfg), 0, 64, None)["fingerprint"]

    base = fingerprint([])
    for training_time in ("augment.negative_prob=0.2", "augment.color_jitter=0.2", "augment.illumination_jitter=0.4",
                          "augment.blur_prob=0.3", "augment.occlusion_prob=0.3", "augment.noise_sigma=8"):
        assert fingerprint([training_time]) == base, training_time
    for shaping in ("augment.search_shift=32", "data.jpeg_quality=95", "data.reduced_decode=false"):
        assert fingerprint([shaping]) != base, shaping
