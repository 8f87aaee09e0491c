"""Official and ImageNet weight files -> this project's weights (the key map: checkpoint_keys.md).

:func:`convert` reads a weight file (``torch.load(weights_only=True)``, a local path or URI), unwraps it (a
plain ``state_dict``, or a dict holding ``state_dict`` or ``model``; a ``module.`` prefix is stripped) and
renames every entry by the rules of its source (:data:`SOURCES`). Every entry is mapped, dropped by a named
rule (e.g. an ImageNet file's ``fc.*``), or the conversion fails with :class:`ConvertError` listing the
unmapped entries; every weight of the target network must be covered and have its shape, or the error lists
the missing ones and the shape mismatches. :func:`write_conversion` writes the result: a tracker checkpoint
(:func:`ocean.checkpoint.save_checkpoint`) for the Ocean sources, a backbone ``state_dict`` (what
``model.backbone.pretrained`` loads) for the ImageNet ResNet-50 sources.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ocean import storage
from ocean.config import OceanConfig, paper

# source name -> what it reads (the CLI's --from choices); checkpoint_keys.md §1
SOURCES = {
    "trackit": "TracKit Ocean checkpoint (OceanV.pth / OceanO.pth: features.features.*, neck.*, connect_model.*, "
               "align_head.*)",
    "sots": "SOTS Ocean checkpoint (backbone.*, neck.*, head.*; no alignment branch)",
    "trackit-online": "TracKit online checkpoint (the TracKit keys plus features.features.layeronline.* and "
                      "classifier.*)",
    "pysot-resnet50": "pysot's ImageNet ResNet-50 (resnet50.model) -> the pysot-layout backbone",
    "torchvision-resnet50": "torchvision's ImageNet ResNet-50 (resnet50-*.pth) -> either backbone layout",
}
OCEAN_SOURCES = ("trackit", "sots", "trackit-online")
BACKBONE_SOURCES = ("pysot-resnet50", "torchvision-resnet50")

# Branch order of the feature combination: TracKit's matrix11 / matrix12 / matrix21 are our encoders 0, 1, 2
# (dilations (1,1), (2,1), (1,2)) -- facts §2; checkpoint_keys.md §2.
_MATRIX_INDEX = {"11": 0, "12": 1, "21": 2}
_SIDE = {"k": "template_convs", "s": "search_convs"}
_TOWER = {"bbox_tower": "reg_tower", "cls_tower": "cls_tower"}
_BACKBONE_PART = r"((?:conv1|bn1)\..+|layer[123]\..+)"


class ConvertError(ValueError):
    """A weight file that cannot be converted; the message names the file and every offending entry."""


@dataclass
class Conversion:
    """The result of :func:`convert`.

    Attributes:
        source: the ``--from`` name. kind: ``"tracker"`` (a full network) or ``"backbone"``.
        state: the converted weights under this project's names (the network's ``state_dict`` keys, or the
            backbone's for kind ``"backbone"``).
        config: the configuration the weights belong to (None for a backbone).
        mapped: ``{source key: project key}`` of every converted entry.
        dropped: ``{source key: reason}`` of entries a rule of the source drops (never silent: listed).
        not_converted: ``{project key: reason}`` of backbone weights whose shapes do not fit the chosen layout
            (left at the network's initialisation when loaded; torchvision weights into the pysot layout only).
        online_state: ``layeronline.*`` weights of the online branch (``trackit-online``), else None.
        sha256: of the input file's bytes.
    """

    source: str
    kind: str
    state: dict[str, torch.Tensor]
    config: OceanConfig | None
    mapped: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    not_converted: dict[str, str] = field(default_factory=dict)
    online_state: dict[str, torch.Tensor] | None = None
    sha256: str = ""


# ----------------------------------------------------------------------------------------------------------
# Reading and unwrapping


def read_state_dict(uri: str) -> tuple[dict[str, torch.Tensor], str]:
    """The ``state_dict`` in the file at ``uri`` and the sha256 of its bytes.

    Accepts what TracKit's and SOTS's loaders accept (checkpoint_keys.md §1): a plain state dict, or a dict
    holding it under ``state_dict`` (training checkpoints: ``epoch``, ``arch``, ``optimizer`` beside it) or
    ``model``; a leading ``module.`` (DataParallel) is stripped. Loaded with ``weights_only=True``.
    """
    data = storage.read_bytes_as(uri, ConvertError, uri)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for bad bytes / refused objects
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConvertError(f"{uri}: not a torch weight file that loads with weights_only=True ({first})") from None
    if isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"].startswith("ocean-ray/"):
        raise ConvertError(f"{uri}: already a project checkpoint ({obj['format']}); nothing to convert")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ConvertError(f"{uri}: holds no state_dict (a {type(obj).__name__}"
                           f"{' with keys ' + str(sorted(map(str, obj))[:6]) if isinstance(obj, Mapping) else ''})")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConvertError(f"{uri}: entries that are not tensors: {', '.join(bad[:8])}"
                           f"{f' (+{len(bad) - 8} more)' if len(bad) > 8 else ''}")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    return state, hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# The key rules (checkpoint_keys.md §2-§5)


def _head_key(rest: str) -> str | None:
    """A TracKit ``connect_model.*`` / SOTS ``head.*`` key (without that prefix) -> our key, None if unknown."""
    m = re.fullmatch(r"(cls|reg)_encode\.matrix(11|12|21)_([ks])\.([01])\.(.+)", rest)
    if m:
        branch, mat, side, idx, tail = m.groups()
        return f"{branch}_encode.{_SIDE[side]}.{_MATRIX_INDEX[mat]}.{idx}.{tail}"
    m = re.fullmatch(r"(cls|reg)_dw\.weight", rest)
    if m:
        return f"{m.group(1)}_encode.fusion_logits"
    m = re.fullmatch(r"(bbox_tower|cls_tower)\.(\d+)\.(.+)", rest)
    if m:  # nn.Sequential of [conv, BN, ReLU] x n: index 3i is conv i, 3i + 1 its BN
        tower, idx, tail = m.group(1), int(m.group(2)), m.group(3)
        if idx % 3 == 2:
            return None
        return f"{_TOWER[tower]}.{idx // 3}.{idx % 3}.{tail}"
    m = re.fullmatch(r"bbox_pred\.(weight|bias)", rest)
    if m:
        return f"reg_pred.conv.{m.group(1)}"
    m = re.fullmatch(r"cls_pred\.(weight|bias)", rest)
    if m:
        return f"cls_pred.{m.group(1)}"
    return {"adjust": "reg_pred.adjust", "bias": "reg_pred.bias"}.get(rest)


def _ocean_key(key: str, source: str) -> str | None:
    """Our network key for a TracKit / SOTS Ocean key; None if the rule set has none."""
    backbone_prefix = "backbone." if source == "sots" else "features.features."
    head_prefix = "head." if source == "sots" else "connect_model."
    if key.startswith(backbone_prefix):
        rest = key[len(backbone_prefix):]
        return f"backbone.{rest}" if re.fullmatch(_BACKBONE_PART, rest) else None
    m = re.fullmatch(r"neck\.downsample\.([01])\.(.+)", key)
    if m:
        return f"neck.{m.group(1)}.{m.group(2)}"
    if key.startswith(head_prefix):
        return _head_key(key[len(head_prefix):])
    if source != "sots":
        if key == "align_head.rpn_conv.conv.weight":
            return "align.weight"
        m = re.fullmatch(r"align_head\.rpn_cls\.(weight|bias)", key)
        if m:
            return f"align.cls.{m.group(1)}"
    return None


def _reshape_for(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TracKit's ``adjust`` is a 1-element vector, ours a 0-d scalar (checkpoint_keys.md §2)."""
    if key == "reg_pred.adjust" and value.numel() == 1 and target.dim() == 0:
        return value.reshape(())
    return value


# ----------------------------------------------------------------------------------------------------------
# Conversion


def _fail_listing(uri: str, what: str, items: list[str]) -> ConvertError:
    shown = ", ".join(items[:12]) + (f" (+{len(items) - 12} more)" if len(items) > 12 else "")
    return ConvertError(f"{uri}: {len(items)} {what}: {shown}")


def _check_cover(uri: str, state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                 what: str, *, allow_missing: Callable[[str], bool] = lambda _k: False) -> None:
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise _fail_listing(uri, f"entries whose shape does not fit the {what}", wrong)
    missing = [k for k in own if k not in state and not allow_missing(k)]
    if missing:
        raise _fail_listing(uri, f"weights of the {what} that the file does not hold", missing)


def ocean_config(*, align: bool, online_features: bool = False) -> OceanConfig:
    """The configuration of a converted official network: the ``paper`` preset (the official network,
    facts §0) with the alignment head as the file has it, and the official alignment centre."""
    cfg = paper()
    head = dataclasses.replace(cfg.model.head, align=align, align_center="official")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, head=head))
    if online_features:
        online = dataclasses.replace(cfg.tracker.online_params, features="layeronline")
        cfg = dataclasses.replace(cfg, tracker=dataclasses.replace(cfg.tracker, online_params=online))
    return cfg


