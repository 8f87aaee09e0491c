"""Checkpoint inspection for evaluations (ocean.checkpoint): folder names, epochs, links, clear errors."""

from __future__ import annotations

import pytest
import torch

from ocean.checkpoint import (
    CheckpointError,
    checkpoint_names,
    epoch_from_name,
    inspect_checkpoint,
    save_checkpoint,
)
from ocean.config import smoke
from ocean.model import build_model


def test_checkpoint_names_are_unique_and_epochs_come_from_names():
    assert checkpoint_names(["/a/checkpoint_e3.pt", "/a/checkpoint_e10.pt"]) == [
        "checkpoint_e3",
        "checkpoint_e10",
    ]
    # same stem in two runs: prefixed with the folder
    assert checkpoint_names(
        ["/r/run1/last.pt", "/r/run2/last.pt", "s3://b/x/best.pth?endpoint_override=h:1"]
    ) == ["run1-last", "run2-last", "best"]
    assert checkpoint_names(["/a/x/m.pt", "/b/x/m.pt"]) == ["x-m-1", "x-m-2"]
    assert epoch_from_name("/a/checkpoint_e12.pt") == 12
    assert epoch_from_name("s3://b/run/epoch-3.pth") == 3
    assert epoch_from_name("/a/ep7.pt") == 7
    assert epoch_from_name("/a/final.pt") is None
    assert epoch_from_name("/a/model3.pt") is None



def test_inspect_checkpoint_reads_epoch_config_and_links(tmp_path):
    cfg = smoke()
    net = build_model(cfg.model)
    path = tmp_path / "run" / "checkpoint_e4.pt"
    save_checkpoint(str(path), net, cfg, epoch=9, mlflow_run_id="abc", manifest_sha256="")
    info = inspect_checkpoint(str(path), "run-ckpt")
    # the checkpoint's own epoch entry wins over the name; empty link entries are left out
    assert (info.uri, info.name, info.epoch) == (str(path), "run-ckpt", 9)
    assert info.tracker == cfg.tracker and info.links == {"mlflow_run_id": "abc"}
    unnumbered = tmp_path / "checkpoint_e4.pt"
    save_checkpoint(str(unnumbered), net, cfg)
    assert inspect_checkpoint(str(unnumbered), "x").epoch == 4  # no entry: from the file name


def test_inspect_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing.pt: no such file or object"):
        inspect_checkpoint(str(tmp_path / "missing.pt"), "m")
    garbage = tmp_path / "garbage.pt"
    torch.save({"weights": 1}, garbage)
    with pytest.raises(CheckpointError, match=r"garbage.pt: not an ocean-ray checkpoint"):
        inspect_checkpoint(str(garbage), "g")
    assert issubclass(CheckpointError, ValueError)
