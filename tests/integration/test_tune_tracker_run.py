"""ocean tune-tracker: a real tuning run (the test split refused on the command line:
tests/unit/test_tune_tracker_cli.py).

The test tunes a smoke-size UNTRAINED checkpoint on the synthetic GOT-10k val split (2 sequences) with
Ray Tune (Optuna TPE + ASHA), logs to a real ``mlflow server`` and feeds the saved best_tracker.json to
``ocean track``. The checkpoint's random regression head is replaced by a constant one (conv weights 0,
every cell predicts the same box, still untrained): with the random head every box flies out of the frame
and every configuration scores AO 0, which would make the comparison with the defaults vacuous. With the
constant head the score depends on the hyper-parameters (the GOT-10k preset, window_influence 0.118,
scores lower than most of the space), so the test sees TPE find a better configuration.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from ocean.config import TRACKER_PRESETS, TrackerConfig, layered_tracker_config

# ----------------------------------------------------------------------------------------------------------
# A real tuning run


def _constant_head_checkpoint(path: Path) -> None:
    import torch

    from ocean.checkpoint import save_checkpoint
    from ocean.config import smoke
    from ocean.model import build_model

    cfg = smoke()
    torch.manual_seed(0)
    net = build_model(cfg.model)
    with torch.no_grad():  # see the module docstring: every cell predicts distances exp(log 30) = 30
        net.reg_pred.conv.weight.zero_()
        net.reg_pred.conv.bias.zero_()
        net.reg_pred.bias.fill_(math.log(30.0))
    save_checkpoint(str(path), net, cfg)


@pytest.mark.slow
def test_tune_tracker_end_to_end(synth_root, tmp_path, mlflow_server):
    import torch
    from mlflow.tracking import MlflowClient

    from jobs.cli import main
    from ocean.benchmarks import read_benchmark
    from ocean.checkpoint import load_model
    from ocean.tuning import evaluate_config
    from pipelines.tune_tracker import TuneTrackerSettings, tune_tracker

    ckpt = tmp_path / "smoke.pt"
    _constant_head_checkpoint(ckpt)
    val = synth_root / "benchmarks" / "got10k" / "val"
    out = tmp_path / "tune"
    trials = 5
    summary = tune_tracker(TuneTrackerSettings(str(ckpt), "got10k", str(val), str(out), trials=trials,
                                               max_concurrent=2, seed=0, mlflow_uri=mlflow_server.uri,
                                               grace_period=1, verbose=0))

    # Trial 0 is the defaults (checkpoint tracker section + GOT-10k preset), all trials are accounted for.
    rows = summary["trials"]
    assert len(rows) == trials
    # the checkpoint's tracker section under the preset: a smoke checkpoint searches 3 scales (facts §9.6)
    preset = layered_tracker_config(load_model(str(ckpt))[1].tracker, "got10k")
    assert preset.scales == 3 and preset.penalty_k == TRACKER_PRESETS["got10k"]["penalty_k"]
    assert rows[0]["params"] == {k: getattr(preset, k) for k in rows[0]["params"]}
    assert summary["default"]["trial"] == 0
    assert summary["default"]["status"] == "completed"  # ASHA never stops the baseline (DefaultsCompleteASHA)
    cost = summary["cost"]
    assert cost["trials"] == trials
    assert cost["trials_completed"] + cost["trials_stopped_early"] + cost["trials_failed"] == trials
    assert cost["trials_failed"] == 0
    assert cost["cpu_hours"] > 0 and cost["wall_s"] > 0 and cost["gpu_hours"] == 0
    assert sum(r["status"] == "stopped_early" for r in rows) == cost["trials_stopped_early"]

    # The defaults' score, recomputed here in the tuned order with one torch thread, as a trial does.
    by_name = {s.name: s for s in read_benchmark("got10k", val)}
    seqs = [by_name[n] for n in summary["sequences"]]
    net, _ = load_model(str(ckpt))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        default_score = evaluate_config(net, preset, "got10k", seqs)
        best_file = out / "best_tracker.json"
        best_cfg = dataclasses.replace(TrackerConfig(), **json.loads(best_file.read_text())["tracker"])
        best_score = evaluate_config(net, best_cfg, "got10k", seqs)
    finally:
        torch.set_num_threads(threads)
    assert summary["default"]["score"] == pytest.approx(default_score, abs=1e-9)
    assert summary["best"]["score"] == pytest.approx(best_score, abs=1e-9)  # the saved file reproduces it
    assert best_score >= default_score  # never worse than the defaults: they are trial 0
    completed = [r["score"] for r in rows if r["status"] == "completed"]
    assert summary["best"]["score"] == pytest.approx(max(completed), abs=1e-9)

    # Files
    csv_lines = (out / "trials.csv").read_text().strip().splitlines()
    assert len(csv_lines) == trials + 1 and csv_lines[0].startswith("trial,trial_id,status")
    assert (out / "score_vs_trial.png").stat().st_size > 1000
    on_disk = json.loads((out / "tune_summary.json").read_text())
    assert on_disk["best"] == summary["best"] and on_disk["cost"]["trials"] == trials

    # `ocean track --tracker-config best_tracker.json` on a frames folder
    frames = by_name[summary["sequences"][0]].frames[:5]
    frame_dir = tmp_path / "frames"
    frame_dir.mkdir()
    for f in frames:
        (frame_dir / f.name).write_bytes(f.read_bytes())
    x, y, w, h = by_name[summary["sequences"][0]].gt_xywh[0]
    result = tmp_path / "track.txt"
    rc = main(["track", "--checkpoint", str(ckpt), "--frames", str(frame_dir), "--init", f"{x},{y},{w},{h}",
               "--out", str(result), "--tracker-config", str(best_file), "--no-progress", "--device", "cpu"])
    assert rc == 0 and len(result.read_text().strip().splitlines()) == 5

    # MLflow: a parent run with the best params and cost, one nested run per trial with its params
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    ml = summary["mlflow"]
    parent = client.get_run(ml["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_score"] == pytest.approx(summary["best"]["score"])
    assert parent.data.metrics["default_score"] == pytest.approx(default_score)
    assert parent.data.metrics["cost.trials"] == trials
    assert {f"best.{k}": str(v) for k, v in summary["best"]["params"].items()}.items() <= parent.data.params.items()
    children = client.search_runs([ml["experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{ml['parent_run_id']}'")
    assert len(children) == trials
    by_trial = {c.data.tags["ocean.tune.trial_id"]: c for c in children}
    for row in rows:
        child = by_trial[row["trial_id"]]
        assert child.data.params == {k: str(v) for k, v in row["params"].items()}
        assert child.data.tags["ocean.tune.status"] == row["status"]
        assert child.data.metrics["score"] == pytest.approx(row["score"])
        assert child.data.metrics["sequences_done"] == row["sequences_done"]
        history = client.get_metric_history(child.info.run_id, "score")
        assert sorted(m.step for m in history) == list(range(1, row["sequences_done"] + 1))
    artifacts = {a.path for a in client.list_artifacts(ml["parent_run_id"])}
    assert {"best_tracker.json", "trials.csv", "score_vs_trial.png", "tune_summary.json"} <= artifacts
