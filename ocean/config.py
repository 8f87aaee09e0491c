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
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# --------------------------------------------------------------------------------------------------------
# Checking: every section validates its values when it is built (constructor, dataclasses.replace,
# from_dict, apply_overrides) and when it is unpickled (a Ray payload that carries a config).


class ConfigError(ValueError):
    """A configuration key or value that is not allowed. ``key``: the dotted key (``"optim.epochs"``; empty when
    the input as a whole is at fault), ``reason``: what is wrong, ``source``: the file it came from, if any.
    ``str()`` is one line: ``[SOURCE: ]KEY: REASON``."""

    def __init__(self, key: str, reason: str, source: str | None = None):
        self.key, self.reason, self.source = key, reason, source
        text = f"{key}: {reason}" if key else reason
        super().__init__(f"{source}: {text}" if source else text)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self):  # picklable, so that it crosses from a Ray worker to the driver intact
        return type(self), (self.key, self.reason, self.source)

    def under(self, prefix: str) -> ConfigError:
        """The same error one section further out (key ``prefix.key``)."""
        return type(self)(f"{prefix}.{self.key}" if self.key else prefix, self.reason, self.source)

    def from_source(self, source: str) -> ConfigError:
        return type(self)(self.key, self.reason, source)


class UnknownKeyError(ConfigError, KeyError):
    """A key the configuration does not have (also a KeyError, as unknown keys always were)."""


@dataclass(frozen=True)
class Limit:
    """The allowed numbers of a field (of each item of a tuple field, of each value of a dict field):
    ``lo`` / ``hi`` bounds, open (excluded) when ``lo_open`` / ``hi_open``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def allows(self, x: float) -> bool:
        return not ((self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo))
                    or (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi)))

    def text(self) -> str:
        def num(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else str(v)

        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {num(self.hi)}"
        return ""


POSITIVE = Limit(lo=0, lo_open=True)  # > 0 (counts: >= 1)
NON_NEGATIVE = Limit(lo=0)
UNIT = Limit(0, 1)  # probabilities and convex weights: [0, 1]
BELOW_ONE = Limit(0, 1, hi_open=True)  # [0, 1)


class _Bad(Exception):
    """A value that does not fit its field (turned into a ConfigError naming the key)."""


class _Checked:
    """Base of every configuration section: values are type-, choice- and range-checked (and normalised:
    lists become tuples, integers in float fields floats) on construction and on unpickling."""

    def __post_init__(self) -> None:
        _check_section(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _check_section(self)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _spec(cls: type, name: str) -> tuple[Any, Limit | None, tuple[str, ...] | None]:
    """``(type, limit, names)`` of field ``name`` of section ``cls`` (names: allowed tuple items / dict keys)."""
    return _hints(cls)[name], _LIMITS.get(cls.__name__, {}).get(name), _NAMES.get(cls.__name__, {}).get(name)


def describe(tp: Any, limit: Limit | None = None, names: tuple[str, ...] | None = None) -> str:
    """What a field of type ``tp`` accepts, in words (``"a positive integer"``, ``"a number in [0, 1]"``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    rng = limit.text() if limit is not None else ""
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a, limit, names) for a in args if a is not type(None)) + " or null"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if tp is bool:
        return "true or false"
    if tp is int:
        if limit == POSITIVE or (limit is not None and limit.lo == 1 and limit.hi is None and not limit.lo_open):
            return "a positive integer"
        return f"an integer {rng}".rstrip()
    if tp is float:
        return f"a finite number {rng}".rstrip()
    if tp is str:
        return f"one of {', '.join(names)}" if names else "a non-empty string"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list, each item {describe(args[0], limit, names)}"
        return f"a list of {len(args)} items, each {describe(args[0], limit, names)}"
    if origin is dict:
        keys = f" ({', '.join(names)})" if names else ""
        return f"a mapping of names{keys} to {describe(args[1], limit)}"
    if dataclasses.is_dataclass(tp):
        return "a section (a mapping of its keys)"
    return str(tp)


def _fit(tp: Any, value: Any, limit: Limit | None, names: tuple[str, ...] | None) -> Any:
    """``value`` normalised for a field of type ``tp``; :class:`_Bad` (the reason) when it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return _fit(inner, value, limit, names)
        except _Bad:
            raise _Bad(describe(tp, limit, names)) from None
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Bad(describe(tp))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Bad(describe(tp))
    if tp is int:
        if (isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy integers too
                and (limit is None or limit.allows(value))):
            return int(value)
        raise _Bad(describe(tp, limit))
    if tp is float:
        if (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                and (limit is None or limit.allows(value))):
            return float(value)
        raise _Bad(describe(tp, limit))
    if tp is str:
        if isinstance(value, str) and value and (names is None or value in names):
            return value
        raise _Bad(describe(tp, limit, names))
    if origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, (list, tuple)) or (not variadic and len(value) != len(args)):
            raise _Bad(describe(tp, limit, names))
        item_types = [args[0]] * len(value) if variadic else list(args)
        try:
            return tuple(_fit(t, v, limit, names) for t, v in zip(item_types, value, strict=True))
        except _Bad:
            raise _Bad(describe(tp, limit, names)) from None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        raise _Bad(describe(tp))
    raise _Bad(f"cannot check a value of type {tp}")


def _fit_dict(name: str, tp: Any, value: Any, limit: Limit | None, names: tuple[str, ...] | None) -> dict:
    """A dict field's value checked key by key (errors name ``name.KEY``)."""
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"expected {describe(tp, limit, names)}, got {value!r}")
    key_tp, value_tp = typing.get_args(tp)
    out = {}
    for k, v in value.items():
        if not isinstance(k, key_tp) or (names is not None and k not in names):
            raise UnknownKeyError(f"{name}.{k}", f"unknown name; one of {', '.join(names or ())}")
        try:
            out[k] = _fit(value_tp, v, limit, None)
        except _Bad as bad:
            raise ConfigError(f"{name}.{k}", f"expected {bad}, got {v!r}") from None
    return out


def _check_section(section: Any) -> None:
    """Check (and normalise in place) every field of a configuration section; ConfigError naming the field."""
    cls = type(section)
    for f in dataclasses.fields(section):
        tp, limit, names = _spec(cls, f.name)
        value = getattr(section, f.name)
        if typing.get_origin(tp) is dict:
            fitted = _fit_dict(f.name, tp, value, limit, names)
        else:
            try:
                fitted = _fit(tp, value, limit, names)
            except _Bad as bad:
                raise ConfigError(f.name, f"expected {bad}, got {value!r}") from None
        if fitted is not value:
            object.__setattr__(section, f.name, fitted)

