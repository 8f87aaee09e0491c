"""Tracker: crops, window, penalty, size update, clipping, protocol (oracle net), real smoke net, `ocean track`.

Expected values are worked out by hand in the comments (facts §9 formulas).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from ocean.benchmarks.regions import polygon_to_init_box_xywh
from ocean.config import TrackerConfig, tracker_config
from ocean.crop import crop_corner, crop_side, get_subwindow, pad_color_uint8, python2round
from ocean.geometry import score_grid, score_size
from ocean.tracker import (
    OceanTracker,
    choose_search_size,
    clip_state,
    hann_window,
    scale_factors,
    size_penalty,
    state_to_box_xywh,
    update_size,
)

# ---------------------------------------------------------------------------------------------------------
# Crops


def _reference_subwindow(image, center_xy, side, out_size, pad_color):
    """The official algorithm transcribed (facts §9.1): pad the whole image on the sides crossed, then slice."""
    rows, cols, ch = image.shape
    c = (side + 1) / 2
    xmin = round(center_xy[0] - c)
    xmax = xmin + side - 1
    ymin = round(center_xy[1] - c)
    ymax = ymin + side - 1
    left, top = int(max(0, -xmin)), int(max(0, -ymin))
    right, bottom = int(max(0, xmax - cols + 1)), int(max(0, ymax - rows + 1))
    xmin, xmax, ymin, ymax = xmin + left, xmax + left, ymin + top, ymax + top
    if any((left, top, right, bottom)):
        te = np.zeros((rows + top + bottom, cols + left + right, ch), np.uint8)
        te[top:top + rows, left:left + cols] = image
        color = np.asarray(pad_color, dtype=np.float64)
        if top:
            te[:top, left:left + cols] = color
        if bottom:
            te[rows + top:, left:left + cols] = color
        if left:
            te[:, :left] = color
        if right:
            te[:, cols + left:] = color
        patch = te[ymin:ymax + 1, xmin:xmax + 1]
    else:
        patch = image[ymin:ymax + 1, xmin:xmax + 1]
    if side != out_size:
        patch = cv2.resize(patch, (out_size, out_size))
    return patch


def _ramp_image(h=6, w=6):
    """Pixel (y, x) = (10 y + x, 100 + 10 y + x, 200 - x) so every pixel is identifiable."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([10 * ys + xs, 100 + 10 * ys + xs, 200 - xs], axis=-1).astype(np.uint8)


def test_rounding_modes():
    assert python2round(2.5) == 3 and python2round(3.5) == 4 and python2round(-2.5) == -3
    assert python2round(2.4999) == 2 and python2round(0.0) == 0
    # template side: banker's rounding (facts §9.1); search side: half away from zero (facts §9.2 step 1)
    assert crop_side(254.5, "bankers") == 254 and crop_side(254.5, "half_away") == 255
    assert crop_side(255.5, "bankers") == 256 and crop_side(255.5, "half_away") == 256
    with pytest.raises(ValueError):
        crop_side(3.0, "floor")
    # corner = round(c - (s+1)/2), banker's: 3 - 2.5 = 0.5 -> 0 ; 4 - 2.5 = 1.5 -> 2 ; 0 - 2.5 = -2.5 -> -2
    assert crop_corner(3.0, 4) == 0 and crop_corner(4.0, 4) == 2 and crop_corner(0.0, 4) == -2
    assert crop_corner(4.5, 4) == 2  # 2.0 exactly


def test_subwindow_inside_is_exact_slice():
    img = _ramp_image()
    # centre (4.5, 4.5), side 4: xmin = round(4.5 - 2.5) = 2 -> rows / cols 2..5
    patch = get_subwindow(img, (4.5, 4.5), 4, 4, (0, 0, 0))
    np.testing.assert_array_equal(patch, img[2:6, 2:6])
    # centre (3, 3): corner round(0.5) = 0 (banker's) -> 0..3 ; centre (4, 4): round(1.5) = 2 -> 2..5
    np.testing.assert_array_equal(get_subwindow(img, (3.0, 3.0), 4, 4, (0, 0, 0)), img[0:4, 0:4])
    np.testing.assert_array_equal(get_subwindow(img, (4.0, 4.0), 4, 4, (0, 0, 0)), img[2:6, 2:6])


