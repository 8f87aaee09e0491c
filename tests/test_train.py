"""Training pipeline: batch plan, epoch composition, per-batch selection, MLflow helpers (fast), and real
Ray Train runs (slow): 2-worker DDP on CPU with checkpoints on S3 and metrics on an mlflow server,
a killed worker, re-run resume and the bad-step guard."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep.crops import crop_region, encode_jpeg, stored_sides
from data_prep.pairs import pair_id
from data_prep.records import build_table, side_fields
from ocean.config import AugmentConfig, OceanConfig, apply_overrides, smoke
from pipelines import tracking
from pipelines.train import (
    BatchPlan,
    TrainingDataError,
    batch_plan,
    epoch_selection,
    epoch_share,
    list_checkpoints,
    list_pair_files,
    load_pair_index,
    pair_keys,
    rank_rows,
    read_and_augment,
    read_pair_index,
    work_item,
)


def write_pairs(folder: Path, counts: dict[str, int], seed: int = 0, per_file: int = 16) -> int:
    """Plain synthetic pair records: a yellow box on smoothed noise, moved up to 20 px in the search frame."""
    folder.mkdir(parents=True, exist_ok=True)
    t_side, s_side = stored_sides(AugmentConfig())
    rows = []
    for name, n in sorted(counts.items()):
        for k in range(n):
            rng = np.random.default_rng([seed, k, len(name)])
            img = cv2.resize(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), (640, 480))
            w, h = rng.uniform(40, 120, 2)
            x, y = rng.uniform(100, 640 - 100 - w), rng.uniform(100, 480 - 100 - h)
            box_t = [x, y, x + w, y + h]
            dx, dy = rng.uniform(-20, 20, 2)
            box_s = [x + dx, y + dy, x + w + dx, y + h + dy]
            t_img, s_img = img.copy(), img.copy()
            t_img[int(y):int(y + h), int(x):int(x + w)] = (20, 200, 240)
            s_img[int(box_s[1]):int(box_s[3]), int(box_s[0]):int(box_s[2])] = (20, 200, 240)
            t, s = crop_region(t_img, box_t, t_side), crop_region(s_img, box_s, s_side)
            rows.append({"pair_id": pair_id(name, f"v{k}", "0", "0", "1", k), "dataset": name, "video": f"v{k}",
                         "track": "0", "template_frame": "0", "search_frame": "1", "draw": k,
                         **side_fields("template", encode_jpeg(t.image), t, box_t, (640, 480)),
                         **side_fields("search", encode_jpeg(s.image), s, box_s, (640, 480))})
    for i in range(0, len(rows), per_file):
        pq.write_table(build_table(rows[i:i + per_file]), folder / f"shard-{i // per_file:05d}.parquet")
    return len(rows)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    write_pairs(folder, {"got10k": 40, "coco": 16})
    (folder / "manifest.json").write_text('{"schema_version": 1}')
    return folder


# --------------------------------------------------------------------------------------------------------
# Fast tests (no Ray)


def test_batch_plan_keeps_the_global_batch():
    assert batch_plan(256, 8) == BatchPlan(256, 8, 32, 32, 1)  # facts §8: 8 GPUs x 32
    assert batch_plan(256, 2, max_worker_batch=32) == BatchPlan(256, 2, 128, 32, 4)
    assert batch_plan(16, 2, max_worker_batch=3) == BatchPlan(16, 2, 8, 2, 4)  # 8 = 4 x 2, 2 <= 3
    assert batch_plan(12, 4, max_worker_batch=2) == BatchPlan(12, 4, 3, 1, 3)
    with pytest.raises(ValueError, match="not divisible"):
        batch_plan(16, 3)


def test_epoch_selection_counts_fresh_and_reproducible():
    keys = np.arange(1, 101, dtype=np.uint64)
    names = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10)
    sel0, counts = epoch_selection(keys, names, {"a": 20, "b": 50, "d": 5}, seed=3, epoch=0)
    assert counts == {"a": {"wanted": 20, "available": 60, "taken": 20},
                      "b": {"wanted": 50, "available": 30, "taken": 30},  # fewer than wanted: all of them
                      "c": {"wanted": 0, "available": 10, "taken": 0},
                      "d": {"wanted": 5, "available": 0, "taken": 0}}
    assert len(sel0) == 50 and len(np.unique(sel0)) == 50
    assert set(sel0[sel0 > 60].tolist()) == set(range(61, 91))
    again, _ = epoch_selection(keys[::-1], names[::-1], {"a": 20, "b": 50, "d": 5}, seed=3, epoch=0)
    assert np.array_equal(again, sel0)  # independent of the file / row order
    sel1, _ = epoch_selection(keys, names, {"a": 20, "b": 50}, seed=3, epoch=1)
    assert set(sel1[sel1 <= 60].tolist()) != set(sel0[sel0 <= 60].tolist())  # a fresh subset
    only_a, _ = epoch_selection(keys, names, {"a": 20}, seed=3, epoch=0)
    assert set(only_a.tolist()) == set(sel0[sel0 <= 60].tolist())  # b's count does not move a's draw


def test_rank_rows_equal_whole_batches():
    plan = batch_plan(8, 2)
    sel = np.arange(30, dtype=np.uint64)
    r0, steps = rank_rows(sel, 0, plan)
    r1, _ = rank_rows(sel, 1, plan)
    assert steps == 3 and len(r0) == len(r1) == 12  # 30 // 8 = 3 steps of 2 x 4
    assert not set(r0.tolist()) & set(r1.tolist())
    with pytest.raises(TrainingDataError, match="fewer than one global batch"):
        rank_rows(sel[:7], 0, plan)


def test_pair_keys():
    assert pair_keys(["00000000000000ff", "ffffffffffffffff"]).tolist() == [255, 2**64 - 1]
    odd = pair_keys(["x", "x", "y"])
    assert odd[0] == odd[1] != odd[2]


def test_pair_index_locates_every_row(tmp_path):
    write_pairs(tmp_path, {"got10k": 10}, per_file=6)  # 2 files: 6 + 4 rows
    table = pq.read_table(tmp_path / "shard-00000.parquet")
    pq.write_table(table, tmp_path / "shard-00000.parquet", row_group_size=4)  # row groups of 4 + 2
    fs, files = list_pair_files(str(tmp_path))
    index = load_pair_index(fs, files)
    assert index.file.tolist() == [0] * 6 + [1] * 4
    assert index.row_group.tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert index.row.tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2, 3]
    assert index.unit.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]  # one unit per (file, row group)
    assert index.positions(index.keys[[7, 2, 5]]).tolist() == [7, 2, 5]


def test_epoch_share_splits_row_groups_and_keeps_whole_batches(tmp_path):
    write_pairs(tmp_path, {"got10k": 48}, per_file=8)  # 6 files = 6 row groups of 8
    fs, files = list_pair_files(str(tmp_path))
    index = load_pair_index(fs, files)
    plan = batch_plan(8, 2)
    for epoch in (0, 1):
        selection, _ = epoch_selection(index.keys, index.datasets, {"got10k": 36}, 5, epoch)
        shares = [epoch_share(index, {"got10k": 36}, 5, epoch, r, plan, item_pairs=6) for r in (0, 1)]
        assert [s.steps for s in shares] == [4, 4]  # 36 // 8 whole global batches
        mine = [s.positions for s in shares]
        assert len(mine[0]) == len(mine[1]) == 16 and not set(mine[0].tolist()) & set(mine[1].tolist())
        assert set(index.keys[np.concatenate(mine)].tolist()) <= set(selection.tolist())
        units = [set(index.unit[m].tolist()) for m in mine]
        assert len(units[0] & units[1]) <= 1  # ranks read (almost) disjoint row groups, at most one shared
        for s in shares:  # items end on row-group boundaries, each has >= 6 pairs except the last
            assert all(len(it) >= 6 for it in s.items[:-1])
            seen = [set(index.unit[it].tolist()) for it in s.items]
            assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])
        again = epoch_share(index, {"got10k": 36}, 5, epoch, 0, plan, item_pairs=6)
        assert np.array_equal(again.positions, mine[0])  # deterministic from (seed, epoch, rank)
    e0 = epoch_share(index, {"got10k": 36}, 5, 0, 0, plan, item_pairs=6).positions
    e1 = epoch_share(index, {"got10k": 36}, 5, 1, 0, plan, item_pairs=6).positions
    assert set(e0.tolist()) != set(e1.tolist())  # a fresh draw every epoch


def test_read_and_augment_follows_the_item(pairs_dir):
    fs, files = list_pair_files(str(pairs_dir))
    assert len(files) == 4  # 56 rows, 16 per file
    index = load_pair_index(fs, files)
    keys, names = read_pair_index(fs, files)
    assert len(keys) == 56 and (names == "got10k").sum() == 40 and np.array_equal(keys, index.keys)
    share = epoch_share(index, {"got10k": 16}, 1, 3, 0, batch_plan(8, 1), item_pairs=100)
    assert share.steps == 2 and len(share.items) == 1
    item = work_item(index, share, 0)
    batch = {"epoch": np.array([item["epoch"]]), "locations": np.array([item["locations"]], dtype=object)}
    out = read_and_augment(batch, files=index.files, filesystem=fs, augment=AugmentConfig().__dict__, seed=1,
                           exemplar_size=127, search_size=255)
    assert set(out) == {"template", "search", "search_box", "search_shift", "valid", "epoch", "pair_key"}
    assert out["template"].shape == (16, 127, 127, 3) and out["search"].shape == (16, 255, 255, 3)
    assert out["valid"].all() and (out["epoch"] == 3).all()
    assert np.array_equal(out["pair_key"].view(np.uint64), index.keys[share.items[0]])  # the item's order
    # the box follows the target: the yellow square in the search image lies inside the box
    img, box = out["search"][0], out["search_box"][0]
    yellow = (img[..., 0] < 90) & (img[..., 1] > 150) & (img[..., 2] > 180)
    ys, xs = np.nonzero(yellow)
    assert len(xs) > 100
    assert box[0] - 3 <= np.median(xs) <= box[2] + 3 and box[1] - 3 <= np.median(ys) <= box[3] + 3


def test_not_pair_records(tmp_path):
    with pytest.raises(TrainingDataError, match="no .parquet"):
        list_pair_files(str(tmp_path))
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    fs, files = list_pair_files(str(tmp_path))
    with pytest.raises(TrainingDataError, match="not a pair-record file"):
        read_pair_index(fs, files)


def test_tracking_helpers(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(None, str(tmp_path / "run")) == f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    assert tracking.tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert tracking.tracking_uri(None, "s3://bucket/run") == f"sqlite:///{tmp_path / 'mlruns.db'}"
    scrubbed = tracking.scrub({"aws_secret_access_key": "s", "run.data": "s3://u:pw@host/b",
                               "x": "https://h/p?X-Amz-Signature=abc", "optim.base_lr": 0.005,
                               "run.out": "s3://bucket/prefix"})
    assert scrubbed == {"aws_secret_access_key": "<redacted>", "run.data": "<redacted>", "x": "<redacted>",
                        "optim.base_lr": 0.005, "run.out": "s3://bucket/prefix"}
    params = tracking.config_params(smoke(), {"run.workers": 2})
    assert params["optim.batch_size"] == "16" and params["run.workers"] == "2"
    assert params["optim.unfreeze_layers"] == "['layer1', 'layer2', 'layer3']"
    assert tracking.public_uri("s3://b/p?endpoint_override=h:1&scheme=http") == "s3://b/p"
    assert tracking.public_uri("http://user:pw@h:5/x") == "http://h:5/x"


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
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
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
    exactly the rank's share in order, the ranks together draw the epoch's selection, and it ends there."""
    from pipelines.train import TrainingDataError, pair_stream

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
            got = []
            for step in range(share.steps):
                batch = feed.next(epoch, step)
                assert batch["template"].shape == (4, 127, 127, 3) and batch["valid"].all()
                got.append(feed.last_keys.copy())
            assert np.array_equal(np.concatenate(got), index.keys[share.positions])
            drawn.extend(np.concatenate(got).tolist())
        assert len(drawn) == len(set(drawn)) == 32 and set(drawn) == set(selection.tolist())  # 32 = 4 x 8
    for feed in feeds:
        with pytest.raises(TrainingDataError, match="ended early"):
            feed.next(4, 0)


