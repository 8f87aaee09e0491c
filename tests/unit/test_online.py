"""Online classifier (paper Sec. 4.2, facts §10): first-frame fit, optimiser, memory, flags, geometry,
layeronline shapes, weights, the tracker switch, and online vs offline on a synthetic scene.

Hand-computed expectations are worked out in the comments.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ocean.backbone import ResNet50Backbone
from ocean.config import OnlineConfig, TrackerConfig, apply_overrides, paper
from ocean.geometry import context_size, score_grid, score_size
from ocean.online import (
    OnlineClassifier,
    PatchGeometry,
    build_online,
    classify_peaks,
    make_layeronline,
    steepest_descent_gn,
)
from ocean.tracker import OceanTracker, TrackState

FAST = OnlineConfig(rotations=(10.0, -10.0), init_iterations=15)  # fewer augmentations: test speed


class FixedBoxNet(nn.Module):
    """A smoke-width random backbone (for the online branch) and a Siamese head that always puts its
    peak on the crop centre with a fixed box: a tracker that never moves unless the online map moves it."""

    def __init__(self, wh_crop=(40.0, 40.0)):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = ResNet50Backbone(width=16, blocks=(1, 1, 1)).eval()
        self.wh = wh_crop

    def template(self, z):
        pass

    def track(self, x):
        n = score_size(x.shape[-1])
        gx, gy = (torch.from_numpy(a) for a in score_grid(n, x.shape[-1]))
        d2 = ((gx - x.shape[-1] // 2) ** 2 + (gy - x.shape[-1] // 2) ** 2) / 64.0
        w, h = self.wh
        reg = torch.tensor([w / 2, h / 2, w / 2, h / 2]).view(1, 4, 1, 1).expand(1, 4, n, n).clone()
        return {"cls": (2.0 - 0.5 * d2)[None, None], "reg": reg, "align": None}


def _scene(seed=0, side=40, n=1, dx=3):
    """Smooth grey-green background; a 40x40 red/blue checker target at (100, 90) moving dx px/frame;
    a yellow/white striped distractor of the same size at (200, 120)."""
    rng = np.random.default_rng(seed)
    low = rng.random((6, 8, 3)).astype(np.float32)
    import cv2

    bg = (70 + 60 * cv2.resize(low, (320, 240), interpolation=cv2.INTER_CUBIC)).astype(np.uint8)
    yy, xx = np.mgrid[0:side, 0:side]
    tex = np.where(((yy // 8 + xx // 8) % 2 == 0)[..., None], [30, 30, 220], [220, 40, 40]).astype(np.uint8)
    dis = np.where(((xx // 5) % 2 == 0)[..., None], [20, 230, 230], [240, 240, 240]).astype(np.uint8)
    frames, boxes = [], []
    for f in range(n):
        img = bg.copy()
        x, y = 100 + dx * f, 90
        img[120:120 + side, 200:200 + side] = dis
        img[y:y + side, x:x + side] = tex
        frames.append(img)
        boxes.append(np.array([x, y, side, side], float))
    return frames, boxes


def _peak_image_xy(oc, raw, geom):
    """Image position of the raw map's argmax (inverse of OnlineClassifier._score_cell)."""
    r, c = np.unravel_index(int(np.argmax(raw)), raw.shape)
    k, p = oc.cfg.filter_size, oc.cfg.sample_size
    hf, wf = oc._mem_x.shape[-2:]
    q = np.array([c, r], float) - k // 2 + (k - 1) / 2
    u = (q + 0.5) * np.array([p / wf, p / hf]) - 0.5
    return geom.center_xy + geom.scale * (u - (p / 2 - 0.5))


