"""The preparation's crop step as a Ray Data pipeline (pipelines/prepare_data.py) on a local Ray: it is a Ray
Data job, its shards are byte-identical to those the old driver-built shard inputs give, a resumed run runs
only the missing shards and rewrites nothing, a shard whose task raises is reported while the others are
stored, and a shard task whose worker dies is retried (the whole job on a 2-node cluster:
tests/integration/test_prepare_cluster.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from data_prep.listing import list_datasets, shard_tasks, shards_to_run, spill_folder
from data_prep.pairs import pair_counts
from data_prep.shards import CropSettings, shard_paths, write_shard
from ocean.config import smoke
from ocean.storage import OutputStore
from pipelines.prepare import PrepareSettings, ShardFailed, run_prepare
from pipelines.prepare_data import process_shard

NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")
PAIRS = 24  # per dataset
SHARD_PAIRS = 6
SEED = 3


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 4 logical CPUs, its own temp dir (tests/local_ray.py)."""
    from local_ray import local_ray as session

    with session("ocd") as temp:
        yield temp


def _settings(root: Path, out: Path, **kw) -> PrepareSettings:
    return PrepareSettings({n: str(root / n) for n in NAMES}, str(out), smoke(), pairs={n: PAIRS for n in NAMES},
                           seed=SEED, shard_pairs=SHARD_PAIRS, progress=False, log=None,
                           **{"log_mlflow": False, **kw})  # no OUT/mlflow.db: these tests compare OUT's files


def _files(out: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def clean(synth, local_ray, tmp_path_factory):
    """One uninterrupted run: ``(out, manifest, run_info)``."""
    root, _ = synth
    out = tmp_path_factory.mktemp("clean") / "out"
    manifest, info = run_prepare(_settings(root, out))
    return out, manifest, info


def test_the_crop_step_is_a_ray_data_pipeline_of_one_task_per_shard(clean):
    _, manifest, info = clean
    stats = info["data_stats"]
    assert "FromItems" in stats and "MapBatches(crop_items)" in stats  # Ray Data's per-operator stats
    n = len(manifest["shards"])
    assert f"MapBatches(crop_items): {n} tasks executed, {n} blocks produced" in stats
    assert info["shards_run"] == n and info["shards_skipped"] == 0 and info["shards_found_stored"] == 0
    assert sorted(t["shard"] for t in info["timeline"]) == sorted(Path(s["path"]).stem for s in manifest["shards"])
    assert info["nodes"] == 1 and sum(w["shards"] for w in info["workers"].values()) == n


def test_shards_are_byte_identical_to_those_of_driver_built_inputs(synth, clean, tmp_path):
    """The old job built each shard's input on the driver (listing.shard_tasks) and shipped it to its task;
    the same inputs, written here in-process, give the very bytes the pipeline stored."""
    root, _ = synth
    out, manifest, _ = clean
    cfg = smoke()
    crop_settings = CropSettings.from_config(cfg)
    spill = spill_folder(str(tmp_path))
    states = list_datasets({n: str(root / n) for n in NAMES}, cfg, SEED, pair_counts(cfg.data, {n: PAIRS for n in NAMES}),
                           SHARD_PAIRS, None, spill, lambda _m: None)
    job = json.loads((out / "job.json").read_text())["fingerprint"]
    store = OutputStore.from_uri(str(tmp_path / "old"))
    sidecars = {t.name: write_shard(store, t, crop_settings) for t in shard_tasks(states, shards_to_run(states, {}), job)}
    assert len(sidecars) == len(manifest["shards"])
    for entry in manifest["shards"]:
        name = Path(entry["path"]).stem
        assert sidecars[name]["sha256"] == entry["sha256"]
        assert (tmp_path / "old" / entry["path"]).read_bytes() == (out / entry["path"]).read_bytes()
        paths = shard_paths(name)
        for kind in ("stats", "rejects"):
            old, new = tmp_path / "old" / paths[kind], out / paths[kind]
            assert old.exists() == new.exists() and (not old.exists() or old.read_bytes() == new.read_bytes())


def test_a_resumed_run_runs_only_the_missing_shards_and_rewrites_nothing(synth, clean, tmp_path):
    root, _ = synth
    src, manifest, _ = clean
    out = tmp_path / "resumed"
    shutil.copytree(src, out)
    (out / "manifest.json").unlink()  # as a killed job leaves it: some shards done, no manifest
    missing = [Path(s["path"]).stem for s in manifest["shards"][1::3]]
    for name in missing:
        for rel in shard_paths(name).values():
            (out / rel).unlink(missing_ok=True)
    before = _files(out)
    manifest2, info = run_prepare(_settings(root, out))
    assert manifest2 == manifest
    assert sorted(t["shard"] for t in info["timeline"]) == sorted(missing)
    assert info["shards_skipped"] == len(manifest["shards"]) - len(missing)
    after = _files(out)
    assert {k: v for k, v in after.items() if k in before} == before  # untouched, mtimes included
    assert {Path(k).stem for k in set(after) - set(before)} == set(missing) | {"manifest"}
    # a shard task that finds its shard stored (a retry after a lost node) returns it and writes nothing
    store = OutputStore.from_uri(str(out))
    job = json.loads((out / "job.json").read_text())["fingerprint"]
    again = process_shard(store, _first_task(root, job, tmp_path), CropSettings.from_config(smoke()))
    assert again["runtime"]["skipped"] and _files(out) == after


def _first_task(root: Path, job: str, tmp_path: Path):
    cfg = smoke()
    spill = spill_folder(str(tmp_path))
    states = list_datasets({n: str(root / n) for n in NAMES}, cfg, SEED, pair_counts(cfg.data, {n: PAIRS for n in NAMES}),
                           SHARD_PAIRS, None, spill, lambda _m: None)
    return next(shard_tasks(states, shards_to_run(states, {})[:1], job))


def test_a_shard_whose_task_raises_is_reported_and_the_others_are_stored(synth, clean, tmp_path, caplog):
    root, _ = synth
    _, manifest, _ = clean
    out = tmp_path / "failing"
    bad = manifest["shards"][2]["path"]
    (out / bad).mkdir(parents=True)  # the shard's file cannot be written: its task raises
    with pytest.raises(ShardFailed, match=f"1 of {len(manifest['shards'])} shards failed \\({Path(bad).stem}\\)"):
        run_prepare(_settings(root, out))
    assert f"shard {Path(bad).stem} failed: IsADirectoryError" in caplog.text
    assert not (out / "manifest.json").exists()
    stored = {p.stem for p in (out / "stats").iterdir()}
    assert stored == {Path(s["path"]).stem for s in manifest["shards"]} - {Path(bad).stem}
    (out / bad).rmdir()
    manifest2, info = run_prepare(_settings(root, out))  # the re-run finishes the job
    assert manifest2 == manifest and [t["shard"] for t in info["timeline"]] == [Path(bad).stem]


def test_a_shard_task_whose_worker_is_killed_is_retried_and_the_job_finishes(synth, clean, local_ray, tmp_path):
    root, _ = synth
    _, manifest, _ = clean
    killed: list[int] = []
    killed_at: list[float] = []
    stop = threading.Event()

    def kill_a_shard_worker() -> None:  # SIGKILL the first Ray worker seen running a shard task
        while not stop.is_set() and not killed:
            for entry in Path("/proc").iterdir():
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if entry.name.isdigit() and b"ray::MapBatches(crop_items)" in cmd:
                    os.kill(int(entry.name), 9)
                    killed_at.append(time.time())
                    killed.append(int(entry.name))
                    return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_a_shard_worker, daemon=True)
    killer.start()
    try:
        manifest2, info = run_prepare(_settings(root, tmp_path / "killed", task_cpus=4.0))  # one task at a time
    finally:
        stop.set()
        killer.join(5)
    assert killed, "no shard task was seen running"
    assert manifest2 == manifest
    # the killed worker returned nothing from the task it was running (Ray may have reused it for an
    # earlier shard, which it finished before the kill)
    ended = [info["crop_started_at"] + t["end"] for t in info["timeline"] if t["pid"] == killed[0]]
    assert all(end <= killed_at[0] for end in ended), (ended, killed_at)
    assert info["shards_run"] == len(manifest["shards"])
    digest = hashlib.sha256
    assert all(digest((tmp_path / "killed" / s["path"]).read_bytes()).hexdigest() == s["sha256"]
               for s in manifest["shards"])