# --------------------------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class BackboneConfig(_Checked):
    # "pysot": the layout the official code uses (conv1 padding 0, 3x3 downsample convs, layer3 stride 1 /
    # dilation 2 with an undilated first block) -- facts §1.1. "torchvision": torchvision's ResNet-50 module
    # layout (1x1 downsamples, conv1 padding 3) with layer3 dilated the same way, so torchvision ImageNet
    # weights load into it -- facts §1.3, §16.
    layout: Literal["pysot", "torchvision"] = "pysot"
    width: int = 64  # planes of layer1; ResNet-50 uses 64 (layers: 64/128/256 planes, x4 expansion)
    blocks: tuple[int, int, int] = (3, 4, 6)  # ResNet-50 layer1..layer3 -- facts §1.1
    # Optional local path or URI of ImageNet weights; never downloaded. None = random init (facts §1.1 init).
    pretrained: str | None = None
    # The official code always starts from ImageNet weights (facts §1.3), so `ocean train` stops when
    # `pretrained` is unset unless this is true: training from a random backbone is asked for, never
    # silent. The smoke preset sets it (a CPU-sized model with no weights to load).
    allow_random_init: bool = False
    # Input convention of the weights: the official Siamese path feeds raw BGR 0-255 (facts §1.3);
    # torchvision weights expect RGB in [0, 1] normalised by the ImageNet mean / std.
    input_norm: Literal["raw_bgr", "imagenet_rgb"] = "raw_bgr"


@dataclass(frozen=True)
class HeadConfig(_Checked):
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
    # "plain": the depth-wise cross-correlation of the official code (facts §2); "normalised": each channel's
    # response is the Pearson correlation of the search window with the template channel (zero-mean kernel
    # of unit norm, divided by the window's own spread), in [-1, 1] -- a project option for models trained
    # from scratch, which otherwise learn to fire on any strongly textured region (BENCHMARKS.md
    # "Generalisation").
    correlation: Literal["plain", "normalised"] = "plain"
    # where a "normalised" correlation applies: "both" (cls and reg encoders) or "cls" (the regression's stays
    # plain; held-out AUC 0.259 against 0.434 for both, BENCHMARKS.md "Generalisation")
    correlation_branches: Literal["both", "cls"] = "both"
    # The colour layout of the template (8 x 8 pixel cells: the stride, facts §1.2) correlated with the search
    # region's, added to the classification branch through a zero-initialised 1x1 conv (ocean.model.ColourCue):
    # a project option for models trained from scratch, off in every preset (the official network has no such
    # input; measured in BENCHMARKS.md "Generalisation").
    colour_cue: bool = False
    align: bool = True  # the object-aware alignment head p_o (paper Sec. 3.2, facts §4)
    # The alignment head's 3x3 deformable conv: "torchvision" = torchvision.ops.deform_conv2d (the official
    # arithmetic, facts §4.2); "sampled" = the same convolution as bilinear sampling (grid_sample) plus one
    # matrix product, equal up to rounding, with a vectorised backward: torchvision's CPU backward was 30 % of
    # the smoke preset's training step (BENCHMARKS.md "Training step").
    deform_kernel: Literal["torchvision", "sampled"] = "torchvision"
    # exp(adjust * conv + bias): adjust init 0.1, bias init 1.0 -- facts §3
    reg_adjust_init: float = 0.1
    reg_bias_init: float = 1.0
    cls_logit_scale: float = 0.1  # p_r logits multiplied by 0.1 -- facts §3
    # Guard (facts §16): the exponent of the regression is clamped to this value, so distances stay
    # below exp(10) ~ 22,000 px and every box that reaches deform_conv2d is finite.
    reg_exp_clamp: float = 10.0
    # Centre of the predicted box in feature cells for the alignment offsets: "official" uses S/2 = 127.5,
    # the TracKit value (the converted official weights reproduce its outputs bit for bit with it,
    # checkpoint_keys.md §6); "grid" uses the grid origin floor(S/2), consistent with the cell <-> pixel
    # mapping the rest of the network and the tracker use, 1/16 cell apart -- facts §4.1 step 2, §13.3 item 11.
    align_center: Literal["grid", "official"] = "official"


@dataclass(frozen=True)
class ModelConfig(_Checked):
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    exemplar_size: int = 127  # template crop side -- paper Sec. 5.1
    search_size: int = 255  # training search crop side -- paper Sec. 5.1
    stride: int = 8  # total stride of the backbone -- facts §1.2


# --------------------------------------------------------------------------------------------------------
# Labels and losses


@dataclass(frozen=True)
class LabelConfig(_Checked):
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
    # The object-aware IoU label (Eq. 5, facts §5.3): false = official, the gradient is kept and L_o also
    # trains the regression through the label; true stops it (the usual choice for a target).
    iou_label_detach: bool = False


@dataclass(frozen=True)
class LossConfig(_Checked):
    # Total L = w_reg L_reg + w_align L_o + w_cls L_r. Official HEAD: 1 / 1 / 1 (facts §6); the paper's
    # Eq. 8 uses lambda1 = 1 (L_o) and lambda2 = 1.2 (L_r): set cls=1.2 for the paper's weights.
    weight_reg: float = 1.0
    weight_align: float = 1.0
    weight_cls: float = 1.0
    cls_pos_weight: float = 0.5  # 0.5 * mean BCE(pos) + 0.5 * mean BCE(neg) -- facts §6
    # Hard negatives: 0 = the official mean over every negative cell of the batch (facts §6); k > 0 = the
    # negative term is half that mean and half the mean of each image's k hardest negative cells (online hard
    # example mining, Shrivastava et al. 2016), so the few cells of clutter that look like the target are not
    # averaged away among ~600 easy ones. A project option (BENCHMARKS.md "Generalisation").
    cls_hard_negatives: int = 0
    # A NaN L_o: "zero" = official, replaced by 0 x L_r so the step trains on L_reg and L_r (facts §6);
    # "skip": the total is NaN and the whole step is skipped (optim.max_loss rule).
    align_nan: Literal["zero", "skip"] = "zero"
    # The regression loss L_reg: "iou" = -ln IoU of the predicted and true distances (official, facts §6);
    # "log_l1" = the L1 distance of log(1 + d) per side, summed over l, t, r, b (ocean.losses.log_l1_loss). The
    # IoU loss's expected value over uncertain sides is least for boxes longer than the median truth (a short
    # side loses intersection along the whole box, a long one only adds union), so where the network is unsure
    # it learns boxes too large: one step from the true state the quickstart's model
    # predicts 1.05x the true size on its own generator's scenes and 1.08-1.12x on the held-out scenes, and the
    # tracker compounds that frame after frame; log_l1 is unbiased per side (0.98-1.01x there; measured by
    # benchmarks/size_bias.py, BENCHMARKS.md "Generalisation"). The smoke preset uses it (OFFICIAL_DIFFERENCES).
    reg_loss: Literal["iou", "log_l1"] = "iou"


