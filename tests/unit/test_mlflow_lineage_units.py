"""The MLflow lineage and model helpers without a server: dataset names and digests, the prepare run's
metrics, model URIs, the signature's example input, and the command-line switches (the whole chain against
a real ``mlflow server``: tests/integration/test_mlflow_lineage.py)."""

from __future__ import annotations

import json
import os

import numpy as np

from jobs.cli import main
from ocean.config import smoke
from pipelines.lineage import DIGEST_CHARS, dataset_name, pair_dataset, read_prepare_record
from pipelines.mlflow_models import example_inputs, is_model_uri
from pipelines.prepare_mlflow import prepare_metrics


def test_the_pair_store_dataset_has_a_public_source_and_a_short_digest(tmp_path):
    sha = "ab" * 32
    ds = pair_dataset("s3://bucket/pairs/v1?endpoint_override=host:9000&scheme=http", sha)._to_mlflow_entity()
    assert (ds.name, ds.digest, ds.source_type) == ("pairs:v1", sha[:DIGEST_CHARS], "s3")
    assert json.loads(ds.source)["uri"] == "s3://bucket/pairs/v1"  # no query, no endpoint, no keys
    local = pair_dataset(str(tmp_path / "pairs"), sha)._to_mlflow_entity()
    assert local.source_type == "local" and json.loads(local.source)["uri"] == str(tmp_path / "pairs")
    assert dataset_name(str(tmp_path / "pairs") + "/") == "pairs:pairs" and len(sha[:DIGEST_CHARS]) <= 36


def test_prepare_metrics_count_pairs_rejects_and_the_job():
    manifest = {"totals": {"pairs_written": 30, "bytes": 1000, "shards": 2},
                "datasets": {"got10k": {"root": "/x", "pairs_written": 20, "pairs_explicit": True,
                                        "rejected": {"decode": 2, "truncated": 1}, "reader_rejected": {},
                                        "pairs_dropped": {"decode": 2}}}}
    got = prepare_metrics(manifest, {"seconds": 3.5, "shards_run": 2, "shards_skipped": 0, "nodes": 1,
                                     "timeline": []})
    assert got["totals.pairs_written"] == 30 and got["got10k.pairs_written"] == 20
    assert got["got10k.rejected_total"] == 3 and got["got10k.rejected.truncated"] == 1
    assert got["got10k.reader_rejected_total"] == 0 and got["got10k.pairs_dropped.decode"] == 2
    assert got["run.seconds"] == 3.5 and got["run.nodes"] == 1
    assert "got10k.pairs_explicit" not in got and "got10k.root" not in got


def test_model_uris_and_a_missing_record():
    assert is_model_uri("models:/ocean-tracker@best") and is_model_uri("runs:/abc/model")
    assert not is_model_uri("/runs/checkpoints/epoch-0001.pt") and not is_model_uri("s3://b/x.pt")
    assert not is_model_uri(None)


def test_the_example_input_is_a_real_training_pair_or_grey_crops(pairs_dir, tmp_path):
    cfg = smoke()
    t, s = example_inputs(cfg, str(pairs_dir))
    assert t.shape == (1, 3, 127, 127) and s.shape == (1, 3, 255, 255) and t.dtype == np.float32
    assert t.std() > 1 and s.std() > 1  # an image, not a constant
    grey_t, grey_s = example_inputs(cfg, str(tmp_path / "nothing-here"))
    assert grey_t.shape == t.shape and grey_s.shape == s.shape and grey_t.std() == 0
    assert read_prepare_record(str(tmp_path)) is None


def test_bad_switches_are_one_line_and_status_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--system-metrics-interval", "0"]) == 2
    assert "--system-metrics-interval 0.0: must be > 0 seconds" in capsys.readouterr().err


def test_track_names_an_unknown_registered_model(tmp_path, capsys):
    frames = tmp_path / "img"
    frames.mkdir()
    import cv2

    cv2.imwrite(str(frames / "1.jpg"), np.full((64, 64, 3), 100, np.uint8))
    rc = main(["track", "--checkpoint", "models:/no-such-model@best", "--mlflow-uri",
               f"sqlite:///{tmp_path / 'mlflow.db'}", "--frames", str(frames), "--init", "10,10,20,20",
               "--out", str(tmp_path / "out.txt"), "--no-progress"])
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("ocean track:")]
    assert rc == 2 and "Traceback" not in err and len(ours) == 1
    assert "models:/no-such-model@best" in ours[0] and "not found" in ours[0]


def test_the_fluent_block_restores_the_environment(monkeypatch, tmp_path):
    import mlflow

    from pipelines.mlflow_models import _fluent

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    with _fluent(f"sqlite:///{tmp_path / 'x.db'}", "7"):
        assert mlflow.get_tracking_uri().startswith("sqlite:///") and os.environ["MLFLOW_EXPERIMENT_ID"] == "7"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://example.invalid:5000"
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ and mlflow.get_tracking_uri() == "http://example.invalid:5000"