def test_filter_fits_first_frame_and_peaks_on_target():
    frames, boxes = _scene()
    oc = OnlineClassifier(FixedBoxNet(), FAST)
    oc.init(frames[0], boxes[0])
    # 1 + 4 shifts + flip + 5 blurs + 2 rotations + 7 dropout copies = 20 samples (facts §10.2 subset)
    assert oc._count == 20 and torch.isclose(oc._mem_w[:20].sum(), torch.tensor(1.0))
    assert oc.losses[-1] < 0.6 * oc.losses[0]
    target = boxes[0][:2] + 20  # centre (120, 110)
    # Score a patch centred 25 px off the target: the peak must still land on the target (within a cell
    # of ~ 160/28 = 5.7 image px, plus half a cell of the even filter).
    raw, geom = oc.raw_scores(frames[0], target + np.array([25.0, -15.0]), boxes[0][2:])
    assert np.linalg.norm(_peak_image_xy(oc, raw, geom) - target) < 8.0
    # and the peak is clearly above the distractor's area (centre (220, 140))
    assert raw.max() > 0.5


def test_steepest_descent_gn_decreases_loss_and_solves_ridge():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 3, 9, 9, generator=g, dtype=torch.float64)
    labels = torch.randn(6, 1, 10, 10, generator=g, dtype=torch.float64)
    masks = torch.ones_like(labels)  # m = 1: plain ridge regression, a convex quadratic
    w = torch.full((6,), 1 / 6, dtype=torch.float64)
    filt, losses = steepest_descent_gn(torch.zeros(1, 3, 4, 4, dtype=torch.float64), feats, labels, masks, w,
                                       0.1, 60)
    assert len(losses) == 61
    assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:], strict=False))  # exact line search
    # Closed-form ridge solution of the same problem: (A^T W A + lambda I) f = A^T W y
    cols = F.unfold(F.pad(feats, (2, 2, 2, 2)), 4)  # (6, 48, 100): each score is a dot with a patch
    a = cols.permute(0, 2, 1).reshape(-1, 48).double()
    y = labels.reshape(-1).double()
    wr = w.repeat_interleave(100).double()
    f_star = torch.linalg.solve(a.T @ (wr[:, None] * a) + 0.1 * torch.eye(48, dtype=torch.float64), a.T @ (wr * y))
    best = float((wr * (a @ f_star - y) ** 2).sum() + 0.1 * f_star @ f_star)
    assert best <= losses[-1] <= best * 1.01


def test_hinge_on_background_only_penalises_positive_scores():
    # m = 0 everywhere and y = 0: a filter whose scores are all <= 0 has zero data loss and is only shrunk
    # by the regulariser; its gradient step never makes it worse.
    feats = torch.ones(1, 1, 5, 5)
    filt = -torch.ones(1, 1, 4, 4) * 0.1
    zeros = torch.zeros(1, 1, 6, 6)
    _, losses = steepest_descent_gn(filt, feats, zeros, zeros, torch.ones(1), 0.1, 1)
    assert losses[0] == pytest.approx(0.1 * 16 * 0.01)  # lambda ||f||^2 = 0.1 * 16 * 0.1^2


def test_classify_peaks_flags():
    cfg = OnlineConfig()
    m = np.zeros((14, 14))
    m[7, 7] = 1.0
    assert classify_peaks(m, (2.0, 2.0), cfg).flag == "normal"
    m[7, 12] = 0.5  # 5 cells away > 2.2 * 2 / 2 = 2.2: second peak 0.5 > 0.45 * 1.0
    loc = classify_peaks(m, (2.0, 2.0), cfg)
    assert (loc.flag, loc.second_peak) == ("hard_negative", 0.5)
    m[7, 12] = 0.4  # 0.4 < 0.45
    assert classify_peaks(m, (2.0, 2.0), cfg).flag == "normal"
    m[7, 12] = 0.9
    assert classify_peaks(m, (10.0, 10.0), cfg).flag == "normal"  # inside the 22-cell neighbourhood
    assert classify_peaks(m - 2.0, (2.0, 2.0), cfg).flag == "not_found"  # peak -1 < 0 (facts §10.2)