# --------------------------------------------------------------------------------------------------------
# Training data and augmentation


@dataclass(frozen=True)
class AugmentConfig(_Checked):
    # Template / search crop windows: shift U(-1,1)*SH px, scale 1 + U(-1,1)*SC (x, y independent)
    # -- facts §7.5
    template_shift: float = 4.0
    template_scale: float = 0.05
    search_shift: float = 64.0
    search_scale: float = 0.18
    color_jitter: float = 0.05  # brightness / contrast / saturation / hue -- facts §7.5 (COLOR = 1)
    # Brightness and contrast amplitude on its own: None = color_jitter's (official). A larger one trains
    # template / search pairs lit differently (gain 1 + U(-1,1) j), which the official recipe never shows;
    # the smoke preset uses 0.4 (OFFICIAL_DIFFERENCES).
    illumination_jitter: float | None = None
    blur_prob: float = 0.0  # off in the official config -- facts §7.5
    flip_prob: float = 0.0
    gray_prob: float = 0.0
    # Share of negative pairs: the template is taken from another video of the batch, every cell of the
    # search is a negative and nothing is regressed (DaSiamRPN's semantic negatives; SOTS AUG.COMMON.NEG, 0 for
    # Ocean; TK has none -- facts §7.4). 0 = official.
    negative_prob: float = 0.0
    # Share of pairs given an occluder that stays still while the target moves: it covers part of the
    # template's target and sits, displaced, in the search crop (data_prep.augment.static_occluder); boxes
    # and labels keep the whole target. Not in the official recipe (facts §7.5): 0 = official. Drawn after
    # every official draw, so turning it on moves no other draw.
    occlusion_prob: float = 0.0
    # Gaussian pixel noise on both crops, standard deviation U(0, 1) * noise_sigma grey levels (sensor
    # noise). Not in the official recipe (facts §7.5): 0 = official; drawn after every official draw.
    noise_sigma: float = 0.0


@dataclass(frozen=True)
class DataConfig(_Checked):
    context_amount: float = 0.5  # p = 0.5 (w + h) -- facts §7.1
    crop_size: int = 511  # the official crop511 reference frame -- facts §7.1
    # JPEG quality of the stored crops: 95 = official crop511 (facts §7.1); 90 stores them 30 % smaller
    # (facts §17: 36.1 KB at q95, 25.3 KB at q90).
    jpeg_quality: int = 95
    # Decode a JPEG frame at 1/2, 1/4 or 1/8 (libjpeg's DCT scaling) when every crop it serves downsamples it
    # by at least twice that; stored crops 41.5 dB median PSNR from the full decode -- jpeg_decode.md §3.
    # Off = the official full decode (the paper preset); the smoke preset turns it on.
    reduced_decode: bool = False
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
    # Leave out the 1,000 GOT-10k train videos the VOT challenge forbids for a model tested on VOT; the
    # official code trains on all of GOT-10k -- formats.md §1.7.
    got10k_vot_exclude: bool = False
    # LaSOT in training: its official training split ("train": the 1,120 non-test videos, from the root's
    # training_set.txt or the shipped list) or every sequence found ("all") -- formats.md §1.7.
    lasot_split: Literal["train", "all"] = "train"


# --------------------------------------------------------------------------------------------------------
# Optimisation


@dataclass(frozen=True)
class OptimConfig(_Checked):
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
class OnlineConfig(_Checked):
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
class TrackerConfig(_Checked):
    # Defaults: the official OceanConfig defaults (facts §9.3), TracKit's double size smoothing.
    penalty_k: float = 0.062
    window_influence: float = 0.38
    lr: float = 0.765
    small_sz: int = 255
    big_sz: int = 255
    # Weight of p_r in p_cls = ratio * p_r + (1 - ratio) * p_o (facts §4.3); omega = 1 - ratio = 0.07 on
    # VOT2018 (paper Sec. 5.1). Only used when use_align is True.
    ratio: float = 0.94
    use_align: bool = False  # the official code uses p_o on VOT only (facts §4.3)
    # "double": the TracKit lr^2 rule, official (facts §9.2 step 7); "single": new_w = w + lr_eff (pw - w),
    # as SOTS's later Ocean.
    size_update: Literal["single", "double"] = "double"
    context_amount: float = 0.5  # facts §9.1
    small_object_area: float = 0.004  # target / image area below which big_sz is used -- facts §9.1
    min_size: float = 10.0  # clip w, h to [10, image size] -- facts §9.2 step 8
    online: bool = False  # build the online module of paper Sec. 4.2 ("+ online update", facts §10)
    # Search scales, a deliberate difference (OFFICIAL_DIFFERENCES): the official tracker cuts one search crop
    # at the state's size (facts §9.2 step 1) and leaves the size to the regression. With scales = n > 1 it cuts
    # n crops at the state's size times scale_step ** (i - (n - 1) / 2), i = 0..n-1, scores them in one forward
    # and keeps the crop whose best penalised, windowed score is highest, as SiamFC searches scales (Bertinetto
    # et al., ECCV-W 2016, SiamFC-3s: 3 scales, step 1.0375). Ocean's own size penalty stands in for SiamFC's
    # scale penalty (facts §9.6). BENCHMARKS.md "Generalisation" says why the smoke preset uses 3.
    scales: int = 1
    scale_step: float = 1.0375
    # omega' of pscore = omega' online + (1 - omega') pscore -- paper Sec. 4.2, omega' = 0.5; facts §9.3
    # VOT2019ON uses 0.7.
    online_weight: float = 0.5
    online_params: OnlineConfig = field(default_factory=OnlineConfig)
    # How the network runs (ocean/fast.py): "eager" = the module as trained, the official arithmetic exactly
    # (the default); "fast" = BatchNorm folded into the convolutions and fused oneDNN conv + ReLU calls (outputs
    # within 1e-4 relative of eager, inference_runtimes.md §1); "onnx" = the exported graphs in onnxruntime on
    # CPU (the export extra, inference_runtimes.md §3). BENCHMARKS.md "Inference fast path" has their speeds.
    runtime: Literal["eager", "fast", "onnx"] = "eager"


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
    # No TK yaml for these: SOTS TEST.HYPERS rows, with SOTS's single size update (facts §9.5)
    "lasot_ext": dict(penalty_k=0.11, lr=0.7, window_influence=0.20, small_sz=255, big_sz=255,
                      use_align=False, size_update="double"),  # LaSOT's row (facts §9.5)
    **{b: dict(penalty_k=0.034, lr=0.313, window_influence=0.284, small_sz=271, big_sz=287,
               use_align=False, size_update="single") for b in ("uav123", "uav20l", "uav123_10fps", "dtb70")},
    "nfs": dict(penalty_k=0.144, lr=0.72, window_influence=0.153, small_sz=255, big_sz=287,
                use_align=False, size_update="single"),
    "tnl2k": dict(penalty_k=0.034, lr=0.313, window_influence=0.284, small_sz=271, big_sz=287,
                  use_align=False, size_update="single"),
    "trackingnet": dict(penalty_k=0.109, lr=0.519, window_influence=0.2, small_sz=271, big_sz=287,
                        use_align=False, size_update="single"),
}

