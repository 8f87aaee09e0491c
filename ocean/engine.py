"""The training recipe as plain functions: schedule, freezing, optimizer, one step (no Ray; facts §8).

``pipelines/train.py`` wires these into Ray Train; tests call them directly. Inputs are an ``OceanConfig``
(its ``OptimConfig``), a model and batches; nothing here starts processes or touches files or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ocean.config import OceanConfig, OptimConfig
from ocean.geometry import score_size
from ocean.losses import make_targets, ocean_loss
from ocean.model import NonFiniteOutputError, OceanNet


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps had a non-finite or exploding loss."""


def lr_schedule(cfg: OptimConfig) -> list[float]:
    """The learning rate of every epoch (the main parameter groups; the backbone gets x mult).

    Schedule (``OptimConfig``, facts §8): warm-up epochs ``e < W`` at ``start * factor^(e / W)`` (official
    1e-3 * 5^(e/5): 1.000e-3, 1.380e-3, 1.904e-3, 2.627e-3, 3.624e-3), then a log-space decay from ``base_lr``
    to ``end_lr`` over the remaining epochs (5e-3 -> 1e-5 over epochs 5..49).
    """
    warm = [cfg.warmup_lr_start * cfg.warmup_lr_factor ** (e / cfg.warmup_epochs) for e in range(cfg.warmup_epochs)]
    n = cfg.epochs - cfg.warmup_epochs
    decay = list(np.logspace(math.log10(cfg.base_lr), math.log10(cfg.end_lr), n)) if n > 1 else [cfg.base_lr] * n
    return [float(v) for v in warm + decay][: cfg.epochs]


def _net(model: nn.Module) -> OceanNet:
    return getattr(model, "module", model)


def backbone_trainable_layers(cfg: OptimConfig, epoch: int) -> tuple[str, ...]:
    """Names of the backbone children that train at ``epoch`` (empty while frozen)."""
    return tuple(cfg.unfreeze_layers) if epoch >= cfg.unfreeze_epoch else ()


def set_trainable(model: nn.Module, cfg: OptimConfig, epoch: int) -> None:
    """Freeze / unfreeze the backbone for ``epoch``; everything after the backbone always trains.

    The backbone is frozen until ``unfreeze_epoch`` (official 10, paper 5); from then on only
    ``unfreeze_layers`` train, at ``backbone_lr_mult`` x the schedule (:func:`build_optimizer`), and the
    optimizer is rebuilt (momentum reset) if configured (:func:`needs_new_optimizer`).
    """
    net = _net(model)
    layers = backbone_trainable_layers(cfg, epoch)
    for name, child in net.backbone.named_children():
        for p in child.parameters():
            p.requires_grad_(name in layers)
    for name, child in net.named_children():
        if name != "backbone":
            for p in child.parameters():
                p.requires_grad_(True)


def apply_bn_policy(model: nn.Module, cfg: OptimConfig, epoch: int) -> None:
    """After ``model.train()``: with ``bn_policy="frozen"``, frozen backbone parts keep eval-mode BN.

    The official code leaves every BN in train mode (facts §1.3), which is the default ``"train"``.
    """
    if cfg.bn_policy != "frozen":
        return
    net = _net(model)
    layers = backbone_trainable_layers(cfg, epoch)
    for name, child in net.backbone.named_children():
        if name not in layers:
            for m in child.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()


def build_optimizer(model: nn.Module, cfg: OptimConfig, epoch: int) -> torch.optim.SGD:
    """SGD with the official parameter groups (facts §8): backbone (trainable layers, x mult), neck,
    head (encoders + towers + predictors), align. Each group records its ``lr_mult``."""
    net = _net(model)
    parts = net.parts()
    covered = {id(p) for modules in parts.values() for m in modules for p in m.parameters()}
    outside = [n for n, p in net.named_parameters() if id(p) not in covered]
    if outside:  # a module added to the network but not to parts() would silently never train
        raise ValueError(f"{len(outside)} parameters belong to no part of {type(net).__name__}.parts(), from which "
                         f"the optimiser's groups are built: {', '.join(outside[:4])}{' ...' if len(outside) > 4 else ''}")
    set_trainable(model, cfg, epoch)
    groups = []
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    if backbone:
        groups.append({"name": "backbone", "params": backbone, "lr_mult": cfg.backbone_lr_mult})
    for name, modules in parts.items():
        if name == "backbone":
            continue
        params = [p for m in modules for p in m.parameters()]
        if params:
            groups.append({"name": name, "params": params, "lr_mult": 1.0})
    lr = lr_schedule(cfg)[min(epoch, cfg.epochs - 1)]
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def set_epoch_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epoch: int) -> float:
    lr = lr_schedule(cfg)[epoch]
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    return lr


