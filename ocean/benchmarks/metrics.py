"""Benchmark metrics that agree with the established toolkits (ocean_facts §12): OPE, GOT-10k and VOT.

All values are fractions in [0, 1] except VOT robustness (failures per 100 frames, as pysot and
mmtracking print it) and counts. Boxes are 0-based x,y,w,h (N, 4) arrays. :func:`ope_summary`,
:func:`got10k_summary` and :func:`vot_summary` name the toolkit each reproduces and its rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ocean.benchmarks.regions import bounded_iou_xywh, iou_xywh, vot_raster_overlap

# ocean_facts §12.1: 21 thresholds 0..1 step 0.05 (np.arange(0, 1.05, 0.05) as pysot)
SUCCESS_THRESHOLDS = np.arange(0, 1.05, 0.05)
# ocean_facts §12.1: 0..50 px, reported at index 20 (20 px)
PRECISION_THRESHOLDS = np.arange(0, 51, 1)
PRECISION_INDEX = 20
# ocean_facts §12.2: 0..0.50 step 0.01, reported at index 20 (0.20)
NORM_PRECISION_THRESHOLDS = np.arange(0, 51, 1) / 100.0
# formats.md §2.3 / got10k toolkit: 101 thresholds for the GOT-10k success plot
GOT10K_PLOT_THRESHOLDS = np.linspace(0, 1, 101)
# ocean_facts §12.4
VOT_BURNIN = 10
EAO_INTERVALS = {"vot2016": (108, 371), "vot2017": (100, 356), "vot2018": (100, 356), "vot2019": (46, 291)}


def _center(box_xywh: np.ndarray) -> np.ndarray:
    """pysot centre (x + (w-1)/2, y + (h-1)/2) (ocean_facts §12.1)."""
    b = np.asarray(box_xywh, dtype=np.float64).reshape(-1, 4)
    return b[:, :2] + (b[:, 2:] - 1.0) / 2.0


def ope_ious(gt_xywh: np.ndarray, pred_xywh: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """(N,) pysot per-frame IoU: -1 where the GT is invalid (w <= 0 or h <= 0) or the frame is absent."""
    gt = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred_xywh, dtype=np.float64).reshape(-1, 4)
    if gt.shape != pred.shape:
        raise ValueError(f"GT has {len(gt)} frames, result has {len(pred)}")
    valid = (gt[:, 2] > 0) & (gt[:, 3] > 0)
    if present is not None:
        valid &= np.asarray(present, dtype=bool)
    iou = np.full(len(gt), -1.0)
    iou[valid] = iou_xywh(gt[valid], pred[valid])
    return iou


def success_curve(
    gt_xywh: np.ndarray, pred_xywh: np.ndarray, present: np.ndarray | None = None
) -> np.ndarray:
    """(21,) fraction of frames with IoU > θ. Invalid-GT frames count as misses; absent frames
    (LaSOT) are dropped but the denominator stays the full length N (pysot, ocean_facts §12.1/12.2)."""
    iou = ope_ious(gt_xywh, pred_xywh, present)
    n = len(iou)
    return (
        np.array([np.sum(iou > t) / n for t in SUCCESS_THRESHOLDS])
        if n
        else np.zeros(len(SUCCESS_THRESHOLDS))
    )


def _error_curve(dist: np.ndarray, thresholds: np.ndarray, n: int) -> np.ndarray:
    return np.array([np.sum(dist <= t) / n for t in thresholds]) if n else np.zeros(len(thresholds))


def precision_curve(
    gt_xywh: np.ndarray, pred_xywh: np.ndarray, present: np.ndarray | None = None, origin: float = 1.0
) -> np.ndarray:
    """(51,) fraction of frames with centre error <= t px, t = 0..50 (pysot ``success_error``).

    Absent frames (``present`` False) are dropped but stay in the denominator. A frame whose GT centre
    is not positive in the toolkit's own coordinates (``origin`` = 1 for the 1-based OTB/LaSOT files
    pysot reads, 0 for 0-based data) gets distance -1, which pysot (and mmtracking) count as a HIT
    (-1 <= t); reproduced as is.
    """
    gt = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4)
    n = len(gt)
    cg, cp = _center(gt), _center(pred_xywh)
    if present is not None:  # absent frames dropped, denominator stays n (pysot, ocean_facts §12.2)
        keep = np.asarray(present, dtype=bool)
        cg, cp = cg[keep], cp[keep]
    valid = np.all(cg + origin > 0, axis=1)
    dist = np.full(len(cg), -1.0)  # pysot quirk: distance -1 on invalid GT, which counts as a hit
    dist[valid] = np.linalg.norm(cg[valid] - cp[valid], axis=1)
    return _error_curve(dist, PRECISION_THRESHOLDS, n)


def norm_precision_curve(
    gt_xywh: np.ndarray, pred_xywh: np.ndarray, present: np.ndarray | None = None, origin: float = 1.0
) -> np.ndarray:
    """(51,) normalised precision: centres divided by the GT (w, h) (+1e-16), thresholds 0..0.50
    (pysot, ocean_facts §12.2)."""
    gt = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4)
    n = len(gt)
    wh = gt[:, 2:] + 1e-16  # ocean_facts §12.2
    cg, cp = (_center(gt) + origin) / wh, (_center(pred_xywh) + origin) / wh
    if present is not None:  # absent frames dropped, denominator stays n (pysot)
        keep = np.asarray(present, dtype=bool)
        cg, cp = cg[keep], cp[keep]
    valid = np.all(cg > 0, axis=1)
    dist = np.full(len(cg), -1.0)  # pysot quirk: -1 on invalid GT counts as a hit
    dist[valid] = np.linalg.norm(cg[valid] - cp[valid], axis=1)
    return _error_curve(dist, NORM_PRECISION_THRESHOLDS, n)


@dataclass
class OpeSequenceScore:
    success: np.ndarray  # (21,)
    precision: np.ndarray  # (51,)
    norm_precision: np.ndarray  # (51,)

    @property
    def success_auc(self) -> float:
        return float(np.mean(self.success))


def ope_sequence(
    gt_xywh: np.ndarray, pred_xywh: np.ndarray, present: np.ndarray | None = None, origin: float = 1.0
) -> OpeSequenceScore:
    """All three OPE curves of one sequence."""
    return OpeSequenceScore(
        success_curve(gt_xywh, pred_xywh, present),
        precision_curve(gt_xywh, pred_xywh, present, origin),
        norm_precision_curve(gt_xywh, pred_xywh, present, origin),
    )


def ope_summary(per_sequence: list[OpeSequenceScore]) -> dict:
    """Mean over sequences (pysot): success_auc, precision (at 20 px), norm_precision (at 0.20), and the
    mean curves (``success_curve`` (21,), ``precision_curve`` (51,), ``norm_precision_curve`` (51,)).

    OPE (OTB, LaSOT; pysot ``ope_benchmark`` / ``statistics``): success curve over 21 IoU thresholds
    0, 0.05, ..., 1 with IoU > θ, AUC = its mean, averaged over sequences; precision = fraction of frames
    with centre error <= 20 px (centre x + (w-1)/2); normalised precision at 0.20.
    """
    if not per_sequence:
        raise ValueError("no sequences to score")
    succ = np.mean([s.success for s in per_sequence], axis=0)
    prec = np.mean([s.precision for s in per_sequence], axis=0)
    norm = np.mean([s.norm_precision for s in per_sequence], axis=0)
    return {
        "success_auc": float(np.mean(succ)),
        "precision": float(prec[PRECISION_INDEX]),
        "norm_precision": float(norm[PRECISION_INDEX]),
        "success_curve": succ,
        "precision_curve": prec,
        "norm_precision_curve": norm,
    }


# --- GOT-10k --------------------------------------------------------------------------------------------


def got10k_ious(
    gt_xywh: np.ndarray,
    pred_xywh: np.ndarray,
    image_wh: tuple[float, float],
    present: np.ndarray | None = None,
) -> np.ndarray:
    """IoUs of frames 1.. (first frame excluded) that are visible, boxes clipped to the image
    (got10k toolkit ``ExperimentGOT10k.report``)."""
    gt = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred_xywh, dtype=np.float64).reshape(-1, 4)
    if gt.shape != pred.shape:
        raise ValueError(f"GT has {len(gt)} frames, result has {len(pred)}")
    iou = bounded_iou_xywh(pred[1:], gt[1:], image_wh[0], image_wh[1])
    if present is not None:
        iou = iou[np.asarray(present, dtype=bool)[1:]]
    return iou


def got10k_summary(ious: np.ndarray) -> dict:
    """AO (mean IoU), SR0.5 and SR0.75 (fraction with IoU > t) of pooled frames, and the 101-point
    success curve used by the got10k toolkit's plot.

    GOT-10k (got10k toolkit): AO, SR0.5, SR0.75 over the pooled frames of all sequences, first frame
    excluded, only visible frames, IoU of boxes clipped to the image (:func:`got10k_ious`).
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        return {"ao": float("nan"), "sr50": float("nan"), "sr75": float("nan"), "success_curve": None}
    return {
        "ao": float(np.mean(ious)),
        "sr50": float(np.mean(ious > 0.5)),
        "sr75": float(np.mean(ious > 0.75)),
        "success_curve": np.mean(ious[:, None] > GOT10K_PLOT_THRESHOLDS[None, :], axis=0),
    }