# With tracker.online the official VOT run reads the "<dataset>ON" entry instead (TK test_ocean.py --online,
# facts §9.3 VOT2018ON / VOT2019ON rows, §10.4): other values, online_ratio = omega', and no p_o (the model is
# built without the align head). layered_tracker_config puts these over the preset when online is on; the
# other benchmarks have no online entry (facts §10.4) and keep their preset.
ONLINE_TRACKER_PRESETS: dict[str, dict[str, Any]] = {
    "vot2018": dict(penalty_k=0.187, lr=0.800, window_influence=0.640, small_sz=271, big_sz=287,
                    online_weight=0.5, use_align=False),
    "vot2019": dict(penalty_k=0.06, lr=0.644, window_influence=0.484, small_sz=255, big_sz=287,
                    online_weight=0.7, use_align=False),
}


def tracker_config(benchmark: str | None = None, **overrides: Any) -> TrackerConfig:
    """Tracker hyper-parameters for a benchmark (``otb``, ``vot2018``, ...; None = defaults) plus overrides."""
    if benchmark is not None and benchmark not in TRACKER_PRESETS:
        raise UnknownKeyError("", f"unknown benchmark {benchmark!r}; known: {', '.join(sorted(TRACKER_PRESETS))}")
    return dataclasses.replace(layered_tracker_config(None, benchmark), **overrides)


# --------------------------------------------------------------------------------------------------------
# The whole tree


@dataclass(frozen=True)
class OceanConfig(_Checked):
    model: ModelConfig = field(default_factory=ModelConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    preset: str = "paper"  # the preset this configuration started from (paper / smoke)


# --------------------------------------------------------------------------------------------------------
# Allowed values beyond the types (checked by every section on construction; docs/configuration.md lists
# them). A range says where the formula the value enters stays meaningful; the source is cited.

DATASETS = ("ytbb", "vid", "got10k", "det", "coco", "lasot")  # the training datasets -- facts §7.3
COUNT = Limit(lo=1)  # a positive integer

_LIMITS: dict[str, dict[str, Limit]] = {
    "BackboneConfig": {"width": COUNT, "blocks": COUNT},  # planes / blocks per stage -- facts §1.1
    # channels and kernel sizes are counts; a tower may be empty (identity); the template crop border cannot
    # be negative -- facts §1.3, §3
    "HeadConfig": {"channels": COUNT, "tower_convs": NON_NEGATIVE, "template_crop_border": NON_NEGATIVE,
                   "cls_logit_scale": POSITIVE, "reg_exp_clamp": POSITIVE},
    "ModelConfig": {"exemplar_size": COUNT, "search_size": COUNT, "stride": COUNT},  # facts §1.2
    # radii are distances -- facts §5.2
    "LabelConfig": {"cls_radius_cells": NON_NEGATIVE, "cls_radius_px": NON_NEGATIVE},
    # loss weights are non-negative; the positive share of the balanced BCE is a convex weight -- facts §6
    "LossConfig": {"weight_reg": NON_NEGATIVE, "weight_align": NON_NEGATIVE, "weight_cls": NON_NEGATIVE,
                   "cls_pos_weight": UNIT},
    # shifts in px >= 0; scale 1 + U(-1,1) SC stays positive only for SC < 1; the jitter factors 1 + U(-1,1) j
    # stay non-negative for j <= 1; the *_prob are probabilities -- facts §7.5
    "AugmentConfig": {"template_shift": NON_NEGATIVE, "template_scale": BELOW_ONE, "search_shift": NON_NEGATIVE,
                      "search_scale": BELOW_ONE, "color_jitter": UNIT, "illumination_jitter": UNIT,
                      "blur_prob": UNIT, "flip_prob": UNIT, "gray_prob": UNIT, "negative_prob": UNIT,
                      "occlusion_prob": UNIT, "noise_sigma": NON_NEGATIVE},
    # context p = amount (w + h) > 0 -- facts §7.1; JPEG quality 1..100 (OpenCV's scale); pair counts and
    # RANGE >= 0, the pool at least one epoch -- facts §7.3, §7.6
    "DataConfig": {"context_amount": POSITIVE, "crop_size": COUNT, "jpeg_quality": Limit(1, 100),
                   "pairs_per_epoch": NON_NEGATIVE, "frame_range": NON_NEGATIVE, "pool_factor": COUNT},
    # counts >= 1 (warm-up and unfreeze epochs may be 0); learning rates > 0 (the decay is log-space); SGD
    # momentum in [0, 1); decay, multiplier and clip >= 0 -- facts §8, §6
    "OptimConfig": {"epochs": COUNT, "batch_size": COUNT, "momentum": BELOW_ONE, "weight_decay": NON_NEGATIVE,
                    "warmup_epochs": NON_NEGATIVE, "warmup_lr_start": POSITIVE, "warmup_lr_factor": POSITIVE,
                    "base_lr": POSITIVE, "end_lr": POSITIVE, "unfreeze_epoch": NON_NEGATIVE,
                    "backbone_lr_mult": NON_NEGATIVE, "max_loss": POSITIVE, "max_bad_steps": COUNT,
                    "grad_clip": NON_NEGATIVE},
    # sizes and counts >= 1 (the patch at least 32 px, what ocean.online needs); learning rates, weights and
    # p_cls thresholds are shares in [0, 1]; peak ratios, scales and regularisation >= 0 -- facts §10.1, §10.2
    "OnlineConfig": {"feature_dim": COUNT, "filter_size": COUNT, "sample_size": Limit(lo=32),
                     "search_area_scale": POSITIVE, "dropout_samples": NON_NEGATIVE,
                     "init_iterations": NON_NEGATIVE, "update_iterations": NON_NEGATIVE, "train_skipping": COUNT,
                     "memory_size": COUNT, "learning_rate": UNIT, "hard_negative_learning_rate": UNIT,
                     "hard_negative_threshold": NON_NEGATIVE, "target_neighborhood_scale": POSITIVE,
                     "distractor_threshold": NON_NEGATIVE, "displacement_scale": POSITIVE,
                     "init_samples_minimum_weight": UNIT, "min_update_score": UNIT,
                     "max_update_offset": NON_NEGATIVE, "filter_reg": NON_NEGATIVE, "sigma_factor": POSITIVE,
                     "seed": NON_NEGATIVE},
    # penalty exp(-(r_c s_c - 1) k) <= 1 needs k >= 0; the window, the size-update lr, ratio and omega' are
    # convex weights in [0, 1]; the search sizes are crop sides; context > 0; the small-object threshold is
    # an area share; sizes are clipped to at least min_size > 0 px; at least one search scale, scales that grow
    # -- facts §9.1, §9.2 (steps 2-4, 7, 8), §4.3, §9.6
    "TrackerConfig": {"penalty_k": NON_NEGATIVE, "window_influence": UNIT, "lr": UNIT, "small_sz": COUNT,
                      "big_sz": COUNT, "ratio": UNIT, "context_amount": POSITIVE, "small_object_area": UNIT,
                      "min_size": POSITIVE, "online_weight": UNIT, "scales": COUNT, "scale_step": Limit(lo=1)},
}

# Allowed names of the items of a tuple[str, ...] field and of the keys of a dict field.
_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    # the backbone children that hold parameters -- facts §1.1, §8 (official: layer1..layer3)
    "OptimConfig": {"unfreeze_layers": ("conv1", "bn1", "layer1", "layer2", "layer3")},
    "DataConfig": {"pairs_per_epoch": DATASETS, "frame_range": DATASETS},
}


