"""Checkpoints: one file (local path or URI) holding the model weights, the config and training state.

Layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"format": "ocean-ray/1", "config": <OceanConfig as a dict>, "model": <state_dict>,
     ...extra: "epoch", "optimizer", "scheduler", "rng", "metrics", ...}

A training run writes one file per completed epoch, ``OUT/checkpoints/epoch-NNNN.pt`` (:func:`checkpoint_uri`,
:func:`list_checkpoints`); its optimizer state is keyed by parameter name (:func:`optimizer_state_by_name`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ocean import storage
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


# --------------------------------------------------------------------------------------------------------
# A training run's checkpoint files and the state they carry (file names unchanged: epoch-NNNN.pt)

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = "epoch-{:04d}.pt"


def checkpoint_uri(out: str, completed_epochs: int) -> str:
    return storage.join(out, CHECKPOINT_DIR, CHECKPOINT_PATTERN.format(completed_epochs))


def list_checkpoints(out: str) -> list[tuple[int, str]]:
    """``[(completed_epochs, uri)]`` of the epoch files under ``OUT/checkpoints``, oldest first."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(storage.join(out, CHECKPOINT_DIR))
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []
    found = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.File and name.startswith("epoch-") and name.endswith(".pt"):
            try:
                found.append((int(name[len("epoch-"):-len(".pt")]), checkpoint_uri(out, int(name[6:-3]))))
            except ValueError:
                continue
    return sorted(found)


def remove_stale_temporaries(out: str) -> int:
    """Delete ``*.tmp-PID`` files a killed local write left under ``OUT/checkpoints``; returns how many."""
    if storage.is_uri(out) and not out.startswith("file://"):
        return 0  # S3 objects appear only when complete: nothing half-written is visible
    _, root = storage.resolve(storage.join(out, CHECKPOINT_DIR))
    n = 0
    for p in Path(root).glob("*.tmp-*") if Path(root).exists() else []:
        p.unlink(missing_ok=True)
        n += 1
    return n


def parameter_digest(model) -> str:
    """sha1 of every parameter's bytes (ranks with identical weights give identical digests)."""
    h = hashlib.sha1()
    net = getattr(model, "module", model)
    for name, p in sorted(net.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def optimizer_state_by_name(optimizer, model) -> dict[str, dict]:
    """Optimizer per-parameter state keyed by parameter name (survives a change of the trainable set)."""
    net = getattr(model, "module", model)
    names = {id(p): n for n, p in net.named_parameters()}
    return {names[id(p)]: dict(s) for p, s in optimizer.state.items() if id(p) in names}


def load_optimizer_state_by_name(optimizer, model, state: dict[str, dict]) -> int:
    """Put :func:`optimizer_state_by_name` entries back on the same-named parameters; returns how many."""
    net = getattr(model, "module", model)
    in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    n = 0
    for name, p in net.named_parameters():
        if name in state and id(p) in in_opt:
            optimizer.state[p] = {k: (v.to(p.device) if hasattr(v, "to") else v) for k, v in state[name].items()}
            n += 1
    return n