def test_subwindow_crossing_borders_pads_truncated_mean():
    img = _ramp_image()
    pad = (10.7, 20.2, 30.9)  # stored in a uint8 buffer officially -> (10, 20, 30)
    np.testing.assert_array_equal(pad_color_uint8(pad), [10, 20, 30])
    # top-left: centre (0, 0), side 4 -> corner round(-2.5) = -2: window -2..1 on both axes
    p = get_subwindow(img, (0.0, 0.0), 4, 4, pad)
    np.testing.assert_array_equal(p[2:, 2:], img[0:2, 0:2])
    assert (p[:2, :] == [10, 20, 30]).all() and (p[:, :2] == [10, 20, 30]).all()
    # right: centre (5.5, 3.0): x corner round(3.0) = 3 -> cols 3..6 (6 is outside); y corner round(0.5) = 0
    p = get_subwindow(img, (5.5, 3.0), 4, 4, pad)
    np.testing.assert_array_equal(p[:, :3], img[0:4, 3:6])
    assert (p[:, 3] == [10, 20, 30]).all()
    # bottom: centre (3.0, 5.5): rows 3..6 ; cols 0..3
    p = get_subwindow(img, (3.0, 5.5), 4, 4, pad)
    np.testing.assert_array_equal(p[:3], img[3:6, 0:4])
    assert (p[3] == [10, 20, 30]).all()
    # left: centre (1.0, 3.0): x corner round(-1.5) = -2 -> cols -2..1
    p = get_subwindow(img, (1.0, 3.0), 4, 4, pad)
    np.testing.assert_array_equal(p[:, 2:], img[0:4, 0:2])
    assert (p[:, :2] == [10, 20, 30]).all()
    # entirely outside: all padding
    p = get_subwindow(img, (100.0, -50.0), 5, 5, pad)
    assert (p == [10, 20, 30]).all()


def test_subwindow_matches_official_algorithm_with_resize():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    pad = img.reshape(-1, 3).mean(axis=0)
    for _ in range(40):
        center = (float(rng.uniform(-20, 84)), float(rng.uniform(-20, 68)))
        side = int(rng.integers(3, 90))
        out = int(rng.choice([7, 31, 127]))
        np.testing.assert_array_equal(get_subwindow(img, center, side, out, pad),
                                      _reference_subwindow(img, center, side, out, pad))


# ---------------------------------------------------------------------------------------------------------
# Pure tracker formulas


def test_hann_window_values():
    # hanning(3) = [0, 1, 0]; hanning(5) = [0, .5, 1, .5, 0]
    np.testing.assert_allclose(hann_window(3), [[0, 0, 0], [0, 1, 0], [0, 0, 0]], atol=1e-12)
    w = hann_window(5)
    assert w[2, 2] == pytest.approx(1.0) and w[1, 2] == pytest.approx(0.5) and w[1, 1] == pytest.approx(0.25)
    assert w[0].max() == pytest.approx(0.0)
    assert hann_window(score_size(287)).shape == (29, 29)


def test_size_penalty_hand_values():
    target = np.array([20.0, 10.0])  # sz = sqrt((20 + 15)(10 + 15)) = sqrt(875) = 29.5804
    k = 0.062
    pw = np.array([[20.0, 40.0, 10.0]])
    ph = np.array([[10.0, 20.0, 10.0]])
    pen = size_penalty(pw, ph, target, k)
    # same box -> 1; doubled -> s_c = 2, r_c = 1 -> exp(-0.062);
    # 10x10 -> sz 20, s_c = 1.47902, r_c = (20/10)/(10/10) = 2 -> exp(-(2.95804 - 1) 0.062) = 0.885684
    np.testing.assert_allclose(pen[0], [1.0, math.exp(-0.062), 0.885684], rtol=1e-5)


def test_search_size_rule():
    cfg = TrackerConfig(small_sz=255, big_sz=287)
    # image 100 x 100: threshold 0.004 * 10000 = 40 px^2
    assert choose_search_size((5, 7), (100, 100), cfg) == 287  # 35 < 40
    assert choose_search_size((8, 5), (100, 100), cfg) == 255  # 40 is not < 40
    assert choose_search_size((50, 50), (100, 100), cfg) == 255


def test_update_single_vs_double():
    size = np.array([100.0, 50.0])
    pred = np.array([200.0, 30.0])
    np.testing.assert_allclose(update_size(size, pred, 0.5, "single"), [150.0, 40.0])  # w + lr (pw - w)
    np.testing.assert_allclose(update_size(size, pred, 0.5, "double"), [125.0, 45.0])  # w + lr^2 (pw - w)
    with pytest.raises(ValueError):
        update_size(size, pred, 0.5, "triple")


