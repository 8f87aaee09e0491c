"""ocean tune-tracker: search spaces (facts §11), objectives, validation-split checks, and a real tuning run.

The slow test tunes a smoke-size UNTRAINED checkpoint on the synthetic GOT-10k val split (2 sequences) with
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

import numpy as np
import pytest

from ocean.benchmarks.sequence import Sequence
from ocean.config import TRACKER_PRESETS, TrackerConfig
from pipelines.tune_tracker import (
    OBJECTIVES,
    SAVED_KEYS,
    ParamSpec,
    TuneTrackerError,
    best_tracker_json,
    include_point,
    read_validation,
    running_score,
    search_space,
    sequence_order,
    snap,
)

# ----------------------------------------------------------------------------------------------------------
# Search spaces (facts §11.1 / §11.2)


def _ranges(space: dict[str, ParamSpec]) -> dict[str, tuple]:
    return {k: (v.values if v.kind == "choice" else (v.low, v.high, v.q)) for k, v in space.items()}


def test_official_space_matches_tracker_tune_tpe():
    assert _ranges(search_space("official", "otb")) == {
        "penalty_k": (0.001, 0.2, 0.001),
        "lr": (0.3, 0.8, 0.001),
        "window_influence": (0.15, 0.65, 0.001),
        "small_sz": (255,),
        "big_sz": (287, 303, 319),
    }


def test_ratio_is_searched_only_on_vot_with_the_align_head():
    vot_align = search_space("official", "vot2018", use_align=True)
    assert _ranges(vot_align)["ratio"] == (0.7, 1.0, 0.01)
    assert "ratio" in search_space("official", "vot2019", use_align=True)
    assert "ratio" not in search_space("official", "vot2018", use_align=False)
    assert "ratio" not in search_space("official", "otb", use_align=True)
    assert "ratio" not in search_space("official", "got10k", use_align=True)


def test_sots_space():
    for bench in ("otb", "vot2019"):
        assert _ranges(search_space("sots", bench, use_align=True)) == {
            "penalty_k": (0.001, 0.2, 0.001),
            "lr": (0.3, 0.8, 0.001),
            "window_influence": (0.15, 0.65, 0.001),
            "small_sz": (255, 271),
            "big_sz": (271, 287),
        }


def test_unknown_space_or_benchmark():
    with pytest.raises(TuneTrackerError, match="search space"):
        search_space("grid", "otb")
    with pytest.raises(TuneTrackerError, match="unknown benchmark"):
        search_space("official", "uav123")


def test_include_point_widens_only_what_the_defaults_need():
    space = search_space("official", "otb")
    # OTB preset (facts §9.3): penalty_k 0.087, lr 0.408, wi 0.366 inside; small / big 271 outside.
    otb = {k: TRACKER_PRESETS["otb"][k] for k in space}
    wide, widened = include_point(space, otb)
    assert wide["small_sz"].values == (255, 271)
    assert wide["big_sz"].values == (271, 287, 303, 319)
    assert set(widened) == {"small_sz", "big_sz"}
    assert wide["penalty_k"] == space["penalty_k"] and wide["lr"] == space["lr"]
    # GOT-10k preset: wi 0.118 < 0.15 -> the range starts at 0.118 (a multiple of the 0.001 step).
    got = {k: TRACKER_PRESETS["got10k"][k] for k in space}
    wide, widened = include_point(space, got)
    assert (wide["window_influence"].low, wide["window_influence"].high) == (0.118, 0.65)
    assert wide["big_sz"].values == (255, 287, 303, 319)
    assert set(widened) == {"window_influence", "big_sz"}
    for name, spec in wide.items():
        assert spec.contains(got[name])
    # A point inside the space changes nothing.
    inside = {"penalty_k": 0.1, "lr": 0.5, "window_influence": 0.3, "small_sz": 255, "big_sz": 303}
    assert include_point(space, inside) == (space, {})


def test_snap_rounds_to_the_step_and_casts_sizes():
    space = search_space("official", "vot2018", use_align=True)
    raw = {"penalty_k": 0.30100000000000005 / 10, "lr": 0.30100000000000005, "window_influence": 0.6499999,
           "small_sz": 255.0, "big_sz": np.int64(303), "ratio": 0.9300000001}
    out = snap(space, raw)
    assert out == {"penalty_k": 0.03, "lr": 0.301, "window_influence": 0.65, "small_sz": 255, "big_sz": 303,
                   "ratio": 0.93}
    assert isinstance(out["big_sz"], int) and isinstance(out["small_sz"], int)


def test_sequence_order_is_a_seeded_permutation():
    a, b = sequence_order(7, 3), sequence_order(7, 3)
    assert a == b and sorted(a) == list(range(7))
    assert sequence_order(7, 3) != sequence_order(7, 4)  # 7! orders: two seeds agreeing would be a fluke


# ----------------------------------------------------------------------------------------------------------
# Objectives


def _seq(bench: str, gt_xywh, name: str = "s") -> Sequence:
    gt = np.asarray(gt_xywh, dtype=np.float64)
    return Sequence(name=name, benchmark=bench, frames=[Path(f"{i}.jpg") for i in range(len(gt))], gt_xywh=gt,
                    resolution_wh=(100, 100))


def test_objective_per_benchmark():
    assert OBJECTIVES == {"otb": "success_auc", "lasot": "success_auc", "got10k": "ao", "vot2018": "eao",
                          "vot2019": "eao"}


def test_running_score_ope_success_auc_by_hand():
    gt = [[0, 0, 10, 10]] * 3
    perfect = {"boxes_xywh": np.array(gt, dtype=float)}
    half = {"boxes_xywh": np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 10, 10]], dtype=float)}
    seqs = [_seq("otb", gt, "a"), _seq("otb", gt, "b")]
    # 21 thresholds 0, 0.05 .. 1 (IoU > t): IoU 1 passes 20, IoU 1/3 passes 7 (t <= 0.30).
    assert running_score("otb", seqs, [perfect]) == pytest.approx(20 / 21)
    auc_half = (20 + 20 + 7) / (3 * 21)
    assert running_score("otb", seqs, [perfect, half]) == pytest.approx((20 / 21 + auc_half) / 2)
    assert running_score("lasot", seqs[:1], [half]) == pytest.approx(auc_half)


def test_running_score_got10k_ao_by_hand():
    gt = [[0, 0, 10, 10]] * 3
    half = {"boxes_xywh": np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 10, 10]], dtype=float)}
    # AO = mean IoU over frames 1.. (frame 0 excluded): (1 + 1/3) / 2
    assert running_score("got10k", [_seq("got10k", gt)], [half]) == pytest.approx(2 / 3)


def test_running_score_vot_eao():
    n = 150
    gt = [[10, 10, 20, 20]] * n
    traj = [np.array([1.0])] + [np.array([10.0, 10, 20, 20])] * (n - 1)
    # One fragment without failure, overlap 1 everywhere: Phi(L) = 1 up to L = 149, so EAO over
    # [100, 356] (VOT2018, facts §12.4) counts only L = 100..149 and is 1.
    assert running_score("vot2018", [_seq("vot", gt)], [{"trajectory": traj}]) == pytest.approx(1.0)
    # Shorter than the interval's lower bound: EAO undefined, counted as 0.
    short = traj[:30]
    assert running_score("vot2018", [_seq("vot", gt[:30])], [{"trajectory": short}]) == 0.0


# ----------------------------------------------------------------------------------------------------------
# Validation split checks and the saved file


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from data_prep.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, size="tiny")
    return root


def test_got10k_test_split_is_refused(synth, tmp_path):
    import shutil

    from jobs.cli import main

    test_root = tmp_path / "GOT-10k" / "test"
    shutil.copytree(synth / "benchmarks" / "got10k" / "val", test_root)
    for gt in test_root.glob("*/groundtruth.txt"):  # the test split publishes only the first box
        gt.write_text(gt.read_text().splitlines()[0] + "\n")
    with pytest.raises(TuneTrackerError, match="TEST split"):
        read_validation("got10k", test_root)
    rc = main(["tune-tracker", "--checkpoint", str(tmp_path / "none.pt"), "--benchmark", f"got10k={test_root}",
               "--out", str(tmp_path / "out"), "--no-mlflow"])
    assert rc == 2
    assert not (tmp_path / "out" / "best_tracker.json").exists()


def test_validation_split_is_named(synth):
    seqs, split = read_validation("got10k", synth / "benchmarks" / "got10k" / "val")
    assert len(seqs) == 2 and "'val' split" in split
    _, split = read_validation("otb", synth / "benchmarks" / "otb")
    assert "no separate validation split" in split


def test_best_tracker_json_is_what_track_accepts(tmp_path):
    from jobs.track import build_tracker_config

    cfg = TrackerConfig(penalty_k=0.123, lr=0.456, window_influence=0.321, small_sz=255, big_sz=303,
                        size_update="double")
    data = best_tracker_json(cfg)
    assert set(data) == {"tracker"} and set(data["tracker"]) == set(SAVED_KEYS)
    path = tmp_path / "best.json"
    path.write_text(json.dumps(data))
    assert build_tracker_config(TrackerConfig(), None, str(path), []) == cfg
    # `ocean evaluate --tracker-config` layers the file over the benchmark preset: the file wins everywhere.
    from jobs.common import tracker_overrides
    from ocean.config import layered_tracker_config

    assert layered_tracker_config(TrackerConfig(), "otb", tracker_overrides(str(path), [])) == cfg


# ----------------------------------------------------------------------------------------------------------
# A real tuning run


def _constant_head_checkpoint(path: Path) -> None:
    import torch

    from ocean.checkpoint import save_checkpoint
    from ocean.config import smoke
    from ocean.model import build_model

    torch.manual_seed(0)
    net = build_model(smoke().model)
    with torch.no_grad():  # see the module docstring: every cell predicts distances exp(log 30) = 30
        net.reg_pred.conv.weight.zero_()
        net.reg_pred.conv.bias.zero_()
        net.reg_pred.bias.fill_(math.log(30.0))
    save_checkpoint(str(path), net, smoke())


@pytest.mark.slow
def test_tune_tracker_end_to_end(synth, tmp_path, mlflow_server):
    import torch
    from mlflow.tracking import MlflowClient

    from jobs.cli import main
    from ocean.benchmarks import read_benchmark
    from ocean.checkpoint import load_model
    from pipelines.tune_tracker import evaluate_config, tune_tracker

    ckpt = tmp_path / "smoke.pt"
    _constant_head_checkpoint(ckpt)
    val = synth / "benchmarks" / "got10k" / "val"
    out = tmp_path / "tune"
    trials = 5
    summary = tune_tracker(str(ckpt), "got10k", str(val), str(out), trials=trials, max_concurrent=2, seed=0,
                           mlflow_uri=mlflow_server.uri, grace_period=1, verbose=0)

    # Trial 0 is the defaults (checkpoint tracker section + GOT-10k preset), all trials are accounted for.
    rows = summary["trials"]
    assert len(rows) == trials
    preset = dataclasses.replace(TrackerConfig(), **TRACKER_PRESETS["got10k"])
    assert rows[0]["params"] == {k: getattr(preset, k) for k in rows[0]["params"]}
    assert summary["default"]["trial"] == 0
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