def paper() -> OceanConfig:
    """The full Ocean model and the official training recipe: every default is what the official code does
    (facts §0, §14); paper variants and the project's deliberate fixes are options (:data:`OFFICIAL_DIFFERENCES`).
    Training needs ImageNet backbone weights (``model.backbone.pretrained``) or an explicit
    ``model.backbone.allow_random_init=true``."""
    return OceanConfig()


def smoke() -> OceanConfig:
    """A small model (same 127 / 255 / stride-8 geometry) and a short recipe that trains on a CPU.

    Backbone width 8 (layer3 gives 128 channels instead of 1024), one block per stage, 32-channel heads
    with two tower convs: about 0.28 M parameters, sized to train on 2 CPU threads (its speed is in
    BENCHMARKS.md). The schedule keeps the official shape (warm-up,
    log decay, unfreeze) compressed to a few epochs; the backbone trains from epoch 1 because there are
    no pretrained weights to protect.

    It trains from a random backbone on purpose (``allow_random_init``), and keeps the project's
    deliberate fixes of :data:`OFFICIAL_DIFFERENCES` (normalised correlation, detached IoU label, a NaN L_o
    skips the step, the log-L1 regression loss, brightness and contrast jitter of +-40 %, single size smoothing,
    a 3-scale search, q90 crops, reduced-resolution decode): the quickstart's measured numbers were obtained with them (the
    decode changes nothing there: the synthetic frames are small). The
    normalised correlation is what lets a network trained from scratch on synthetic scenes track scenes of
    another generator (BENCHMARKS.md "Generalisation").
    """
    return OceanConfig(
        model=ModelConfig(
            backbone=BackboneConfig(width=8, blocks=(1, 1, 1), allow_random_init=True),
            head=HeadConfig(channels=32, tower_convs=2, correlation="normalised", deform_kernel="sampled"),
        ),
        labels=LabelConfig(iou_label_detach=True),
        loss=LossConfig(align_nan="skip", reg_loss="log_l1"),
        augment=AugmentConfig(illumination_jitter=0.4),
        data=DataConfig(
            pairs_per_epoch={"ytbb": 200, "vid": 200, "got10k": 400, "det": 100, "coco": 100, "lasot": 200},
            pool_factor=2, jpeg_quality=90, reduced_decode=True,
        ),
        optim=OptimConfig(
            epochs=10, batch_size=16, warmup_epochs=1, warmup_lr_start=5e-3, base_lr=1e-2, end_lr=1e-3,
            unfreeze_epoch=1, backbone_lr_mult=1.0, weight_decay=1e-4,
        ),
        tracker=TrackerConfig(size_update="single", scales=3),
        preset="smoke",
    )


def random_init_refusal(cfg: OceanConfig) -> str | None:
    """Why training ``cfg`` must not start (one line), or None: a backbone without ``pretrained`` weights
    and without ``allow_random_init`` would silently train from random init where the official code
    starts from ImageNet weights (facts §1.3)."""
    bb = cfg.model.backbone
    if bb.pretrained or bb.allow_random_init:
        return None
    return ("model.backbone.pretrained is unset, and the official recipe starts from ImageNet backbone weights "
            "(ocean_facts §1.3): load them with --set model.backbone.pretrained=PATH (a pysot-layout ResNet-50 "
            "from `ocean convert --from pysot-resnet50`, or torchvision's file with "
            "model.backbone.layout=torchvision), or train from a random backbone on purpose with "
            "--set model.backbone.allow_random_init=true")


# --------------------------------------------------------------------------------------------------------
# Where the project differs from the official code (docs/configuration.md lists them, generated from here;
# tests/unit/test_official_defaults.py holds the paper preset to the "official" column of every option).


@dataclass(frozen=True)
class Difference:
    """One known difference between this project and the official code (TracKit HEAD, facts §0).

    ``kind``: ``option`` -- the paper preset does what the official code does (``key`` = ``official``) and
    the project's fix is the option ``key`` = ``fix``; ``guard`` -- a safety net that is on in every preset
    and acts only where the official code would crash, stall or produce non-finite numbers; ``rule`` -- a
    project rule with no official counterpart; ``numeric`` -- the same computation up to rounding;
    ``substitute`` -- the official part cannot be reproduced from public material, this is what runs
    instead; ``unreachable`` -- an official quirk the paper preset can never trigger."""

    topic: str
    kind: Literal["option", "guard", "rule", "numeric", "substitute", "unreachable"]
    official: str  # what the official code does
    project: str  # what the project does or offers instead
    reason: str  # why the project has it, with its source
    key: str = ""  # the configuration key, when there is one
    official_value: Any = None  # kind option: the key's official value (the paper default)
    fix: Any = None  # kind option: the key's value for the project's fix