def test_clip_and_output_box():
    c, s = clip_state(np.array([-5.0, 130.0]), np.array([3.0, 500.0]), (200, 100), 10.0)
    np.testing.assert_allclose(c, [0.0, 100.0])
    np.testing.assert_allclose(s, [10.0, 100.0])
    # x, y clamped at 0, w, h not shrunk -- facts §9.2 step 9
    np.testing.assert_allclose(state_to_box_xywh(c, s), [0.0, 50.0, 10.0, 100.0])
    c, s = clip_state(np.array([250.0, 50.0]), np.array([300.0, 20.0]), (200, 100), 10.0)
    np.testing.assert_allclose(c, [200.0, 50.0])
    np.testing.assert_allclose(s, [200.0, 20.0])


def test_polygon_to_init_box():
    # axis-aligned rectangle 10..30 x 20..60: s = 1 -> w = 21, h = 41, centre (20, 40)
    box = polygon_to_init_box_xywh([10, 20, 30, 20, 30, 60, 10, 60])
    np.testing.assert_allclose(box, [20 - 10.5, 40 - 20.5, 21, 41])
    # square of side 10*sqrt(2) rotated 45 deg around (50, 50): extent 20 x 20, A1 = 200, A2 = 400,
    # s = sqrt(0.5) -> w = h = 20 sqrt(0.5) + 1 = 15.1421
    box = polygon_to_init_box_xywh([50, 40, 60, 50, 50, 60, 40, 50])
    w = 20 * math.sqrt(0.5) + 1
    np.testing.assert_allclose(box, [50 - w / 2, 50 - w / 2, w, w])
    np.testing.assert_allclose(polygon_to_init_box_xywh([1, 2, 3, 4]), [1, 2, 3, 4])
    with pytest.raises(ValueError):
        polygon_to_init_box_xywh([1, 2, 3])


# ---------------------------------------------------------------------------------------------------------
# Fake networks


class ConstantNet(nn.Module):
    """Fixed outputs: cls logit +hi at one cell and lo elsewhere; the same l, t, r, b at every cell."""

    def __init__(self, cell=(12, 14), dist=31.75, hi=10.0, lo=-10.0, align_logit=None):
        super().__init__()
        self.cell, self.dist, self.hi, self.lo, self.align_logit = cell, dist, hi, lo, align_logit
        self.z = None
        self.xs = []

    def template(self, z):
        self.z = z.clone()

    def track(self, x):
        self.xs.append(tuple(x.shape))
        n = score_size(x.shape[-1])
        cls = torch.full((1, 1, n, n), self.lo, device=x.device)
        cls[0, 0, self.cell[0], self.cell[1]] = self.hi
        reg = torch.full((1, 4, n, n), float(self.dist), device=x.device)
        align = None if self.align_logit is None else torch.full((1, 1, n, n), self.align_logit)
        return {"cls": cls, "reg": reg, "align": align}


def _red_box(img):
    """``(x1, y1, x2, y2)`` float tensors of the red target (R > 150, B < 100) in a BGR ``(3, H, W)`` crop, or
    None when the crop shows none of it."""
    mask = (img[2] > 150) & (img[0] < 100)  # BGR: red high, blue low
    if not mask.any():
        return None
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return xs.min().float(), ys.min().float(), xs.max().float() + 1, ys.max().float() + 1


class OracleNet(nn.Module):
    """Finds the red target in the search crop itself (R > 150, B < 100) and reports its exact box.

    cls: a peak at the cell nearest the target centre (logit 6 - 0.5 d^2, d in cells); reg: the distances
    from every cell's grid point to the target's sides. No knowledge of the tracker's state: a wrong crop or a
    wrong crop -> image conversion shows up as a wrong box.
    """

    def __init__(self, with_align=False):
        super().__init__()
        self.with_align = with_align

    def template(self, z):
        assert z.shape == (1, 3, 127, 127) and z.dtype == torch.float32

    def track(self, x):
        S = x.shape[-1]
        n = score_size(S)
        gx, gy = (torch.from_numpy(a).to(x.device) for a in score_grid(n, S))
        box = _red_box(x[0])
        if box is not None:
            x1, y1, x2, y2 = box
        else:
            x1, y1, x2, y2 = (torch.tensor(float(v)) for v in (S / 2 - 20, S / 2 - 20, S / 2 + 20, S / 2 + 20))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        d2 = ((gx - cx) ** 2 + (gy - cy) ** 2) / 64.0  # squared distance in cells (stride 8)
        cls = (6.0 - 0.5 * d2)[None, None]
        reg = torch.stack([gx - x1, gy - y1, x2 - gx, y2 - gy])[None]
        align = cls.clone() if self.with_align else None
        return {"cls": cls, "reg": reg, "align": align}