# --- VOT ------------------------------------------------------------------------------------------------


def _is_code(entry: np.ndarray, code: int) -> bool:
    return entry.size == 1 and float(entry[0]) == code


def vot_overlaps(
    trajectory: list[np.ndarray], gt_regions: np.ndarray, image_wh: tuple[int, int] | None
) -> np.ndarray:
    """(N,) raster overlap per frame bounded to the image; 0 on special (1/2/0) frames."""
    if len(trajectory) != len(gt_regions):
        raise ValueError(f"trajectory has {len(trajectory)} frames, GT has {len(gt_regions)}")
    out = np.zeros(len(trajectory))
    for i, (r, g) in enumerate(zip(trajectory, gt_regions, strict=True)):
        r = np.asarray(r, dtype=np.float64).ravel()
        if r.size > 1:
            out[i] = vot_raster_overlap(r, g, image_wh)
    return out


def count_failures(trajectory: list[np.ndarray]) -> int:
    return sum(1 for r in trajectory if _is_code(np.asarray(r).ravel(), 2))


def vot_accuracy_sequence(
    trajectory: list[np.ndarray], overlaps: np.ndarray, burnin: int = VOT_BURNIN
) -> float:
    """Mean overlap excluding skipped frames, failure frames and the ``burnin`` frames starting at each
    initialisation (ocean_facts §12.4); NaN when no frame is left."""
    mask = np.ones(len(trajectory), dtype=bool)
    for i, r in enumerate(trajectory):
        r = np.asarray(r).ravel()
        if _is_code(r, 0) or _is_code(r, 2):
            mask[i] = False
        elif _is_code(r, 1):
            mask[i : i + burnin] = False
    return float(np.mean(overlaps[mask])) if mask.any() else float("nan")