def convert_ocean(state: dict[str, torch.Tensor], source: str, uri: str, *, align: bool | None = None
                  ) -> Conversion:
    """Rename an official Ocean ``state_dict`` (``source`` in :data:`OCEAN_SOURCES`) into our network's.

    ``align``: None = keep the alignment head when the file has one (``align_head.*``), False = drop it
    (``--no-align``; its entries are listed as dropped). ConvertError lists unmapped entries, weights the
    file lacks, and shape mismatches.
    """
    from ocean.model import build_model

    has_align = any(k.startswith("align_head.") for k in state)
    use_align = has_align if align is None else (align and has_align)
    if align and not has_align:
        raise ConvertError(f"{uri}: the file has no alignment head (align_head.*) to keep")
    conv = Conversion(source, "tracker", {}, None)
    online: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state.items():
        if source == "trackit-online" and key.startswith("features.features.layeronline."):
            online[key[len("features.features."):]] = value
            conv.mapped[key] = "online:" + key[len("features.features."):]
            continue
        if source == "trackit-online" and key.startswith("classifier."):
            conv.dropped[key] = ("DiMP classifier (feature conv, filter initializer, learned optimiser): the "
                                 "project's online module has no such parts (facts §10.3)")
            continue
        if key.startswith("align_head.") and not use_align:
            conv.dropped[key] = "alignment head dropped (--no-align)"
            continue
        new = _ocean_key(key, source)
        if new is None:
            unmapped.append(key)
            continue
        conv.mapped[key] = new
        conv.state[new] = value
    if unmapped:
        raise _fail_listing(uri, f"entries that no {source} rule maps (checkpoint_keys.md)", unmapped)
    cfg = ocean_config(align=use_align, online_features=bool(online))
    own = build_model(cfg.model).state_dict()
    conv.state = {k: _reshape_for(k, v, own[k]) if k in own else v for k, v in conv.state.items()}
    extra = [k for k in conv.state if k not in own]
    if extra:
        raise _fail_listing(uri, "mapped entries the network does not have", extra)
    _check_cover(uri, conv.state, own, "network", allow_missing=lambda k: k.endswith("num_batches_tracked"))
    for k in own:  # files saved before torch 0.4.1 have no BN step counters: start them at 0
        conv.state.setdefault(k, torch.zeros_like(own[k]))
    if source == "trackit-online":
        if not online:
            raise ConvertError(f"{uri}: no online branch (features.features.layeronline.*) in the file; "
                               f"convert it with --from trackit")
        _check_online(uri, online)
        conv.online_state = online
    conv.config = cfg
    return conv