@pytest.mark.slow
def test_ddp_run_s3_checkpoints_mlflow_server_and_rerun_resume(ray_local, pairs_dir, s3_server, mlflow_server):
    from mlflow.tracking import MlflowClient

    from ocean.checkpoint import load_model
    from pipelines.train import train

    out = "s3://ocean-runs/t-ddp"
    cfg = tiny_cfg(2)
    res = train(str(pairs_dir), out, cfg, workers=2, mlflow_uri=mlflow_server.uri, experiment="t-train",
                run_name="ddp", verbose=False)
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
    assert run.data.params["run.manifest_sha256"] == tracking.sha256_bytes((pairs_dir / "manifest.json").read_bytes())
    assert len(run.data.tags["ocean.code_version"]) >= 7
    assert not any("secret" in v or s3_server.secret_key in v for v in {**run.data.params, **run.data.tags}.values())
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2] and all(np.isfinite(m.value) for m in losses)
    for key in ("lr/head", "lr/neck", "pairs_per_s", "data_wait_fraction", "step/loss_total"):
        assert client.get_metric_history(run.info.run_id, key), key
    arts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/model.pt" in arts and "checkpoints.json" in arts

    again = train(str(pairs_dir), out, cfg, workers=2, mlflow_uri=mlflow_server.uri, experiment="t-train",
                  run_name="ddp", verbose=False)
    assert again["resumed_from"] == 2 and again["epochs"] == 2  # nothing re-trained
    assert again["mlflow_run_id"] == res["mlflow_run_id"]
    assert again["history"] == res["history"]