OFFICIAL_DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "alignment offset centre", "option", "S/2 = 127.5 px, 1/16 cell off the score grid",
        "grid: the score grid's floor(S/2) = 127",
        "consistent with the cell <-> pixel mapping of facts §3; the official value is needed to load the "
        "official weights bit-equal (facts §4.1 step 2, §13.3 item 11)",
        key="model.head.align_center", official_value="official", fix="grid"),
    Difference(
        "correlation of template and search features", "option",
        "depth-wise cross-correlation: each channel's response grows with the search features' strength",
        "normalised: each channel's response is the Pearson correlation of the search window with the "
        "template channel, in [-1, 1]",
        "a model trained from scratch on the quickstart's synthetic data learned to fire on any strongly "
        "textured region; with the normalised correlation the same training tracks scenes of another generator "
        "about twice as well (BENCHMARKS.md \"Generalisation\"). The smoke preset uses it",
        key="model.head.correlation", official_value="plain", fix="normalised"),
    Difference(
        "gradient through the IoU label p_o*", "option", "kept: L_o also trains the regression through its label",
        "detached: the label is a target only",
        "detaching is the usual choice for a target; whether PyTorch 1.1 passed the gradient at all is "
        "unverified (facts §5.3, §15)",
        key="labels.iou_label_detach", official_value=False, fix=True),
    Difference(
        "regression loss L_reg", "option", "-ln IoU of the predicted and true distances",
        "log_l1: |ln(1 + p) - ln(1 + t)| summed over the four sides",
        "-ln IoU pulls uncertain boxes larger (its minimiser lies above the median truth): the quickstart's model "
        "predicted 1.05x the true size on its own scenes and 1.11x on the held-out ones, compounded by the "
        "tracker frame after frame; log_l1 is unbiased (0.98-1.02x), and over three quickstart seeds it raised "
        "every synthetic benchmark's mean, the held-out scenes' unchanged (BENCHMARKS.md \"Generalisation\"). "
        "The smoke preset uses it",
        key="loss.reg_loss", official_value="iou", fix="log_l1"),
    Difference(
        "brightness and contrast jitter", "option",
        "ColorJitter(0.05) for all four factors: template and search lit alike within +-5 %",
        "illumination_jitter: the brightness and contrast factors 1 + U(-1, 1) j with their own amplitude",
        "a tracked scene's light changes between the template frame and later ones, which +-5 % never shows "
        "a network trained from scratch; with j = 0.4 the quickstart's held-out score rose for each of three "
        "seeds (0.386 -> 0.450 on average, 0.471 -> 0.519 with the online module), its synthetic benchmarks "
        "moved within their seeds' spread (BENCHMARKS.md \"Generalisation\"). The smoke preset uses 0.4",
        key="augment.illumination_jitter", official_value=None, fix=0.4),
    Difference(
        "a NaN L_o", "option", "replaced by 0 x L_r; the step trains on L_reg and L_r",
        "skip: the total is NaN and the whole step is skipped", "a NaN anywhere hints at diverging weights, "
        "which a skipped step does not feed (facts §6)",
        key="loss.align_nan", official_value="zero", fix="skip"),
    Difference(
        "tracker size smoothing", "option", "TracKit: twice, new_w = w + lr_eff^2 (pw - w)",
        "single: new_w = w + lr_eff (pw - w), as SOTS's later Ocean",
        "the double step looks unintended and SOTS dropped it; the benchmark presets were tuned with the double "
        "rule and always use it (facts §9.2 step 7, §13.3 item 6)",
        key="tracker.size_update", official_value="double", fix="single"),
    Difference(
        "search scales", "option", "one search crop, cut at the state's size; the size comes from the regression",
        "scales = n: n crops at the state's size times scale_step^(i - (n - 1) / 2) in one forward, the crop whose "
        "best windowed, penalised score is highest kept (SiamFC-3s: 3 scales, step 1.0375; facts §9.6)",
        "the quickstart's regression hardly measures the target's size (`benchmarks/size_bias.py --follow`: "
        "slope 0.09 on its own generator's scenes) while its classification peaks at the right scale (slope 0.90 "
        "there), so with one crop the size drifts; the scale search lets the classification measure it. Over "
        "three quickstart seeds it raised the held-out scenes' score for each (mean 0.450 -> 0.472; the default "
        "seed 0.476 -> 0.511) and every synthetic benchmark's mean, for 2.6x the tracking time per frame "
        "(BENCHMARKS.md \"Generalisation\"). The smoke preset uses 3 scales; the benchmark presets leave it alone",
        key="tracker.scales", official_value=1, fix=3),
    Difference(
        "JPEG quality of the stored crops", "option", "95 (crop511 written at OpenCV's default)",
        "90", "30 % less storage and I/O per crop (facts §7.1, §17)",
        key="data.jpeg_quality", official_value=95, fix=90),
    Difference(
        "starting weights of the backbone", "guard", "always the ImageNet checkpoint",
        "`ocean train` refuses an unset model.backbone.pretrained unless model.backbone.allow_random_init=true",
        "a silent random init trained a different model (facts §1.3)", key="model.backbone.allow_random_init"),
    Difference(
        "regression exponent", "guard", "unbounded exp(adjust x conv + bias)",
        "exponent clamped at 10 (distances below ~22,000 px); non-finite offsets never reach the deformable conv",
        "on a diverged network the official code gives inf / NaN offsets and torchvision's CPU deform_conv2d "
        "crashed the process (facts §16); trained weights stay far below the clamp",
        key="model.head.reg_exp_clamp"),
    Difference(
        "consecutive skipped steps", "guard", "a non-finite or > 1e4 loss skips the step, forever",
        "the same skip; this many skipped in a row stop the run with an error naming the step",
        "a diverged run fails loudly instead of idling to the end (facts §6)", key="optim.max_bad_steps"),
    Difference(
        "a frame without a finite score", "guard", "not handled (NaN boxes)",
        "the tracker keeps the previous box and counts the frame", "a diverged network must not move the target to "
        "infinity (facts §16)"),
    Difference(
        "training pairs of an epoch", "rule", "drawn afresh every epoch, with replacement (USE per dataset)",
        "drawn once into a pool of data.pool_factor x data.pairs_per_epoch pairs (capped at the distinct pairs a "
        "dataset can supply); every epoch takes a fresh seeded subset and augments it anew",
        "crops are cut once, before training (facts §7.4, §7.6)", key="data.pool_factor"),
    Difference(
        "BatchNorm batch and loss means", "rule",
        "DataParallel on 8 GPUs: batch statistics and the loss means over 32 samples per GPU, then averaged",
        "the same over a worker's micro-batch: batch_size / workers, or --max-worker-batch (gradients "
        "accumulated)",
        "the batch is global whatever the worker count; 8 workers or --max-worker-batch 32 give the official "
        "32 (facts §6, §8)"),
    Difference(
        "a missing or unreadable image", "rule",
        "the pair is redrawn from a random one of the dataset's first 101 videos",
        "a counted, recorded rejection at preparation; training reads only stored crops",
        "bad input is reported, never silently replaced (facts §7.4)"),
    Difference(
        "YouTube-BB video train/1/YyE0clBPamU", "rule", "removed from the index by name",
        "kept when its frames read; unreadable frames are counted rejections",
        "the official reason is not recorded; it fits their copy of the crops (facts §7.2)"),
    Difference(
        "checkpoints", "rule", "after every epoch but the first (checkpoint_e2 .. e50)",
        "after every epoch (epoch-0001 .. epoch-0050), resumable",
        "a lost worker restarts from the newest one (facts §8)"),
    Difference(
        "stored crops", "numeric", "the whole 511 x 511 x-crop as JPEG",
        "only the central part the augmentation can reach, in the same 511 frame",
        "same pixels up to JPEG block alignment, a fraction of the storage (facts §7.1, §7.5)"),
    Difference(
        "decoding the source frames", "option", "every frame decoded at full size, then warped to the crop",
        "a JPEG frame whose every crop downsamples it by >= 2f is decoded at 1/f (f = 2, 4, 8; libjpeg's DCT "
        "scaling) and warped from that, the crop geometry mapped exactly; smaller targets as before",
        "1.2-1.3x the frames per CPU second on real 1280x720 frames with YouTube-BB-sized objects; stored crops "
        "41.5 dB median PSNR from the full-decode ones, about the q95 storage loss, p5 32.7 dB (jpeg_decode.md §3)",
        key="data.reduced_decode", official_value=False, fix=True),
    Difference(
        "deformable convolution of the alignment head", "numeric",
        "a 3x3 deformable conv kernel (facts §4.2); the paper preset runs torchvision.ops.deform_conv2d",
        "sampled: bilinear sampling of the 9 taps (grid_sample) and one matrix product",
        "equal up to float rounding (about 1e-6 relative); torchvision's CPU backward was 30 % of the smoke "
        "preset's training step, the sampled one's backward is ~6x faster (BENCHMARKS.md \"Training step\"). "
        "The smoke preset and the fast runtime use it",
        key="model.head.deform_kernel"),
    Difference(
        "colour jitter arithmetic", "numeric", "torchvision ColorJitter, clamped to 0..255 after every step",
        "consecutive linear steps merged and clamped once; hue through OpenCV's float HSV",
        "faster; at most a grey level or two apart with factors within 1 +- 0.05 (facts §7.5)",
        key="augment.color_jitter"),
    Difference(
        "balanced BCE with one positive", "unreachable", "the positive term becomes 0 (0-d index quirk)",
        "the mean over the one positive", "the paper preset's label always has 13 positives (facts §5.2, §6)"),
    Difference(
        "online classifier", "substitute",
        "DiMP-trained layeronline branch and classifier from the released checkpoint; normalised RGB through "
        "raw-BGR weights; bicubic resize of the 14x14 map; fixed search scale",
        "tracker.online_params defaults: conv1..layer2 features, PCA projection, maps sampled at the Siamese "
        "cells (mapping=grid), current target scale; features=layeronline, weights=PATH and mapping=resize "
        "select the official parts",
        "the online weights cannot be trained from public material (facts §10.2, §10.3, §13.3 item 8)",
        key="tracker.online_params.mapping"),
)


