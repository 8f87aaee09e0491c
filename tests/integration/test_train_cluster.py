"""Training pipeline on real Ray Train runs: the input stream, 2-worker DDP on CPU with checkpoints on S3 and
metrics on an mlflow server, a killed worker, re-run resume and the bad-step guard (the MLflow helpers and
the batch function: tests/unit/test_train_local.py)."""

from __future__ import annotations

import hashlib
import io
import os
import re

import numpy as np
import pytest

from data_prep.epochs import batch_plan, epoch_selection
from data_prep.pair_index import list_pair_files, load_pair_index
from jobs.common import setup_logging
from ocean.checkpoint import list_checkpoints
from ocean.config import OceanConfig, apply_overrides, smoke
from pipelines.raysession import local_niceness
from pipelines.train import TrainSettings

# --------------------------------------------------------------------------------------------------------
# Ray Train runs (slow)

TINY = ["optim.batch_size=8", 'data.pairs_per_epoch={"got10k": 24, "coco": 8}']


def tiny_cfg(epochs: int, *extra: str) -> OceanConfig:
    return apply_overrides(smoke(), [f"optim.epochs={epochs}", *TINY, *extra])


@pytest.fixture(scope="module")
def ray_local(s3_server):
    """A local Ray (4 logical CPUs on this 2-core box, ray_stack.md §4) whose workers see the S3 keys."""
    import ray

    saved = {k: os.environ.get(k) for k in s3_server.env()}
    os.environ.update(s3_server.env())
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, **local_niceness())
    yield
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.slow
def test_stream_yields_each_epochs_keys_after_resuming(ray_local, pairs_dir):
    """One pipeline per rank for all remaining epochs: every batch belongs to its epoch, each epoch yields
    exactly the rank's share in order, the ranks together draw the epoch's selection, and it ends there.
    Rank 0's first epoch (its first item split into small tasks) is bit-identical to ``read_and_augment``
    over the share's whole items in this process."""
    import dataclasses

    from data_prep.epochs import items_batch, read_and_augment, work_item
    from data_prep.pair_index import TrainingDataError
    from pipelines.train_input import pair_stream

    fs, files = list_pair_files(str(pairs_dir))
    index = load_pair_index(fs, files)
    cfg, plan = tiny_cfg(4), batch_plan(8, 2)
    feeds = [pair_stream(index, fs, cfg, plan, seed=7, rank=r, start=2) for r in (0, 1)]  # resumed at epoch 2
    assert sorted(feeds[0].shares) == [2, 3]
    for epoch in (2, 3):
        selection, _ = epoch_selection(index.keys, index.datasets, cfg.data.pairs_per_epoch, 7, epoch)
        drawn = []
        for feed in feeds:
            share = feed.share(epoch)
            got, tensors = [], []
            for step in range(share.steps):
                batch = feed.next(epoch, step)
                assert batch["template"].shape == (4, 127, 127, 3) and batch["valid"].all()
                got.append(feed.last_keys.copy())
                tensors.append({k: v.numpy() for k, v in batch.items()})
            assert np.array_equal(np.concatenate(got), index.keys[share.positions])
            if feed is feeds[0] and epoch == 2:
                items = [work_item(index, share, i) for i in range(len(share.items))]
                want = read_and_augment(items_batch(items), files=index.files, filesystem=fs, augment=dataclasses.asdict(cfg.augment),
                                        seed=7, exemplar_size=127, search_size=255)
                for k in tensors[0]:
                    assert np.concatenate([t[k] for t in tensors]).tobytes() == want[k].tobytes(), k
            drawn.extend(np.concatenate(got).tolist())
        assert len(drawn) == len(set(drawn)) == 32 and set(drawn) == set(selection.tolist())  # 32 = 4 x 8
    for feed in feeds:
        with pytest.raises(TrainingDataError, match="ended early"):
            feed.next(4, 0)