def needs_new_optimizer(cfg: OptimConfig, epoch: int) -> bool:
    """True at the unfreeze epoch (the trainable set changes)."""
    return epoch == cfg.unfreeze_epoch and epoch > 0


def to_network_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 or (B, 3, H, W) float BGR 0-255 -> (B, 3, H, W) float32 on ``device``."""
    images = images.to(device, non_blocking=True)
    if images.dim() == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    return images.float().contiguous()


@dataclass
class StepResult:
    skipped: bool
    losses: dict[str, float]
    reason: str = ""


class BadStepGuard:
    """Counts consecutive skipped steps; ``max_bad_steps`` in a row stop training with a clear error."""

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps
        self.consecutive = 0
        self.total = 0

    def update(self, result: StepResult, step: int) -> None:
        if not result.skipped:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        if self.consecutive >= self.max_bad_steps:
            raise TrainingDiverged(
                f"{self.consecutive} consecutive training steps skipped, the last at step {step} "
                f"({result.reason}); lower the learning rate or check the data"
            )


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], cfg: OceanConfig,
               optimizer: torch.optim.Optimizer, *, device: torch.device | None = None,
               amp_dtype: torch.dtype | None = None, accumulate: int = 1, do_step: bool = True,
               agree: Callable[[bool], bool] | None = None) -> StepResult:
    """One optimisation step on a batch ``{"template", "search", "search_box" (B,4 xyxy), "search_shift" (B,2)}``
    and optionally ``"negative"`` (B,) bool (negative pairs, :func:`ocean.losses.make_targets`).

    Labels are computed here from the boxes (vectorised, facts §5). A non-finite loss, a loss above
    ``optim.max_loss`` or a :class:`NonFiniteOutputError` skips the step (facts §6 ``is_valid_number``) and
    is reported as ``skipped``; the caller counts them with :class:`BadStepGuard`. With ``accumulate > 1``
    the loss is divided by it and ``do_step`` says whether this micro-batch ends an accumulation.
    Under DDP, ``agree(local_skip) -> global_skip`` must make every rank take the same decision (an
    all-reduce), or the ranks that do call backward() would wait forever for the one that skipped.
    """
    net = _net(model)
    device = device or next(net.parameters()).device
    z = to_network_input(batch["template"], device)
    x = to_network_input(batch["search"], device)
    box = batch["search_box"].to(device=device, dtype=torch.float32)
    shift = batch.get("search_shift")
    shift = shift.to(device=device, dtype=torch.float32) if shift is not None else None
    s = x.shape[-1]
    targets = make_targets(cfg.labels, box, shift, score_size(s, cfg.model.exemplar_size, cfg.model.stride), s,
                           cfg.model.stride, negative=batch.get("negative"))
    reason, values, total = "", {}, None
    try:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(z, x)
        outputs = {k: (v.float() if v is not None else None) for k, v in outputs.items()}
        parts = ocean_loss(outputs, targets, cfg.loss, cfg.labels)
        total = parts["total"]
        values = {k: float(v.detach()) for k, v in parts.items()}
        if not math.isfinite(values["total"]) or values["total"] > cfg.optim.max_loss:
            reason = f"loss {values['total']:.4g}"
    except NonFiniteOutputError as exc:
        reason = f"non-finite network output: {exc}"
    skip = bool(reason)
    if agree is not None:
        skip = agree(skip)
        reason = reason or ("skipped on another rank" if skip else "")
    if skip:
        optimizer.zero_grad(set_to_none=True)
        return StepResult(True, values, reason)
    (total / accumulate).backward()
    if do_step:
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                           cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return StepResult(False, values)
