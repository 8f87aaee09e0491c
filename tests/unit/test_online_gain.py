"""Online fusion (paper Sec. 4.2, facts §10) improves success AUC where the Siamese branch alone is fooled.

The scenario: a look-alike distractor (same disc shape and size, another texture, drawn with the project's
synthetic scene code) crosses in front of the target. The Siamese branch is a *class-level* detector built
from the scene's ground truth: it fires on every visible disc alike, with the right box, so it cannot tell
target from distractor -- the failure mode of an offline Siamese tracker with a fixed template among
look-alikes. Everything else is the real tracker: Hann window, penalty, size smoothing, and the real
online classifier learning the target's texture from the rendered pixels (untrained smoke-width backbone,
PCA projection). Offline, the tracker follows the distractor once it has hidden the target; fused with
the online map it keeps the target. If the online branch did not discriminate the two textures, learned
the distractor, or were fused at the wrong cells, the AUC would stay at the offline value and the test
would fail.

(With a trained checkpoint the same comparison runs on held-out ``ocean synth`` sequences in
benchmarks/online_gain.py; tests cannot depend on a checkpoint.)
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from data_prep.synthetic_scene import background, shape_mask, texture
from ocean.backbone import ResNet50Backbone
from ocean.benchmarks.metrics import success_curve
from ocean.benchmarks.regions import iou_xywh
from ocean.config import OnlineConfig, TrackerConfig
from ocean.geometry import context_size, score_grid, score_size
from ocean.tracker import OceanTracker

# Small online patches / features to keep the test fast; the rest as the defaults (facts §10.2).
SMALL = OnlineConfig(rotations=(10.0, -10.0), init_iterations=15, sample_size=128, feature_dim=32)
WIDTH, HEIGHT, SIDE, FRAMES, SPEED = 240, 160, 32, 36, 4  # px, px, px, frames, px / frame


def _paste(img: np.ndarray, tex: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    m = cv2.resize(mask, (SIDE, SIDE))[..., None]
    t = cv2.resize(tex, (SIDE, SIDE)).astype(np.float32)
    roi = img[y:y + SIDE, x:x + SIDE]
    roi[:] = (m * t + (1 - m) * roi).astype(np.uint8)


def crossing_scene(seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Target disc from x = 40 moving right, look-alike disc from x = 168 moving left, both at y = 64
    (SPEED px / frame each): they overlap fully at frame 16 and the distractor is drawn in front.

    Returns frames, boxes ``(2, N, 4)`` xywh (target, distractor) and visible fractions ``(2, N)``.
    """
    rng = np.random.default_rng(seed)
    bg = background(rng, WIDTH, HEIGHT)
    mask = shape_mask("disc")
    target_tex, distractor_tex = texture(rng), texture(rng)
    frames, tb, db = [], [], []
    for f in range(FRAMES):
        img = bg.copy()
        tx, dx = 40 + SPEED * f, 168 - SPEED * f
        _paste(img, target_tex, mask, tx, 64)
        _paste(img, distractor_tex, mask, dx, 64)
        frames.append(img)
        tb.append([tx, 64, SIDE, SIDE])
        db.append([dx, 64, SIDE, SIDE])
    tb, db = np.array(tb, float), np.array(db, float)
    iou = iou_xywh(tb, db)
    covered = 2 * iou / (1 + iou)  # overlap / area for two equal boxes
    return frames, np.stack([tb, db]), np.stack([1 - covered, np.ones(FRAMES)])


class ClassLevelDetector(nn.Module):
    """Siamese stand-in: logit ``8 r - 4`` with ``r`` the largest Gaussian bump (sigma 0.2 sqrt(wh)) over
    the visible (>= 30 %) objects, and each cell's box that of its object. ``backbone`` (smoke width,
    random) feeds the online branch. It reads the frame's crop geometry from the bound tracker's state."""

    def __init__(self, boxes_xywh: np.ndarray, visible: np.ndarray) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = ResNet50Backbone(width=16, blocks=(1, 1, 1)).eval()
        self.boxes, self.visible = boxes_xywh, visible
        self.tracker: OceanTracker | None = None
        self.frame = 0

    def template(self, z: torch.Tensor) -> None:
        self.frame = 0

    def track(self, x: torch.Tensor) -> dict:
        self.frame += 1
        st = self.tracker.state
        size = x.shape[-1]
        n = score_size(size)
        gx, gy = score_grid(n, size)
        scale_z = 127 / context_size(st.size_wh)  # exemplar 127 -- paper Sec. 5.1
        ix = (gx - size // 2) / scale_z + st.center_xy[0]  # the cells' image positions
        iy = (gy - size // 2) / scale_z + st.center_xy[1]
        best, owner = np.zeros((n, n)), np.full((n, n), -1)
        for k, b in enumerate(self.boxes[:, self.frame]):
            if self.visible[k, self.frame] >= 0.3:
                sig = 0.2 * np.sqrt(b[2] * b[3])
                r = np.exp(-((ix - b[0] - b[2] / 2) ** 2 + (iy - b[1] - b[3] / 2) ** 2) / (2 * sig**2))
                owner = np.where(r > best, k, owner)
                best = np.maximum(best, r)
        w, h = st.size_wh * scale_z
        reg = np.broadcast_to(np.array([w / 2, h / 2, w / 2, h / 2])[:, None, None], (4, n, n)).copy()
        for k, b in enumerate(self.boxes[:, self.frame]):
            m = owner == k
            reg[:, m] = np.stack([ix - b[0], iy - b[1], b[0] + b[2] - ix, b[1] + b[3] - iy])[:, m] * scale_z
        reg = np.maximum(reg, 1.0)
        return {"cls": torch.from_numpy(8.0 * best - 4.0)[None, None].float(),
                "reg": torch.from_numpy(reg)[None].float(), "align": None}


def _run(cfg: TrackerConfig, seed: int = 0) -> tuple[float, np.ndarray, OceanTracker]:
    frames, boxes, visible = crossing_scene(seed)
    net = ClassLevelDetector(boxes, visible)
    trk = OceanTracker(net, cfg)
    net.tracker = trk
    trk.init(frames[0], boxes[0, 0])
    out = [boxes[0, 0]] + [trk.track(img)[0] for img in frames[1:]]
    out = np.array(out)
    return float(np.mean(success_curve(boxes[0], out))), iou_xywh(boxes[0], out), trk


def test_online_fusion_beats_offline_when_a_look_alike_crosses_the_target():
    auc_off, iou_off, _ = _run(TrackerConfig())
    auc_on, iou_on, trk = _run(TrackerConfig(online=True, online_params=SMALL))
    # Offline: on the target until the distractor hides it (>= 70 % covered from frame 14: the boxes
    # overlap 32 - 8 |16 - f| px), then on the distractor, which moves away at 8 px / frame relative to the
    # target: from frame ~20 on the IoU is 0.
    assert iou_off[:13].min() > 0.9
    assert iou_off[22:].max() == 0.0
    assert auc_off < 0.55
    # Online: the online map separates the textures, so the tracker is back on the target after the
    # crossing and stays there to the end.
    assert iou_on[22:].min() > 0.6
    assert auc_on > auc_off + 0.3
    assert trk.online.updates > 0