def test_memory_weights_and_update_schedule():
    frames, boxes = _scene(n=13)
    cfg = dataclasses.replace(FAST, memory_size=21)
    oc = OnlineClassifier(FixedBoxNet(), cfg)
    oc.init(frames[0], boxes[0])
    state = TrackState(center_xy=boxes[0][:2] + 20, size_wh=np.array([40.0, 40.0]), image_wh=(320, 240),
                       search_size=255, avg_chans=np.zeros(3))
    n_opt = oc.optimisations
    flags = []
    for f in range(1, 13):
        oc.score(frames[f], state)
        oc.update(frames[f], state, boxes[f], 1.0)
        flags.append(oc.last_flag)
        state.center_xy = boxes[f][:2] + 20
    assert all(fl == "normal" for fl in flags)  # the distractor is not a second peak
    # 20 init samples + 1 free slot: frame 1 fills it, frames 2.. replace the lightest each time.
    assert oc._count == 21 and oc.updates == 12
    # After frame 1: init weights (1/20)(1 - lr) then renormalised with the new sample at lr -> sum 1.
    np.testing.assert_allclose(float(oc._mem_w.sum()), 1.0, rtol=1e-6)
    # optimised on the 10th update only (train_skipping 10, facts §10.2)
    assert oc.optimisations == n_opt + 1


def test_update_schedule_counts_frames_from_the_first(monkeypatch):
    """Official schedule (TK update_classifier, facts §10.2): optimise on tracked frames 10, 20, ... and on
    every hard negative; a hard negative does not move the schedule, and a due frame whose update is skipped
    ("not_found") is not made up on the next one."""
    import ocean.online as online_mod

    frames, boxes = _scene(n=2)
    oc = OnlineClassifier(FixedBoxNet(), dataclasses.replace(FAST, init_iterations=1))
    oc.init(frames[0], boxes[0])
    state = TrackState(center_xy=boxes[0][:2] + 20, size_wh=np.array([40.0, 40.0]), image_wh=(320, 240),
                       search_size=255, avg_chans=np.zeros(3))
    flags = {3: "hard_negative", 10: "hard_negative", 20: "not_found"}  # tracked frame -> its flag
    frame = 0
    monkeypatch.setattr(online_mod, "classify_peaks", lambda *a, **k: online_mod.Localisation(
        flags.get(frame, "normal"), 1.0, 0.0))
    optimised = []
    for frame in range(1, 31):
        before = oc.optimisations
        oc.score(frames[1], state)
        oc.update(frames[1], state, boxes[1], 1.0)
        if oc.optimisations > before:
            optimised.append(frame)
    assert optimised == [3, 10, 30]


def test_grid_mapping_puts_online_peak_on_the_siamese_cell_of_the_target():
    frames, boxes = _scene()
    net = FixedBoxNet()
    oc = OnlineClassifier(net, FAST)
    oc.init(frames[0], boxes[0])
    target = boxes[0][:2] + 20
    center = target + np.array([-24.0, 16.0])  # crop centred away from the target
    size = np.array([40.0, 40.0])
    state = TrackState(center_xy=center, size_wh=size, image_wh=(320, 240), search_size=255,
                       avg_chans=np.zeros(3))
    grid_map = oc.score(frames[0], state)
    assert grid_map.shape == (25, 25)
    # Siamese cell of the target: offset (24, -16) image px * scale_z (127 / 80) = (38.1, -25.4) crop px
    # = (4.76, -3.18) cells of 8 px from the centre cell 12 -> (row 8.8, col 16.8).
    assert context_size(size) == pytest.approx(80.0)
    r, c = np.unravel_index(int(np.argmax(grid_map)), grid_map.shape)
    assert abs(r - 8.8) <= 1.5 and abs(c - 16.8) <= 1.5
    oc_resize = OnlineClassifier(net, dataclasses.replace(FAST, mapping="resize"))
    oc_resize.init(frames[0], boxes[0])
    assert oc_resize.score(frames[0], state).shape == (28, 28)  # raw map for the tracker's bicubic resize


def test_patch_geometry_round_trip_with_rotation_and_flip():
    t = np.radians(30)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ np.diag([-1.0, 1.0])
    g = PatchGeometry(np.array([50.0, 60.0]), 0.5, rot, 100)
    u = np.array([[10.0, 20.0], [49.5, 49.5]])
    m = g.warp_matrix()
    img_xy = u @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(g.to_patch(img_xy), u, atol=1e-9)
    np.testing.assert_allclose(img_xy[1], [50.0, 60.0])  # patch centre (P/2 - 1/2) -> centre


