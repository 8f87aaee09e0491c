"""Raw datasets and benchmarks read from a real S3 server (SeaweedFS) give what the same trees give from a local
folder: byte-identical shards (in this process for all six readers and YT-BB's videos, and through
``ocean prepare`` on the real 2-node Ray cluster), the same evaluation results and scores; unreadable roots
stop before any work with one clear line; a frame deleted after listing is a counted rejection.
The path type itself: tests/unit/test_datapath.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from benchmark_trees import METRICS

from data_prep.listing import dataset_roots, list_datasets, shard_tasks, shards_to_run
from data_prep.shards import CropSettings, write_shard
from ocean import datapath
from ocean.config import smoke
from ocean.storage import InputLocationError, OutputStore

REPO = Path(__file__).resolve().parents[2]
NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")
BUCKET = "ocean-data"
PAIRS, SHARD_PAIRS, SEED = 30, 8, 5


def _upload(server, local: Path, prefix: str) -> str:
    s3 = server.client()
    for dirpath, _, files in os.walk(local):
        for f in files:
            path = Path(dirpath) / f
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{BUCKET}/{prefix}"


@pytest.fixture(scope="module")
def raw(synth, s3_server) -> tuple[Path, str]:
    """The synthetic tree (six datasets with broken items, four benchmarks) locally and uploaded to S3."""
    root, _ = synth
    return root, _upload(s3_server, root, f"raw-{uuid.uuid4().hex[:8]}")


def _prepare_here(roots: dict[str, str], out: Path, reader_options=None) -> dict[str, dict[str, bytes]]:
    """The preparation's listing + shard tasks in this process (what the Ray tasks run): ``{folder: {name: bytes}}``."""
    cfg = smoke()
    datapath.clear_listing_cache()
    spill = out / "spill"
    spill.mkdir(parents=True)
    states = list_datasets(dataset_roots(roots), cfg, SEED, dict.fromkeys(roots, PAIRS), SHARD_PAIRS,
                           reader_options, str(spill), say=lambda _: None)
    store, settings = OutputStore.from_uri(str(out / "o")), CropSettings.from_config(cfg)
    for task in shard_tasks(states, shards_to_run(states, {}), "job"):
        write_shard(store, task, settings)
    return _files(out / "o")


def _files(out: Path) -> dict[str, dict[str, bytes]]:
    return {d: {p.name: p.read_bytes() for p in sorted((out / d).glob("*"))} for d in ("shards", "stats", "rejects")
            if (out / d).is_dir()}


def _same_rejects(s3_files: dict, local_files: dict, s3_root: str, local_root: Path) -> None:
    """Reject files name their source: the same once the root is replaced."""
    assert s3_files.keys() == local_files.keys()
    for name, data in s3_files.items():
        assert data.decode().replace(s3_root, str(local_root)) == local_files[name].decode(), name


def test_all_six_readers_from_s3_give_byte_identical_shards(raw, s3_env, tmp_path):
    local, uri = raw
    here = _prepare_here({n: str(local / n) for n in NAMES}, tmp_path / "local")
    there = _prepare_here({n: f"{uri}/{n}" for n in NAMES}, tmp_path / "s3")
    assert {n.split("-")[1] for n in here["shards"]} == set(NAMES)
    assert there["shards"] == here["shards"] and there["stats"] == here["stats"]
    _same_rejects(there.get("rejects", {}), here.get("rejects", {}), uri, local)
    rejected = sum(json.loads(s)["rejected"].get("undecodable_image", 0) for s in there["stats"].values())
    assert rejected > 0  # the broken JPEGs were read from S3 and refused, as locally


def test_ytbb_videos_from_s3_are_fetched_per_task_and_give_identical_shards(raw, s3_env, tmp_path):
    local, uri = raw
    opts = {"ytbb": {"media": "videos"}}
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("ocean-input-*"))
    here = _prepare_here({"ytbb": str(local / "ytbb")}, tmp_path / "local", opts)
    there = _prepare_here({"ytbb": f"{uri}/ytbb"}, tmp_path / "s3", opts)
    assert there["shards"] and there["shards"] == here["shards"] and there["stats"] == here["stats"]
    used = sum(json.loads(s)["frames_used"] for s in there["stats"].values())
    assert used > 0
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("ocean-input-*")) == before  # copies deleted


