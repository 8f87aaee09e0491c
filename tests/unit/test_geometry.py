"""ocean.geometry's context size and mean colour give, bit for bit, what the copies they replaced gave.

The reference functions below are the formulas as they stood in ocean/tracker.py (``context_size``, the scale
penalty's ``_sz``), data_prep/crops.py (``context_size`` of an xyxy box, ``mean_color`` with ``cv2.mean``),
ocean/crop.py and ocean/online.py (``np.mean`` of the pixels) before they moved here; shards, tracker boxes
and scores depend on every bit of them.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ocean.geometry import context_size, mean_color

REPO = Path(__file__).resolve().parents[2]


def tracker_context_size(size_wh, context_amount=0.5):
    w, h = float(size_wh[0]), float(size_wh[1])
    p = context_amount * (w + h)
    return math.sqrt((w + p) * (h + p))


def crops_context_size(box_xyxy, context_amount=0.5):
    x1, y1, x2, y2 = map(float, box_xyxy)
    w, h = x2 - x1, y2 - y1
    p = context_amount * (w + h)
    return math.sqrt((w + p) * (h + p))


def tracker_sz(w, h):
    pad = (w + h) * 0.5
    return np.sqrt((w + pad) * (h + pad))


def crops_mean_color(image):
    m = cv2.mean(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return (m[0], m[0], m[0])
    return (m[0], m[1], m[2])


def bits(x) -> bytes:
    return np.asarray(x, dtype=np.float64).tobytes()


def test_context_size_hand_computed():
    # w = 100, h = 50: p = 75, sqrt(175 * 125) = 147.902...; context 0.25: p = 37.5, sqrt(137.5 * 87.5)
    assert context_size((100, 50)) == pytest.approx(math.sqrt(175 * 125))
    assert context_size((100, 50), 0.25) == pytest.approx(math.sqrt(137.5 * 87.5))
    assert isinstance(context_size(np.array([100.0, 50.0])), float)


def test_context_size_matches_the_tracker_and_crop_formulas_bit_for_bit():
    rng = np.random.default_rng(0)
    for _ in range(5000):
        size = rng.uniform(0.5, 900.0, 2) * rng.choice([1.0, 1e-3, 1e3])
        amount = float(rng.choice([0.5, rng.uniform(0.1, 1.0)]))
        assert bits(context_size(size, amount)) == bits(tracker_context_size(size, amount))
        x1, y1 = rng.uniform(-50.0, 2000.0, 2)
        box = (float(x1), float(y1), float(x1 + size[0]), float(y1 + size[1]))
        # data_prep.crops now passes (x2 - x1, y2 - y1) of its Python-float box
        assert bits(context_size((box[2] - box[0], box[3] - box[1]), amount)) == \
            bits(crops_context_size(box, amount))
        assert bits(context_size(np.array(box[2:]) - np.array(box[:2]), amount)) == \
            bits(crops_context_size(np.array(box), amount))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_context_size_elementwise_matches_the_penalty_sz(dtype):
    rng = np.random.default_rng(1)
    pw = rng.uniform(1e-6, 600.0, (29, 29)).astype(dtype)
    ph = rng.uniform(1e-6, 600.0, (29, 29)).astype(dtype)
    new, old = context_size((pw, ph), 0.5), tracker_sz(pw, ph)
    assert new.dtype == old.dtype and new.tobytes() == old.tobytes()
    target = rng.uniform(1.0, 300.0, 2)  # the penalty's target size: a float64 (2,) array
    assert bits(context_size(target, 0.5)) == bits(tracker_sz(target[0], target[1]))
    if dtype == np.float64:  # what the tracker passes: the penalty ratio is unchanged to the bit
        assert (new / context_size(target, 0.5)).tobytes() == (old / tracker_sz(target[0], target[1])).tobytes()


def _images(rng):
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        yield image
        yield np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (h, w, 3)).copy()  # integral means
        yield (image // 64 * 64).astype(np.uint8)


def test_mean_color_cv2_matches_the_data_prep_formula_bit_for_bit():
    rng = np.random.default_rng(2)
    for image in _images(rng):
        new = mean_color(image)
        assert new.dtype == np.float64 and new.shape == (3,)
        assert bits(new) == bits(crops_mean_color(image))
        assert bits(mean_color(image, "cv2")) == bits(np.asarray(cv2.mean(image)[:3], dtype=np.float64))  # augment
        # the border colour crop_region hands to cv2.warpAffine
        assert tuple(float(v) for v in new) == tuple(float(v) for v in crops_mean_color(image))
    grey = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    for g in (grey, grey[..., None]):
        assert bits(mean_color(g)) == bits(crops_mean_color(g))


def test_mean_color_numpy_matches_the_tracker_formula_bit_for_bit():
    rng = np.random.default_rng(3)
    for image in _images(rng):
        new = mean_color(image, "numpy")
        assert bits(new) == bits(image.reshape(-1, image.shape[-1]).mean(axis=0))  # ocean.crop (tracker)
        assert bits(new) == bits(image.reshape(-1, 3).mean(0))  # ocean.online
    one = rng.integers(0, 256, (9, 7, 1), dtype=np.uint8)  # any channel count keeps its own shape
    assert mean_color(one, "numpy").shape == (1,)


def test_mean_color_methods_differ_in_the_last_bits_so_each_caller_keeps_its_own():
    rng = np.random.default_rng(4)
    differ = sum(not np.array_equal(mean_color(im), mean_color(im, "numpy")) for im in _images(rng))
    assert differ > 0
    with pytest.raises(ValueError, match="method"):
        mean_color(np.zeros((2, 2, 3), np.uint8), "mean")


def test_geometry_and_the_crop_code_do_not_import_torch():
    """Data preparation tasks crop through data_prep.crops -> ocean.geometry and must stay torch-free."""
    code = "import sys, ocean.geometry, data_prep.crops, data_prep.augment; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_box_converters_keep_numpy_and_torch_types():
    import torch

    from ocean.geometry import cxcywh_to_xywh, score_grid, score_grid_torch, xywh_to_cxcywh, xywh_to_xyxy

    box = np.array([[10.0, 20.0, 30.0, 40.0]])
    assert np.array_equal(xywh_to_xyxy(box), [[10.0, 20.0, 40.0, 60.0]])
    t = xywh_to_cxcywh(torch.tensor(box))
    assert isinstance(t, torch.Tensor) and torch.equal(cxcywh_to_xywh(t), torch.tensor(box))
    xs, ys = score_grid_torch(25, 255)
    assert xs.dtype == torch.float32 and np.array_equal(xs.numpy(), score_grid(25, 255)[0])
    assert score_grid_torch(25, 255, dtype=torch.float64)[1].dtype == torch.float64