@pytest.mark.slow
def test_a_lost_store_stops_the_job_after_a_few_shards_and_the_rerun_recovers(synth, local_ray, s3_env, capfd,
                                                                              caplog):
    """The output store goes away mid-crop (a proxy in front of SeaweedFS stops answering): the job stops
    submitting shards after MAX_STORE_FAILURES_IN_A_ROW failures with one line naming the cause, instead of
    trying every shard; the same command afterwards finishes the job."""
    from s3_proxy import CountingProxy

    from pipelines.prepare_data import MAX_STORE_FAILURES_IN_A_ROW

    caplog.set_level("WARNING", logger="pipelines.prepare")
    root, _ = synth
    total = 24  # one pair per shard: many small shards
    proxy = CountingProxy(s3_env.endpoint, down_after_puts=3, down_match="/stats/")  # gone after 3 shards
    try:
        host = proxy.endpoint.split("://", 1)[1]
        out = f"s3://ocean-runs/outage-{os.getpid()}?endpoint_override={host}&scheme=http"
        settings = PrepareSettings({"got10k": str(root / "got10k")}, out, smoke(), pairs={"got10k": total},
                                   seed=SEED, shard_pairs=1, progress=False, log=None)
        with pytest.raises(ShardFailed, match=rf"stopped submitting shards: {MAX_STORE_FAILURES_IN_A_ROW} in a "
                                              r"row failed on the output or input store \(S3 endpoint unreachable: "):
            run_prepare(settings)
        err = capfd.readouterr().err
        failed_lines = [r.getMessage() for r in caplog.records
                        if r.name == "pipelines.prepare" and r.getMessage().startswith("shard ") and " failed: " in r.getMessage()]
        assert len(failed_lines) == 1 and "S3 endpoint unreachable" in failed_lines[0]  # one line per cause
        tried = {Path(p).stem for p in proxy.dropped if "/stats/" in p}  # each shard task first looks for its sidecar
        assert 0 < len(tried) < total - 3  # far from every shard: the tasks in flight, not the whole job
        assert s3_env.secret_key not in err + caplog.text
        proxy.down_after_puts = None  # the store is back: the same command finishes the job
        manifest, info = run_prepare(settings)
        assert manifest["totals"]["shards"] == info["shards_run"] + info["shards_skipped"] == total
        assert manifest["totals"]["pairs_written"] == manifest["datasets"]["got10k"]["pairs_planned"] == total
        assert info["shards_skipped"] >= 2  # what was stored before the outage was kept (the 3rd upload was cut)
    finally:
        proxy.close()
