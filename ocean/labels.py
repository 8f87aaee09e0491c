"""Training labels on the score-map grid (paper Sec. 3.3, facts §5), vectorised over the batch.

All boxes are ``x1, y1, x2, y2`` in search-crop pixels (0-based); the grid point of cell (i, j) is
``ocean.geometry.score_grid`` (facts §3). n is the score-map side (25 for a 255 search crop).
"""

from __future__ import annotations

import torch

from ocean.config import LabelConfig
from ocean.geometry import score_grid_torch


def regression_targets(box_xyxy: torch.Tensor, n: int, search_size: int, stride: int = 8
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances from each grid point to the box sides (paper Eq. 1, facts §5.1).

    Args:
        box_xyxy: (B, 4) ground-truth boxes in search-crop pixels.

    Returns:
        targets (B, 4, n, n): l* = x - x1, t* = y - y1, r* = x2 - x, b* = y2 - y (pixels);
        weight (B, n, n) float: 1 where the grid point is strictly inside the box (min > 0), else 0 --
        every in-box cell is a regression sample (paper Fig. 2a).
    """
    xs, ys = score_grid_torch(n, search_size, stride, device=box_xyxy.device, dtype=box_xyxy.dtype)
    x1, y1, x2, y2 = (box_xyxy[:, k].view(-1, 1, 1) for k in range(4))
    targets = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], dim=1)
    weight = (targets.min(dim=1).values > 0).to(box_xyxy.dtype)
    return targets, weight


def cls_labels(cfg: LabelConfig, n: int, search_size: int, stride: int = 8, *,
               shift_xy: torch.Tensor | None = None, box_xyxy: torch.Tensor | None = None) -> torch.Tensor:
    """The regular-region label p_r* (paper Eq. 7), (B, n, n) float in {0, 1}.

    Centre of the positive region (``cfg.cls_center``):
      * ``"shift"`` (official): cell ``n//2 + int(-shift / stride)`` per axis from the *requested* search
        shift of the augmentation, int() truncating toward zero (facts §5.2); needs ``shift_xy`` (B, 2).
      * ``"box"``: the centre of ``box_xyxy`` (B, 4).
    Positive cells (``cfg.cls_rule``):
      * ``"l1_cells"`` (official): |i - c_y| + |j - c_x| <= radius_cells (2 -> a 13-cell diamond) with the
        centre cell as above (facts §5.2).
      * ``"euclid_px"`` (paper): Euclidean distance between the grid point and the centre <= R px (16).
      * ``"in_box"`` (ablation baseline, paper Table 4): every grid point strictly inside ``box_xyxy``.
    """
    if cfg.cls_rule == "in_box":
        if box_xyxy is None:
            raise ValueError("cls_rule='in_box' needs box_xyxy")
        return regression_targets(box_xyxy, n, search_size, stride)[1].to(torch.float32)
    device = (shift_xy if shift_xy is not None else box_xyxy).device
    if cfg.cls_center == "shift":
        if shift_xy is None:
            raise ValueError("cls_center='shift' needs shift_xy")
        offset_cells = torch.trunc(-shift_xy.to(torch.float64) / stride)  # int() truncation -- facts §5.2
        center_cell = n // 2 + offset_cells  # (B, 2) x, y in cells
        center_px = stride * offset_cells + search_size // 2
    elif cfg.cls_center == "box":
        if box_xyxy is None:
            raise ValueError("cls_center='box' needs box_xyxy")
        center_px = torch.stack([(box_xyxy[:, 0] + box_xyxy[:, 2]) / 2,
                                 (box_xyxy[:, 1] + box_xyxy[:, 3]) / 2], dim=1).to(torch.float64)
        center_cell = torch.round((center_px - search_size // 2) / stride) + n // 2
    else:
        raise ValueError(f"unknown cls_center {cfg.cls_center!r}")
    if cfg.cls_rule == "l1_cells":
        idx = torch.arange(n, device=device, dtype=torch.float64)
        dist = (idx.view(1, 1, n) - center_cell[:, 0].view(-1, 1, 1)).abs() + \
               (idx.view(1, n, 1) - center_cell[:, 1].view(-1, 1, 1)).abs()
        positive = dist <= cfg.cls_radius_cells
    elif cfg.cls_rule == "euclid_px":
        xs, ys = score_grid_torch(n, search_size, stride, device=device, dtype=torch.float64)
        dist2 = (xs - center_px[:, 0].view(-1, 1, 1)) ** 2 + (ys - center_px[:, 1].view(-1, 1, 1)) ** 2
        positive = dist2 <= cfg.cls_radius_px ** 2
    else:
        raise ValueError(f"unknown cls_rule {cfg.cls_rule!r}")
    return positive.to(torch.float32)


def iou_of_distances(pred_ltrb: torch.Tensor, target_ltrb: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """IoU of two boxes given as distances from the same point, ``(I + 1) / (U + 1)`` (facts §5.3, §6).

    pred_ltrb, target_ltrb: (..., 4, ...) with the 4 distances on dim 1 (B, 4, n, n) -> (B, n, n).
    """
    pl, pt, pr, pb = pred_ltrb.unbind(1)
    tl, tt, tr, tb = target_ltrb.unbind(1)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = (tl + tr) * (tt + tb) + (pl + pr) * (pt + pb) - inter
    return (inter + smooth) / (union + smooth)


def iou_label(pred_ltrb: torch.Tensor, target_ltrb: torch.Tensor, weight: torch.Tensor,
              detach: bool = False) -> torch.Tensor:
    """The object-aware label p_o* (paper Eq. 5, facts §5.3): IoU of the predicted and true box at every
    in-box cell, 0 elsewhere, |.| clipped to [0, 1]. (B, n, n).

    ``detach=False`` (default, official) keeps the gradient, so L_o also trains the regression through the
    label; ``detach=True`` stops it (facts §5.3, ``LabelConfig.iou_label_detach``).
    """
    if detach:
        pred_ltrb = pred_ltrb.detach()
    return (iou_of_distances(pred_ltrb, target_ltrb) * weight).abs().clamp(0.0, 1.0)