def test_a_frame_deleted_after_listing_is_a_counted_rejection(raw, s3_server, s3_env, tmp_path):
    local, _ = raw
    uri = _upload(s3_server, local / "got10k", f"del-{uuid.uuid4().hex[:8]}")
    cfg, settings = smoke(), CropSettings.from_config(smoke())
    datapath.clear_listing_cache()
    (tmp_path / "spill").mkdir()
    states = list_datasets(dataset_roots({"got10k": uri}), cfg, SEED, {"got10k": PAIRS}, SHARD_PAIRS, None,
                           str(tmp_path / "spill"), say=lambda _: None)
    tasks = list(shard_tasks(states, shards_to_run(states, {}), "job"))
    victim = next(iter(tasks[0].videos[0].frames.values())).path
    assert victim.startswith(uri + "/")
    s3_server.client().delete_object(Bucket=BUCKET, Key=victim[len(f"s3://{BUCKET}/"):])
    store = OutputStore.from_uri(str(tmp_path / "o"))
    sidecar = write_shard(store, tasks[0], settings)
    assert sidecar["rejected"].get("missing_image") == 1
    assert sidecar["frames_read"] == sidecar["frames_used"] + sum(sidecar["rejected"].values())
    rejects = [json.loads(line) for line in (tmp_path / "o" / sidecar["rejects_path"]).read_text().splitlines()]
    assert [r for r in rejects if r["reason"] == "missing_image"][0]["source"] == victim


