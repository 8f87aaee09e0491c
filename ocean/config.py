"""Typed, frozen configuration for the Ocean network, its labels, losses, training data and tracker.

One tree of frozen dataclasses (:class:`OceanConfig`); defaults are the official code's numbers
(researchmm/TracKit, summarised in ``ocean_facts.md``), where the paper differs its value is an option and
the comment names both. Presets: :func:`paper` (full model, official recipe) and :func:`smoke` (a narrow
model, same 127 / 255 / stride-8 geometry, that trains on a CPU). Overrides are dotted ``key=value``
strings (``optim.base_lr=0.001``); unknown keys and unparsable values are rejected. Across Ray the config
travels as a plain dict (:func:`to_dict` / :func:`from_dict`). Run settings (paths, workers, GPU) belong
to the jobs.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# --------------------------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class BackboneConfig:
    # "pysot": the layout the official code uses (conv1 padding 0, 3x3 downsample convs, layer3 stride 1 /
    # dilation 2 with an undilated first block) -- facts §1.1. "torchvision": torchvision's ResNet-50 module
    # layout (1x1 downsamples, conv1 padding 3) with layer3 dilated the same way, so torchvision ImageNet
    # weights load into it -- facts §1.3, §16.
    layout: Literal["pysot", "torchvision"] = "pysot"
    width: int = 64  # planes of layer1; ResNet-50 uses 64 (layers: 64/128/256 planes, x4 expansion)
    blocks: tuple[int, int, int] = (3, 4, 6)  # ResNet-50 layer1..layer3 -- facts §1.1
    # Optional local path or URI of ImageNet weights; never downloaded. None = random init (facts §1.1 init).
    pretrained: str | None = None
    # Input convention of the weights: the official Siamese path feeds raw BGR 0-255 (facts §1.3);
    # torchvision weights expect RGB in [0, 1] normalised by the ImageNet mean / std.
    input_norm: Literal["raw_bgr", "imagenet_rgb"] = "raw_bgr"


@dataclass(frozen=True)
class HeadConfig:
    channels: int = 256  # neck output, encoders, towers -- facts §2 (1x1 1024->256 + BN)
    tower_convs: int = 4  # conv3x3+BN+ReLU blocks per tower -- facts §3
    # Template feature centre crop after the neck: drop 4 cells on each side, 15x15 -> 7x7 (indices 4..10)
    # -- facts §1.3 (16x16 -> 8x8 for the torchvision layout, which keeps the score-map sizes).
    template_crop_border: int = 4
    # Fusion of the three dilated correlations: "softmax" = learnable softmax-weighted sum (official,
    # facts §2), "sum" = plain sum (paper Eq. 9).
    fusion: Literal["softmax", "sum"] = "softmax"
    # "dilated3": the three parallel dilated encoders (1,1), (1,2), (2,1) of the feature combination (paper
    # Sec. 4.1, Eq. 9); "single": only the (1,1) encoder -- the ablation baseline without feature
    # combination (paper Table 4).
    combination: Literal["dilated3", "single"] = "dilated3"
    align: bool = True  # the object-aware alignment head p_o (paper Sec. 3.2, facts §4)
    # exp(adjust * conv + bias): adjust init 0.1, bias init 1.0 -- facts §3
    reg_adjust_init: float = 0.1
    reg_bias_init: float = 1.0
    cls_logit_scale: float = 0.1  # p_r logits multiplied by 0.1 -- facts §3
    # Guard (facts §16): the exponent of the regression is clamped to this value, so distances stay
    # below exp(10) ~ 22,000 px and every box that reaches deform_conv2d is finite.
    reg_exp_clamp: float = 10.0
    # Centre of the predicted box in feature cells for the alignment offsets: "grid" uses the grid origin
    # floor(S/2) (consistent with the cell <-> pixel mapping); "official" uses S/2 = 127.5, the TracKit
    # value, 1/16 cell off -- facts §4.1 step 2, §13.3 item 11.
    align_center: Literal["grid", "official"] = "grid"


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    exemplar_size: int = 127  # template crop side -- paper Sec. 5.1
    search_size: int = 255  # training search crop side -- paper Sec. 5.1
    stride: int = 8  # total stride of the backbone -- facts §1.2


# --------------------------------------------------------------------------------------------------------
# Labels and losses


@dataclass(frozen=True)
class LabelConfig:
    # Positive cells of the regular-region label p_r*: "l1_cells" = official (L1 distance <= radius_cells
    # around the shift-derived centre, facts §5.2); "euclid_px" = paper Eq. 7 (Euclidean distance <= R px);
    # "in_box" = every cell inside the box, the ablation baseline without centralized sampling (paper
    # Table 4, Sec. 3.4: FCOS-style identical samples for classification and regression).
    cls_rule: Literal["l1_cells", "euclid_px", "in_box"] = "l1_cells"
    cls_radius_cells: int = 2  # facts §5.2 (rPos = 2 -> 13-cell diamond)
    cls_radius_px: float = 16.0  # paper Sec. 5.1, R = 16 px
    # Centre of the positive region: "shift" = the official int(-shift/8) rule (facts §5.2), "box" = the
    # centre of the ground-truth box in the search crop.
    cls_center: Literal["shift", "box"] = "shift"
    # The object-aware IoU label (Eq. 5, facts §5.3) is detached by default; the official code keeps the
    # gradient (it flows into the regression through the label).
    iou_label_detach: bool = True


@dataclass(frozen=True)
class LossConfig:
    # Total L = w_reg L_reg + w_align L_o + w_cls L_r. Official HEAD: 1 / 1 / 1 (facts §6); the paper's
    # Eq. 8 uses lambda1 = 1 (L_o) and lambda2 = 1.2 (L_r): set cls=1.2 for the paper's weights.
    weight_reg: float = 1.0
    weight_align: float = 1.0
    weight_cls: float = 1.0
    cls_pos_weight: float = 0.5  # 0.5 * mean BCE(pos) + 0.5 * mean BCE(neg) -- facts §6


# --------------------------------------------------------------------------------------------------------
# Training data and augmentation


@dataclass(frozen=True)
class AugmentConfig:
    # Template / search crop windows: shift U(-1,1)*SH px, scale 1 + U(-1,1)*SC (x, y independent)
    # -- facts §7.5
    template_shift: float = 4.0
    template_scale: float = 0.05
    search_shift: float = 64.0
    search_scale: float = 0.18
    color_jitter: float = 0.05  # brightness / contrast / saturation / hue -- facts §7.5 (COLOR = 1)
    blur_prob: float = 0.0  # off in the official config -- facts §7.5
    flip_prob: float = 0.0
    gray_prob: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    context_amount: float = 0.5  # p = 0.5 (w + h) -- facts §7.1
    crop_size: int = 511  # the official crop511 reference frame -- facts §7.1
    jpeg_quality: int = 90  # stored crops; crop511 used 95 (facts §17: 36.1 KB at q95, 25.3 KB at q90)
    # Pairs per epoch per dataset (USE) -- facts §7.3 (TK HEAD); sum 600,000.
    pairs_per_epoch: dict[str, int] = field(
        default_factory=lambda: {
            "ytbb": 210_000, "vid": 110_000, "got10k": 160_000, "det": 60_000, "coco": 60_000, "lasot": 0,
        }
    )
    # RANGE in list positions -- facts §7.3; LaSOT is not in the official mix (paper Table 5 adds it with
    # GOT-10k's range).
    frame_range: dict[str, int] = field(
        default_factory=lambda: {"ytbb": 3, "vid": 100, "got10k": 100, "det": 100, "coco": 1, "lasot": 100}
    )
    # Prepared pairs = pool_factor x pairs_per_epoch, so each epoch draws a fresh subset; capped at the
    # distinct pairs a dataset can supply -- facts §7.6.
    pool_factor: int = 4


# --------------------------------------------------------------------------------------------------------
# Optimisation


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 50  # facts §8
    batch_size: int = 256  # global batch, 8 GPUs x 32 -- facts §8; fixed whatever the number of workers
    momentum: float = 0.9
    weight_decay: float = 1e-4  # official; the paper says 1e-3 -- facts §8
    warmup_epochs: int = 5
    warmup_lr_start: float = 1e-3  # 1e-3 * 5^(e/5) for e = 0..4 -- facts §8
    warmup_lr_factor: float = 5.0
    base_lr: float = 5e-3  # log-space decay 5e-3 -> 1e-5 over epochs 5..49 -- facts §8
    end_lr: float = 1e-5
    unfreeze_epoch: int = 10  # official; the paper unfreezes after the warm-up (5) -- facts §8
    unfreeze_layers: tuple[str, ...] = ("layer1", "layer2", "layer3")  # conv1 / bn1 stay frozen
    backbone_lr_mult: float = 0.1  # LAYERS_LR -- facts §8
    rebuild_optimizer_at_unfreeze: bool = True  # official rebuild resets momentum -- facts §8
    # "train": every BN in train mode all the time (the official behaviour, facts §1.3);
    # "frozen": frozen backbone BNs keep their running statistics (eval mode).
    bn_policy: Literal["train", "frozen"] = "train"
    max_loss: float = 1e4  # a step with a non-finite loss or loss > 1e4 is skipped -- facts §6
    max_bad_steps: int = 20  # this many consecutive skipped steps stop the run with an error
    grad_clip: float = 0.0  # 0 = off (official, facts §6)


# --------------------------------------------------------------------------------------------------------
# Tracker


@dataclass(frozen=True)
class OnlineConfig:
    """The online classifier of paper Sec. 4.2 (facts §10), built by :func:`ocean.online.build_online`."""

    # Features: "layer2" = conv1..layer2 of the Siamese backbone (stride 8, works untrained, default);
    # "layer3" = the Siamese (dilated, stride 8) layer3; "layeronline" = the official extra stride-16
    # layer3 branch (facts §10.1), random unless `weights` holds it.
    features: Literal["layer2", "layer3", "layeronline"] = "layer2"
    # Fixed 1x1 projection to feature_dim channels: "pca" = principal axes of the first frame's samples,
    # "random" = seeded Gaussian; replaced by `projection.*` when `weights` holds it. Official: a learned
    # 3x3 conv 1024 -> 512 (facts §10.1).
    projection: Literal["pca", "random"] = "pca"
    feature_dim: int = 64
    filter_size: int = 4  # 4x4 filter -- facts §10.1
    sample_size: int = 224  # patch side, 14 * 16 -- facts §10.1 (image_sample_size)
    search_area_scale: float = 4.0  # patch covers 4 sqrt(wh) image px -- facts §10.2
    # "grid": the online map is sampled at the Siamese cells' image positions; "resize": the official
    # bicubic resize of the whole map onto the Siamese grid (~20 % extent mismatch, facts §10.2).
    mapping: Literal["grid", "resize"] = "grid"
    # Init augmentations (facts §10.2): identity, 4 shifts of +-0.6 patch/2, flip, 5 blurs, the rotations
    # below and `dropout_samples` p = 0.2 dropout copies; expansion factor 2, random shift factor 1/3.
    rotations: tuple[float, ...] = (5.0, -5.0, 10.0, -10.0, 20.0, -20.0, 30.0, -30.0, 45.0, -45.0, 60.0, -60.0)
    dropout_samples: int = 7
    init_iterations: int = 25  # net_opt_iter -- facts §10.2
    update_iterations: int = 3  # GN iterations per update -- facts §10.2
    train_skipping: int = 10  # optimise every 10th frame -- facts §10.2
    memory_size: int = 250  # facts §10.2
    learning_rate: float = 0.0075  # sample weight of a new frame -- facts §10.2
    hard_negative_learning_rate: float = 0.02  # facts §10.2
    hard_negative_threshold: float = 0.45  # second peak / first peak -- facts §10.2
    target_not_found_threshold: float = 0.0  # no update below this peak -- facts §10.2
    target_neighborhood_scale: float = 2.2  # peak suppression window / target size -- facts §10.2
    # A second peak above distractor_threshold x peak is a distractor: "hard_negative" when only one of the
    # two peaks lies within displacement_scale x half the map of the previous position, else "uncertain"
    # (no update). Official ONLINE.yaml: 100, i.e. never (facts §10.2); DiMP-50: 0.8 (pytracking
    # parameter/dimp/dimp50.py).
    distractor_threshold: float = 100.0
    displacement_scale: float = 0.7  # see distractor_threshold; facts §10.2 (DiMP-50: 0.8)
    # First-frame samples keep at least this share of the memory weight and are never replaced (pytracking
    # init_samples_minimum_weight; 0 = off as in the official tracker; DiMP-50 uses 0.25).
    init_samples_minimum_weight: float = 0.0
    # No memory update when the Siamese p_cls of the chosen cell (before the window) is below this: the
    # target is probably hidden (0 = off, official: the score is not used).
    min_update_score: float = 0.0
    # No memory update when the online peak lies more than this x sqrt(w h) from the box the Siamese branch
    # alone (before the fusion) would choose: the branches disagree, so the frame's label is doubtful and
    # adding it lets the online branch drift with its own errors (DiMP's "uncertain" state, facts §10.2;
    # 0 = off, official).
    max_update_offset: float = 0.0
    # Fixed optimiser hyper-parameters (the learned DiMP values are not available, facts §10.3):
    # filter regularisation 0.1 and label sigma 1/4 target size (ATOM / pytracking defaults), target-mask
    # factor 3.0 (facts §10.1 init value).
    filter_reg: float = 0.1
    sigma_factor: float = 0.25
    mask_factor: float = 3.0
    weights: str | None = None  # optional state dict (path or URI) with layeronline.* / projection.*
    seed: int = 1234  # facts §10.2


@dataclass(frozen=True)
class TrackerConfig:
    # Defaults: the official OceanConfig defaults (facts §9.3) with the single size smoothing.
    penalty_k: float = 0.062
    window_influence: float = 0.38
    lr: float = 0.765
    small_sz: int = 255
    big_sz: int = 255
    # Weight of p_r in p_cls = ratio * p_r + (1 - ratio) * p_o (facts §4.3); omega = 1 - ratio = 0.07 on
    # VOT2018 (paper Sec. 5.1). Only used when use_align is True.
    ratio: float = 0.94
    use_align: bool = False  # the official code uses p_o on VOT only (facts §4.3)
    # "single": new_w = w + lr_eff (pw - w) (SOTS, default); "double": the TracKit lr^2 rule (facts §9.2).
    size_update: Literal["single", "double"] = "single"
    context_amount: float = 0.5  # facts §9.1
    small_object_area: float = 0.004  # target / image area below which big_sz is used -- facts §9.1
    min_size: float = 10.0  # clip w, h to [10, image size] -- facts §9.2 step 8
    online: bool = False  # build the online module of paper Sec. 4.2 ("+ online update", facts §10)
    # omega' of pscore = omega' online + (1 - omega') pscore -- paper Sec. 4.2, omega' = 0.5; facts §9.3
    # VOT2019ON uses 0.7.
    online_weight: float = 0.5
    online_params: OnlineConfig = field(default_factory=OnlineConfig)


# Per-benchmark tracker hyper-parameters -- facts §9.3 (TK experiments/test/*/Ocean.yaml). These were tuned
# with TracKit's double size smoothing, so the presets select size_update="double" to stay faithful.
TRACKER_PRESETS: dict[str, dict[str, Any]] = {
    "otb": dict(penalty_k=0.087, lr=0.408, window_influence=0.366, small_sz=271, big_sz=271,
                use_align=False, size_update="double"),
    "vot2018": dict(penalty_k=0.021, lr=0.730, window_influence=0.321, small_sz=255, big_sz=271,
                    ratio=0.93, use_align=True, size_update="double"),
    "vot2019": dict(penalty_k=0.062, lr=0.765, window_influence=0.380, small_sz=255, big_sz=271,
                    ratio=0.94, use_align=True, size_update="double"),
    "got10k": dict(penalty_k=0.022, lr=0.799, window_influence=0.118, small_sz=255, big_sz=255,
                   use_align=False, size_update="double"),
    "lasot": dict(penalty_k=0.11, lr=0.7, window_influence=0.20, small_sz=255, big_sz=255,
                  use_align=False, size_update="double"),
}


def tracker_config(benchmark: str | None = None, **overrides: Any) -> TrackerConfig:
    """Tracker hyper-parameters for a benchmark (``otb``, ``vot2018``, ...; None = defaults) plus overrides."""
    if benchmark is not None and benchmark not in TRACKER_PRESETS:
        raise KeyError(f"unknown benchmark {benchmark!r}; known: {sorted(TRACKER_PRESETS)}")
    return dataclasses.replace(layered_tracker_config(None, benchmark), **overrides)


# --------------------------------------------------------------------------------------------------------
# The whole tree


@dataclass(frozen=True)
class OceanConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    preset: str = "paper"  # the preset this configuration started from (paper / smoke)


def paper() -> OceanConfig:
    """The full Ocean model and the official training recipe (facts §0; paper variants are options)."""
    return OceanConfig()


def smoke() -> OceanConfig:
    """A small model (same 127 / 255 / stride-8 geometry) and a short recipe that trains on a CPU.

    Backbone width 8 (layer3 gives 128 channels instead of 1024), one block per stage, 32-channel heads
    with two tower convs: about 0.28 M parameters, sized to train on 2 CPU threads (its speed is in
    BENCHMARKS.md). The schedule keeps the official shape (warm-up,
    log decay, unfreeze) compressed to a few epochs; the backbone trains from epoch 1 because there are
    no pretrained weights to protect.
    """
    return OceanConfig(
        model=ModelConfig(
            backbone=BackboneConfig(width=8, blocks=(1, 1, 1)),
            head=HeadConfig(channels=32, tower_convs=2),
        ),
        data=DataConfig(
            pairs_per_epoch={"ytbb": 200, "vid": 200, "got10k": 400, "det": 100, "coco": 100, "lasot": 200},
            pool_factor=2,
        ),
        optim=OptimConfig(
            epochs=5, batch_size=16, warmup_epochs=1, warmup_lr_start=5e-3, base_lr=1e-2, end_lr=1e-3,
            unfreeze_epoch=1, backbone_lr_mult=1.0, weight_decay=1e-4,
        ),
        preset="smoke",
    )


PRESETS = {"paper": paper, "smoke": smoke}


def preset(name: str) -> OceanConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None


# --------------------------------------------------------------------------------------------------------
# Dotted overrides and dict round trip


def _parse_value(text: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _parse_value(text, non_none[0], key)
    if origin is Literal:
        if text not in args:
            raise ValueError(f"{key}: {text!r} is not one of {list(args)}")
        return text
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: {text!r} is not a boolean")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"{key}: {text!r} is not a valid {tp.__name__}") from None
    if origin in (tuple, dict, list):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if origin is tuple:  # comma list: layer1,layer2
                value = [v for v in text.split(",") if v]
            else:
                raise ValueError(f"{key}: {text!r} is not valid JSON for {tp}") from None
        if origin is tuple:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{key}: expected a list, got {text!r}")
            item_types = [a for a in args if a is not Ellipsis]
            if len(item_types) == 1 or (item_types and all(a is item_types[0] for a in item_types)):
                return tuple(_parse_value(str(v), item_types[0], key) for v in value)
            return tuple(value)
        if origin is dict and not isinstance(value, dict):
            raise ValueError(f"{key}: expected a JSON object, got {text!r}")
        return value
    raise ValueError(f"{key}: cannot parse a value of type {tp}")


def _with_value(cfg: Any, path: list[str], text: str, full_key: str) -> Any:
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    head = path[0]
    if head not in names:
        raise KeyError(f"unknown config key {full_key!r} ({head!r} is not one of {sorted(names)})")
    current = getattr(cfg, head)
    if len(path) == 1:
        if dataclasses.is_dataclass(current):
            raise KeyError(f"{full_key!r} is a section; set one of its fields")
        return dataclasses.replace(cfg, **{head: _parse_value(text, hints[head], full_key)})
    if isinstance(current, dict) and len(path) == 2:
        new = dict(current)
        if path[1] not in new:
            raise KeyError(f"unknown config key {full_key!r} (known: {sorted(new)})")
        new[path[1]] = type(new[path[1]])(_parse_value(text, type(new[path[1]]), full_key))
        return dataclasses.replace(cfg, **{head: new})
    if not dataclasses.is_dataclass(current):
        raise KeyError(f"unknown config key {full_key!r}")
    return dataclasses.replace(cfg, **{head: _with_value(current, path[1:], text, full_key)})


def apply_overrides(cfg: OceanConfig, overrides: list[str] | tuple[str, ...]) -> OceanConfig:
    """Apply ``["optim.base_lr=0.001", "model.head.align=false", ...]``; unknown keys raise KeyError."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        cfg = _with_value(cfg, key.strip().split("."), text.strip(), key.strip())
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-able plain dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _from_value(tp: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value)
    origin = typing.get_origin(tp)
    if origin is tuple and value is not None:
        return tuple(value)
    return value


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise KeyError(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
    return cls(**{k: _from_value(hints[k], v) for k, v in data.items()})


def from_dict(data: dict[str, Any]) -> OceanConfig:
    """Inverse of :func:`to_dict`; rejects unknown keys."""
    return _build(OceanConfig, data)


def tracker_file_overrides(path: str) -> list[str]:
    """A tracker hyper-parameter file as ``tracker.KEY=VALUE`` override strings.

    The file is JSON, either ``{"tracker": {...}}`` (what ``ocean tune-tracker`` saves as best_tracker.json)
    or the flat ``{...}``; nested sections (``online_params``) become dotted keys. Unknown keys and
    unreadable files raise ValueError naming the file; values are type-checked by :func:`apply_overrides`.
    """
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("tracker"), dict):
        data = data["tracker"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of tracker fields")
    names = {f.name for f in dataclasses.fields(TrackerConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{path}: unknown tracker keys {unknown}; known: {sorted(names)}")

    return [f"{k}={_override_text(v)}" for k, v in flatten(data, "tracker.").items()]


def _override_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else value if isinstance(value, str) else json.dumps(value)


def tracker_override_strings(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """Tracker overrides as ``tracker.KEY=VALUE`` strings, from ``KEY=VALUE`` / ``tracker.KEY=VALUE``
    strings, a dict of :class:`TrackerConfig` fields (nested ``online_params`` allowed) or ``{"tracker":
    {...}}`` (what ``ocean tune-tracker`` saves). ValueError for a string without ``=``."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        if isinstance(overrides.get("tracker"), Mapping):
            overrides = overrides["tracker"]
        items = [f"{k}={_override_text(v)}" for k, v in flatten(dict(overrides)).items()]
    else:
        items = [str(item).strip() for item in overrides]
    out = []
    for item in items:
        if "=" not in item:
            raise ValueError(f"tracker override {item!r} is not of the form key=value")
        out.append(item if item.startswith("tracker.") else f"tracker.{item}")
    return out


def layered_tracker_config(base: TrackerConfig | None = None, benchmark: str | None = None,
                           overrides: Mapping[str, Any] | Sequence[str] | None = None) -> TrackerConfig:
    """The tracker hyper-parameters every tracking command uses, in layers: ``base`` (a checkpoint's tracker
    section; default the defaults) -> ``benchmark``'s preset (:data:`TRACKER_PRESETS`, facts §9.3) ->
    ``overrides`` (see :func:`tracker_override_strings`; types checked). ValueError naming the key."""
    cfg = base if base is not None else TrackerConfig()
    if benchmark is not None:
        if benchmark not in TRACKER_PRESETS:
            raise ValueError(f"unknown benchmark {benchmark!r}; known: {sorted(TRACKER_PRESETS)}")
        cfg = dataclasses.replace(cfg, **TRACKER_PRESETS[benchmark])
    try:
        return apply_overrides(OceanConfig(tracker=cfg), tracker_override_strings(overrides)).tracker
    except KeyError as exc:
        raise ValueError(str(exc).strip("'\"")) from None


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim.base_lr": 0.005, ...}`` -- for MLflow params and the configuration reference."""
    out: dict[str, Any] = {}
    for k, v in to_dict(cfg).items() if dataclasses.is_dataclass(cfg) else cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
