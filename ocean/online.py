"""The online update module of paper Sec. 4.2 (facts §10): a DiMP / ATOM-style discriminative classifier.

:class:`OnlineClassifier` is the tracker's :class:`ocean.tracker.OnlineModule`: ``init`` fits a filter to
augmented samples of the first frame, ``score`` gives a map for the tracker's current search crop, ``update``
adds the frame to a sample memory and re-optimises when due. It shares the Siamese net's backbone (not owned);
its random draws come from ``OnlineConfig.seed``. Its features, filter, init and per-frame rules, and where
they depart from the official code: :class:`OnlineClassifier`. Meta-training of the DiMP initializer /
optimiser is not implemented (facts §10.3); pretrained ``layeronline.*`` / ``projection.*`` weights can be loaded.

Coordinates: images are ``(H, W, 3)`` uint8 BGR, boxes ``xywh`` in 0-based image pixels; patch pixels are
0-based with pixel ``u`` covering ``[u, u + 1)``; score cells are indexed like the feature map they come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ocean.backbone import EXPANSION, Bottleneck
from ocean.config import OnlineConfig, TrackerConfig
from ocean.geometry import context_size, mean_color, score_grid, score_size

# Init augmentations -- facts §10.2 (ONLINE.yaml / pytracking dimp augmentation block).
RELATIVE_SHIFTS = ((0.6, 0.6), (-0.6, 0.6), (0.6, -0.6), (-0.6, -0.6))  # x patch/2
BLURS = ((2.0, 0.2), (0.2, 2.0), (3.0, 1.0), (1.0, 3.0), (2.0, 2.0))  # (sigma_x, sigma_y) patch px
DROPOUT_P = 0.2
RANDOM_SHIFT_FACTOR = 1.0 / 3.0
EXEMPLAR_SIZE = 127  # paper Sec. 5.1
STRIDE = 8  # facts §1.2


# ---------------------------------------------------------------------------------------------------------
# Features


def make_layeronline(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
    """The official extra layer3 branch (facts §10.1): pysot layout, stride 2, no dilation.

    The first block's 3x3 conv has stride 2 / padding 0 and the downsample is a 3x3 stride-2 conv with
    padding 0 (``Bottleneck(layout="pysot")`` gives padding ``2 - stride``). ``inplanes -> planes * 4``
    channels (512 -> 1024 for ResNet-50, 6 blocks). 224 -> layer2 27x27 -> 13x13.
    """
    out = planes * EXPANSION
    downsample = nn.Sequential(nn.Conv2d(inplanes, out, 3, stride=2, padding=0, bias=False), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride=2, downsample=downsample, layout="pysot")]
    layers += [Bottleneck(out, planes, layout="pysot") for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class OnlineFeatures(nn.Module):
    """Backbone stages of the Siamese net (not owned: not in this module's state dict), an optional
    ``layeronline`` branch and a 1x1 ``projection`` to ``feature_dim`` channels.

    ``forward(patch)``: ``(B, 3, P, P)`` float raw BGR 0..255 -> ``(B, D, Hf, Wf)`` projected features
    (before the L2 norm). The projection is fitted by :meth:`fit_projection` unless loaded.
    """

    def __init__(self, net: Any, cfg: OnlineConfig, generator: torch.Generator) -> None:
        super().__init__()
        backbone = getattr(net, "backbone", None)
        needed = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
        if backbone is None or not all(hasattr(backbone, n) for n in needed):
            raise ValueError("the online module needs net.backbone with conv1 .. layer3 (ocean.backbone)")
        object.__setattr__(self, "_net", net)  # shared, not registered: its weights stay the net's
        self.kind = cfg.features
        stem_out = backbone.layer2[-1].conv3.out_channels
        self.layeronline: nn.Module | None = None
        if cfg.features == "layer2":
            channels = stem_out
        elif cfg.features == "layer3":
            channels = backbone.layer3[-1].conv3.out_channels
        elif cfg.features == "layeronline":
            planes = backbone.layer3[-1].conv3.out_channels // EXPANSION
            self.layeronline = make_layeronline(stem_out, planes, len(backbone.layer3))
            for m in self.layeronline.modules():  # facts §1.1 init, from the seeded generator
                if isinstance(m, nn.Conv2d):
                    n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n), generator=generator)
            channels = planes * EXPANSION
        else:
            raise ValueError(f"unknown online features {cfg.features!r}")
        self.in_channels = channels
        self.projection = nn.Conv2d(channels, cfg.feature_dim, 1, bias=True)
        self.projection_fitted = False
        self.to(next(backbone.parameters()).device)
        self.eval()

    def backbone_features(self, patch: torch.Tensor) -> torch.Tensor:
        """``(B, 3, P, P)`` raw BGR -> ``(B, C, Hf, Wf)`` unprojected features."""
        net = self._net
        bb = net.backbone
        x = net._normalise(patch) if hasattr(net, "_normalise") else patch
        x = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
        x = bb.layer2(bb.layer1(x))
        if self.kind == "layer3":
            x = bb.layer3(x)
        elif self.layeronline is not None:
            x = self.layeronline(x)
        return x

    def fit_projection(self, feats: torch.Tensor, mode: str, generator: torch.Generator,
                       whiten: bool = True) -> None:
        """Fix the projection from ``(N, C, H, W)`` features: PCA (top-D principal axes, centred) or a
        seeded Gaussian ``N(0, 1/C)``."""
        c, d = self.in_channels, self.projection.out_channels
        if mode == "pca":
            x = feats.permute(0, 2, 3, 1).reshape(-1, c).double()
            mean = x.mean(0)
            cov = (x - mean).T @ (x - mean) / max(len(x) - 1, 1)
            vals, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
            vals, vecs = vals[-d:].flip(0), vecs[:, -d:].flip(1)  # leading axes first
            w = vecs.T  # (D, C)
            if whiten:  # unit variance per axis: a well-conditioned least-squares problem
                w = w / torch.sqrt(vals.clamp_min(0) + 1e-3 * vals[0].clamp_min(1e-12))[:, None]
            if w.shape[0] < d:  # fewer channels than D: pad with zero rows
                w = torch.cat([w, w.new_zeros(d - w.shape[0], c)])
            bias = -(w @ mean)
        elif mode == "random":
            w = torch.randn(d, c, generator=generator, dtype=torch.float64) / math.sqrt(c)
            bias = torch.zeros(d, dtype=torch.float64)
        else:
            raise ValueError(f"unknown projection {mode!r}")
        self.projection.weight.copy_(w.to(self.projection.weight).view(d, c, 1, 1))
        self.projection.bias.copy_(bias.to(self.projection.bias))
        self.projection_fitted = True

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone_features(patch))


def instance_l2_norm(x: torch.Tensor, filter_size: int) -> torch.Tensor:
    """Scale each sample of ``(B, D, H, W)`` so that ``mean(x^2) = 1 / (D k^2)`` -- facts §10.1."""
    d = x.shape[1]
    ms = x.pow(2).mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return x * torch.sqrt(1.0 / (d * filter_size * filter_size) / ms)


# ---------------------------------------------------------------------------------------------------------
# Geometry and labels


@dataclass(frozen=True)
class PatchGeometry:
    """Image <-> patch mapping of one sample: image ``x = center + k A (u - u0)``, ``u0 = P/2 - 1/2``.

    ``center_xy``: image point at the patch centre; ``scale``: image px per patch px; ``matrix``: 2x2 ``A``
    (rotation / flip).
    """

    center_xy: np.ndarray
    scale: float
    matrix: np.ndarray
    size: int

    def warp_matrix(self) -> np.ndarray:
        """2x3 patch -> image affine for ``cv2.warpAffine(..., WARP_INVERSE_MAP)``."""
        a = self.scale * self.matrix
        u0 = self.size / 2 - 0.5
        return np.hstack([a, (self.center_xy - a @ np.array([u0, u0]))[:, None]])

    def to_patch(self, xy: np.ndarray) -> np.ndarray:
        """Image points ``(..., 2)`` -> patch pixel coordinates."""
        u0 = self.size / 2 - 0.5
        inv = np.linalg.inv(self.matrix)
        return (np.asarray(xy, dtype=np.float64) - self.center_xy) @ inv.T / self.scale + u0


def warp_patch(image: np.ndarray, geom: PatchGeometry, pad_color: np.ndarray) -> np.ndarray:
    """``(P, P, 3)`` uint8 patch sampled bilinearly from ``image``, outside filled with ``pad_color``."""
    return cv2.warpAffine(image, geom.warp_matrix(), (geom.size, geom.size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(float(v) for v in pad_color))


def gaussian_map(shape: tuple[int, int], center_yx: tuple[float, float], sigma_yx: tuple[float, float],
                 device: torch.device) -> torch.Tensor:
    """``(H, W)`` float32 ``exp(-d^2 / 2 sigma^2)`` around ``center_yx`` (score-cell units)."""
    ys = torch.arange(shape[0], device=device, dtype=torch.float32)[:, None]
    xs = torch.arange(shape[1], device=device, dtype=torch.float32)[None, :]
    return torch.exp(-0.5 * (((ys - center_yx[0]) / sigma_yx[0]) ** 2 + ((xs - center_yx[1]) / sigma_yx[1]) ** 2))


# ---------------------------------------------------------------------------------------------------------
# The filter and its optimiser


def filter_scores(feats: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    """``(N, D, H, W)`` x ``(1, D, k, k)`` -> ``(N, 1, H', W')`` with padding ``k // 2`` -- facts §10.1."""
    return F.conv2d(feats, filt, padding=filt.shape[-1] // 2)


def steepest_descent_gn(filt: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
                        weights: torch.Tensor, reg: float, iterations: int) -> tuple[torch.Tensor, list[float]]:
    """DiMP's steepest-descent Gauss-Newton on the masked least-squares loss (:class:`OnlineClassifier`, Filter).

    Args:
        filt: ``(1, D, k, k)`` start filter. feats: ``(N, D, H, W)``. labels, masks: ``(N, 1, H', W')``.
        weights: ``(N,)`` sample weights (sum 1; zero rows are ignored). reg: lambda. iterations: steps.
    Returns the filter and the loss before each step plus the final loss (``iterations + 1`` values).
    """
    pad = filt.shape[-1] // 2
    w = weights.view(-1, 1, 1, 1)
    losses = []
    for it in range(iterations + 1):
        s = filter_scores(feats, filt)
        dmask = masks + (1.0 - masks) * (s > 0).to(s.dtype)  # d/ds of m s + (1 - m) relu(s)
        r = dmask * s - labels
        losses.append(float((w * r * r).sum() + reg * (filt * filt).sum()))
        if it == iterations:
            break
        grad = torch.nn.grad.conv2d_weight(feats, filt.shape, w * dmask * r, padding=pad) + reg * filt
        jg = dmask * filter_scores(feats, grad)
        denom = (w * jg * jg).sum() + reg * (grad * grad).sum()
        if not torch.isfinite(denom) or denom <= 0:
            break
        alpha = (grad * grad).sum() / denom
        filt = filt - alpha * grad
    return filt, losses


@dataclass
class Localisation:
    """DiMP's flag for a score map -- facts §10.2, pytracking ``DiMP.localize_advanced``:

    ``"normal"``, ``"hard_negative"`` (a second peak above ``hard_negative_threshold`` x peak, or a
    distractor the displacement test resolves), ``"uncertain"`` (a distractor above ``distractor_threshold``
    x peak that the displacement test cannot resolve) or ``"not_found"`` (peak below
    ``target_not_found_threshold``). ``peak_rc`` / ``second_rc``: their (row, col) score cells.
    """

    flag: str
    peak: float
    second_peak: float
    peak_rc: tuple[int, int] = (0, 0)
    second_rc: tuple[int, int] | None = None


def classify_peaks(scores: np.ndarray, target_cells_wh: tuple[float, float], cfg: OnlineConfig,
                   previous_rc: tuple[float, float] | None = None) -> Localisation:
    """First peak; second peak outside a ``target_neighborhood_scale`` x target-size box around it.

    ``previous_rc``: the previous target position in score cells (default: the map centre, where the
    patch is centred) for DiMP's distractor displacement test.
    """
    r, c = np.unravel_index(int(np.argmax(scores)), scores.shape)
    peak = float(scores[r, c])
    if not np.isfinite(peak) or peak < cfg.target_not_found_threshold:
        return Localisation("not_found", peak, float("nan"), (int(r), int(c)))
    hw = cfg.target_neighborhood_scale * target_cells_wh[0] / 2
    hh = cfg.target_neighborhood_scale * target_cells_wh[1] / 2
    rest = scores.copy()
    rest[max(0, int(round(r - hh))):int(round(r + hh)) + 1, max(0, int(round(c - hw))):int(round(c + hw)) + 1] = -np.inf
    if not np.isfinite(rest).any():
        return Localisation("normal", peak, float("-inf"), (int(r), int(c)))
    r2, c2 = np.unravel_index(int(np.argmax(rest)), rest.shape)
    second = float(rest[r2, c2])
    cells = ((int(r), int(c)), (int(r2), int(c2)))
    if second > cfg.distractor_threshold * peak:
        # DiMP: a near-equal second peak; trust the one that stays within displacement_scale x half the map
        # of the previous position, else the frame is uncertain.
        prev = np.array(previous_rc if previous_rc is not None else ((scores.shape[0] - 1) / 2,
                                                                     (scores.shape[1] - 1) / 2))
        d1 = float(np.hypot(*(np.array(cells[0]) - prev)))
        d2 = float(np.hypot(*(np.array(cells[1]) - prev)))
        thr = cfg.displacement_scale * math.sqrt(scores.shape[0] * scores.shape[1]) / 2
        flag = "hard_negative" if (d1 < thr) != (d2 < thr) else "uncertain"
        return Localisation(flag, peak, second, *cells)
    flag = "hard_negative" if second > cfg.hard_negative_threshold * peak and second > \
        cfg.target_not_found_threshold else "normal"
    return Localisation(flag, peak, second, *cells)


# ---------------------------------------------------------------------------------------------------------


class OnlineClassifier:
    """The online module (:class:`ocean.tracker.OnlineModule`): ``init`` / ``score`` / ``update``.

    What it is (facts §10.1, §10.2), and where it departs from the official code:

    * **Features** come from the Siamese backbone's own weights: conv1 .. layer2 (``features="layer2"``,
      stride 8, the default), optionally its dilated layer3 (``"layer3"``, stride 8), or the official extra
      branch ``layeronline`` (``"layeronline"``: a pysot-style ResNet layer3 with stride 2, no dilation, 3x3
      stride-2 downsample with padding 0, stride 16 overall, facts §10.1) that is random unless ``weights``
      holds it. A fixed 1x1 projection reduces them to ``feature_dim`` channels -- by default the principal
      axes of the first frame's augmented samples (PCA, as ECO's projection), so the features work with an
      untrained or ImageNet-only backbone; a learned projection is loaded from ``weights`` when given. Then an
      instance L2 norm with scale ``1 / (D k^2)`` (facts §10.1). The patch gets the Siamese net's own input
      convention (``net._normalise``); the official code feeds normalised RGB through weights trained on raw
      BGR (facts §13.3 item 8), which we do not reproduce.
    * **Filter**: ``k x k`` over the projected features (k = 4, facts §10.1), initialised by ``roi_align``
      pooling of the target box (torchvision, not PrRoIPool) scaled by a least-squares factor, then fitted by
      steepest-descent Gauss-Newton (DiMP) on the loss
      ``sum_j gamma_j || m (.) s_j + (1 - m) (.) relu(s_j) - y_j ||^2 + lambda ||f||^2`` with ``s_j = x_j * f``,
      a Gaussian label ``y`` centred on the target (sigma = 1/4 target size, ATOM) and a target mask ``m``
      (a 3x wider Gaussian): the background only has to score <= 0, as in DiMP. The DiMP hyper-parameters
      are fixed here (lambda 0.1, step = exact GN line search) because the meta-trained values are not
      available (facts §10.3).
    * **Init** (facts §10.2): identity, 4 shifts of +-0.6 patch/2, a flip, 5 blurs, rotations (default all 12)
      and 7 dropout (p 0.2) copies; each flipped, blurred and rotated sample with its own random shift of up
      to +-patch/6 (factor 1/3), the identity and the relative shifts with none. Patches are warped
      straight from the full image (``cv2.warpAffine``) so no expanded crop is needed. 25 GN iterations.
    * **Per frame**: the patch (``search_area_scale`` x sqrt(wh) image px, resampled to ``sample_size``) is
      centred where the Siamese crop is, with the *current* target size (the official scale never adapts,
      facts §10.2). The raw score map is returned either sampled at the Siamese cells' image positions
      (``mapping="grid"``) or as is, for the tracker's bicubic resize (``"resize"``, official, ~20 % extent
      mismatch). Update (facts §10.2): the frame's features (cached from ``score``) with a label on the
      tracker's final box enter the memory (cap 250) with weight 0.0075, or 0.02 on a hard negative (second
      peak > 0.45 x first peak outside 2.2 target sizes); 3 GN iterations every 10th frame and on hard
      negatives; nothing when the peak is below 0 ("not found").
    * **Optional update gates** (all off by default, the official behaviour): DiMP's distractor rule
      (``distractor_threshold``, a near-equal second peak -> "uncertain", no update), a first-frame share of
      the memory weight (``init_samples_minimum_weight``), no update when the Siamese score is low
      (``min_update_score``) or when the online peak is far from the Siamese-only choice
      (``max_update_offset``, ``TrackState.siamese_xy``); skipped frames are counted in ``skipped``. Their
      effect on success AUC: BENCHMARKS.md, online update.

    Meta-training of the DiMP initializer / optimiser is not implemented (facts §10.3: the official repo has
    no training script for it either); pretrained ``layeronline.*`` / ``projection.*`` weights can be loaded.

    Args:
        net: the Siamese network (its ``backbone`` is shared; device taken from its parameters).
        cfg: :class:`ocean.config.OnlineConfig`.
        exemplar_size, stride: of the Siamese net, to place its score cells in the image (grid mapping).

    Attributes after each call: ``last_scores`` (the raw ``(H', W')`` map), ``last_flag``,
    ``updates`` / ``optimisations`` counters, ``losses`` (the last optimisation's losses).
    """

    def __init__(self, net: Any, cfg: OnlineConfig, exemplar_size: int = EXEMPLAR_SIZE,
                 stride: int = STRIDE) -> None:
        if cfg.filter_size < 1 or cfg.feature_dim < 1 or cfg.sample_size < 32 or cfg.memory_size < 1:
            raise ValueError(f"invalid online config {cfg}")
        self.cfg = cfg
        self.exemplar_size = exemplar_size
        self.stride = stride
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self.features = OnlineFeatures(net, cfg, self._gen)
        self.device = next(net.backbone.parameters()).device
        if cfg.weights:
            self.load_weights(cfg.weights)
        self.filter: torch.Tensor | None = None
        self.last_scores: np.ndarray | None = None
        self.last_flag = "none"
        self.losses: list[float] = []
        self.updates = 0
        self.optimisations = 0
        self.skipped: dict[str, int] = {}  # frames without a memory update, by reason (see update)
        self._cache: tuple[torch.Tensor, PatchGeometry] | None = None

    # -- weights ------------------------------------------------------------------------------------------

    def load_weights(self, uri: str) -> dict[str, list[str]]:
        """Load ``layeronline.*`` / ``projection.*`` (prefixes ``module.``, ``features.features.``,
        ``online.`` stripped) from a state dict at ``uri`` (:func:`ocean.storage.load_torch`)."""
        from ocean.storage import load_torch

        state = load_torch(uri)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        own = self.features.state_dict()
        clean = {}
        for key, value in state.items():
            for p in ("module.", "features.features.", "online."):
                key = key[len(p):] if key.startswith(p) else key
            if key in own:
                if own[key].shape != value.shape:
                    raise ValueError(f"online weight {key!r}: shape {tuple(value.shape)}, expected "
                                     f"{tuple(own[key].shape)} (features={self.cfg.features!r}, "
                                     f"feature_dim={self.cfg.feature_dim})")
                clean[key] = value
        if not clean:
            raise ValueError(f"{uri}: no online weights (layeronline.* / projection.*) found")
        result = self.features.load_state_dict(clean, strict=False)
        if any(k.startswith("projection.") for k in clean):
            self.features.projection_fitted = True
        return {"missing": list(result.missing_keys), "loaded": sorted(clean)}

    # -- internals ----------------------------------------------------------------------------------------

    def _patch_geometry(self, center_xy: np.ndarray, size_wh: np.ndarray) -> PatchGeometry:
        side = self.cfg.search_area_scale * math.sqrt(max(float(size_wh[0] * size_wh[1]), 1.0))
        return PatchGeometry(np.asarray(center_xy, np.float64), side / self.cfg.sample_size, np.eye(2),
                             self.cfg.sample_size)

    def _to_tensor(self, patches: list[np.ndarray]) -> torch.Tensor:
        arr = np.ascontiguousarray(np.stack(patches).transpose(0, 3, 1, 2))
        return torch.from_numpy(arr).to(self.device).float()

    def _score_cell(self, patch_xy: np.ndarray, feat_hw: tuple[int, int]) -> np.ndarray:
        """Patch px (x, y) -> score-map (col, row): feature cell q is centred at ``(q + 1/2) P / Hf - 1/2``
        and score cell i at feature position ``i - k//2 + (k - 1)/2``."""
        k = self.cfg.filter_size
        p = self.cfg.sample_size
        hf, wf = feat_hw
        q = (np.asarray(patch_xy, np.float64) + 0.5) * np.array([wf / p, hf / p]) - 0.5
        return q + k // 2 - (k - 1) / 2

    def _label_and_mask(self, geom: PatchGeometry, box_xywh: np.ndarray, feat_hw: tuple[int, int],
                        out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        center = np.array([box_xywh[0] + box_xywh[2] / 2, box_xywh[1] + box_xywh[3] / 2])
        cell = self._score_cell(geom.to_patch(center), feat_hw)
        cells_per_px = feat_hw[1] / self.cfg.sample_size / geom.scale  # feature cells per image px
        sig = np.maximum(self.cfg.sigma_factor * np.asarray(box_xywh[2:4]) * cells_per_px, 0.25)
        label = gaussian_map(out_hw, (cell[1], cell[0]), (sig[1], sig[0]), self.device)
        mask = gaussian_map(out_hw, (cell[1], cell[0]), (sig[1] * self.cfg.mask_factor,
                                                        sig[0] * self.cfg.mask_factor), self.device)
        return label, mask

    def _features(self, patches: torch.Tensor) -> torch.Tensor:
        return instance_l2_norm(self.features(patches), self.cfg.filter_size)

    def _optimise(self, iterations: int) -> None:
        n = self._count
        self.filter, self.losses = steepest_descent_gn(
            self.filter, self._mem_x[:n], self._mem_y[:n], self._mem_m[:n], self._mem_w[:n],
            self.cfg.filter_reg, iterations)
        self.optimisations += 1

    def _add_sample(self, feat: torch.Tensor, label: torch.Tensor, mask: torch.Tensor, lr: float) -> None:
        """DiMP memory: old weights x (1 - lr), the new sample gets lr, replacing the lightest when full.

        With ``init_samples_minimum_weight`` m > 0 (pytracking ``update_sample_weights``) the first frame's
        samples are never replaced and keep at least m of the total weight between them.
        """
        m = self.cfg.init_samples_minimum_weight
        if self._count < self.cfg.memory_size:
            idx = self._count
            self._count += 1
        else:
            first = self._num_init if m > 0 else 0
            idx = first + int(torch.argmin(self._mem_w[first:self._count]))
        self._mem_w[: self._count] *= 1.0 - lr
        self._mem_w[idx] = lr
        self._mem_w[: self._count] /= self._mem_w[: self._count].sum()
        n0 = self._num_init
        if m > 0 and float(self._mem_w[:n0].sum()) < m:
            self._mem_w[n0:self._count] *= (1.0 - m) / self._mem_w[n0:self._count].sum().clamp_min(1e-12)
            self._mem_w[:n0] = m / n0
        self._mem_x[idx], self._mem_y[idx], self._mem_m[idx] = feat, label, mask

    def cell_to_image(self, cell_rc: tuple[float, float], geom: PatchGeometry, feat_hw: tuple[int, int]) -> np.ndarray:
        """Score cell (row, col) -> image (x, y): the inverse of :meth:`_score_cell` and ``geom.to_patch``."""
        k, p = self.cfg.filter_size, self.cfg.sample_size
        hf, wf = feat_hw
        q = np.array([cell_rc[1], cell_rc[0]], np.float64) - k // 2 + (k - 1) / 2
        u = (q + 0.5) * np.array([p / wf, p / hf]) - 0.5
        return geom.center_xy + geom.scale * geom.matrix @ (u - (p / 2 - 0.5))

    # -- OnlineModule -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def init(self, image_bgr_uint8: np.ndarray, box_xywh: np.ndarray) -> None:
        """Fit the filter to augmented samples of the first frame (facts §10.2)."""
        cfg = self.cfg
        box = np.asarray(box_xywh, np.float64).reshape(4)
        target = box[:2] + box[2:] / 2
        rng = np.random.default_rng(cfg.seed)
        pad = mean_color(image_bgr_uint8, "numpy")
        base = self._patch_geometry(target, box[2:])
        half = cfg.sample_size / 2

        def shifted() -> np.ndarray:
            """A new random shift of up to +-patch/6 (factor 1/3) for a flipped, blurred or rotated sample;
            the identity and the relative shifts get none -- facts §10.2."""
            return target + base.scale * (rng.random(2) - 0.5) * cfg.sample_size * RANDOM_SHIFT_FACTOR

        geoms: list[PatchGeometry] = [PatchGeometry(target, base.scale, np.eye(2), cfg.sample_size)]
        blurs: list[tuple[float, float] | None] = [None]
        for sx, sy in RELATIVE_SHIFTS:
            geoms.append(PatchGeometry(target + base.scale * np.array([sx, sy]) * half, base.scale, np.eye(2),
                                       cfg.sample_size))
            blurs.append(None)
        geoms.append(PatchGeometry(shifted(), base.scale, np.diag([-1.0, 1.0]), cfg.sample_size))
        blurs.append(None)
        for b in BLURS:
            geoms.append(PatchGeometry(shifted(), base.scale, np.eye(2), cfg.sample_size))
            blurs.append(b)
        for deg in cfg.rotations:
            t = math.radians(float(deg))
            rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
            geoms.append(PatchGeometry(shifted(), base.scale, rot, cfg.sample_size))
            blurs.append(None)
        patches = []
        for g, b in zip(geoms, blurs, strict=True):
            patch = warp_patch(image_bgr_uint8, g, pad)
            if b is not None:
                patch = cv2.GaussianBlur(patch, (0, 0), sigmaX=b[0], sigmaY=b[1])
            patches.append(patch)
        x = self._to_tensor(patches)
        raw = self.features.backbone_features(x)
        if not self.features.projection_fitted:
            self.features.fit_projection(raw, cfg.projection, self._gen)
        proj = self.features.projection(raw)
        if cfg.dropout_samples > 0:  # channel dropout copies of the identity sample -- facts §10.2
            keep = (torch.rand(cfg.dropout_samples, proj.shape[1], 1, 1, generator=self._gen) >= DROPOUT_P)
            drop = proj[:1] * keep.to(proj) / (1.0 - DROPOUT_P)
            proj = torch.cat([proj, drop])
            geoms += [geoms[0]] * cfg.dropout_samples
        feats = instance_l2_norm(proj, cfg.filter_size)
        n, d, hf, wf = feats.shape
        k = cfg.filter_size
        out_hw = (hf + 2 * (k // 2) - k + 1, wf + 2 * (k // 2) - k + 1)
        labels, masks, rois = [], [], []
        for g in geoms:
            lab, msk = self._label_and_mask(g, box, (hf, wf), out_hw)
            labels.append(lab)
            masks.append(msk)
            c = g.to_patch(target) + 0.5  # patch edge coordinates of the target centre
            wh = box[2:] / g.scale
            rois.append([c[0] - wh[0] / 2, c[1] - wh[1] / 2, c[0] + wh[0] / 2, c[1] + wh[1] / 2])
        y = torch.stack(labels)[:, None]
        m = torch.stack(masks)[:, None]
        # Memory (facts §10.2: cap 250), the init samples sharing weight 1.
        cap = max(cfg.memory_size, n)
        self._mem_x = feats.new_zeros((cap, d, hf, wf))
        self._mem_y = feats.new_zeros((cap, 1) + out_hw)
        self._mem_m = feats.new_zeros((cap, 1) + out_hw)
        self._mem_w = feats.new_zeros(cap)
        self._mem_x[:n], self._mem_y[:n], self._mem_m[:n] = feats, y, m
        self._mem_w[:n] = 1.0 / n
        self._count = n
        self._num_init = n
        self.skipped = {}
        # Filter init: roi_align of the target box (torchvision) averaged over samples, then the
        # least-squares scalar a = <s, y> / <s, s>.
        boxes = torch.tensor(rois, dtype=feats.dtype, device=feats.device)
        pooled = roi_align(feats, [b[None] for b in boxes], output_size=(k, k), spatial_scale=hf / cfg.sample_size,
                           sampling_ratio=2, aligned=True)
        filt = pooled.mean(0, keepdim=True)
        s = filter_scores(feats, filt)
        scale = (s * y).sum() / (s * s).sum().clamp_min(1e-12)
        self.filter, self.losses = steepest_descent_gn(filt * scale, feats, y, m, self._mem_w[:n],
                                                       cfg.filter_reg, cfg.init_iterations)
        self._frames_tracked = 0
        self._cache = None
        self.last_scores = None
        self.last_flag = "init"

    @torch.inference_mode()
    def raw_scores(self, image_bgr_uint8: np.ndarray, center_xy: np.ndarray,
                   size_wh: np.ndarray) -> tuple[np.ndarray, PatchGeometry]:
        """The filter's ``(H', W')`` response on the patch centred at ``center_xy`` (target size ``size_wh``)."""
        if self.filter is None:
            raise RuntimeError("call init() before score()")
        geom = self._patch_geometry(center_xy, size_wh)
        pad = mean_color(image_bgr_uint8, "numpy")
        feats = self._features(self._to_tensor([warp_patch(image_bgr_uint8, geom, pad)]))
        self._cache = (feats, geom)
        scores = filter_scores(feats, self.filter)[0, 0]
        self.last_scores = scores.double().cpu().numpy()
        return self.last_scores, geom

    @torch.inference_mode()
    def score(self, image_bgr_uint8: np.ndarray, state: Any) -> np.ndarray:
        """Online map for the tracker's current search crop (``state``: :class:`ocean.tracker.TrackState`).

        ``mapping="grid"``: ``(n, n)`` values at the Siamese score cells' image positions (bilinear, 0 outside
        the patch). ``"resize"``: the raw map (the tracker resizes it bicubically, facts §10.2).
        """
        raw, geom = self.raw_scores(image_bgr_uint8, state.center_xy, state.size_wh)
        if self.cfg.mapping == "resize":
            return raw
        S = state.search_size
        n = score_size(S, self.exemplar_size, self.stride)
        gx, gy = score_grid(n, S, self.stride)
        scale_z = self.exemplar_size / context_size(state.size_wh)
        img_xy = np.stack([gx - S // 2, gy - S // 2], -1) / scale_z + state.center_xy
        feat_hw = tuple(self._cache[0].shape[-2:])
        cell = self._score_cell(geom.to_patch(img_xy), feat_hw)  # (n, n, 2) col, row
        h, w = raw.shape
        norm = torch.from_numpy(np.stack([2 * cell[..., 0] / (w - 1) - 1, 2 * cell[..., 1] / (h - 1) - 1], -1))
        out = F.grid_sample(torch.from_numpy(raw)[None, None], norm[None], mode="bilinear",
                            padding_mode="zeros", align_corners=True)
        return out[0, 0].numpy()

    @torch.inference_mode()
    def update(self, image_bgr_uint8: np.ndarray, state: Any, box_xywh: np.ndarray, score: float) -> None:
        """Add this frame to the memory with a label on ``box_xywh`` and optimise when due (facts §10.2).

        ``score``: the Siamese ``p_cls`` of the chosen cell (before the window). No sample is added when the
        online map says ``"not_found"`` / ``"uncertain"`` (DiMP, facts §10.2) and, when enabled, when
        ``score < min_update_score`` or the online peak lies more than ``max_update_offset`` x sqrt(wh)
        from where the Siamese branch alone would have put the target (``state.siamese_xy``, set by the
        tracker; the box centre when absent) -- the two branches disagree, so the label is doubtful
        (``last_flag`` ``"uncertain"``, the reason counted in ``skipped``).
        """
        cfg = self.cfg
        if self._cache is None:  # score() not called for this frame
            self.raw_scores(image_bgr_uint8, state.center_xy, state.size_wh)
        feats, geom = self._cache
        self._cache = None
        box = np.asarray(box_xywh, np.float64).reshape(4)
        hf, wf = feats.shape[-2:]
        cells_per_px = wf / cfg.sample_size / geom.scale
        loc = classify_peaks(self.last_scores, (box[2] * cells_per_px, box[3] * cells_per_px), cfg)
        self.last_flag = loc.flag
        self._frames_tracked += 1
        reason = loc.flag if loc.flag in ("not_found", "uncertain") else None
        if reason is None and cfg.min_update_score > 0 and not score >= cfg.min_update_score:
            reason = "low_score"
        if reason is None and cfg.max_update_offset > 0:
            peak_xy = self.cell_to_image(loc.peak_rc, geom, (hf, wf))
            siamese_xy = getattr(state, "siamese_xy", None)
            ref_xy = box[:2] + box[2:] / 2 if siamese_xy is None else np.asarray(siamese_xy, np.float64)
            offset = np.hypot(*(peak_xy - ref_xy)) / math.sqrt(max(box[2] * box[3], 1.0))
            if offset > cfg.max_update_offset:
                reason = "disagree"
        if reason is not None:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            if reason not in ("not_found", "uncertain"):
                self.last_flag = "uncertain"
            return
        hard = loc.flag == "hard_negative"
        label, mask = self._label_and_mask(geom, box, (hf, wf), tuple(self._mem_y.shape[-2:]))
        self._add_sample(feats[0], label[None], mask[None],
                         cfg.hard_negative_learning_rate if hard else cfg.learning_rate)
        self.updates += 1
        # Every train_skipping-th tracked frame counted from the first (a frame due but skipped above is not
        # made up later, and a hard negative does not move the schedule), and on every hard negative: TK
        # update_classifier -- facts §10.2.
        if hard or self._frames_tracked % cfg.train_skipping == 0:
            self._optimise(cfg.update_iterations)


def build_online(net: Any, cfg: TrackerConfig | OnlineConfig) -> OnlineClassifier:
    """The online module for ``net`` from ``cfg.online_params`` (a :class:`TrackerConfig`) or an
    :class:`OnlineConfig`; exemplar size and stride come from the net (``net.cfg``, ``net.stride``)."""
    online_cfg = cfg.online_params if isinstance(cfg, TrackerConfig) else cfg
    net_cfg = getattr(net, "cfg", None)
    return OnlineClassifier(net, online_cfg, int(getattr(net_cfg, "exemplar_size", EXEMPLAR_SIZE)),
                            int(getattr(net, "stride", STRIDE)))