def _moving_target_video(n_frames=24, seed=0):
    """Grey textured background 320x240 with a red textured rectangle moving and growing. Boxes xywh."""
    rng = np.random.default_rng(seed)
    height, width = 240, 320
    background = rng.integers(40, 120, size=(height, width, 3), dtype=np.uint8)
    frames, boxes = [], []
    for f in range(n_frames):
        w, h = 40 + f, 30 + f // 2
        x, y = 30 + 8 * f, 50 + 4 * f + 10 * math.sin(f / 3)
        img = background.copy()
        x0, y0 = int(round(x)), int(round(y))
        tex = rng.integers(0, 60, size=(h, w), dtype=np.uint8)
        img[y0:y0 + h, x0:x0 + w, 0] = tex  # blue low
        img[y0:y0 + h, x0:x0 + w, 1] = tex  # green low
        img[y0:y0 + h, x0:x0 + w, 2] = 200 + tex // 2  # red high
        frames.append(img)
        boxes.append(np.array([x0, y0, w, h], dtype=np.float64))
    return frames, boxes


def _iou_xywh(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _run(tracker, frames, init_box):
    tracker.init(frames[0], init_box)
    out = [np.asarray(init_box, dtype=np.float64)]
    scores = [1.0]
    for img in frames[1:]:
        box, score = tracker.track(img)
        out.append(box)
        scores.append(score)
    return out, scores


# ---------------------------------------------------------------------------------------------------------
# Protocol tests


def test_one_step_hand_computed():
    img = np.full((300, 400, 3), 128, np.uint8)
    net = ConstantNet(cell=(12, 14), dist=31.75)
    cfg = TrackerConfig()  # penalty_k 0.062, wi 0.38, lr 0.765, S = 255
    trk = OceanTracker(net, cfg)
    trk.init(img, [150, 100, 50, 50])  # centre (175, 125), s_z = sqrt(100 * 100) = 100 -> 100 px window
    assert net.z.shape == (1, 3, 127, 127) and net.z.dtype == torch.float32
    assert float(net.z.max()) == 128.0  # raw BGR 0-255, not normalised
    box, score = trk.track(img)
    assert net.xs[-1] == (1, 3, 255, 255)
    # scale_z = 127 / 100 = 1.27; the box of every cell is 63.5 px = 50 image px -> penalty 1.
    # cell (12, 14): pscore = 0.62 sigmoid(10) + 0.38 hann[14] (0.933) = 0.97 > centre 0.38 -> chosen.
    # grid x = 8 (14 - 12) + 127 = 143 -> dx = 16 / 1.27 = 12.5984 ; dy = 0 ; size unchanged.
    dx = 16 / 1.27
    np.testing.assert_allclose(box, [175 + dx - 25, 100, 50, 50], atol=1e-9)
    assert score == pytest.approx(1 / (1 + math.exp(-10)))


@pytest.mark.parametrize("mode", ["single", "double"])
def test_one_step_size_update(mode):
    img = np.full((300, 400, 3), 128, np.uint8)
    # distances 63.5 -> 127 px crop box = 100 image px: s_c = 2, penalty exp(-0.062)
    trk = OceanTracker(ConstantNet(cell=(12, 12), dist=63.5), TrackerConfig(size_update=mode))
    trk.init(img, [150, 100, 50, 50])
    box, _ = trk.track(img)
    lr = math.exp(-0.062) / (1 + math.exp(-10)) * 0.765  # penalty * p_cls * lr
    w = 50 + (lr if mode == "single" else lr ** 2) * (100 - 50)
    np.testing.assert_allclose(box, [175 - w / 2, 125 - w / 2, w, w], atol=1e-9)


def test_align_fusion_used_only_when_enabled():
    img = np.full((300, 400, 3), 128, np.uint8)
    p_r = 1 / (1 + math.exp(-10))
    for use_align, expected in ((True, 0.94 * p_r + 0.06 * 0.5), (False, p_r)):
        trk = OceanTracker(ConstantNet(align_logit=0.0), TrackerConfig(use_align=use_align, ratio=0.94))
        trk.init(img, [150, 100, 50, 50])
        _, score = trk.track(img)
        assert score == pytest.approx(expected) and trk.uses_align == use_align
    # use_align with a net without align head falls back to p_r
    trk = OceanTracker(ConstantNet(align_logit=None), TrackerConfig(use_align=True))
    trk.init(img, [150, 100, 50, 50])
    assert trk.track(img)[1] == pytest.approx(p_r) and not trk.uses_align


def test_search_size_chosen_once_and_grid_matches():
    # 20 x 20 target in a 400 x 300 image: 400 / 120000 = 0.0033 < 0.004 -> big_sz for the whole video
    img = np.full((300, 400, 3), 128, np.uint8)
    net = ConstantNet(cell=(14, 14), dist=40.0)
    trk = OceanTracker(net, TrackerConfig(small_sz=255, big_sz=287))
    trk.init(img, [190, 140, 20, 20])
    for _ in range(3):
        trk.track(img)  # the box grows (the net says 80 px) but S stays 287
    assert set(net.xs) == {(1, 3, 287, 287)}


def test_follows_moving_target_with_oracle():
    frames, boxes = _moving_target_video()
    for cfg in (tracker_config(), tracker_config("vot2019")):
        trk = OceanTracker(OracleNet(with_align=cfg.use_align), cfg)
        out, scores = _run(trk, frames, boxes[0])
        ious = [_iou_xywh(a, b) for a, b in zip(out, boxes, strict=True)]
        assert min(ious) > 0.7, (cfg, ious)
        assert all(0.0 <= s <= 1.0 for s in scores)


class SizeBlindNet(nn.Module):
    """A template matcher that cannot measure size, like the quickstart's model (facts §9.6): its regression
    returns the template's target size in crop pixels around every cell whatever it sees, and its cls logit
    peaks where the red target is and is highest in the crop that shows the target at the template's size
    (logit 6 - 0.5 d^2 - 200 ln(a / a_template)^2, a = sqrt of the target's area in crop pixels). Batch-aware:
    row i of the search batch gets row i of the outputs."""

    def template(self, z):
        self.nominal = self._blob(z[0])[2:]

    @staticmethod
    def _blob(img):
        x1, y1, x2, y2 = _red_box(img)
        return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])

    def track(self, x):
        S = x.shape[-1]
        n = score_size(S)
        gx, gy = (torch.from_numpy(a).to(x.device).float() for a in score_grid(n, S))
        w, h = self.nominal
        cls, reg = [], []
        for img in x:
            cx, cy, bw, bh = self._blob(img)
            d2 = ((gx - cx) ** 2 + (gy - cy) ** 2) / 64.0
            cls.append(6.0 - 0.5 * d2 - 200.0 * torch.log(torch.sqrt(bw * bh / (w * h))) ** 2)
            reg.append(torch.stack([torch.full_like(gx, w / 2), torch.full_like(gx, h / 2),
                                    torch.full_like(gx, w / 2), torch.full_like(gx, h / 2)]))
        return {"cls": torch.stack(cls)[:, None], "reg": torch.stack(reg), "align": None}