PRESETS = {"paper": paper, "smoke": smoke}


def preset(name: str) -> OceanConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise UnknownKeyError("", f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


# --------------------------------------------------------------------------------------------------------
# Dotted overrides, files and the dict round trip. Every path ends in a section's constructor, which checks
# the values (_check_section); the errors are ConfigError naming the dotted key.

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_text(text: str, tp: Any) -> Any:
    """The text of a ``--set`` value as a Python value for type ``tp`` (the section checks its range);
    :class:`_Bad` when it cannot be read as one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse_text(text, inner)
    if origin is Literal or tp is str:
        return text
    if tp is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise _Bad
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise _Bad from None
    if origin in (tuple, dict):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if origin is not tuple:
                raise _Bad from None
            value = [v.strip() for v in text.split(",") if v.strip()]  # comma list: layer1,layer2
        if origin is tuple and isinstance(value, list):  # every tuple field has one item type
            return tuple(_parse_text(v, args[0]) if isinstance(v, str) and args[0] is not str else v for v in value)
        return value
    raise _Bad


def _with_value(cfg: Any, path: list[str], text: str) -> Any:
    """``cfg`` with the field at ``path`` set from ``text``; ConfigError keyed relative to ``cfg``."""
    names = [f.name for f in dataclasses.fields(cfg)]
    head = path[0]
    if head not in names:
        raise UnknownKeyError(head, f"unknown config key; one of {', '.join(names)}")
    current = getattr(cfg, head)
    if dataclasses.is_dataclass(current):
        if len(path) == 1:
            raise ConfigError(head, "is a section; set one of its keys: " + ", ".join(
                f.name for f in dataclasses.fields(current)))
        try:
            return dataclasses.replace(cfg, **{head: _with_value(current, path[1:], text)})
        except ConfigError as exc:
            raise exc.under(head) from None
    tp, limit, allowed = _spec(type(cfg), head)
    if isinstance(current, dict) and len(path) == 2:
        if path[1] not in current:
            raise UnknownKeyError(f"{head}.{path[1]}", f"unknown name; one of {', '.join(current)}")
        value_tp = typing.get_args(tp)[1]
        try:
            value = {**current, path[1]: _fit(value_tp, _parse_text(text, value_tp), limit, None)}
        except _Bad:
            raise ConfigError(f"{head}.{path[1]}", f"expected {describe(value_tp, limit)}, got {text!r}") from None
        return dataclasses.replace(cfg, **{head: value})
    if len(path) > 1:
        raise UnknownKeyError(".".join(path), f"{head} is not a section")
    try:
        value = _parse_text(text, tp)
        if typing.get_origin(tp) is dict:
            value = _fit_dict(head, tp, value, limit, allowed)
        else:
            value = _fit(tp, value, limit, allowed)  # here too, to quote the text in the error
    except _Bad:
        raise ConfigError(head, f"expected {describe(tp, limit, allowed)}, got {text!r}") from None
    return dataclasses.replace(cfg, **{head: value})


def apply_overrides(cfg: OceanConfig, overrides: list[str] | tuple[str, ...]) -> OceanConfig:
    """Apply ``["optim.base_lr=0.001", "model.head.align=false", ...]`` in order. ConfigError naming the key
    for an unknown key (:class:`UnknownKeyError`, also a KeyError) or a value of the wrong type or range."""
    for item in overrides:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError("", f"override {item!r} is not of the form key=value")
        cfg = _with_value(cfg, key.strip().split("."), text.strip())
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-able plain dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _build(cls: type, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected {describe(cls)}, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            raise UnknownKeyError(str(k), f"unknown config key; one of {', '.join(names)}")
        tp = _hints(cls)[k]
        if dataclasses.is_dataclass(tp):
            try:
                v = _build(tp, v)
            except ConfigError as exc:
                raise exc.under(k) from None
        kwargs[k] = v
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any]) -> OceanConfig:
    """Inverse of :func:`to_dict` (missing keys take the defaults, the paper preset's). Values are checked as
    given, with no conversion from text (``"3"`` is not an integer): ConfigError naming the key."""
    return _build(OceanConfig, data)


def merge(cfg: Any, data: Any) -> Any:
    """``cfg`` (a section, e.g. an :class:`OceanConfig`) with the values of ``data`` (a nested mapping of the
    :func:`to_dict` schema, complete or partial) in place of its own; a dict field (``data.pairs_per_epoch``)
    is merged key by key. A complete mapping gives the config it describes whatever ``cfg`` was. Values are
    checked as in :func:`from_dict`; ConfigError naming the key."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected {describe(type(cfg))}, got {data!r}")
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for k, v in data.items():
        if k not in names:
            raise UnknownKeyError(str(k), f"unknown config key; one of {', '.join(names)}")
        current = getattr(cfg, k)
        if dataclasses.is_dataclass(current):
            try:
                v = merge(current, v)
            except ConfigError as exc:
                raise exc.under(k) from None
        elif isinstance(current, dict) and isinstance(v, Mapping):
            v = {**current, **v}
        changes[k] = v
    return dataclasses.replace(cfg, **changes)


# YAML 1.1 reads 1e-3 (no dot) as a string; configuration files mean the number.
_YAML_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789."))
    return Loader


def read_config_file(path: str) -> dict[str, Any]:
    """The mapping in a configuration file: JSON when the name ends in ``.json`` (or, with another ending than
    ``.yaml`` / ``.yml``, when the text starts with ``{``), else YAML. ConfigError with ``source=path`` when it
    cannot be read or parsed or holds no mapping."""
    import yaml

    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read it ({getattr(exc, 'strerror', None) or exc})", path) from None
    suffix = os.path.splitext(path)[1].lower()
    as_json = suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip().startswith("{"))
    try:
        data = json.loads(text) if as_json else yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (safe loader)
    except json.JSONDecodeError as exc:
        raise ConfigError("", f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"not valid YAML ({getattr(exc, 'problem', None) or exc}{where})", path) from None
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping of configuration sections, got {type(data).__name__}", path)
    return data