def test_layeronline_is_stride_16_pysot_layer3():
    layer = make_layeronline(512, 256, 6)
    assert layer[0].downsample[0].kernel_size == (3, 3) and layer[0].downsample[0].stride == (2, 2)
    assert layer[0].downsample[0].padding == (0, 0) and layer[0].conv2.padding == (0, 0)
    assert len(layer) == 6 and layer[-1].conv3.out_channels == 1024
    # 224 -> conv1 109 -> pool 55 -> layer2 27 -> layeronline 13 (facts §10.1), smoke width
    net = FixedBoxNet()
    oc = OnlineClassifier(net, dataclasses.replace(FAST, features="layeronline"))
    feats = oc.features.backbone_features(torch.zeros(2, 3, 224, 224))
    assert feats.shape == (2, 256, 13, 13)


def test_weights_round_trip_and_errors(tmp_path):
    frames, boxes = _scene()
    net = FixedBoxNet()
    cfg = dataclasses.replace(FAST, features="layeronline")
    a = OnlineClassifier(net, cfg)
    a.init(frames[0], boxes[0])  # fits the PCA projection
    path = tmp_path / "online.pt"
    torch.save({"features.features." + k: v for k, v in a.features.state_dict().items()}, path)
    b = OnlineClassifier(net, dataclasses.replace(cfg, weights=str(path), seed=99))
    assert b.features.projection_fitted  # loaded, not refitted at init
    for k, v in a.features.state_dict().items():
        torch.testing.assert_close(b.features.state_dict()[k], v)
    torch.save({"classifier.other": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no online weights"):
        OnlineClassifier(net, dataclasses.replace(cfg, weights=str(tmp_path / "bad.pt")))
    with pytest.raises(ValueError, match="shape"):  # a layeronline checkpoint into a 32-dim projection
        OnlineClassifier(net, dataclasses.replace(cfg, feature_dim=32, weights=str(path)))


def test_config_switch_builds_online_also_with_align():
    cfg = apply_overrides(paper(), ["tracker.online=true", "tracker.online_weight=0.7",
                                    "tracker.online_params.features=layer3"]).tracker
    trk = OceanTracker(FixedBoxNet(), cfg)
    assert isinstance(trk.online, OnlineClassifier) and trk.online_weight == 0.7
    assert trk.online.cfg.features == "layer3"
    assert OceanTracker(FixedBoxNet(), TrackerConfig()).online is None
    assert isinstance(build_online(FixedBoxNet(), OnlineConfig()), OnlineClassifier)
    both = OceanTracker(FixedBoxNet(), dataclasses.replace(cfg, use_align=True))  # facts §10.4: not official
    assert isinstance(both.online, OnlineClassifier) and both.cfg.use_align
    with pytest.raises(ValueError, match="backbone"):
        build_online(object(), OnlineConfig())


def test_online_fusion_follows_target_the_siamese_head_ignores():
    """The Siamese head here never moves (peak always at the crop centre): the offline tracker stays at
    the init box while the target walks 3 px/frame to the right; fused with the online map (omega' = 0.5,
    paper Sec. 4.2) the tracker follows it. IoU of a 40-px box displaced by 3 f px: (40 - 3f) / (40 + 3f)."""
    frames, boxes = _scene(n=10)
    net = FixedBoxNet(wh_crop=(40 * 127 / 80, 40 * 127 / 80))  # the box of a 40x40 target (s_z = 80)
    off = OceanTracker(net, TrackerConfig())
    on = OceanTracker(net, TrackerConfig(online=True, online_params=FAST))
    for trk in (off, on):
        trk.init(frames[0], boxes[0])
    for f in range(1, 10):
        b_off, _ = off.track(frames[f])
        b_on, _ = on.track(frames[f])
    assert abs(b_off[0] - 100.0) < 1.0  # never moved
    # followed the target 27 px away from the start, lagging at most 2 Siamese cells (2 x 8 x 80/127 px)
    # because the centre-biased head pulls back
    assert abs(b_on[0] - boxes[9][0]) < 2 * 8 * 80 / 127
    assert on.online.updates == 9


def test_init_samples_minimum_weight_keeps_first_frame_share():
    # 20 init samples (weight 1/20 each), lr 0.5, m = 0.25 (DiMP-50, pytracking init_samples_minimum_weight):
    # update 1: init 0.5, s1 0.5; update 2: init 0.25, s1 0.25, s2 0.5; update 3 (unclamped): init 0.125,
    # s1 0.125, s2 0.25, s3 0.5 -> init below 0.25: the others (0.875) are scaled to 0.75 and init set to 0.25.
    frames, boxes = _scene(n=4)
    oc = OnlineClassifier(FixedBoxNet(), dataclasses.replace(FAST, learning_rate=0.5,
                                                             init_samples_minimum_weight=0.25))
    oc.init(frames[0], boxes[0])
    state = TrackState(center_xy=boxes[0][:2] + 20, size_wh=np.array([40.0, 40.0]), image_wh=(320, 240),
                       search_size=255, avg_chans=np.zeros(3))
    for f in range(1, 4):
        oc.score(frames[f], state)
        oc.update(frames[f], state, boxes[f], 1.0)
        state.center_xy = boxes[f][:2] + 20
    w = oc._mem_w[:23].double().numpy()
    np.testing.assert_allclose(w[:20], 0.25 / 20, rtol=1e-5)
    np.testing.assert_allclose(w[20:], [0.125 * 0.75 / 0.875, 0.25 * 0.75 / 0.875, 0.5 * 0.75 / 0.875], rtol=1e-5)


def test_update_gates_skip_doubtful_frames():
    frames, boxes = _scene(n=2)
    cfg = dataclasses.replace(FAST, min_update_score=0.5, max_update_offset=1.0)
    oc = OnlineClassifier(FixedBoxNet(), cfg)
    oc.init(frames[0], boxes[0])
    target = boxes[1][:2] + 20  # (123, 110)
    state = TrackState(center_xy=target.copy(), size_wh=np.array([40.0, 40.0]), image_wh=(320, 240),
                       search_size=255, avg_chans=np.zeros(3))
    n0 = oc._count
    # Siamese score 0.3 < 0.5: the target is probably hidden -> no sample
    oc.score(frames[1], state)
    oc.update(frames[1], state, boxes[1], 0.3)
    assert (oc._count, oc.skipped, oc.last_flag) == (n0, {"low_score": 1}, "uncertain")
    # The Siamese branch alone would have chosen the distractor (centre (220, 140)): 101 px from the online
    # peak on the target = 2.5 target sizes > 1.0 -> the branches disagree, no sample
    state.siamese_xy = np.array([220.0, 140.0])
    oc.score(frames[1], state)
    oc.update(frames[1], state, boxes[1], 0.9)
    assert oc._count == n0 and oc.skipped == {"low_score": 1, "disagree": 1}
    # Both branches on the target -> the sample is added
    state.siamese_xy = target.copy()
    oc.score(frames[1], state)
    oc.update(frames[1], state, boxes[1], 0.9)
    assert oc._count == n0 + 1 and oc.updates == 1 and oc.last_flag == "normal"


def test_classify_peaks_distractor_displacement_rule():
    # DiMP-50 rule (distractor_threshold 0.8, displacement_scale 0.8): on a 14 x 14 map the threshold is
    # 0.8 * sqrt(14 * 14) / 2 = 5.6 cells from the previous position (the map centre 6.5, 6.5).
    cfg = dataclasses.replace(OnlineConfig(), distractor_threshold=0.8, displacement_scale=0.8)
    m = np.zeros((14, 14))
    m[7, 7] = 1.0
    m[7, 13] = 0.9  # 6.5 cells from the centre: only the first peak is near -> hard negative
    assert classify_peaks(m, (2.0, 2.0), cfg).flag == "hard_negative"
    m[7, 13], m[6, 10] = 0.0, 0.9  # 3.5 cells away: both near -> uncertain (no update)
    loc = classify_peaks(m, (2.0, 2.0), cfg)
    assert (loc.flag, loc.peak_rc, loc.second_rc) == ("uncertain", (7, 7), (6, 10))
    # the official value (100) never calls a second peak a distractor: 0.9 > 0.45 -> hard negative
    assert classify_peaks(m, (2.0, 2.0), OnlineConfig()).flag == "hard_negative"