def test_unreadable_input_roots_fail_fast_and_clearly(raw, s3_server, s3_env, monkeypatch, tmp_path, capsys):
    from jobs.cli import main

    _, uri = raw
    cases = {f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/raw": "bucket .* does not exist",
             f"{uri}/no-such-prefix": "no such prefix"}
    for root, why in cases.items():
        with pytest.raises(InputLocationError, match=f"got10k: dataset root {root} .*{why}"):
            dataset_roots({"got10k": root})
        assert main(["prepare", "--dataset", f"got10k={root}", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and root in err and s3_server.secret_key not in err
        assert main(["score", "--benchmark", "otb", "--dataset", root, "--results", str(tmp_path),
                     "--json", str(tmp_path / "s.json")]) == 2
        assert root in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing was written: the check came first
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections (the kernel's backlog), never answers
    try:
        for endpoint in ("http://127.0.0.1:9", f"http://127.0.0.1:{silent.getsockname()[1]}"):  # 9: nothing listens
            monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
            with pytest.raises(InputLocationError, match="endpoint unreachable") as dead:
                dataset_roots({"got10k": f"{uri}/got10k"})
            assert s3_server.secret_key not in str(dead.value) and s3_server.access_key not in str(dead.value)
    finally:
        silent.close()


def test_evaluate_and_score_from_s3_equal_local(raw, ckpts, s3_env, tmp_path):
    from pipelines.evaluate import EvaluateSettings, evaluate

    local, uri = raw
    rel = {"otb": "benchmarks/otb", "vot2018": "benchmarks/vot2018/sequences", "got10k": "benchmarks/got10k/val",
           "lasot": "benchmarks/lasot"}
    reports, outs = {}, {}
    for where, base in (("local", str(local)), ("s3", uri)):
        outs[where] = tmp_path / where
        reports[where] = evaluate(EvaluateSettings(ckpts[:1], {b: f"{base}/{r}" for b, r in rel.items()},
                                                   str(outs[where]), local=True, log_mlflow=False, max_sequences=1,
                                                   progress=False))
        assert reports[where]["failed"] == []
    for b in rel:
        a, s = reports["local"]["scores"][ckpts[0]][b], reports["s3"]["scores"][ckpts[0]][b]
        assert {k: s.get(k) for k in METRICS} == {k: a.get(k) for k in METRICS}, b
        assert s["num_sequences"] == a["num_sequences"] == 1
        results = sorted(p for p in (outs["local"] / "checkpoint_e1" / b / "results").rglob("*.txt")
                         if not p.name.endswith("_time.txt"))
        assert results
        for p in results:
            twin = outs["s3"] / p.relative_to(outs["local"])
            assert twin.read_bytes() == p.read_bytes(), p
    from ocean.benchmarks.scoring import score_benchmark

    results = outs["local"] / "checkpoint_e1" / "otb" / "results"
    assert score_benchmark("otb", f"{uri}/{rel['otb']}", results) == score_benchmark("otb", local / rel["otb"], results)


def test_prepare_job_on_the_cluster_reads_raw_data_from_s3(raw, s3_server, ray_cluster, tmp_path):
    """``ocean prepare --dataset NAME=s3://...`` with the endpoint and keys only in the job's environment, on the
    2-node cluster: the shards equal the ones this process cuts from the local folder."""
    local, uri = raw
    here = _prepare_here({n: str(local / n) for n in NAMES}, tmp_path / "local")
    out = tmp_path / "job"
    args = [sys.executable, "-m", "jobs.prepare", "--preset", "smoke", "--out", str(out), "--seed", str(SEED),
            "--shard-pairs", str(SHARD_PAIRS), "--ray-address", ray_cluster.address, "--no-progress"]
    for name in NAMES:
        args += ["--dataset", f"{name}={uri}/{name}", "--pairs", f"{name}={PAIRS}"]
    env = {**ray_cluster.env, **s3_server.env()}
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert s3_server.secret_key not in proc.stdout + proc.stderr
    got = _files(out)
    assert got["shards"] == here["shards"] and got["stats"].keys() == here["stats"].keys()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["datasets"]["got10k"] == f"{uri}/got10k"
    assert s3_server.secret_key not in (out / "manifest.json").read_text()


MEDIA = (".jpg", ".jpeg", ".png", ".mp4", ".webm", ".mkv", ".avi")


def test_listing_costs_one_request_per_folder_not_one_per_entry(raw, s3_server, s3_env, monkeypatch):
    """Counted at a proxy in front of the server: listing requests are at most one per folder of the tree
    (a folder's listing is cached, so is_file / is_dir on its entries cost nothing), every HEAD is pyarrow's
    open of a file that is then read (no existence probes; an empty file needs no GET), and only annotation files are read -- no image,
    except the first frame header of each YT-BB video (its frame size)."""
    from s3_proxy import CountingProxy

    from data_prep.readers import read_tracks

    local, uri = raw
    proxy = CountingProxy(s3_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        for name in NAMES:
            datapath.clear_listing_cache()
            proxy.counts.clear()
            tracks = list(read_tracks(name, f"{uri}/{name}"))
            walked = list(os.walk(local / name))
            annotations = [Path(d) / f for d, _, files in walked for f in files if not f.lower().endswith(MEDIA)]
            empty = sum(1 for p in annotations if p.stat().st_size == 0)  # pyarrow reads these with HEAD alone
            headers = len({t.video for t in tracks}) if name == "ytbb" else 0
            counts = dict(proxy.counts)
            assert tracks, name
            assert counts[("GET", "list")] <= len(walked) + 2, (name, counts)
            gets = counts[("GET", "object")]
            assert gets <= counts.get(("HEAD", "object"), 0) <= gets + empty, (name, counts)
            assert gets <= len(annotations) + headers, (name, counts)
    finally:
        proxy.close()


def test_evaluate_job_on_the_cluster_reads_benchmarks_from_s3(raw, ckpts, s3_server, ray_cluster, tmp_path):
    """``ocean evaluate --benchmark NAME=s3://...`` on the 2-node cluster, endpoint and keys only in the job's
    environment: the Ray workers read the frames from S3 and write the result files the local loop writes
    from the local folder."""
    from pipelines.evaluate import EvaluateSettings, evaluate

    local, uri = raw
    rel = {"otb": "benchmarks/otb", "vot2018": "benchmarks/vot2018/sequences"}
    evaluate(EvaluateSettings(ckpts[:1], {b: str(local / r) for b, r in rel.items()}, str(tmp_path / "local"),
                              local=True, log_mlflow=False, progress=False, max_sequences=1))
    cmd = [sys.executable, "-m", "jobs.evaluate", "--checkpoint", ckpts[0], "--out", str(tmp_path / "ray"),
           "--workers", "2", "--ray-address", ray_cluster.address, "--max-sequences", "1", "--no-mlflow", "--quiet"]
    for b, r in rel.items():
        cmd += ["--benchmark", f"{b}={uri}/{r}"]
    proc = subprocess.run(cmd, env={**ray_cluster.env, **s3_server.env()}, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "ray" / "evaluation.json").read_text())
    assert report["failed"] == [] and not report["timing"]["local"]

    def results(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.txt"))
                if not p.name.endswith("_time.txt")}

    assert results(tmp_path / "ray" / "checkpoint_e1") == results(tmp_path / "local" / "checkpoint_e1")
    assert results(tmp_path / "ray" / "checkpoint_e1")


def test_tune_tracker_and_ablate_take_benchmarks_from_s3(raw, s3_env, pairs_dir, tmp_path):
    """tune-tracker's validation sequences from S3 equal the local ones (its trials read frames as evaluation
    does); ablate refuses an unreadable benchmark root before planning any training."""
    import numpy as np

    from ocean.ablation import AblationError
    from ocean.tuning import TuneTrackerError, read_validation
    from pipelines.ablate import AblateSettings, ablate

    local, uri = raw
    rel = "benchmarks/got10k/val"
    (ref, ref_split), (got, split) = read_validation("got10k", str(local / rel)), read_validation("got10k", f"{uri}/{rel}")
    assert [s.name for s in got] == [s.name for s in ref] and "'val' split" in split and ref_split == split
    for a, b in zip(ref, got, strict=True):
        assert [str(f) for f in b.frames] == [f"{uri}/{Path(f).relative_to(local).as_posix()}" for f in a.frames]
        assert np.array_equal(a.gt_xywh, b.gt_xywh)
    with pytest.raises(TuneTrackerError, match="no such prefix"):
        read_validation("got10k", f"{uri}/benchmarks/nope")
    with pytest.raises(AblationError, match="benchmark otb: root .*no such prefix"):
        ablate(AblateSettings(str(pairs_dir), {"otb": f"{uri}/benchmarks/nope"}, str(tmp_path / "o"), preset="smoke"))
    assert not (tmp_path / "o").exists()