class ScaleNet(ConstantNet):
    """ConstantNet for a batch of crops: the centre cell's logit is 1, 2, 3 in rows 0, 1, 2, so the crop cut
    1.0375 times larger (row 2 of a 3-scale search) peaks hardest."""

    def track(self, x):
        self.xs.append(tuple(x.shape))
        n = score_size(x.shape[-1])
        cls = torch.full((len(x), 1, n, n), -10.0)
        for i, logit in enumerate((1.0, 2.0, 3.0)[:len(x)]):
            cls[i, 0, 12, 12] = logit
        return {"cls": cls, "reg": torch.full((len(x), 4, n, n), 31.75), "align": None}


def test_scale_factors():
    np.testing.assert_array_equal(scale_factors(1, 1.0375), [1.0])
    np.testing.assert_allclose(scale_factors(3, 1.0375), [1 / 1.0375, 1.0, 1.0375])
    np.testing.assert_allclose(scale_factors(2, 1.1), [1.1 ** -0.5, 1.1 ** 0.5])
    with pytest.raises(ValueError, match="at least 1"):
        scale_factors(0, 1.0375)


def test_scale_search_one_step_hand_computed():
    img = np.full((300, 400, 3), 128, np.uint8)
    net = ScaleNet()
    cfg = TrackerConfig(scales=3, size_update="single")  # penalty_k 0.062, wi 0.38, lr 0.765, S = 255
    trk = OceanTracker(net, cfg)
    trk.init(img, [150, 100, 50, 50])  # centre (175, 125), s_z = 100, scale_z = 1.27
    box, score = trk.track(img)
    assert net.xs[-1] == (3, 3, 255, 255)  # the three crops in one forward
    # Row 2: crop pixels per image pixel 1.27 / 1.0375; the 63.5 px box is 50 * 1.0375 image px, s_c = 1.0375
    # -> penalty exp(-0.0375 * 0.062). Its windowed peak 0.62 penalty sigmoid(3) + 0.38 beats rows 0 and 1.
    k = 1.0375
    penalty = math.exp(-(k - 1) * 0.062)
    p = 1 / (1 + math.exp(-3.0))
    w = 50 + penalty * p * 0.765 * (50 * k - 50)  # single smoothing towards the chosen crop's box
    np.testing.assert_allclose(box, [175 - w / 2, 125 - w / 2, w, w], atol=1e-9)
    assert score == pytest.approx(p)
    # the middle crop is the single-scale tracker's crop, bit for bit
    single = OceanTracker(ConstantNet(), TrackerConfig())
    single.init(img, [150, 100, 50, 50])
    trk.state.size_wh = np.array([50.0, 50.0])
    x3, z3 = trk.prepare_search(img)
    x1, z1 = single.prepare_search(img)
    assert z3 == z1 and torch.equal(x3[1:2], x1)


