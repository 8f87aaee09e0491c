"""The training recipe without Ray: schedule (facts §8), freezing, optimizer groups, the step guards."""

from __future__ import annotations

import math

import pytest
import torch

from ocean.config import OptimConfig, apply_overrides, paper, smoke
from ocean.engine import (
    BadStepGuard,
    StepResult,
    TrainingDiverged,
    apply_bn_policy,
    build_optimizer,
    lr_schedule,
    needs_new_optimizer,
    set_epoch_lr,
    set_trainable,
    train_step,
)
from ocean.model import build_model


def test_official_schedule_values():
    lrs = lr_schedule(OptimConfig())
    assert len(lrs) == 50
    # facts §8
    for e, v in enumerate([1.000e-3, 1.380e-3, 1.904e-3, 2.627e-3, 3.624e-3]):
        assert lrs[e] == pytest.approx(v, rel=1e-3)
    assert lrs[5] == pytest.approx(5e-3)
    assert lrs[6] == pytest.approx(4.341e-3, rel=1e-3)
    assert lrs[10] == pytest.approx(2.468e-3, rel=1e-3)
    assert lrs[20] == pytest.approx(6.01e-4, rel=2e-3)
    assert lrs[49] == pytest.approx(1e-5)
    assert lrs[7] / lrs[6] == pytest.approx(0.86828, rel=1e-4)


def test_unfreezing_changes_exactly_the_trainable_set():
    cfg = paper().optim
    net = build_model(smoke().model)
    set_trainable(net, cfg, 9)
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for n, p in net.named_parameters() if not n.startswith("backbone."))
    set_trainable(net, cfg, 10)
    trainable = {n.split(".")[1] for n, p in net.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable == {"layer1", "layer2", "layer3"}  # conv1 / bn1 stay frozen (facts §8)
    assert not net.backbone.conv1.weight.requires_grad and not net.backbone.bn1.weight.requires_grad
    assert needs_new_optimizer(cfg, 10) and not needs_new_optimizer(cfg, 9)
    paper_variant = apply_overrides(paper(), ["optim.unfreeze_epoch=5"]).optim
    set_trainable(net, paper_variant, 5)
    assert net.backbone.layer1[0].conv1.weight.requires_grad


def test_optimizer_groups_and_backbone_multiplier():
    cfg = paper().optim
    net = build_model(smoke().model)
    opt = build_optimizer(net, cfg, 3)
    assert [g["name"] for g in opt.param_groups] == ["neck", "head", "align"]
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_schedule(cfg)[3])
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and opt.param_groups[0]["momentum"] == 0.9
    opt = build_optimizer(net, cfg, 10)
    assert opt.param_groups[0]["name"] == "backbone"
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 2.468e-3, rel=1e-3)  # facts §8: e10 2.47e-4
    lr = set_epoch_lr(opt, cfg, 20)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr) and opt.param_groups[1]["lr"] == pytest.approx(lr)


def test_a_module_outside_every_part_is_refused_not_left_untrained():
    """The optimiser's groups come from ``OceanNet.parts()``: a layer added to the network but not to a part
    would keep its initial weights through the whole run without a word."""
    net = build_model(smoke().model)
    groups = build_optimizer(net, paper().optim, 10).param_groups
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in net.parameters())  # each once
    net.extra = torch.nn.Conv2d(3, 4, 1)
    with pytest.raises(ValueError, match=r"2 parameters belong to no part of OceanNet.parts\(\).*extra.weight, extra.bias"):
        build_optimizer(net, paper().optim, 10)


def test_bn_policy_frozen_keeps_frozen_backbone_bn_in_eval():
    net = build_model(smoke().model).train()
    apply_bn_policy(net, paper().optim, 0)
    assert net.backbone.bn1.training  # official: every BN in train mode (facts §1.3)
    frozen = apply_overrides(paper(), ["optim.bn_policy=frozen"]).optim
    apply_bn_policy(net, frozen, 0)
    assert not net.backbone.bn1.training and not net.backbone.layer3[0].bn1.training
    assert net.neck[1].training


def _batch(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "template": (torch.rand(n, 127, 127, 3, generator=g) * 255).to(torch.uint8),
        "search": (torch.rand(n, 255, 255, 3, generator=g) * 255).to(torch.uint8),
        "search_box": torch.tensor([[90.0, 100.0, 170.0, 160.0]]).repeat(n, 1),
        "search_shift": torch.zeros(n, 2),
    }


def test_train_step_updates_and_skips_bad_steps():
    cfg = smoke()
    net = build_model(cfg.model).train()
    opt = build_optimizer(net, cfg.optim, 0)
    before = net.neck[0].weight.detach().clone()
    res = train_step(net, _batch(), cfg, opt)
    assert not res.skipped and math.isfinite(res.losses["total"])
    assert not torch.equal(before, net.neck[0].weight)
    # an exploding loss is skipped and nothing changes
    tiny = apply_overrides(cfg, ["optim.max_loss=1e-6"])
    snapshot = net.neck[0].weight.detach().clone()
    res = train_step(net, _batch(), tiny, opt)
    assert res.skipped and "loss" in res.reason
    assert torch.equal(snapshot, net.neck[0].weight)
    # a rank that did not fail still skips when another rank did (DDP agreement)
    res = train_step(net, _batch(), cfg, opt, agree=lambda local: True)
    assert res.skipped and torch.equal(snapshot, net.neck[0].weight)


def test_bad_step_guard_names_the_step():
    guard = BadStepGuard(3)
    guard.update(StepResult(True, {}, "loss nan"), 1)
    guard.update(StepResult(False, {"total": 1.0}), 2)
    guard.update(StepResult(True, {}, "loss nan"), 3)
    guard.update(StepResult(True, {}, "loss nan"), 4)
    with pytest.raises(TrainingDiverged, match="step 5"):
        guard.update(StepResult(True, {}, "loss nan"), 5)
    assert guard.total == 4
