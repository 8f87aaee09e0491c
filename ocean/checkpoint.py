"""Checkpoints: one file (local path or URI) holding the model weights, the config and training state.

Layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"format": "ocean-ray/1", "config": <OceanConfig as a dict>, "model": <state_dict>,
     ...extra: "epoch", "optimizer", "scheduler", "rng", "metrics", ...}
"""

from __future__ import annotations

import torch

from ocean.config import OceanConfig, from_dict, to_dict
from ocean.model import OceanNet, build_model
from ocean.storage import load_torch, save_torch

FORMAT = "ocean-ray/1"


def save_checkpoint(uri: str, model: torch.nn.Module, cfg: OceanConfig, **extra) -> None:
    """Write ``model``'s weights (unwrapping DDP), ``cfg`` and ``extra`` entries to ``uri``."""
    net = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    save_torch({"format": FORMAT, "config": to_dict(cfg), "model": state, **extra}, uri)


def load_checkpoint(uri: str, map_location: str | torch.device = "cpu") -> dict:
    ckpt = load_torch(uri, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{uri} is not an ocean-ray checkpoint (no format {FORMAT!r})")
    return ckpt


def load_model(uri: str, map_location: str | torch.device = "cpu") -> tuple[OceanNet, OceanConfig]:
    """The network of a checkpoint, in eval mode on ``map_location``, and its config."""
    ckpt = load_checkpoint(uri, map_location)
    cfg = from_dict(ckpt["config"])
    # Pretrained backbone weights are already in the checkpoint: do not read the original file again.
    import dataclasses

    model_cfg = dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, pretrained=None))
    net = build_model(model_cfg)
    net.load_state_dict(ckpt["model"])
    return net.to(map_location).eval(), cfg
