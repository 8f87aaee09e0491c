"""Checkpoints: one file (local path or URI) holding the model weights, the config and training state.

A checkpoint is a plain dict loadable with ``torch.load(weights_only=True)`` (its layout:
:func:`save_checkpoint`), written whole so a reader never sees half a file. A training run writes one file per
completed epoch, ``OUT/checkpoints/epoch-NNNN.pt`` (:func:`checkpoint_uri`, :func:`list_checkpoints`); its
optimizer state is keyed by parameter name (:func:`optimizer_state_by_name`). A file that cannot be loaded
(missing, unreadable store, empty, truncated, not a torch file, another layout) raises :class:`CheckpointError`
naming it and the reason; a resume takes the newest epoch file that loads (:func:`newest_readable`).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ocean import storage
from ocean.config import OceanConfig, TrackerConfig, from_dict, to_dict
from ocean.model import OceanNet, build_model
from ocean.storage import save_torch

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


class CheckpointError(ValueError):
    """A checkpoint that is missing or cannot be loaded; the message names it and the reason."""


def load_checkpoint(uri: str, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict at ``uri`` (:func:`save_checkpoint`'s layout, checked).

    Raises:
        CheckpointError: ``checkpoint URI: REASON`` -- no such file or object, unreadable storage (access
            denied, endpoint unreachable), empty, truncated or damaged, not a torch file, or a layout other
            than :func:`save_checkpoint`'s (:func:`check_layout`).
    """
    data = storage.read_bytes_as(uri, CheckpointError, f"checkpoint {uri}")
    if not data:
        raise CheckpointError(f"checkpoint {uri}: empty file (0 bytes; a write that never finished?)")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad bytes
        raise CheckpointError(f"checkpoint {uri}: {_unloadable(data, exc)}") from None
    check_layout(ckpt, uri)
    return ckpt


def _unloadable(data: bytes, exc: BaseException) -> str:
    """Why ``torch.load`` refused ``data`` (torch.save writes a zip archive, which starts ``PK\\x03\\x04`` and
    ends with its central directory)."""
    if data[:4] == b"PK\x03\x04":
        first = re.split(r"(?<=\.)\s", (str(exc).strip().splitlines() or [type(exc).__name__])[0])[0][:160]
        return f"truncated or damaged ({len(data)} bytes of a torch zip archive that torch cannot read: {first})"
    if isinstance(exc, pickle.UnpicklingError) and data[:1] == b"\x80":  # a pickle of objects weights_only refuses
        return "holds Python objects other than tensors and plain values (refused by torch.load(weights_only=True))"
    return f"not a torch checkpoint ({len(data)} bytes that are neither a torch zip archive nor a pickle)"


def check_layout(ckpt, uri: str) -> None:
    """CheckpointError unless ``ckpt`` has :func:`save_checkpoint`'s layout: a dict with ``format`` =
    :data:`FORMAT`, a ``config`` dict and a ``model`` dict of tensors."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {uri}: not an ocean-ray checkpoint (holds a {type(ckpt).__name__}, "
                              f"not a dict)")
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {uri}: not an ocean-ray checkpoint (format {ckpt.get('format')!r}, "
                              f"expected {FORMAT!r}; keys {sorted(map(str, ckpt))[:6]})")
    for key, kind in (("config", dict), ("model", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"checkpoint {uri}: wrong layout (no {key!r} dict)")
    bad = [k for k, v in ckpt["model"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {uri}: wrong layout (model entries that are not tensors: {bad[:3]})")


def checkpoint_config(ckpt: dict, uri: str) -> OceanConfig:
    """The checkpoint's :class:`OceanConfig`; CheckpointError naming the file when it is not a valid config."""
    try:
        return from_dict(ckpt["config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {uri}: its config is not valid ({exc})") from None


def load_weights(net: torch.nn.Module, ckpt: dict, uri: str) -> None:
    """``net.load_state_dict(ckpt["model"])``; CheckpointError naming the file when the weights do not fit."""
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(f"checkpoint {uri}: its weights do not fit the network of its config "
                              f"({' '.join(lines[1:3])[:300] or lines[0][:300]})") from None


def load_model(uri: str, map_location: str | torch.device = "cpu") -> tuple[OceanNet, OceanConfig]:
    """The network of a checkpoint, in eval mode on ``map_location``, and its config; CheckpointError (naming
    the file and the reason) when it cannot be loaded."""
    ckpt = load_checkpoint(uri, map_location)
    cfg = checkpoint_config(ckpt, uri)
    # Pretrained backbone weights are already in the checkpoint: do not read the original file again.
    import dataclasses

    model_cfg = dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, pretrained=None))
    try:
        net = build_model(model_cfg)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {uri}: its config does not build a network ({exc})") from None
    load_weights(net, ckpt, uri)
    return net.to(map_location).eval(), cfg