def _check_online(uri: str, online: dict[str, torch.Tensor]) -> None:
    from ocean.online import make_layeronline

    # facts §10.1: 512 -> 1024, 6 blocks, stride 2; keys as ocean.online.OnlineFeatures holds them
    own = {f"layeronline.{k}": v for k, v in make_layeronline(512, 256, 6).state_dict().items()}
    extra = [k for k in online if k not in own]
    if extra:
        raise _fail_listing(uri, "layeronline entries the online branch does not have", extra)
    _check_cover(uri, online, own, "online branch (layeronline)",
                 allow_missing=lambda k: k.endswith("num_batches_tracked"))
    for k in own:
        online.setdefault(k, torch.zeros_like(own[k]))


def convert_backbone(state: dict[str, torch.Tensor], source: str, uri: str, layout: str | None = None
                     ) -> Conversion:
    """An ImageNet ResNet-50 file -> a backbone ``state_dict`` of ``layout`` (pysot: the official layout;
    torchvision: torchvision's). ``fc.*`` and ``layer4.*`` are dropped (the backbone ends at layer3, facts §1.1).

    pysot weights fit only the pysot layout. torchvision weights fit the torchvision layout exactly and the
    pysot layout except its two 3x3 downsample convs (``layer2.0`` / ``layer3.0``, 1x1 in torchvision): those
    are reported in ``not_converted`` and left out (facts §1.3).
    """
    from ocean.backbone import ResNet50Backbone

    layout = layout or ("pysot" if source == "pysot-resnet50" else "torchvision")
    if source == "pysot-resnet50" and layout != "pysot":
        raise ConvertError(f"{uri}: pysot's ResNet-50 has 3x3 downsample convs and fits only the pysot layout")
    own = ResNet50Backbone(layout=layout).state_dict()
    conv = Conversion(source, "backbone", {}, None)
    unmapped = []
    for key, value in state.items():
        for prefix in ("features.features.", "features.", "backbone."):  # pysot / TracKit wrappers
            if key.startswith(prefix):
                key_ = key[len(prefix):]
                break
        else:
            key_ = key
        if re.match(r"(fc|layer4)\.", key_):
            conv.dropped[key] = "not part of the backbone (it ends at layer3, facts §1.1)"
            continue
        if not re.fullmatch(_BACKBONE_PART, key_) or key_ not in own:
            unmapped.append(key)
            continue
        if tuple(value.shape) != tuple(own[key_].shape) and source == "torchvision-resnet50" and layout == "pysot" \
                and re.fullmatch(r"layer[23]\.0\.downsample\.0\.weight", key_):
            conv.not_converted[key_] = (f"shape {tuple(value.shape)} (1x1) does not fit the pysot layout's "
                                        f"{tuple(own[key_].shape)} (3x3): left at initialisation")
            continue
        conv.mapped[key] = key_
        conv.state[key_] = value
    if unmapped:
        raise _fail_listing(uri, f"entries that no {source} rule maps (checkpoint_keys.md §5)", unmapped)
    _check_cover(uri, conv.state, own, f"{layout} backbone", allow_missing=lambda k: k in conv.not_converted
                 or k.endswith("num_batches_tracked"))
    return conv