@pytest.mark.slow
@pytest.mark.parametrize("negatives", [0.0, 0.5])
def test_the_head_start_yields_the_tasks_rows(ray_local, pairs_dir, negatives):
    """A rank decodes its stream's first item itself while Ray Data starts the tasks for the rest: every batch
    of every epoch is byte-identical to the stream without the head start, the first item's pieces (the whole
    item when negative pairs tie its pairs together) and only they were decoded in this process, and the
    stream still ends where it should."""
    from data_prep.pair_index import TrainingDataError
    from pipelines.stream_start import HeadStart, data_task_cpus, node_task_cpus
    from pipelines.train_input import pair_stream

    assert node_task_cpus() == data_task_cpus(4, len(os.sched_getaffinity(0)))  # the fixture's 4 Ray CPUs
    fs, files = list_pair_files(str(pairs_dir))
    index = load_pair_index(fs, files)
    cfg, plan = tiny_cfg(3, f"augment.negative_prob={negatives}"), batch_plan(8, 2)  # rank 0: 16 pairs an epoch,
    # micro-batches of 4
    feeds = {h: pair_stream(index, fs, cfg, plan, seed=3, rank=0, start=0, head_start=h) for h in (True, False)}
    blocks = feeds[True]._blocks
    assert isinstance(blocks, HeadStart) and not isinstance(feeds[False]._blocks, HeadStart)
    for epoch in range(3):
        for step in range(feeds[True].share(epoch).steps):
            got, want = (feeds[h].next(epoch, step) for h in (True, False))
            assert np.array_equal(feeds[True].last_keys, feeds[False].last_keys)
            for k in want:
                assert got[k].numpy().tobytes() == want[k].numpy().tobytes(), (epoch, step, k)
    assert blocks.served_locally == (3 if negatives == 0 else 1)  # epoch 0's item of 16 pairs: pieces of 4, 4, 8
    for feed in feeds.values():
        with pytest.raises(TrainingDataError, match="ended early"):
            feed.next(3, 0)
        feed.close()


@pytest.mark.slow
def test_an_idle_stream_sleeps_instead_of_spinning(ray_local):
    """While the consumer holds its prefetch window and backpressure holds the finished tasks' outputs back,
    Ray Data's scheduling loop (in the consumer's process) finds nothing to do at every step; with
    :func:`calm_idle_scheduling_loop` it sleeps between such steps instead of spinning (ray_stack.md §2.9),
    and every row still arrives, in order. The bound counts loop steps, not seconds: a sleeping loop makes at
    most one idle step per ``sleep_s`` (1,490 steps in the same second without it, measured)."""
    import time

    import ray.data
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    from pipelines.raysession import _progress, calm_idle_scheduling_loop, calm_step

    sleep_s, hold_s, n = 0.02, 1.0, 32
    assert calm_idle_scheduling_loop(sleep_s)
    installed = StreamingExecutor._scheduling_loop_step
    assert installed._ocean_calm and calm_idle_scheduling_loop(sleep_s)  # once per process: it stays
    assert StreamingExecutor._scheduling_loop_step is installed
    steps = {"all": 0, "idle": 0, "counting": False}

    def counted(self, topology):  # Ray's own step, counted: was there nothing to do?
        before = _progress(topology)
        more = installed.__wrapped__(self, topology)
        if steps["counting"]:
            steps["all"] += 1
            steps["idle"] += _progress(topology) == before
        return more

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.execution_options.resource_limits)
    StreamingExecutor._scheduling_loop_step = calm_step(counted, sleep_s)
    try:
        ctx.execution_options.preserve_order = True
        ctx.execution_options.resource_limits = ray.data.ExecutionResources(object_store_memory=64 << 20)
        pad = 16 << 20  # 16 MB blocks against a 64 MB budget: backpressure holds finished outputs back
        ds = ray.data.range(n, override_num_blocks=n).map_batches(
            lambda b, pad=pad: {"id": b["id"] * 2, "pad": np.zeros((len(b["id"]), pad), np.uint8)}, batch_size=None)
        it = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
        got = [next(it)["id"]]
        time.sleep(3.0)  # the window fills, backpressure sets in
        steps["counting"] = True
        time.sleep(hold_s)
        steps["counting"] = False
        got.extend(b["id"] for b in it)
    finally:
        StreamingExecutor._scheduling_loop_step = installed
        ctx.execution_options.preserve_order, ctx.execution_options.resource_limits = saved
    assert np.concatenate(got).tolist() == [2 * i for i in range(n)]
    assert steps["idle"] >= 1, steps  # the loop was running and had nothing to do
    assert steps["all"] <= hold_s / sleep_s + 10, steps  # ~50 when sleeping