# ----------------------------------------------------------------------------------------------------------
# Inspecting checkpoints to evaluate: names, epochs and links back to the training run

# Checkpoint entries written by training that link an evaluation back to it (``extra`` above).
LINK_KEYS = {"mlflow_run_id": "ocean.training_run_id", "manifest_sha256": "ocean.manifest_sha256"}


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
    ckpt = load_checkpoint(uri, "cpu")
    cfg = checkpoint_config(ckpt, uri)
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
    except FileNotFoundError:
        return []
    except OSError as exc:  # not "no checkpoints": a resume must not silently start over
        raise storage.StorageError(f"cannot list the checkpoints under {storage.public_uri(out)}: "
                                   f"{storage.describe_failure(exc)}") from None
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
    history, optimizer state by parameter name or None)``. CheckpointError (naming the file) when it cannot
    be loaded."""
    return _apply_training_state(load_training_checkpoint(uri, map_location), model, uri)


def load_training_checkpoint(uri: str, map_location: str | torch.device = "cpu") -> dict:
    """An epoch file (:func:`save_training_checkpoint`): :func:`load_checkpoint` plus an integer ``epoch``."""
    ckpt = load_checkpoint(uri, map_location)
    if not isinstance(ckpt.get("epoch"), (int, np.integer)) or int(ckpt["epoch"]) < 1:
        raise CheckpointError(f"checkpoint {uri}: not an epoch file of a training run (epoch {ckpt.get('epoch')!r})")
    return ckpt


def _apply_training_state(ckpt: dict, model, uri: str) -> tuple[int, list, dict | None]:
    load_weights(getattr(model, "module", model), ckpt, uri)
    if "rng" in ckpt:
        torch.set_rng_state(ckpt["rng"]["torch"])
    return int(ckpt["epoch"]), list(ckpt.get("history", [])), (ckpt.get("optimizer") or {}).get("state_by_name")


@dataclass(frozen=True)
class ResumePoint:
    """Where a training run continues: the newest readable epoch file under ``OUT/checkpoints``.

    Attributes:
        epoch: completed epochs (0: start from scratch); uri: that epoch file (None at 0).
        skipped: ``(uri, reason)`` of newer epoch files that could not be loaded, newest first.
    """

    epoch: int
    uri: str | None
    skipped: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[str]:
        """One warning line per skipped file, then where the run resumes (nothing for a fresh start)."""
        lines = [f"warning: skipping unreadable checkpoint {u}: {why}" for u, why in self.skipped]
        if self.uri is not None:
            lines.append(f"resuming after epoch {self.epoch} from {self.uri}")
        elif self.skipped:
            lines.append("no readable checkpoint left: training starts from epoch 0")
        return lines


def newest_readable(out: str, map_location: str | torch.device = "cpu") -> tuple[ResumePoint, dict | None]:
    """The newest epoch file under ``out`` that loads (:func:`load_training_checkpoint`), newer unreadable ones
    skipped (a truncated or damaged newest file must not block a resume: the epoch after the one loaded
    is trained again and its file rewritten). Returns ``(ResumePoint, its checkpoint dict or None)``."""
    skipped = []
    for _epoch, uri in reversed(list_checkpoints(out)):
        try:
            ckpt = load_training_checkpoint(uri, map_location)
        except CheckpointError as exc:
            skipped.append((uri, str(exc).removeprefix(f"checkpoint {uri}: ")))
            continue
        return ResumePoint(int(ckpt["epoch"]), uri, tuple(skipped)), ckpt
    return ResumePoint(0, None, tuple(skipped)), None


def resume_training(out: str, model, map_location: str | torch.device = "cpu"
                    ) -> tuple[ResumePoint, list, dict | None]:
    """:func:`newest_readable`, its weights put into ``model`` and its RNG state into torch; returns
    ``(ResumePoint, history, optimizer state by parameter name or None)``."""
    point, ckpt = newest_readable(out, map_location)
    if ckpt is None:
        return point, [], None
    _, history, opt_state = _apply_training_state(ckpt, model, point.uri)
    return point, history, opt_state
