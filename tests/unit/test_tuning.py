"""Tracker tuning without Ray (ocean/tuning.py): search spaces (facts §11), the objective, the validation
split checks and the saved best configuration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ocean.benchmarks.scoring import HEADLINE
from ocean.benchmarks.sequence import Sequence
from ocean.config import TRACKER_PRESETS, TrackerConfig
from ocean.tuning import (
    SAVED_KEYS,
    ParamSpec,
    TuneTrackerError,
    best_tracker_json,
    include_point,
    read_validation,
    search_space,
    sequence_order,
    snap,
    tuning_score,
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
        search_space("official", "otb2013")


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
    assert HEADLINE == {"otb": "success_auc", "lasot": "success_auc", "got10k": "ao", "vot2018": "eao",
                          "vot2019": "eao", **{b: "success_auc" for b in ("lasot_ext", "uav123", "uav20l",
                          "uav123_10fps", "dtb70", "nfs", "tnl2k", "trackingnet")}}


def test_tuning_score_ope_success_auc_by_hand():
    gt = [[0, 0, 10, 10]] * 3
    perfect = {"boxes_xywh": np.array(gt, dtype=float)}
    half = {"boxes_xywh": np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 10, 10]], dtype=float)}
    seqs = [_seq("otb", gt, "a"), _seq("otb", gt, "b")]
    # 21 thresholds 0, 0.05 .. 1 (IoU > t): IoU 1 passes 20, IoU 1/3 passes 7 (t <= 0.30).
    assert tuning_score("otb", seqs, [perfect]) == pytest.approx(20 / 21)
    auc_half = (20 + 20 + 7) / (3 * 21)
    assert tuning_score("otb", seqs, [perfect, half]) == pytest.approx((20 / 21 + auc_half) / 2)
    assert tuning_score("lasot", seqs[:1], [half]) == pytest.approx(auc_half)


def test_tuning_score_got10k_ao_by_hand():
    gt = [[0, 0, 10, 10]] * 3
    half = {"boxes_xywh": np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 10, 10]], dtype=float)}
    # AO = mean IoU over frames 1.. (frame 0 excluded): (1 + 1/3) / 2
    assert tuning_score("got10k", [_seq("got10k", gt)], [half]) == pytest.approx(2 / 3)


def test_tuning_score_vot_eao():
    n = 150
    gt = [[10, 10, 20, 20]] * n
    traj = [np.array([1.0])] + [np.array([10.0, 10, 20, 20])] * (n - 1)
    # One fragment without failure, overlap 1 everywhere: Phi(L) = 1 up to L = 149, so EAO over
    # [100, 356] (VOT2018, facts §12.4) counts only L = 100..149 and is 1.
    assert tuning_score("vot2018", [_seq("vot", gt)], [{"trajectory": traj}]) == pytest.approx(1.0)
    # Shorter than the interval's lower bound: EAO undefined, counted as 0.
    short = traj[:30]
    assert tuning_score("vot2018", [_seq("vot", gt[:30])], [{"trajectory": short}]) == 0.0


# ----------------------------------------------------------------------------------------------------------
# Validation split checks and the saved file


def test_validation_split_is_named(synth_root):
    seqs, split = read_validation("got10k", synth_root / "benchmarks" / "got10k" / "val")
    assert len(seqs) == 2 and "'val' split" in split
    _, split = read_validation("otb", synth_root / "benchmarks" / "otb")
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
# The scheduler and the network cache key


def test_the_scheduler_never_stops_the_defaults_early():
    """At the first rung the defaults score lowest: plain ASHA stops them, DefaultsCompleteASHA does not
    (and still stops the other trials below the cut, with the defaults' result in the rung)."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from ocean.tuning import ParamSpec
    from pipelines.tune_trials import DefaultsCompleteASHA

    space = {"w": ParamSpec("w", "quniform", low=0.0, high=1.0, q=0.01)}
    asha = dict(time_attr="t", metric="score", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    actions = {}
    for cls, extra in ((AsyncHyperBandScheduler, {}), (DefaultsCompleteASHA, {"space": space, "defaults": {"w": 0.5}})):
        sched = cls(**asha, **extra)
        trials = [Trial("f", config={"w": w}, stub=True) for w in (0.5, 0.1, 0.2, 0.3)]  # trial 0: the defaults
        for t in trials:
            sched.on_trial_add(None, t)
        reports = [(trials[1], 0.9), (trials[2], 0.8), (trials[3], 0.7), (trials[0], 0.1)]
        actions[cls.__name__] = [sched.on_trial_result(None, t, {"t": 1, "score": s}) for t, s in reports]
        if cls is DefaultsCompleteASHA:  # at max_t the defaults end as any trial does
            assert sched.on_trial_result(None, trials[0], {"t": 4, "score": 0.1}) == "STOP"
    assert actions["AsyncHyperBandScheduler"] == ["CONTINUE", "STOP", "STOP", "STOP"]
    assert actions["DefaultsCompleteASHA"] == ["CONTINUE", "STOP", "STOP", "CONTINUE"]


def test_the_network_key_follows_the_weights_and_the_config():
    import torch

    from ocean.tuning import model_key

    state = {"a.weight": torch.zeros(2, 3), "a.bias": torch.ones(2, dtype=torch.bfloat16), "n": torch.tensor(3)}
    cfg = {"model": {"head": {"correlation": "plain"}}}
    key = model_key("ckpt.pt", cfg, state)
    assert key == model_key("ckpt.pt", cfg, {k: v.clone() for k, v in state.items()})
    changed = dict(state, **{"a.weight": state["a.weight"].clone().index_fill_(1, torch.tensor([2]), 1e-6)})
    assert model_key("ckpt.pt", cfg, changed) != key  # same file name, weights overwritten
    assert model_key("ckpt.pt", {"model": {"head": {"correlation": "normalised"}}}, state) != key
    assert model_key("other.pt", cfg, state) != key