def test_scale_search_measures_what_the_regression_cannot():
    # A size-blind regression keeps the first frame's size with one crop; with three the classification's
    # preference for the template's apparent size moves the box with the growing target.
    rng = np.random.default_rng(1)
    background = rng.integers(40, 120, size=(240, 320, 3), dtype=np.uint8)
    frames, boxes = [], []
    for f in range(24):  # a red target growing by 2 % a frame, its aspect kept, drifting right
        w, h = int(round(40 * 1.02 ** f)), int(round(30 * 1.02 ** f))
        x0, y0 = 60 + 2 * f - w // 2, 120 - h // 2
        img = background.copy()
        img[y0:y0 + h, x0:x0 + w] = (20, 20, 210)
        frames.append(img)
        boxes.append(np.array([x0, y0, w, h], dtype=np.float64))
    final = {}
    for scales in (1, 3):
        trk = OceanTracker(SizeBlindNet(), TrackerConfig(scales=scales, size_update="single", window_influence=0.2))
        out, _ = _run(trk, frames, boxes[0])
        final[scales] = (np.sqrt(out[-1][2] * out[-1][3]) / np.sqrt(boxes[-1][2] * boxes[-1][3]),
                         np.mean([_iou_xywh(a, b) for a, b in zip(out, boxes, strict=True)]))
    # the target grows from 40x30 to 63x47 px: one crop keeps the first size, three follow it
    assert final[1][0] < 0.7, final
    assert 0.85 < final[3][0] < 1.15, final
    assert final[3][1] > final[1][1] + 0.1, final


def test_clipped_at_image_border():
    # the target runs out of the right border: the centre is clipped to W, x to >= 0, w to <= W
    frames, boxes = [], []
    for f in range(8):
        img = np.full((120, 160, 3), 80, np.uint8)
        x = 100 + 12 * f
        img[40:80, min(x, 160):min(x + 40, 160), 2] = 220
        img[40:80, min(x, 160):min(x + 40, 160), 0] = 10
        frames.append(img)
        boxes.append([x, 40, 40, 40])
    trk = OceanTracker(OracleNet(), TrackerConfig())
    out, _ = _run(trk, frames, boxes[0])
    for box in out[1:]:
        cx = box[0] + box[2] / 2
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= 160 and box[3] <= 120 and box[2] >= 10
        assert cx <= 160 + box[2] / 2
    assert trk.state.center_xy[0] <= 160


def test_deterministic():
    frames, boxes = _moving_target_video(n_frames=8, seed=3)
    a, sa = _run(OceanTracker(OracleNet(), TrackerConfig()), frames, boxes[0])
    b, sb = _run(OceanTracker(OracleNet(), TrackerConfig()), frames, boxes[0])
    np.testing.assert_array_equal(np.array(a), np.array(b))
    assert sa == sb


def test_online_hook_fused_after_window():
    img = np.full((300, 400, 3), 128, np.uint8)

    class Online:
        def __init__(self):
            self.calls = []

        def init(self, image, box):
            self.calls.append(("init", tuple(box)))

        def score(self, image, state):
            m = np.zeros((25, 25))
            m[12, 8] = 1.0  # strongly favours cell (12, 8)
            return m

        def update(self, image, state, box, score):
            self.calls.append(("update", tuple(box)))

    online = Online()
    trk = OceanTracker(ConstantNet(cell=(12, 14)), TrackerConfig(), online=online, online_weight=0.9)
    trk.init(img, [150, 100, 50, 50])
    box, _ = trk.track(img)
    # 0.9 * 1 + 0.1 * (0.38 hann(8)) at (12, 8) beats 0.1 * 0.97 at (12, 14): dx = 8 (8 - 12) / 1.27
    np.testing.assert_allclose(box[0], 175 - 32 / 1.27 - 25, atol=1e-9)
    assert [c[0] for c in online.calls] == ["init", "update"]
    # With p_o as well (never in the official online run, facts §10.4): p_o enters p_cls before the penalty
    # (the reported score at the chosen cell), the online map still decides after the window (TK update order).
    trk = OceanTracker(ConstantNet(cell=(12, 14), align_logit=0.0), TrackerConfig(use_align=True, ratio=0.9),
                       online=Online(), online_weight=0.9)
    trk.init(img, [150, 100, 50, 50])
    box, score = trk.track(img)
    assert trk.uses_align
    np.testing.assert_allclose(box[0], 175 - 32 / 1.27 - 25, atol=1e-9)
    np.testing.assert_allclose(score, 0.9 / (1 + np.exp(10.0)) + 0.1 * 0.5, rtol=1e-6)


