"""Ocean's losses (paper Sec. 3.3, facts §6).

* ``L_reg``: -ln IoU of the predicted and true distances, mean over in-box cells (UnitBox / FCOS style); or,
  with ``loss.reg_loss=log_l1`` (a project option), the L1 distance of the log distances.
* ``L_r``: BCE on the regular-region logits, 0.5 x mean over positives + 0.5 x mean over negatives.
* ``L_o``: BCE with the soft IoU label on the object-aware logits, mean over all cells; a NaN ``L_o`` becomes
  ``0 x L_r`` as in the official code (``LossConfig.align_nan``).
* Total ``w_reg L_reg + w_align L_o + w_cls L_r`` (official 1 / 1 / 1; paper 1 / 1 / 1.2: ``LossConfig``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ocean.config import LabelConfig, LossConfig
from ocean.labels import cls_labels, iou_label, iou_of_distances, regression_targets


def iou_loss(pred_ltrb: torch.Tensor, target_ltrb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """-ln((I + 1) / (U + 1)) averaged over cells with weight > 0 (facts §6); 0 (with a graph) if none."""
    mask = weight > 0
    if not mask.any():
        return pred_ltrb.sum() * 0.0
    return -torch.log(iou_of_distances(pred_ltrb, target_ltrb)[mask]).mean()


def log_l1_loss(pred_ltrb: torch.Tensor, target_ltrb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum over l, t, r, b of |ln(1 + pred) - ln(1 + target)|, averaged over cells with weight > 0; 0 (with a
    graph) if none (``loss.reg_loss=log_l1``).

    A side predicted k times too long costs what one predicted k times too short does, and under uncertainty
    the loss is minimised by each side's median: no pull towards larger boxes, which -ln IoU has (its
    minimiser lies above the median: a short side loses intersection along the whole box, a long one only adds
    union; the unit tests show both). The 1 px added to every distance plays the part of the IoU loss's +1
    smoothing: a cell on the box's edge has a true distance near 0.
    """
    mask = weight > 0
    if not mask.any():
        return pred_ltrb.sum() * 0.0
    diff = torch.log1p(pred_ltrb.clamp(min=0)) - torch.log1p(target_ltrb.clamp(min=0))
    return diff.abs().sum(1)[mask].mean()


def weighted_bce(logits: torch.Tensor, label: torch.Tensor, pos_weight: float = 0.5,
                 hard_negatives: int = 0) -> torch.Tensor:
    """``pos_weight`` x mean BCE over positives + (1 - pos_weight) x mean BCE over negatives (facts §6).

    An empty side contributes 0 (the official code's 0-d index quirk with exactly one positive is not
    reproduced). ``hard_negatives`` = k > 0 (``LossConfig.cls_hard_negatives``): the negative term is half the
    mean over every negative and half the mean of each image's k highest negative BCE values.
    """
    per_image = F.binary_cross_entropy_with_logits(logits.reshape(logits.shape[0], -1),
                                                   label.reshape(label.shape[0], -1).to(logits.dtype),
                                                   reduction="none")
    flat_label = label.reshape(label.shape[0], -1)
    neg_image = flat_label <= 0.5
    per_cell, neg, pos = per_image.reshape(-1), neg_image.reshape(-1), flat_label.reshape(-1) > 0.5
    zero = logits.sum() * 0.0
    loss_pos = per_cell[pos].mean() if pos.any() else zero
    loss_neg = per_cell[neg].mean() if neg.any() else zero
    if hard_negatives > 0 and neg.any():
        k = min(int(hard_negatives), int(neg_image.sum(1).max()))
        hardest = per_image.masked_fill(~neg_image, float("-inf")).topk(k, dim=1).values
        loss_neg = 0.5 * loss_neg + 0.5 * hardest[torch.isfinite(hardest)].mean()
    return pos_weight * loss_pos + (1.0 - pos_weight) * loss_neg


def align_loss(logits: torch.Tensor, soft_label: torch.Tensor) -> torch.Tensor:
    """Plain BCE-with-logits against the soft IoU label, mean over all cells (facts §6)."""
    return F.binary_cross_entropy_with_logits(logits.reshape(soft_label.shape), soft_label)


def make_targets(label_cfg: LabelConfig, search_box_xyxy: torch.Tensor, search_shift_xy: torch.Tensor | None,
                 n: int, search_size: int, stride: int = 8, negative: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """All labels of a batch from the search boxes (and the requested shifts for the official rule).

    ``negative`` ``(B,)`` bool marks negative pairs (``AugmentConfig.negative_prob``): every cell of their
    regular-region label is 0 and their regression weight is 0, so they add negatives to L_r, nothing to L_reg
    and an all-zero IoU label to L_o (SOTS's negative target, facts §7.4)."""
    reg_t, reg_w = regression_targets(search_box_xyxy, n, search_size, stride)
    cls_t = cls_labels(label_cfg, n, search_size, stride, shift_xy=search_shift_xy, box_xyxy=search_box_xyxy)
    if negative is not None and bool(negative.any()):
        keep = (~negative.to(device=reg_w.device, dtype=torch.bool)).view(-1, 1, 1)
        reg_w = reg_w * keep.to(reg_w.dtype)
        cls_t = cls_t * keep.to(cls_t.dtype)
    return {"reg_target": reg_t, "reg_weight": reg_w, "cls_label": cls_t.to(search_box_xyxy.dtype)}


REG_LOSSES = {"iou": iou_loss, "log_l1": log_l1_loss}


def ocean_loss(outputs: dict[str, torch.Tensor | None], targets: dict[str, torch.Tensor],
               loss_cfg: LossConfig, label_cfg: LabelConfig) -> dict[str, torch.Tensor]:
    """Total and per-part losses for a batch; ``outputs`` from ``OceanNet.forward``, ``targets`` from
    :func:`make_targets`. Returns ``{"total", "reg", "cls", "align"}`` (align = 0 without the head)."""
    reg = outputs["reg"]
    l_reg = REG_LOSSES[loss_cfg.reg_loss](reg, targets["reg_target"], targets["reg_weight"])
    l_cls = weighted_bce(outputs["cls"], targets["cls_label"], loss_cfg.cls_pos_weight, loss_cfg.cls_hard_negatives)
    if outputs.get("align") is not None:
        soft = iou_label(reg, targets["reg_target"], targets["reg_weight"], detach=label_cfg.iou_label_detach)
        l_align = align_loss(outputs["align"], soft)
        if loss_cfg.align_nan == "zero" and torch.isnan(l_align):  # official: 0 x L_r -- facts §6
            l_align = 0.0 * l_cls
    else:
        l_align = l_reg.new_zeros(())
    total = loss_cfg.weight_reg * l_reg + loss_cfg.weight_cls * l_cls + loss_cfg.weight_align * l_align
    return {"total": total, "reg": l_reg, "cls": l_cls, "align": l_align}