@pytest.mark.slow
def test_ddp_run_s3_checkpoints_mlflow_server_and_rerun_resume(ray_local, pairs_dir, s3_server, mlflow_server):
    from mlflow.tracking import MlflowClient

    from ocean.checkpoint import load_model
    from pipelines.train import train

    out = "s3://ocean-runs/t-ddp"
    cfg = tiny_cfg(2)
    res = train(TrainSettings(str(pairs_dir), out, cfg, workers=2, mlflow_uri=mlflow_server.uri,
                              experiment="t-train", run_name="ddp", verbose=False))
    assert res["epochs"] == 2 and res["resumed_from"] == 0
    assert res["batch_plan"] == {"global_batch": 8, "workers": 2, "per_worker": 4, "micro_batch": 4,
                                 "accumulate": 1}
    for h in res["history"]:  # every rank's parameter digest after every epoch
        assert len(h["param_digests"]) == 2 and h["param_digests"][0] == h["param_digests"][1]
        assert h["steps"] == 4  # 32 pairs / global batch 8
        assert h["composition"]["got10k"]["taken"] == 24 and h["composition"]["coco"]["taken"] == 8
    assert res["history"][0]["param_digests"][0] != res["history"][1]["param_digests"][0]  # it trained
    keys = s3_server.keys("ocean-runs", "t-ddp/checkpoints/")
    assert keys == ["t-ddp/checkpoints/epoch-0001.pt", "t-ddp/checkpoints/epoch-0002.pt"]
    net, loaded_cfg = load_model(res["checkpoints"][-1])
    assert loaded_cfg == cfg and sum(p.numel() for p in net.parameters()) > 0

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(res["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.batch_size"] == "8" and run.data.params["run.workers"] == "2"
    assert run.data.params["run.manifest_sha256"] == hashlib.sha256((pairs_dir / "manifest.json").read_bytes()).hexdigest()
    assert len(run.data.tags["ocean.code_version"]) >= 7
    assert not any("secret" in v or s3_server.secret_key in v for v in {**run.data.params, **run.data.tags}.values())
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2] and all(np.isfinite(m.value) for m in losses)
    for key in ("lr/head", "lr/neck", "pairs_per_s", "data_wait_fraction", "step/loss_total"):
        assert client.get_metric_history(run.info.run_id, key), key
    assert "checkpoints.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert [m.model_id for m in run.outputs.model_outputs] == [res["model_uri"].removeprefix("models:/")]
    # the loss and lr curves: beside the checkpoints and in the run (ocean.training_plots)
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/training_loss.png", "plots/training_lr.png"}
    assert res["plots"] == [f"{out}/plots/training_loss.png", f"{out}/plots/training_lr.png"]
    assert s3_server.keys("ocean-runs", "t-ddp/plots/") == ["t-ddp/plots/training_loss.png", "t-ddp/plots/training_lr.png"]
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"

    again = train(TrainSettings(str(pairs_dir), out, cfg, workers=2, mlflow_uri=mlflow_server.uri,
                                experiment="t-train", run_name="ddp", verbose=False))
    assert again["resumed_from"] == 2 and again["epochs"] == 2  # nothing re-trained
    assert again["mlflow_run_id"] == res["mlflow_run_id"] and again["model_uri"] == res["model_uri"]
    assert again["history"] == res["history"]


