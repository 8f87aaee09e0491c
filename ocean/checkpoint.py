"""Checkpoints: one file (local path or URI) holding the model weights, the config and training state.

A checkpoint is a plain dict loadable with ``torch.load(weights_only=True)`` (its layout:
:func:`save_checkpoint`), written whole so a reader never sees half a file. A training run writes one file per
completed epoch, ``OUT/checkpoints/epoch-NNNN.pt`` (:func:`checkpoint_uri`, :func:`list_checkpoints`); its
optimizer state is keyed by parameter name (:func:`optimizer_state_by_name`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ocean import storage
from ocean.config import OceanConfig, TrackerConfig, from_dict, to_dict
from ocean.model import OceanNet, build_model
from ocean.storage import load_torch, save_torch

FORMAT = "ocean-ray/1"


def save_checkpoint(uri: str, model: torch.nn.Module, cfg: OceanConfig, **extra) -> None:
    """Write ``model``'s weights (unwrapping DDP), ``cfg`` and ``extra`` entries to ``uri``.

    Layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

        {"format": "ocean-ray/1", "config": <OceanConfig as a dict>, "model": <state_dict>,
         ...extra: "epoch", "optimizer", "scheduler", "rng", "metrics", ...}
    """
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


# ----------------------------------------------------------------------------------------------------------
# Inspecting checkpoints to evaluate: names, epochs and links back to the training run

# Checkpoint entries written by training that link an evaluation back to it (``extra`` above).
LINK_KEYS = {"mlflow_run_id": "ocean.training_run_id", "manifest_sha256": "ocean.manifest_sha256"}


class CheckpointError(ValueError):
    """A checkpoint that is missing or cannot be loaded; the message names it."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What an evaluation needs about one checkpoint (read once, weights dropped).

    Attributes:
        uri: path or URI as given.
        name: folder name under OUT (unique within one evaluation).
        epoch: the ``epoch`` entry of the checkpoint, else a number parsed from the file name
            (``checkpoint_e12.pt``, ``epoch-3.pt``), else None.
        tracker: the checkpoint's ``tracker`` config section (the base of the tracker hyper-parameters).
        links: ``{"mlflow_run_id": ..., "manifest_sha256": ...}`` entries present in the checkpoint.
    """

    uri: str
    name: str
    epoch: int | None
    tracker: TrackerConfig
    links: dict[str, str] = field(default_factory=dict)


_EPOCH_IN_NAME = re.compile(r"(?:^|[_\-.])(?:e|ep|epoch)[_\-]?(\d+)$", re.IGNORECASE)


def _stem(uri: str) -> str:
    base = uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"\.(pt|pth|ckpt|tar)$", "", base) or "checkpoint"


def epoch_from_name(uri: str) -> int | None:
    """``.../checkpoint_e12.pt`` -> 12, ``epoch-3.pt`` -> 3; None when the name carries no epoch."""
    m = _EPOCH_IN_NAME.search(_stem(uri))
    return int(m.group(1)) if m else None


def checkpoint_names(uris: Sequence[str]) -> list[str]:
    """A unique, filesystem-safe folder name per checkpoint: the file stem, prefixed with its parent
    folder when two stems collide (``run1-last``, ``run2-last``), then numbered if still ambiguous."""

    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._") or "checkpoint"

    stems = [safe(_stem(u)) for u in uris]
    names = []
    for u, s in zip(uris, stems, strict=True):
        if stems.count(s) > 1:
            parts = u.split("?", 1)[0].rstrip("/").split("/")
            s = safe(f"{parts[-2]}-{s}") if len(parts) > 1 else s
        names.append(s)
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n}-{seen[n]}")
    return out


def inspect_checkpoint(uri: str, name: str) -> CheckpointInfo:
    """Read a checkpoint (on CPU) to check it and take its config, epoch and links; CheckpointError
    (``checkpoint URI: no such file or object`` / ``cannot load it (...)``) otherwise."""
    from ocean import storage

    try:
        if not storage.exists(uri):
            raise CheckpointError(f"checkpoint {uri}: no such file or object")
        ckpt = load_checkpoint(uri, "cpu")
        cfg = from_dict(ckpt["config"])
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {uri}: cannot load it ({exc})") from None
    epoch = ckpt.get("epoch")
    epoch = int(epoch) if isinstance(epoch, (int, np.integer)) else epoch_from_name(uri)
    links = {k: str(ckpt[k]) for k in LINK_KEYS if ckpt.get(k)}
    return CheckpointInfo(uri, name, epoch, cfg.tracker, links)
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


def save_training_checkpoint(uri: str, model, cfg: OceanConfig, optimizer, *, epoch: int, trainable_layers,
                             lr: float, history: list, metrics: dict, seed: int) -> None:
    """An epoch file of a training run (``epoch`` = completed epochs): weights and config, the optimizer's
    state by parameter name and its groups' settings, the trainable backbone layers, the schedule, torch's
    RNG state, the history of epoch metrics, this epoch's metrics and the seed."""
    save_checkpoint(uri, model, cfg, epoch=epoch, optimizer={
                        "state_by_name": optimizer_state_by_name(optimizer, model),
                        "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                         for g in optimizer.param_groups]},
                    trainable_layers=list(trainable_layers),
                    scheduler={"epoch": epoch, "lr": lr}, rng={"torch": torch.get_rng_state()},
                    history=history, metrics=metrics, seed=seed)


def load_training_state(uri: str, model, map_location: str | torch.device = "cpu") -> tuple[int, list, dict | None]:
    """Put an epoch file's weights into ``model`` and its RNG state into torch; returns ``(completed epochs,
    history, optimizer state by parameter name or None)``."""
    ckpt = load_checkpoint(uri, map_location=map_location)
    model.load_state_dict(ckpt["model"])
    if "rng" in ckpt:
        torch.set_rng_state(ckpt["rng"]["torch"])
    return int(ckpt["epoch"]), list(ckpt.get("history", [])), (ckpt.get("optimizer") or {}).get("state_by_name")
