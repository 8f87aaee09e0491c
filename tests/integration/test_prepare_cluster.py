"""The preparation job (pipelines/prepare.py, ocean prepare): storage, the command line, and the whole job on
a real 2-node Ray cluster writing to a real S3 server and a local folder (one shard's packing, cost and
crops: tests/data/test_shards.py; bad arguments: tests/unit/test_prepare_cli.py)."""

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

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep.manifest import JobMismatch
from data_prep.pairs import plan_pairs
from data_prep.readers import read_tracks
from ocean.config import smoke
from ocean.storage import StorageError
from pipelines.prepare import PrepareSettings, prepare
from pipelines.raysession import local_niceness

REPO = Path(__file__).resolve().parents[2]
NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")


# --------------------------------------------------------------------------------------------------------
# The real cluster, the real S3 server

PAIRS = 30  # per dataset
SHARD_PAIRS = 8
SEED = 5


def _job_args(root: Path, out: str, address: str, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "jobs.prepare", "--preset", "smoke", "--out", out, "--seed", str(SEED),
            "--shard-pairs", str(SHARD_PAIRS), "--ray-address", address, "--no-progress",
            "--no-mlflow"]  # OUT's files are compared; the MLflow run: tests/integration/test_mlflow_lineage.py
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


def _needed_frames(root: Path) -> tuple[dict[str, set[str]], dict[str, int]]:
    """Per dataset, the source paths the plan needs and the pairs it holds (computed here from readers + plan,
    not from the job)."""
    cfg = smoke()
    out, planned = {}, {}
    for name in NAMES:
        tracks = list(read_tracks(name, root / name))
        plan = plan_pairs(tracks, cfg.data, SEED, {name: PAIRS}).datasets[name]
        paths = set()
        for p in plan.pairs():
            tr = plan.tracks[int(plan.track_index[p.draw])]
            paths |= {tr.frames[p.template_index].path, tr.frames[p.search_index].path}
        out[name], planned[name] = paths, len(plan)
    return out, planned


@pytest.mark.slow
def test_job_on_cluster_counts_reconcile_with_the_synthetic_manifest(synth, clean_run):
    root, synth_manifest = synth
    out, manifest, stdout = clean_run
    assert "| dataset |" in stdout and "| got10k |" in stdout  # summary table printed
    assert "on 2 node(s)" in stdout  # the shards really ran on both nodes of the cluster
    needed, planned = _needed_frames(root)
    # the tiny tree's still images supply fewer than PAIRS distinct pairs: capped, with a warning (facts §7.6)
    capped = {n for n in NAMES if planned[n] < PAIRS}
    assert capped == {"det", "coco"}
    for name in NAMES:
        line = (f"warning: {name}: --pairs of {PAIRS} pairs capped at {planned[name]}: its annotated frames can "
                f"supply {planned[name]} distinct template/search pairs")
        assert (line in stdout) == (name in capped), (name, stdout[-2000:])
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
        assert d["pairs_requested"] == PAIRS and d["pairs_explicit"] is True
        assert d["pairs_planned"] == planned[name] == min(PAIRS, d["pairs_bound"])
        assert d["pairs_planned"] == d["pairs_written"] + sum(d["pairs_dropped"].values())
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
def test_job_on_cluster_writes_the_same_shards_to_s3_whoever_lists(synth, clean_run, ray_cluster, s3_server):
    """To S3 with the annotations parsed by the driver alone (the clean run lists on Ray tasks): the same
    shards, byte for byte."""
    root, _ = synth
    _, clean_manifest, clean_stdout = clean_run
    prefix = f"pairs-{uuid.uuid4().hex[:8]}"
    env = {**ray_cluster.env, **s3_server.env()}
    proc = _run_job(_job_args(root, f"s3://ocean-data/{prefix}", ray_cluster.address, "--listing", "driver"), env)
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
        prepare(PrepareSettings({n: str(root / n) for n in NAMES}, str(out), smoke(), pairs={n: PAIRS for n in NAMES},
                                seed=SEED + 1, shard_pairs=SHARD_PAIRS, progress=False, log=None))


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
        prepare(PrepareSettings({"got10k": str(root / "got10k")}, "s3://no-such-bucket/x", smoke(), progress=False,
                                log=None))
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
    ray.init(address="local", num_cpus=2 * cores, include_dashboard=False, _temp_dir=str(temp), **local_niceness())
    try:
        per_task = shard_task_cpus()
        assert per_task == 2.0  # 2 * cores logical CPUs on `cores` cores -> at most `cores` tasks at once
        assert int(ray.cluster_resources()["CPU"] / per_task) == cores
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