def config_file(path: str, base: OceanConfig) -> OceanConfig:
    """``base`` with the configuration file at ``path`` (YAML or JSON, the :func:`to_dict` schema that ``ocean
    config`` prints, complete or partial) merged in (:func:`merge`). ConfigError with ``source=path``."""
    try:
        return merge(base, read_config_file(path))
    except ConfigError as exc:
        raise exc if exc.source else exc.from_source(path) from None


def file_overrides(path: str, base: OceanConfig) -> list[str]:
    """The configuration file at ``path`` as ``KEY=VALUE`` override strings: the keys whose value differs from
    ``base`` after :func:`config_file` (values checked first, so the strings read back exactly)."""
    base_flat, new_flat = flatten(base), flatten(config_file(path, base))
    return [f"{k}={_override_text(v)}" for k, v in new_flat.items() if base_flat.get(k) != v]


def _override_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else value if isinstance(value, str) else json.dumps(value)


def tracker_section_overrides(data: Mapping[str, Any]) -> list[str]:
    """``tracker.KEY=VALUE`` strings for the keys of ``data``, a mapping of :class:`TrackerConfig` fields (nested
    ``online_params`` allowed); each value type- and range-checked first (ConfigError ``tracker.KEY``)."""
    try:
        checked = flatten(merge(TrackerConfig(), data))
    except ConfigError as exc:
        raise exc.under("tracker") from None
    return [f"tracker.{k}={_override_text(checked[k])}" for k in flatten(dict(data)) if k in checked]


def tracker_file_overrides(path: str, schema: Literal["tracker", "config"] = "tracker") -> list[str]:
    """A tracker hyper-parameter file (YAML or JSON) as ``tracker.KEY=VALUE`` override strings.

    ``schema="tracker"`` (``--tracker-config``): ``{"tracker": {...}}`` (what ``ocean tune-tracker`` saves as
    best_tracker.json) or the flat ``{...}`` of tracker fields. ``schema="config"`` (``--config`` of a tracking
    command): the whole-configuration schema of ``ocean config``, of which only the ``tracker`` section is
    used. Nested sections (``online_params``) become dotted keys. ConfigError (``source=path``) for an
    unreadable file, an unknown key or a value of the wrong type or range."""
    try:
        data = read_config_file(path)
        if schema == "config" or isinstance(data.get("tracker"), Mapping):
            sections = [f.name for f in dataclasses.fields(OceanConfig)]
            for k in data:
                if k not in sections:
                    raise UnknownKeyError(str(k), f"unknown config key; one of {', '.join(sections)}")
            data = data.get("tracker") or {}
        return tracker_section_overrides(data)
    except ConfigError as exc:
        raise exc if exc.source else exc.from_source(path) from None


def tracker_override_strings(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """Tracker overrides as ``tracker.KEY=VALUE`` strings, from ``KEY=VALUE`` / ``tracker.KEY=VALUE``
    strings, a dict of :class:`TrackerConfig` fields (nested ``online_params`` allowed; values checked) or
    ``{"tracker": {...}}`` (what ``ocean tune-tracker`` saves). ConfigError for a string without ``=``."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        if isinstance(overrides.get("tracker"), Mapping):
            overrides = overrides["tracker"]
        return tracker_section_overrides(overrides)
    out = []
    for item in (str(i).strip() for i in overrides):
        if "=" not in item:
            raise ConfigError("", f"tracker override {item!r} is not of the form key=value")
        out.append(item if item.startswith("tracker.") else f"tracker.{item}")
    return out


def layered_tracker_config(base: TrackerConfig | None = None, benchmark: str | None = None,
                           overrides: Mapping[str, Any] | Sequence[str] | None = None) -> TrackerConfig:
    """The tracker hyper-parameters every tracking command uses, in layers: ``base`` (a checkpoint's tracker
    section; default the defaults) -> ``benchmark``'s preset (:data:`TRACKER_PRESETS`, facts §9.3) ->
    ``overrides`` (see :func:`tracker_override_strings`; types and ranges checked). When the result tracks
    online (``tracker.online``, from any layer), the benchmark's official online entry
    (:data:`ONLINE_TRACKER_PRESETS`, facts §10.4) goes over the preset and the overrides are applied again
    on top. ConfigError (a ValueError) naming the key."""
    base = base if base is not None else TrackerConfig()
    if benchmark is not None and benchmark not in TRACKER_PRESETS:
        raise UnknownKeyError("", f"unknown benchmark {benchmark!r}; known: {', '.join(sorted(TRACKER_PRESETS))}")
    items = tracker_override_strings(overrides)
    layers = [TRACKER_PRESETS[benchmark]] if benchmark is not None else []
    cfg = apply_overrides(OceanConfig(tracker=dataclasses.replace(base, **_merged(layers))), items).tracker
    if cfg.online and benchmark in ONLINE_TRACKER_PRESETS:  # the official online entry -- facts §10.4
        layers.append(ONLINE_TRACKER_PRESETS[benchmark])
        cfg = apply_overrides(OceanConfig(tracker=dataclasses.replace(base, **_merged(layers))), items).tracker
    return cfg


def _merged(layers: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {k: v for layer in layers for k, v in layer.items()}


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