def test_scale_search_keeps_the_state_size_on_a_tie():
    # ConstantNet gives every crop the same maps: no crop is better, so the state's own crop (factor 1) wins
    # and the size stays (a crop cut larger would have grown it through the same regression distances)
    img = np.full((300, 400, 3), 128, np.uint8)

    class Tied(ConstantNet):
        def track(self, x):
            out = super().track(x[:1])
            return {k: (v.expand(len(x), -1, -1, -1) if v is not None else None) for k, v in out.items()}

    trk = OceanTracker(Tied(cell=(12, 12), dist=31.75), TrackerConfig(scales=3))
    trk.init(img, [150, 100, 50, 50])
    box, _ = trk.track(img)
    np.testing.assert_allclose(box, [150, 100, 50, 50], atol=1e-9)
    with pytest.raises(ValueError, match="2 score maps for 3 search scales"):
        trk.score_to_box(img, trk.output_maps(Tied().track(torch.zeros(3, 3, 255, 255)))[:2], 1.27)


def test_scale_search_online_map_sampled_on_the_chosen_crop():
    img = np.full((300, 400, 3), 128, np.uint8)

    class Online:
        sizes: list = []

        def init(self, image, box):
            pass

        def score(self, image, state):  # the online map is laid on the Siamese cells of this state's crop
            self.sizes.append(state.size_wh.copy())
            return np.zeros((25, 25))

        def update(self, image, state, box, score):
            pass

    online = Online()
    trk = OceanTracker(ScaleNet(), TrackerConfig(scales=3), online=online)
    trk.init(img, [150, 100, 50, 50])
    trk.track(img)
    # ScaleNet makes row 2 (the crop 1.0375 times the state) win: the online map is asked for that crop
    np.testing.assert_allclose(online.sizes[-1], [50 * 1.0375, 50 * 1.0375])


def test_nonfinite_network_keeps_state_and_counts():
    class BadNet(ConstantNet):
        def track(self, x):
            out = super().track(x)
            out["reg"][:] = float("nan")
            return out

    img = np.full((300, 400, 3), 128, np.uint8)
    trk = OceanTracker(BadNet(), TrackerConfig())
    trk.init(img, [150, 100, 50, 50])
    box, score = trk.track(img)
    np.testing.assert_allclose(box, [150, 100, 50, 50])
    assert score == 0.0 and trk.nonfinite_frames == 1


def test_bad_inputs_rejected():
    trk = OceanTracker(ConstantNet(), TrackerConfig())
    img = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(RuntimeError):
        trk.track(img)
    with pytest.raises(ValueError):
        trk.init(img, [0, 0, 0, 10])
    with pytest.raises(ValueError):
        trk.init(img.astype(np.float32), [0, 0, 10, 10])


# ---------------------------------------------------------------------------------------------------------
# The real (untrained) smoke network


def test_real_smoke_network_runs():
    model = pytest.importorskip("ocean.model")
    from ocean.config import smoke

    torch.manual_seed(0)
    net = model.build_model(smoke().model).eval()
    frames, boxes = _moving_target_video(n_frames=4)
    trk = OceanTracker(net, tracker_config("vot2018"))  # the align fusion path, S = 255
    out, scores = _run(trk, frames, boxes[0])
    assert trk.uses_align and trk.nonfinite_frames == 0
    for box in out:
        assert np.all(np.isfinite(box))
        assert box[0] >= 0 and box[1] >= 0 and 10 <= box[2] <= 320 and 10 <= box[3] <= 240
    assert all(0.0 <= s <= 1.0 for s in scores)


# ---------------------------------------------------------------------------------------------------------
# `ocean track`


@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory):
    ckpt_mod = pytest.importorskip("ocean.checkpoint")
    from ocean.config import smoke
    from ocean.model import build_model

    torch.manual_seed(0)
    cfg = smoke()
    path = tmp_path_factory.mktemp("ckpt") / "smoke.pt"
    ckpt_mod.save_checkpoint(str(path), build_model(cfg.model), cfg)
    return path


def _write_frames(folder, frames, names):
    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(frames, names, strict=True):
        assert cv2.imwrite(str(folder / name), img)


def _read_boxes(path):
    return np.array([[float(v) for v in line.split(",")] for line in path.read_text().splitlines()])