def eao_fragments(trajectory: list[np.ndarray], overlaps: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Split one sequence at failures: each fragment runs from an initialisation (= failure + 5) up to,
    not including, the next failure (ended_in_failure=True) or to the end (False)."""
    codes = [np.asarray(r).ravel() for r in trajectory]
    fails = [i for i, r in enumerate(codes) if _is_code(r, 2)]
    inits = [i for i, r in enumerate(codes) if _is_code(r, 1)]
    if not inits or inits[0] != 0:
        raise ValueError("a VOT trajectory must start with the initialisation code 1")
    frags = [(overlaps[inits[k] : fails[k]], True) for k in range(len(fails))]
    if len(inits) > len(fails):
        frags.append((overlaps[inits[-1] :], False))
    return frags


def expected_overlap_curve(fragments: list[tuple[np.ndarray, bool]], max_len: int | None = None) -> np.ndarray:
    """Φ(L): mean over fragments of the mean overlap of frames 1..L (frame 0, the init, excluded).
    Fragments that end in failure are padded with 0 up to ``max_len`` (the longest sequence, as pysot's
    ``eao_benchmark`` does; default the longest fragment); the others only count up to their own length
    (ocean_facts §12.4). So a tracker that keeps failing has Φ = 0 over the interval, not an undefined EAO.
    """
    max_len = max([len(o) for o, _ in fragments] + ([max_len] if max_len else []))
    arr = np.zeros((len(fragments), max_len))
    mask = np.zeros((len(fragments), max_len))
    for i, (o, failed) in enumerate(fragments):
        arr[i, : len(o)] = o
        if failed:
            mask[i, :] = 1
        else:
            mask[i, : len(o)] = 1
    cum = np.cumsum(arr[:, 1:], axis=1)
    running = arr.copy()
    running[:, 1:] = cum / np.arange(1, max_len)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(running * mask, axis=0) / np.sum(mask, axis=0)


def eao_from_curve(curve: np.ndarray, interval: tuple[int, int]) -> float:
    """Mean of Φ(L) for L in [low, high] (inclusive; the part of the interval beyond the longest
    fragment is ignored, as mmtracking/pysot index past the end)."""
    lo, hi = interval
    part = curve[lo : hi + 1]
    return float(np.mean(part)) if part.size else float("nan")


def vot_summary(
    trajectories: dict[str, list[np.ndarray]],
    gt_regions: dict[str, np.ndarray],
    image_wh: dict[str, tuple[int, int] | None],
    interval: tuple[int, int],
    burnin: int = VOT_BURNIN,
) -> dict:
    """VOT accuracy, robustness and EAO over sequences (names are the dict keys).

    VOT (vot-toolkit / pysot / mmtracking): accuracy with a 10-frame burn-in, robustness, EAO; overlaps are
    rasterised and bounded to the image (:func:`~ocean.benchmarks.regions.vot_raster_overlap`).
    accuracy: per-sequence accuracy weighted by sequence length (mmtracking ``eval_sot_accuracy_robustness``);
    robustness: 100 * failures / total frames; num_failures: total count; eao over ``interval``.
    Returns the overall values plus ``per_sequence`` {name: {accuracy, num_failures, length}} and the
    ``eao_curve``.
    """
    per_seq = {}
    fragments = []
    acc_sum = weight = 0.0
    fails = 0
    for name, traj in trajectories.items():
        ov = vot_overlaps(traj, gt_regions[name], image_wh[name])
        acc = vot_accuracy_sequence(traj, ov, burnin)
        nf = count_failures(traj)
        per_seq[name] = {"accuracy": acc, "num_failures": nf, "length": len(traj)}
        acc_sum += (0.0 if np.isnan(acc) else acc) * len(traj)
        weight += len(traj)
        fails += nf
        fragments.extend(eao_fragments(traj, ov))
    if weight == 0:
        raise ValueError("no sequences to score")
    curve = expected_overlap_curve(fragments, max(len(t) for t in trajectories.values()))
    return {
        "eao": eao_from_curve(curve, interval),
        "accuracy": acc_sum / weight,
        "robustness": 100.0 * fails / weight,
        "num_failures": fails,
        "eao_curve": curve,
        "per_sequence": per_seq,
    }
