"""Benchmark metrics: hand-computed cases and the real mmtracking fixtures (tests/fixtures/mmtracking_sot_eval)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ocean.benchmarks.metrics import (
    expected_overlap_curve,
    got10k_ious,
    got10k_summary,
    norm_precision_curve,
    ope_sequence,
    ope_summary,
    precision_curve,
    success_curve,
    vot_accuracy_sequence,
    vot_overlaps,
    vot_summary,
)
from ocean.benchmarks.regions import (
    iou_xywh,
    polygon_overlap_continuous,
    polygon_to_init_box_xywh,
    vot_raster_overlap,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mmtracking_sot_eval"
BOX = np.array([[0.0, 0.0, 10.0, 10.0]])


# --- IoU / overlaps -------------------------------------------------------------------------------------


def test_iou_perfect_empty_half():
    assert iou_xywh(BOX, BOX)[0] == 1.0
    assert iou_xywh(BOX, [[20, 20, 5, 5]])[0] == 0.0
    # shifted by half the width: intersection 50, union 150
    assert iou_xywh(BOX, [[5, 0, 10, 10]])[0] == pytest.approx(1 / 3)
    # zero-area GT gives 0, not NaN
    assert iou_xywh([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0] == 0.0


def test_vot_raster_overlap_counts_pixels_and_bounds():
    assert vot_raster_overlap([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert vot_raster_overlap([0, 0, 10, 10], [30, 30, 5, 5]) == 0.0
    # pixels 0..9 vs 5..14: 50 shared of 150
    assert vot_raster_overlap([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(1 / 3)
    # an axis-aligned polygon through pixel centres 0..9 rasterises like the 10x10 box
    assert vot_raster_overlap([0, 0, 9, 0, 9, 9, 0, 9], [0, 0, 10, 10]) == 1.0
    # half of the prediction lies left of the image: only in-image pixels count when bounded
    assert vot_raster_overlap([0, 0, 10, 10], [-10, 0, 20, 10]) == pytest.approx(0.5)
    assert vot_raster_overlap([0, 0, 10, 10], [-10, 0, 20, 10], bound_wh=(64, 48)) == 1.0


def test_continuous_overlap_is_exact_area():
    # a diamond of area 50 inside a 10x10 box: 50 / 100
    diamond = [5, 0, 10, 5, 5, 10, 0, 5]
    assert polygon_overlap_continuous(diamond, [0, 0, 10, 10]) == pytest.approx(0.5)
    assert polygon_overlap_continuous(diamond, [20, 20, 3, 3]) == 0.0
    assert polygon_overlap_continuous([0, 0, 10, 10], [-10, 0, 20, 10], bound_wh=(64, 48)) == pytest.approx(
        1.0
    )


def test_polygon_init_box_follows_facts_9_1():
    # axis-aligned rectangle polygon: area ratio 1 -> w = extent + 1, centre = corner mean
    box = polygon_to_init_box_xywh([10, 20, 30, 20, 30, 40, 10, 40])
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    assert (cx, cy) == (20.0, 30.0)
    assert box[2] == 21.0 and box[3] == 21.0
    # 45-degree square with diagonal 20: area 200, extent box 400 -> s = sqrt(1/2)
    box = polygon_to_init_box_xywh([10, 0, 20, 10, 10, 20, 0, 10])
    assert box[2] == pytest.approx(20 * np.sqrt(0.5) + 1)
    # 4-value boxes pass through
    np.testing.assert_array_equal(polygon_to_init_box_xywh([1, 2, 3, 4]), [1, 2, 3, 4])


# --- OPE ------------------------------------------------------------------------------------------------


def test_success_curve_perfect_empty_half():
    gt = np.repeat(BOX, 4, axis=0)
    perfect = success_curve(gt, gt)
    # IoU 1 > θ for all θ < 1; 1 > 1 is false (21 thresholds, IoU > θ)
    np.testing.assert_array_equal(perfect, [1.0] * 20 + [0.0])
    assert np.mean(perfect) == pytest.approx(20 / 21)
    assert np.all(success_curve(gt, gt + [50, 50, 0, 0]) == 0.0)
    half = success_curve(gt, gt + [5, 0, 0, 0])  # IoU 1/3 > θ for θ in 0 .. 0.30: 7 thresholds
    assert np.mean(half) == pytest.approx(7 / 21)


def test_invalid_gt_and_absent_frames_keep_full_denominator():
    gt = np.repeat(BOX, 4, axis=0)
    gt[1] = [0, 0, 0, 0]  # invalid GT (w <= 0): a miss, still counted in N (pysot)
    curve = success_curve(gt, np.repeat(BOX, 4, axis=0))
    assert curve[0] == pytest.approx(3 / 4)
    present = np.array([True, True, False, True])
    curve = success_curve(gt, np.repeat(BOX, 4, axis=0), present)
    assert curve[0] == pytest.approx(2 / 4)


def test_precision_threshold_is_inclusive_at_20px():
    gt = np.array([[100.0, 100.0, 30.0, 30.0]] * 2)
    assert precision_curve(gt, gt + [20, 0, 0, 0])[20] == 1.0
    assert precision_curve(gt, gt + [21, 0, 0, 0])[20] == 0.0
    # centre uses (w - 1)/2: a prediction 2 px narrower at the same x is 1 px off-centre
    assert precision_curve(gt, gt + [0, 0, -2, 0])[0] == 0.0
    assert precision_curve(gt, gt + [0, 0, -2, 0])[1] == 1.0


def test_norm_precision_at_0_20():
    gt = np.array([[100.0, 100.0, 100.0, 50.0]])
    # (exactly 20 / w is 0.2000000000000002 in floating point, in pysot too: test either side)
    assert norm_precision_curve(gt, gt + [19.9, 0, 0, 0])[20] == 1.0  # 19.9 / w <= 0.20
    assert norm_precision_curve(gt, gt + [20.1, 0, 0, 0])[20] == 0.0
    assert norm_precision_curve(gt, gt + [0, 9.9, 0, 0])[20] == 1.0  # 9.9 / h <= 0.20
    assert norm_precision_curve(gt, gt + [0, 10.1, 0, 0])[20] == 0.0
    assert norm_precision_curve(gt, gt + [0, 10.1, 0, 0])[21] == 1.0


def test_ope_summary_averages_sequences():
    gt = np.repeat(BOX, 2, axis=0)
    s = ope_summary([ope_sequence(gt, gt), ope_sequence(gt, gt + [50, 50, 0, 0])])
    assert s["success_auc"] == pytest.approx((20 / 21) / 2)
    assert s["precision"] == pytest.approx(0.5)


# --- GOT-10k --------------------------------------------------------------------------------------------


def test_got10k_first_frame_excluded_frames_pooled_and_bounded():
    gt = np.repeat(BOX, 3, axis=0)
    pred = gt.copy()
    pred[0] = [40, 40, 5, 5]  # frame 0 ignored
    a = got10k_ious(gt, pred, (64, 48))
    np.testing.assert_allclose(a, [1.0, 1.0])
    # one sequence, 4 scored frames: IoU 1/3 each
    b = got10k_ious(np.repeat(BOX, 5, axis=0), np.repeat(BOX + [5, 0, 0, 0], 5, axis=0), (64, 48))
    s = got10k_summary(np.concatenate([a, b]))
    assert s["ao"] == pytest.approx((2 * 1.0 + 4 / 3) / 6)  # pooled frames, not the mean of sequences
    assert s["sr50"] == pytest.approx(2 / 6)
    assert s["sr75"] == pytest.approx(2 / 6)
    # both boxes clipped to the image before IoU (got10k rect_iou bound)
    c = got10k_ious(np.array([[54, 0, 10, 10]] * 2), np.array([[54, 0, 10, 10], [54, 0, 20, 10]]), (64, 48))
    assert c[0] == pytest.approx(1.0)  # unbounded it would be 0.5
    # the toolkit moves x to 0 without shrinking w: (-10, 0, 20, 10) becomes (0, 0, 20, 10)
    c = got10k_ious(np.array([[0, 0, 10, 10]] * 2), np.array([[0, 0, 10, 10], [-10, 0, 20, 10]]), (64, 48))
    assert c[0] == pytest.approx(0.5)
    # invisible frames dropped
    d = got10k_ious(gt, pred, (64, 48), present=np.array([True, False, True]))
    assert len(d) == 1


# --- VOT ------------------------------------------------------------------------------------------------


def _box_traj(codes_and_boxes):
    return [
        np.array([c], dtype=float) if np.isscalar(c) else np.asarray(c, dtype=float) for c in codes_and_boxes
    ]


def test_vot_accuracy_burnin_and_failures():
    gt = np.repeat(BOX, 15, axis=0)
    half = [5, 0, 10, 10]  # raster overlap 1/3
    traj = _box_traj([1] + [[0, 0, 10, 10]] * 9 + [half] * 5)
    ov = vot_overlaps(traj, gt, (64, 48))
    # frames 0..9 are burn-in: only the five 1/3 frames count
    assert vot_accuracy_sequence(traj, ov) == pytest.approx(1 / 3)
    traj2 = _box_traj([1, [0, 0, 10, 10], 2, 0, 0, 0, 0, 1] + [half] * 7)
    ov2 = vot_overlaps(traj2, gt, (64, 48))
    # second init at frame 7: burn-in covers 7..14, first burn-in 0..9: nothing left
    assert np.isnan(vot_accuracy_sequence(traj2, ov2))
    assert vot_accuracy_sequence(traj2, ov2, burnin=2) == pytest.approx(1 / 3)


def test_expected_overlap_curve_fragment_rule():
    frags = [(np.array([0, 1.0, 0.5]), True), (np.array([0, 1.0]), False)]
    curve = expected_overlap_curve(frags)
    # Φ(1): both fragments mean(1) = 1; Φ(2): only the failed one (padded), mean(1, .5)
    np.testing.assert_allclose(curve, [0.0, 1.0, 0.75])
    frags.append((np.array([0, 1.0]), True))  # failed early: padded with 0 -> mean(1, 0) at L=2
    np.testing.assert_allclose(expected_overlap_curve(frags), [0.0, 1.0, (0.75 + 0.5) / 2])


def test_vot_summary_robustness_and_eao():
    gt = np.repeat(BOX, 10, axis=0)
    traj = _box_traj([1, [0, 0, 10, 10], [0, 0, 10, 10], 2, 0, 0, 0, 0, 1, [0, 0, 10, 10]])
    s = vot_summary({"a": traj}, {"a": gt}, {"a": (64, 48)}, interval=(1, 2))
    assert s["num_failures"] == 1
    assert s["robustness"] == pytest.approx(100 * 1 / 10)
    # fragments [0,1,1] (failed) and [0,1] (to the end): Φ(1) = 1, Φ(2) = 1
    assert s["eao"] == pytest.approx(1.0)
    perfect = _box_traj([1] + [[0, 0, 10, 10]] * 9)
    s2 = vot_summary({"a": perfect}, {"a": gt}, {"a": (64, 48)}, interval=(1, 3))
    assert s2["num_failures"] == 0 and s2["robustness"] == 0.0 and s2["eao"] == pytest.approx(1.0)


# --- real fixtures (mmtracking) -------------------------------------------------------------------------


def _xyxy_to_xywh(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float)
    a[..., 2:] -= a[..., :2]
    return a


def test_mmtracking_ope_fixture():
    per_seq = []
    for v in ("video-1", "video-2"):
        gt = np.loadtxt(FIXTURES / v / "gt_for_eval.txt", delimiter=",")
        pred = _xyxy_to_xywh(np.loadtxt(FIXTURES / v / "track_results.txt", delimiter=","))
        per_seq.append(ope_sequence(gt, pred, origin=0.0))
    s = ope_summary(per_seq)
    # mmtracking test_sot_ope_evaluation: 67.524 (rounded to 3 decimals), 50.0, 70.0 (percent)
    assert round(s["success_auc"] * 100, 3) == 67.524
    assert s["precision"] * 100 == pytest.approx(50.0)
    assert s["norm_precision"] * 100 == pytest.approx(70.0)


def test_mmtracking_vot_fixture():
    trajs, gts, sizes = {}, {}, {}
    for v in ("video-1", "video-2"):
        gts[v] = np.loadtxt(FIXTURES / v / "vot2018_gt_for_eval.txt", delimiter=",")
        rows = [
            np.array([float(x) for x in ln.split(",")])
            for ln in (FIXTURES / v / "vot2018_track_results.txt").read_text().splitlines()
            if ln.strip()
        ]
        trajs[v] = [r if r.size == 1 else _xyxy_to_xywh(r) for r in rows]
        sizes[v] = (512, 256)  # PROVENANCE: image bound 512x256
    s = vot_summary(trajs, gts, sizes, interval=(1, 3))
    assert abs(s["eao"] - 0.6661) < 1e-4
    assert round(s["accuracy"], 4) == 0.5826
    assert round(s["robustness"], 4) == 6.0
    assert s["num_failures"] == 3


def test_eao_of_a_tracker_that_keeps_failing_is_zero_not_undefined():
    # 120 frames, a failure 3 frames after every (re-)initialisation: no fragment reaches the 2018 interval
    # [100, 356], but failed fragments are padded with 0 up to the sequence length (pysot eao_benchmark).
    # Each fragment is [init, a, a] (a = the rasterised overlap of the box with the GT), so its running
    # mean is 2a / L and the EAO is the mean of 2a / L over L = 100..119 (the curve ends with the
    # sequence): small, and defined.
    n = 120
    gt = np.tile(np.array([[10.0, 10, 30, 10, 30, 30, 10, 30]]), (n, 1))
    traj, f = [], 0
    while f < n:
        traj.append(np.array([1.0]))
        for k in (1, 2):
            if f + k < n:
                traj.append(np.array([10.0, 10, 20, 20]))
        if f + 3 < n:
            traj.append(np.array([2.0]))
        for k in range(4, 8):
            if f + k < n:
                traj.append(np.array([0.0]))
        f += 8
    traj = traj[:n]
    s = vot_summary({"a": traj}, {"a": gt}, {"a": (64, 48)}, interval=(100, 356))
    assert s["num_failures"] == 15
    from ocean.benchmarks.metrics import vot_overlaps

    a = vot_overlaps(traj, gt, (64, 48))[1]
    assert 0.8 < a <= 1.0
    assert s["eao"] == pytest.approx(np.mean([2 * a / L for L in range(100, 120)]))
