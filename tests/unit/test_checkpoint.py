"""Checkpoint layout: a training run's epoch files and the state they carry."""

from __future__ import annotations

from pathlib import Path

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


def test_training_checkpoint_round_trip_and_run_layout(tmp_path):
    import torch

    from ocean.checkpoint import (
        checkpoint_uri,
        list_checkpoints,
        load_checkpoint,
        load_training_state,
        parameter_digest,
        remove_stale_temporaries,
        save_training_checkpoint,
    )
    from ocean.engine import build_optimizer
    from ocean.model import build_model

    cfg = smoke()
    torch.manual_seed(0)
    net = build_model(cfg.model)
    opt = build_optimizer(net, cfg.optim, 0)
    head = next(p for n, p in net.named_parameters() if n.startswith("cls_pred"))
    opt.state[head]["momentum_buffer"] = torch.full_like(head, 2.0)
    out = str(tmp_path / "run")
    uri = checkpoint_uri(out, 3)
    assert uri == str(tmp_path / "run" / "checkpoints" / "epoch-0003.pt")
    rng = torch.get_rng_state()
    save_training_checkpoint(uri, net, cfg, opt, epoch=3, trainable_layers=("layer3",), lr=0.01,
                             history=[{"epoch": 3}], metrics={"loss": 1.5}, seed=7)
    ckpt = load_checkpoint(uri)
    assert ckpt["epoch"] == 3 and ckpt["scheduler"] == {"epoch": 3, "lr": 0.01} and ckpt["seed"] == 7
    assert ckpt["trainable_layers"] == ["layer3"] and ckpt["metrics"] == {"loss": 1.5}
    assert [set(g) for g in ckpt["optimizer"]["param_groups"]] == [set(g) - {"params"} for g in opt.param_groups]

    torch.manual_seed(1)
    other = build_model(cfg.model)
    torch.rand(3)  # move the RNG: the resume puts the saved state back
    epoch, history, state = load_training_state(uri, other)
    assert (epoch, history) == (3, [{"epoch": 3}]) and list(state) == [n for n, p in net.named_parameters()
                                                                       if p is head]
    assert parameter_digest(other) == parameter_digest(net) and torch.equal(torch.get_rng_state(), rng)

    Path(out, "checkpoints", "epoch-0001.pt").write_bytes(Path(uri).read_bytes())
    Path(out, "checkpoints", "epoch-0004.pt.tmp-123").write_bytes(b"half")
    Path(out, "checkpoints", "notes.txt").write_text("not an epoch file")
    assert list_checkpoints(out) == [(1, checkpoint_uri(out, 1)), (3, uri)]
    assert remove_stale_temporaries(out) == 1 and not Path(out, "checkpoints", "epoch-0004.pt.tmp-123").exists()
    assert list_checkpoints(str(tmp_path / "nothing")) == []