@pytest.mark.slow
def test_killed_worker_resumes_then_rerun_continues(ray_local, pairs_dir, tmp_path):
    from pipelines.train import KILLED_MARKER, train

    out = tmp_path / "run"
    res = train(str(pairs_dir), str(out), tiny_cfg(2), workers=2, run_name="kill", kill_worker_at=(1, 1, 1),
                verbose=False)
    assert (out / KILLED_MARKER).exists()  # rank 1 really died once, in epoch 2 (index 1) at step 1
    assert res["epochs"] == 2 and [e for e, _ in list_checkpoints(str(out))] == [1, 2]
    assert [h["epoch"] for h in res["history"]] == [1, 2]  # epoch 1 kept: only the epoch in progress was lost
    assert all(h["params_identical"] == 1.0 for h in res["history"])
    ray_ckpts = [p.name for p in (out / "ray" / "kill").iterdir() if p.is_dir() and p.name.startswith("checkpoint_")]
    assert len(ray_ckpts) == 1  # superseded and orphan Ray checkpoint folders removed

    # the same command with one more epoch: starts at the saved epoch, not at epoch 1
    more = train(str(pairs_dir), str(out), tiny_cfg(3), workers=2, run_name="kill", verbose=False)
    assert more["resumed_from"] == 2 and more["epochs"] == 3
    assert more["history"][:2] == res["history"]  # epochs 1-2 were not trained again
    assert more["mlflow_run_id"] == res["mlflow_run_id"]