def convert(uri: str, source: str, *, align: bool | None = None, layout: str | None = None) -> Conversion:
    """Read ``uri`` and convert it as ``source`` (:data:`SOURCES`); ConvertError when it cannot be.

    ``align`` (Ocean sources): None = as the file has it, False = drop the alignment head. ``layout``
    (``torchvision-resnet50`` only): ``"torchvision"`` (default) or ``"pysot"``.
    """
    if source not in SOURCES:
        raise ConvertError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    if layout is not None and source != "torchvision-resnet50":
        raise ConvertError(f"--layout applies to --from torchvision-resnet50 only, not {source}")
    if align is not None and source not in OCEAN_SOURCES:
        raise ConvertError(f"--no-align applies to the Ocean sources ({', '.join(OCEAN_SOURCES)}), not {source}")
    state, digest = read_state_dict(uri)
    if source in OCEAN_SOURCES:
        conv = convert_ocean(state, source, uri, align=align)
    else:
        conv = convert_backbone(state, source, uri, layout)
    conv.sha256 = digest
    return conv


def online_weights_uri(out: str) -> str:
    """Where :func:`write_conversion` puts the online branch next to ``out``: ``NAME.online.pt``."""
    base = re.sub(r"\.(pt|pth|ckpt|tar)$", "", out)
    return f"{base}.online.pt"


def write_conversion(conv: Conversion, out: str, source_uri: str) -> list[str]:
    """Write ``conv`` to ``out`` (path or URI); returns the URIs written.

    Ocean sources: a project checkpoint (:func:`ocean.checkpoint.save_checkpoint`, loaded strictly here
    first) with a ``converted_from`` entry (source, file, sha256). ``trackit-online`` also writes the online
    branch to :func:`online_weights_uri` and points ``tracker.online_params.weights`` at it. Backbone
    sources: the backbone ``state_dict`` (for ``--set model.backbone.pretrained=OUT``).
    """
    from ocean.checkpoint import save_checkpoint
    from ocean.model import build_model

    provenance = {"source": conv.source, "file": storage.public_uri(source_uri), "sha256": conv.sha256}
    if conv.kind == "backbone":
        storage.save_torch(dict(conv.state), out)
        return [out]
    written = []
    cfg = conv.config
    if conv.online_state is not None:
        online_uri = online_weights_uri(out)
        storage.save_torch(dict(conv.online_state), online_uri)
        written.append(online_uri)
        online = dataclasses.replace(cfg.tracker.online_params, weights=online_uri)
        cfg = dataclasses.replace(cfg, tracker=dataclasses.replace(cfg.tracker, online_params=online))
    net = build_model(cfg.model)
    net.load_state_dict(conv.state, strict=True)
    save_checkpoint(out, net, cfg, converted_from=provenance)
    return [out, *written]
