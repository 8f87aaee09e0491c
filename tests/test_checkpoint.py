"""Checkpoint layout: the state a training checkpoint carries."""

from __future__ import annotations

from ocean.config import smoke


def test_optimizer_state_follows_parameter_names_across_unfreezing():
    import torch

    from ocean.checkpoint import load_optimizer_state_by_name, optimizer_state_by_name
    from ocean.engine import build_optimizer
    from ocean.model import build_model

    cfg = smoke()
    net = build_model(cfg.model)
    frozen = build_optimizer(net, cfg.optim, 0)  # backbone frozen at epoch 0 (smoke unfreezes at 1)
    head = next(p for n, p in net.named_parameters() if n.startswith("cls_pred"))
    frozen.state[head]["momentum_buffer"] = torch.ones_like(head)
    saved = optimizer_state_by_name(frozen, net)
    unfrozen = build_optimizer(net, cfg.optim, 1)
    assert len(unfrozen.param_groups) == len(frozen.param_groups) + 1  # the backbone group appears
    assert load_optimizer_state_by_name(unfrozen, net, saved) == len(saved) == 1
    assert torch.equal(unfrozen.state[head]["momentum_buffer"], torch.ones_like(head))