@pytest.mark.slow
def test_bad_steps_stop_a_ddp_run(ray_local, pairs_dir, tmp_path):
    from ocean.engine import TrainingDiverged
    from pipelines.train import train

    cfg = tiny_cfg(2, "optim.max_loss=1e-9", "optim.max_bad_steps=3")
    with pytest.raises(TrainingDiverged, match="3 consecutive training steps skipped, the last at step 2"):
        train(str(pairs_dir), str(tmp_path / "run"), cfg, workers=2, run_name="bad", verbose=False)
    assert list_checkpoints(str(tmp_path / "run")) == []


def test_invalid_rows_are_replaced_and_an_all_invalid_batch_is_flagged():
    import torch

    from pipelines.train import _repair_invalid

    batch = {"search_box": torch.tensor([[1.0, 1, 2, 2], [float("nan")] * 4, [3.0, 3, 4, 4]]),
             "valid": torch.tensor([True, False, True])}
    fixed, n_bad, all_bad = _repair_invalid(dict(batch))
    assert n_bad == 1 and not all_bad
    assert torch.isfinite(fixed["search_box"]).all() and fixed["search_box"][0].tolist() == [1, 1, 2, 2]
    _, n_bad, all_bad = _repair_invalid({"search_box": torch.full((2, 4), float("nan")),
                                         "valid": torch.tensor([False, False])})
    assert n_bad == 2 and all_bad


def test_optimizer_state_follows_parameter_names_across_unfreezing():
    import torch

    from ocean.engine import build_optimizer
    from ocean.model import build_model
    from pipelines.train import load_optimizer_state_by_name, optimizer_state_by_name

    cfg = smoke()
    net = build_model(cfg.model)
    frozen = build_optimizer(net, cfg.optim, 0)  # backbone frozen at epoch 0 (smoke unfreezes at 1)
    head = next(p for n, p in net.named_parameters() if n.startswith("cls_pred"))
    frozen.state[head]["momentum_buffer"] = torch.ones_like(head)
    saved = optimizer_state_by_name(frozen, net)
    unfrozen = build_optimizer(net, cfg.optim, 1)
    assert len(unfrozen.param_groups) == len(frozen.param_groups) + 1  # the backbone group appears
    assert load_optimizer_state_by_name(unfrozen, net, saved) == len(saved) == 1
    assert torch.equal(unfrozen.state[head]["momentum_buffer"], torch.ones_like(head))