def test_track_cli_frames_render_and_unreadable(smoke_checkpoint, tmp_path, capsys):
    from jobs.cli import main
    from jobs.track import list_frames

    frames, boxes = _moving_target_video(n_frames=5)
    # natural order: 2 before 10; written out of lexical order on purpose
    names = ["f1.png", "f2.png", "f10.png", "f11.png", "f100.png"]
    _write_frames(tmp_path / "seq", frames, names)
    (tmp_path / "seq" / "f3.jpg").write_bytes(b"not an image")  # between f2 and f10: unreadable
    (tmp_path / "seq" / "notes.txt").write_text("ignored")
    assert [p.name for p in list_frames(tmp_path / "seq")] == ["f1.png", "f2.png", "f3.jpg", "f10.png",
                                                               "f11.png", "f100.png"]
    out, video = tmp_path / "res" / "boxes.txt", tmp_path / "res" / "render.mp4"
    x, y, w, h = boxes[0]
    rc = main(["track", "--checkpoint", str(smoke_checkpoint), "--frames", str(tmp_path / "seq"),
               "--init", f"{x},{y},{w},{h}", "--out", str(out), "--render", str(video), "--no-progress",
               "--set", "tracker.window_influence=0.5"])
    assert rc == 0
    res = _read_boxes(out)
    assert res.shape == (6, 4)
    np.testing.assert_allclose(res[0], boxes[0])
    np.testing.assert_array_equal(res[2], res[1])  # the unreadable frame repeats the previous box
    assert np.all(np.isfinite(res)) and np.all(res[:, 2:] >= 10)
    captured = capsys.readouterr()
    assert "unreadable 1" in captured.out and "model" in captured.out and "f3.jpg" in captured.err
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 5  # the unreadable frame is not in the video
    # --strict turns the unreadable frame into exit status 1
    rc = main(["track", "--checkpoint", str(smoke_checkpoint), "--frames", str(tmp_path / "seq"),
               "--init", f"{x},{y},{w},{h}", "--out", str(out), "--no-progress", "--strict"])
    assert rc == 1


def test_track_cli_video_and_presets(smoke_checkpoint, tmp_path):
    from jobs.cli import main

    frames, boxes = _moving_target_video(n_frames=4)
    video = tmp_path / "in.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for img in frames:
        writer.write(img)
    writer.release()
    (tmp_path / "hp.json").write_text('{"tracker": {"penalty_k": 0.1, "use_align": true}}')
    out = tmp_path / "v.txt"
    x, y, w, h = boxes[0]
    rc = main(["track", "--checkpoint", str(smoke_checkpoint), "--video", str(video), "--init",
               f"{x} {y} {w} {h}", "--out", str(out), "--benchmark", "vot2019", "--tracker-config",
               str(tmp_path / "hp.json"), "--no-progress"])
    assert rc == 0
    assert _read_boxes(out).shape == (4, 4)


def test_tracker_config_precedence():
    from jobs.track import UsageError, build_tracker_config

    base = TrackerConfig()
    cfg = build_tracker_config(base, "otb", None, ["tracker.lr=0.5"])
    assert cfg.penalty_k == 0.087 and cfg.size_update == "double" and cfg.lr == 0.5  # facts §9.3 + --set
    with pytest.raises(UsageError, match="only tracker"):
        build_tracker_config(base, None, None, ["optim.base_lr=1"])
    with pytest.raises(UsageError):
        build_tracker_config(base, None, None, ["tracker.no_such_key=1"])


def test_track_cli_errors(smoke_checkpoint, tmp_path, capsys):
    from jobs.cli import main

    frames, boxes = _moving_target_video(n_frames=2)
    _write_frames(tmp_path / "seq", frames, ["0001.jpg", "0002.jpg"])
    (tmp_path / "empty").mkdir()
    base = ["track", "--out", str(tmp_path / "o.txt"), "--no-progress"]
    good = ["--checkpoint", str(smoke_checkpoint), "--frames", str(tmp_path / "seq")]
    cases = [
        (["--checkpoint", str(tmp_path / "missing.pt"), "--frames", str(tmp_path / "seq"),
          "--init", "1,2,30,30"], "no such file"),
        (["--checkpoint", str(smoke_checkpoint), "--frames", str(tmp_path / "empty"), "--init", "1,2,30,30"],
         "no .jpg"),
        ([*good, "--init", "1,2,30"], "expected x,y,w,h"),
        ([*good, "--init", "1,2,0,30"], "w > 0"),
        ([*good, "--init", "a,b,c,d"], "expected numbers"),
        ([*good, "--init", "500,10,30,30"], "outside"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.txt").exists()
