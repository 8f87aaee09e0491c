"""The preparation job (pipelines/prepare.py, ocean prepare): shard packing, crops, rejections, storage,
and the whole job on a real 2-node Ray cluster writing to a real S3 server and a local folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep.pairs import plan_pairs
from data_prep.readers import read_tracks
from data_prep.tracks import FrameRef, Track
from ocean.config import smoke
from ocean.storage import StorageError
from pipelines.prepare import (
    CropSettings,
    JobMismatch,
    ShardTask,
    crop_shard,
    pack_shards,
    prepare,
    shard_cost,
)

REPO = Path(__file__).resolve().parent.parent
NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")
BG = (90, 90, 90)  # BGR background of the hand-made frames
TARGET = (20, 200, 240)  # BGR solid target colour


# --------------------------------------------------------------------------------------------------------
# Fast tests: no Ray, no S3


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
    from pipelines.prepare import list_and_plan

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

    from pipelines.prepare import plan_digest

    plan = _plan_of({f"v{i}": 1 + i % 3 for i in range(5)}, pairs_n=30, frames=6)
    h = hashlib.sha256()
    for arr in (plan.track_index, plan.template_index, plan.search_index):
        h.update(arr.astype(np.int64).tobytes())
    for tr in plan.tracks:  # key | frames | first id | last id, then the boxes (pipelines/prepare.py)
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
    assert counts["pairs_planned"] == 40 == len(rows) + sum(expected_drops.values())
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

def test_cli_rejects_bad_arguments_before_any_work(tmp_path, capsys):
    from jobs.cli import main

    assert main(["prepare", "--dataset", "nope=/x", "--out", str(tmp_path / "o")]) == 1
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["prepare", "--dataset", f"got10k={tmp_path / 'missing'}", "--out", str(tmp_path / "o")]) == 1
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "--dataset", "got10k", "--out", str(tmp_path)])


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


# --------------------------------------------------------------------------------------------------------
# Slow tests: the real cluster, the real S3 server

PAIRS = 30  # per dataset
SHARD_PAIRS = 8
SEED = 5


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from data_prep.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    manifest = generate(root, seed=0, size="tiny", broken=True)
    return root, manifest


def _job_args(root: Path, out: str, address: str, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "jobs.prepare", "--preset", "smoke", "--out", out, "--seed", str(SEED),
            "--shard-pairs", str(SHARD_PAIRS), "--ray-address", address, "--no-progress"]
    for name in NAMES:
        args += ["--dataset", f"{name}={root / name}", "--pairs", f"{name}={PAIRS}"]
    return args + list(extra)


def _run_job(args, env, timeout=240) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def clean_run(synth, ray_cluster, tmp_path_factory):
    """The job run once, uninterrupted, to a local folder on the 2-node cluster."""
    root, _ = synth
    out = tmp_path_factory.mktemp("pairs") / "clean"
    proc = _run_job(_job_args(root, str(out), ray_cluster.address), ray_cluster.env)
    return out, json.loads((out / "manifest.json").read_text()), proc.stdout


def _needed_frames(root: Path) -> dict[str, set[str]]:
    """Per dataset, the source paths the plan needs (computed here from readers + plan, not from the job)."""
    cfg = smoke()
    out = {}
    for name in NAMES:
        tracks = list(read_tracks(name, root / name))
        plan = plan_pairs(tracks, cfg.data, SEED, {name: PAIRS}).datasets[name]
        paths = set()
        for p in plan.pairs():
            tr = plan.tracks[int(plan.track_index[p.draw])]
            paths |= {tr.frames[p.template_index].path, tr.frames[p.search_index].path}
        out[name] = paths
    return out


@pytest.mark.slow
def test_job_on_cluster_counts_reconcile_with_the_synthetic_manifest(synth, clean_run):
    root, synth_manifest = synth
    out, manifest, stdout = clean_run
    assert "| dataset |" in stdout and "| got10k |" in stdout  # summary table printed
    assert "on 2 node(s)" in stdout  # the shards really ran on both nodes of the cluster
    needed = _needed_frames(root)
    decode_items = [b for b in synth_manifest["broken_items"] if b["stage"] == "decode"]
    for name in NAMES:
        d = manifest["datasets"][name]
        exp = synth_manifest["datasets"][name]["expected"]
        exp = exp["frames"] if name == "ytbb" else exp  # ROOT/frames exists: the reader reads frames
        assert d["tracks"] == exp["tracks"] and d["annotated_frames"] == exp["frames"]
        assert d["reader_rejected"] == exp["rejections"]
        # decode-stage: exactly the broken files the plan needed, with the manifest's reasons
        hit = {str(root / b["source"]): b["reason"] for b in decode_items
               if b["dataset"] == name and str(root / b["source"]) in needed[name]}
        rej_file = [json.loads(line) for s in manifest["shards"] if s["dataset"] == name and s["rejects"]
                    for line in (out / s["rejects"]).read_text().splitlines()]
        assert {r["source"]: r["reason"] for r in rej_file} == hit
        assert d["rejected"] == {r: list(hit.values()).count(r) for r in sorted(set(hit.values()))}
        assert d["frames_read"] == d["frames_used"] + sum(d["rejected"].values())
        assert d["pairs_planned"] == PAIRS == d["pairs_written"] + sum(d["pairs_dropped"].values())
        assert set(d["pairs_dropped"]) <= set(d["rejected"])
        reader_lines = (out / f"rejects/reader-{name}.jsonl").read_text().splitlines()
        assert len(reader_lines) == sum(exp["rejections"].values())
    # the broken set is really exercised: both decode reasons were hit and some pairs dropped
    all_rejected = {r for d in manifest["datasets"].values() for r in d["rejected"]}
    assert all_rejected == {"truncated_image", "undecodable_image"}
    # shards: names, sizes, checksums, unique pair ids across the whole output
    ids = []
    for s in manifest["shards"]:
        t = pq.read_table(out / s["path"])
        assert t.num_rows == s["rows"] <= SHARD_PAIRS
        assert (out / s["path"]).stat().st_size == s["bytes"]
        ids += t.column("pair_id").to_pylist()
    assert len(ids) == len(set(ids)) == manifest["totals"]["pairs_written"]
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(Path(s["path"]).name for s in manifest["shards"])
    # a stored box agrees with the formula from the stored source box (facts §7.1 / §7.5)
    row = pq.read_table(out / manifest["shards"][0]["path"]).slice(0, 1).to_pylist()[0]
    x1, y1, x2, y2 = row["search_source_box"]
    w, h = x2 - x1, y2 - y1
    s_z = np.sqrt((w + 0.5 * (w + h)) * (h + 0.5 * (w + h)))
    c = 255 - row["search_offset"]
    assert row["search_box"] == pytest.approx([c - w * 127 / s_z / 2, c - h * 127 / s_z / 2,
                                               c + w * 127 / s_z / 2, c + h * 127 / s_z / 2], abs=1e-3)


@pytest.mark.slow
def test_job_on_cluster_writes_the_same_shards_to_s3(synth, clean_run, ray_cluster, s3_server):
    root, _ = synth
    _, clean_manifest, _ = clean_run
    prefix = f"pairs-{uuid.uuid4().hex[:8]}"
    env = {**ray_cluster.env, **s3_server.env()}
    proc = _run_job(_job_args(root, f"s3://ocean-data/{prefix}", ray_cluster.address), env)
    assert s3_server.secret_key not in proc.stdout + proc.stderr
    s3 = s3_server.client()
    manifest = json.loads(s3.get_object(Bucket="ocean-data", Key=f"{prefix}/manifest.json")["Body"].read())
    assert manifest["shards"] == clean_manifest["shards"]  # identical bytes, wherever they were written
    assert manifest["datasets"] == clean_manifest["datasets"]
    keys = set(s3_server.keys("ocean-data", prefix + "/"))
    assert {f"{prefix}/{s['path']}" for s in manifest["shards"]} <= keys
    assert not [k for k in keys if ".tmp" in k or "probe" in k]
    assert s3_server.secret_key not in json.dumps(manifest)


@pytest.mark.slow
def test_finished_job_rerun_changes_nothing_and_another_plan_is_refused(synth, clean_run, ray_cluster):
    root, _ = synth
    out, manifest, _ = clean_run
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    proc = _run_job(_job_args(root, str(out), ray_cluster.address), ray_cluster.env)
    assert "0 shards run" in proc.stdout
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before
    with pytest.raises(JobMismatch, match="different plan"):
        prepare({n: str(root / n) for n in NAMES}, str(out), smoke(), pairs={n: PAIRS for n in NAMES},
                seed=SEED + 1, shard_pairs=SHARD_PAIRS, progress=False, log=None)


@pytest.mark.slow
def test_killed_job_resumes_without_losing_or_duplicating_pairs(synth, clean_run, ray_cluster, tmp_path):
    root, _ = synth
    _, clean_manifest, _ = clean_run
    out = tmp_path / "killed"
    total = len(clean_manifest["shards"])
    # one task at a time (2 CPUs each on a 4-CPU cluster: two), so the kill lands mid-job
    args = _job_args(root, str(out), ray_cluster.address, "--task-cpus", "2")
    proc = subprocess.Popen(args, env=ray_cluster.env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if out.joinpath("stats").is_dir() and len(list(out.joinpath("stats").iterdir())) >= 3:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    done = len(list(out.joinpath("stats").iterdir()))
    assert not (out / "manifest.json").exists() and 1 <= done < total
    _run_job(args, ray_cluster.env)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"] == clean_manifest["shards"]  # same ids, rows and bytes (sha256)
    assert manifest["datasets"] == clean_manifest["datasets"]
    ids = [i for s in manifest["shards"] for i in pq.read_table(out / s["path"]).column("pair_id").to_pylist()]
    assert len(ids) == len(set(ids)) == clean_manifest["totals"]["pairs_written"]
    assert not [p for p in out.rglob("*.tmp-*")]


@pytest.mark.slow
def test_missing_bucket_or_dead_endpoint_fails_fast_without_leaking_keys(synth, s3_env, monkeypatch, capsys):
    import ray

    from jobs.cli import main

    root, _ = synth
    args = ["prepare", "--dataset", f"got10k={root / 'got10k'}", "--out", "s3://no-such-bucket/x", "--no-progress"]
    t0 = time.perf_counter()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no-such-bucket" in err and "does not exist" in err
    with pytest.raises(StorageError, match="does not exist"):
        prepare({"got10k": str(root / "got10k")}, "s3://no-such-bucket/x", smoke(), progress=False, log=None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert main(["prepare", "--dataset", f"got10k={root / 'got10k'}", "--out", "s3://ocean-data/x"]) == 1
    err = capsys.readouterr()
    assert "unreachable" in err.err or "cannot write" in err.err
    assert time.perf_counter() - t0 < 60  # no Ray start, no listing; not a timing benchmark, a hang guard
    assert s3_env.secret_key not in err.err + err.out
    assert not ray.is_initialized()


@pytest.mark.slow
def test_shard_tasks_never_outnumber_cores_on_an_oversubscribed_local_ray(tmp_path, monkeypatch):
    import ray

    from pipelines.prepare import shard_task_cpus

    cores = os.cpu_count() or 1
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    temp = Path("/tmp") / f"ocs{os.getpid()}"  # short: Ray's socket paths must stay under 107 chars
    ray.init(num_cpus=2 * cores, include_dashboard=False, _temp_dir=str(temp))
    try:
        per_task = shard_task_cpus()
        assert per_task == 2.0  # 2 * cores logical CPUs on `cores` cores -> at most `cores` tasks at once
        assert int(ray.cluster_resources()["CPU"] / per_task) == cores
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