@pytest.mark.slow
def test_killed_worker_resumes_then_rerun_continues(ray_local, pairs_dir, tmp_path, capsys):
    from pipelines.train import train
    from pipelines.train_loop import KILLED_MARKER

    console = io.StringIO()  # the driver's console, as `ocean train` sets it up
    setup_logging("info", "train", stream=console)
    out = tmp_path / "run"
    res = train(TrainSettings(str(pairs_dir), str(out), tiny_cfg(2), workers=2, run_name="kill",
                              kill_worker_at=(1, 1, 1), verbose=False))
    shown = console.getvalue()  # rank 0 on the driver: each epoch with the run ETA, the restarted group resumed
    assert re.search(r"train_loop\[rank 0\]: epoch 1/2 loss [\d.]+ .*; run ETA \d[\dhms]* -> ", shown), shown
    assert re.search(r"train_loop\[rank 0\]: epoch 2/2 loss [\d.]+ .*; run done -> ", shown), shown
    assert re.search(rf"train_loop\[rank 0\]: resuming (at|after) epoch 1 from {re.escape(str(out))}/checkpoints/epoch-0001.pt", shown)
    assert (out / KILLED_MARKER).exists()  # rank 1 really died once, in epoch 2 (index 1) at step 1
    assert res["epochs"] == 2 and [e for e, _ in list_checkpoints(str(out))] == [1, 2]
    assert [h["epoch"] for h in res["history"]] == [1, 2]  # epoch 1 kept: only the epoch in progress was lost
    assert all(h["params_identical"] == 1.0 for h in res["history"])
    ray_ckpts = [p.name for p in (out / "ray" / "kill").iterdir() if p.is_dir() and p.name.startswith("checkpoint_")]
    assert len(ray_ckpts) == 1  # superseded and orphan Ray checkpoint folders removed

    # the same command with one more epoch, the newest epoch file truncated: resumes after epoch 1, and says so
    newest = out / "checkpoints" / "epoch-0002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    console.seek(0)
    console.truncate()
    more = train(TrainSettings(str(pairs_dir), str(out), tiny_cfg(3), workers=2, run_name="kill", verbose=False))
    shown = console.getvalue()  # the driver says it before Ray starts
    assert f"WARNING train: skipping unreadable checkpoint {newest}: truncated or damaged" in shown, shown
    assert f"train: resuming after epoch 1 from {out / 'checkpoints' / 'epoch-0001.pt'}" in shown, shown
    assert more["resumed_from"] == 1 and more["epochs"] == 3
    assert more["history"][:1] == res["history"][:1]  # epoch 1 was not trained again; epoch 2 was
    assert [e for e, _ in list_checkpoints(str(out))] == [1, 2, 3]
    assert more["mlflow_run_id"] == res["mlflow_run_id"]


@pytest.mark.slow
@pytest.mark.parametrize("head_start", [True, False], ids=["in-the-rank", "in-a-task"])
def test_a_damaged_pair_file_mid_epoch_is_named_on_the_driver(ray_local, pairs_dir, tmp_path, head_start):
    """Zeroed bytes inside a file whose footer still reads: the check against the manifest's sha256 fails where
    the file is first read -- in the rank's own process (its head start decodes this one-epoch stream's every
    pair) or, without the head start, inside a Ray Data task; either way the driver raises a TrainingDataError
    naming the file, not Ray's wrapper."""
    import json
    import shutil

    from data_prep.pair_index import TrainingDataError
    from pipelines.train import train

    data = tmp_path / "pairs"
    shutil.copytree(pairs_dir, data)
    files = sorted(data.glob("*.parquet"))
    (data / "manifest.json").write_text(json.dumps({"schema_version": 1, "shards": [
        {"path": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files]}))
    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
    files[0].write_bytes(bytes(raw))
    with pytest.raises(TrainingDataError, match=rf"input stream failed at epoch 0 step \d+: pair-record file "
                                                rf"{files[0]}: damaged or changed since `ocean prepare`"):
        train(TrainSettings(str(data), str(tmp_path / "run"), tiny_cfg(1), workers=1, max_failures=0,
                            run_name="damaged", verbose=False, data_head_start=head_start))


@pytest.mark.slow
def test_bad_steps_stop_a_ddp_run(ray_local, pairs_dir, tmp_path):
    from ocean.engine import TrainingDiverged
    from pipelines.train import train

    cfg = tiny_cfg(2, "optim.max_loss=1e-9", "optim.max_bad_steps=3")
    with pytest.raises(TrainingDiverged, match="3 consecutive training steps skipped, the last at step 2"):
        train(TrainSettings(str(pairs_dir), str(tmp_path / "run"), cfg, workers=2, run_name="bad", verbose=False))
    assert list_checkpoints(str(tmp_path / "run")) == []


