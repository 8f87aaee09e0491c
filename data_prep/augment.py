"""Training-time augmentation of stored pair crops into 127 templates and 255 search images (facts §7.5).

Input: stored crops and their boxes (one pair, :func:`augment_pair`, or a batch of pair records,
:func:`augment_pairs`) and an :class:`ocean.config.AugmentConfig`. Output: BGR images (uint8, or the
network's float input), boxes in output pixels and the search shift the labels need. Deterministic: each
side's parameters are drawn first from a fixed number of uniforms (:func:`draw_params`), and
:func:`augment_pairs` seeds every row from ``(seed, pair_id)``, so results do not depend on batch
boundaries or the number of workers. The transform and its order: :func:`apply_side`; then, in
:func:`augment_pair`, two optional steps the official recipe does not have (off by default): an occluder
that stays still while the target moves (:func:`static_occluder`) and sensor noise (:func:`add_noise`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from data_prep.crops import CROP_SIZE, EXEMPLAR_SIZE, decode_image, stored_side
from ocean.geometry import mean_color

SEARCH_SIZE = 255  # paper Sec. 5.1

# Uniforms drawn per side (fixed count, see draw_params).
_N_UNIFORMS = 17
# torchvision rgb_to_grayscale weights, applied to channels 0, 1, 2 of the (BGR) array -- facts §7.5
_GRAY_W = np.array([0.2989, 0.587, 0.114], dtype=np.float64)
# pysot datasets/augmentation.py rand_kernel: odd kernel sizes 5..45
_BLUR_SIZES = np.arange(5, 46, 2)


@dataclass(frozen=True)
class SideParams:
    """Augmentation parameters of one side.

    Attributes:
        shift: ``(tx, ty)`` requested window shift, 511-frame pixels.
        scale: ``(sx, sy)`` requested window scale.
        brightness, contrast, saturation: jitter factors (1 = unchanged).
        hue: hue shift in turns (0 = unchanged).
        order: the order of (brightness, contrast, saturation, hue), a permutation of 0..3.
        blur_size: blur kernel side (0 = no blur); blur_wx: weight of the kernel's vertical bar.
        flip: horizontal flip; gray: convert to grey.
    """

    shift: tuple[float, float]
    scale: tuple[float, float]
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    order: tuple[int, int, int, int] = (0, 1, 2, 3)
    blur_size: int = 0
    blur_wx: float = 0.0
    flip: bool = False
    gray: bool = False


def params_from_uniforms(u: np.ndarray, shift: float, scale: float, cfg) -> SideParams:
    """Map ``_N_UNIFORMS`` uniforms in [0, 1) to :class:`SideParams` (``U(-1, 1) = 2u - 1``, facts §7.5)."""
    pn = 2.0 * u - 1.0
    j = float(cfg.color_jitter)
    light = j if cfg.illumination_jitter is None else float(cfg.illumination_jitter)
    blur = bool(u[14] < cfg.blur_prob)
    return SideParams(
        shift=(float(pn[0] * shift), float(pn[1] * shift)),
        scale=(float(1.0 + pn[2] * scale), float(1.0 + pn[3] * scale)),
        brightness=float(1.0 + pn[4] * light),
        contrast=float(1.0 + pn[5] * light),
        saturation=float(1.0 + pn[6] * j),
        hue=float(pn[7] * j),
        order=tuple(int(i) for i in np.argsort(u[8:12], kind="stable")),
        gray=bool(u[12] < cfg.gray_prob),
        flip=bool(u[13] < cfg.flip_prob),
        blur_size=int(_BLUR_SIZES[min(int(u[15] * len(_BLUR_SIZES)), len(_BLUR_SIZES) - 1)]) if blur else 0,
        blur_wx=float(u[16]) if blur else 0.0,
    )


def draw_params(rng: np.random.Generator, cfg) -> tuple[SideParams, SideParams]:
    """``(template, search)`` parameters for an :class:`ocean.config.AugmentConfig`; ``2 * 17`` uniforms.

    Per side (template, search) the parameters are drawn FIRST from a ``np.random.Generator`` (always the
    same number of uniforms, so switching an option on does not move the others), then one transform is
    applied to the image and to the box (:func:`apply_side`).
    """
    u = rng.random((2, _N_UNIFORMS))
    return (params_from_uniforms(u[0], cfg.template_shift, cfg.template_scale, cfg),
            params_from_uniforms(u[1], cfg.search_shift, cfg.search_scale, cfg))


def crop_window(size: int, params: SideParams, crop_size: int = CROP_SIZE) -> tuple[np.ndarray, tuple[float, float]]:
    """The augmentation window in the 511 frame, TK ``aug_apply`` (facts §7.5).

    Returns ``(window_xyxy (4,) float64, (sx, sy))`` with the scales after the ``crop_size / size`` cap.
    """
    c = float(crop_size // 2)  # center2corner((imw // 2, imh // 2, size, size))
    sx = min(params.scale[0], crop_size / size)
    sy = min(params.scale[1], crop_size / size)
    w, h = size * sx, size * sy
    x1, y1, x2, y2 = c - w / 2.0, c - h / 2.0, c + w / 2.0, c + h / 2.0
    tx = max(-x1, min(crop_size - 1 - x2, params.shift[0]))
    ty = max(-y1, min(crop_size - 1 - y2, params.shift[1]))
    return np.array([x1 + tx, y1 + ty, x2 + tx, y2 + ty], dtype=np.float64), (sx, sy)


def _linear_step_matrix(step: int, params: SideParams, a: np.ndarray, b: np.ndarray,
                        mean_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compose brightness (0) / contrast (1) / saturation (2) onto the affine colour map ``x -> a x + b``."""
    if step == 0:  # brightness: blend with black
        f = params.brightness
        return f * a, f * b
    if step == 1:  # contrast: blend with the mean grey level of the current image (affine in the mean)
        f = params.contrast
        m = float(_GRAY_W @ (a @ mean_rgb + b))
        return f * a, f * b + (1.0 - f) * m
    f = params.saturation  # saturation: blend with the grey image
    s = f * np.eye(3) + (1.0 - f) * np.outer(np.ones(3), _GRAY_W)
    return s @ a, s @ b


def color_jitter(image: np.ndarray, params: SideParams) -> np.ndarray:
    """torchvision ``ColorJitter`` arithmetic on a uint8 image, in ``params.order`` (:func:`apply_side`).

    Brightness ``f x``; contrast ``f x + (1 - f) mean(grey(x))``; saturation ``f x + (1 - f) grey(x)``;
    hue: HSV with ``h += hue`` turns (mod 1), through OpenCV's float HSV. As in the official code
    (facts §7.5) the BGR array is treated as if it were RGB (the grey weights 0.2989 / 0.587 / 0.114 apply
    to channels 0 / 1 / 2, and the hue rotates accordingly). Consecutive linear steps are merged into one
    3x4 colour matrix applied with ``cv2.transform`` (rounded and clamped to uint8 once per merged group,
    where torchvision clamps after every step; with factors within 1 +- 0.05 the difference is at most a
    grey level or two near 0 / 255).

    Returns ``(H, W, 3)`` uint8.
    """
    out = image
    a, b = np.eye(3), np.zeros(3)
    mean_rgb: np.ndarray | None = None
    pending = False
    for step in params.order:
        if step == 3:
            if params.hue == 0.0:
                continue
            if pending:
                out = cv2.transform(out, np.concatenate([a, b[:, None]], axis=1))
                a, b, mean_rgb, pending = np.eye(3), np.zeros(3), None, False
            hsv = cv2.cvtColor(np.multiply(out, np.float32(1.0 / 255.0), dtype=np.float32), cv2.COLOR_RGB2HSV)
            # the hue plane as its own contiguous array (faster): the same float32 arithmetic as
            # ``(h + hue) mod 360`` on the strided view, bit for bit; h in [0, 360) plus a shift of less than
            # one turn needs one wrap at most
            turns = params.hue if abs(params.hue) < 1.0 else math.fmod(params.hue, 1.0)
            h, s, v = cv2.split(hsv)  # h in degrees
            h += np.float32(360.0 * turns)
            h[h >= np.float32(360.0)] -= np.float32(360.0)
            h[h < np.float32(0.0)] += np.float32(360.0)
            out = cv2.convertScaleAbs(cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2RGB), alpha=255.0)
            continue
        if mean_rgb is None:
            mean_rgb = mean_color(out)  # cv2.mean, float64 (3,)
        a, b = _linear_step_matrix(step, params, a, b, mean_rgb)
        pending = True
    if pending:
        out = cv2.transform(out, np.concatenate([a, b[:, None]], axis=1))
    return out


def _blur_kernel(size: int, wx: float) -> np.ndarray:
    # pysot rand_kernel: a cross of a vertical bar (weight wx) and a horizontal bar (1 - wx), sum 1
    k = np.zeros((size, size), dtype=np.float32)
    c = size // 2
    k[:, c] += wx / size
    k[c, :] += (1.0 - wx) / size
    return k


def apply_side(image: np.ndarray, box_xyxy, offset: float, size: int, params: SideParams,
               crop_size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Augment one stored crop: one transform of the image and the box, with parameters drawn beforehand.

    1. Crop window, in the 511 frame (TK ``_augmentation`` / ``aug_apply``, facts §7.5): a square of side
       ``S`` (127 or 255) centred at ``(255, 255)``; scale ``(sx, sy) = 1 + U(-1, 1) * SC`` per axis (capped
       at ``511 / S``), then shift ``(tx, ty) = U(-1, 1) * SH`` (clamped so the window stays inside
       ``[0, 510]``; with 511 frames neither cap triggers for the official SH / SC).
    2. Warp: the window ``[x1, x2] x [y1, y2]`` to ``S x S`` with scale ``(S - 1) / (x2 - x1)`` per axis,
       bilinear, out-of-bounds pixels black (0, 0, 0). The stored crop is the 511 frame's central region
       starting at ``offset`` (:mod:`data_prep.crops`), so the window moves by ``-offset``: same pixels.
    3. Box: ``(box_511 - (x1, y1)) / (sx, sy)`` per axis -- the official rule (it differs from the exact
       warp of the box by the factor ``(S - 1) / S``, under 1 px at 255).
    4. Photometric, in this order: colour jitter (brightness, contrast, saturation factors
       ``1 + U(-1, 1) * j`` and hue shift ``U(-1, 1) * j`` turns, applied in a random order like
       torchvision's ColorJitter, ``j = AugmentConfig.color_jitter``, brightness and contrast with
       ``AugmentConfig.illumination_jitter`` instead when it is set, :func:`color_jitter`); then, each with
       its probability, blur (pysot's random cross-shaped kernel, odd sizes 5..45), horizontal flip (image
       and box; the returned search shift's x is negated so the shift-based label centre of facts §5.2
       follows the target, :func:`label_shift`), grey.

    Args:
        image: ``(side, side, 3)`` uint8 BGR stored crop whose top-left is at ``offset`` in the 511 frame
            (``offset = 0`` for a full crop511).
        box_xyxy: target box in stored-crop pixels.
        size: output side (127 or 255).

    Returns:
        ``(out (size, size, 3) uint8 BGR, box_xyxy (4,) float64 in output pixels)``.
    """
    window, (sx, sy) = crop_window(size, params, crop_size)
    x1, y1, x2, y2 = window - offset  # window in stored-crop pixels
    ax = (size - 1) / (x2 - x1)  # TK _crop_hwc: (out_sz - 1) / (x2 - x1)
    ay = (size - 1) / (y2 - y1)
    m = np.array([[ax, 0.0, -ax * x1], [0.0, ay, -ay * y1]], dtype=np.float64)
    out = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0))
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
    box = np.array([(box[0] - x1) / sx, (box[1] - y1) / sy, (box[2] - x1) / sx, (box[3] - y1) / sy])
    identity = (params.brightness == 1.0 and params.contrast == 1.0 and params.saturation == 1.0
                and params.hue == 0.0)
    if not identity:
        out = color_jitter(out, params)
    if params.blur_size:
        out = cv2.filter2D(out, -1, _blur_kernel(params.blur_size, params.blur_wx))
    if params.flip:
        out = np.ascontiguousarray(out[:, ::-1])
        box = np.array([size - 1 - box[2], box[1], size - 1 - box[0], box[3]])  # pysot _flip_aug
    if params.gray:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return out, box


_N_OCCLUSION_UNIFORMS = 13  # whether, then static_occluder()'s twelve


def _occluder_rect(box: np.ndarray, size: int, u: np.ndarray) -> tuple[np.ndarray, int | None]:
    """The occluder's rectangle ``(x1, y1, x2, y2)`` in a crop of side ``size`` whose target box is ``box``,
    and the axis a band runs along (0: vertical, 1: horizontal; None for a rectangle).

    Half of them (``u0 < 0.5``) are bands across the whole crop, as a pole, a tree or a railing in front of
    the target: vertical or horizontal (``u1``), 20-60 % of the target's extent wide (``u2``). The others are
    rectangles covering 10-50 % of the box (``u2``), of aspect ``2 ** (2 u1 - 1)``, sides capped at the
    box's. Either is centred inside the box (``u3``, ``u4``).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    cx, cy = x1 + float(u[3]) * bw, y1 + float(u[4]) * bh
    if u[0] < 0.5:
        if u[1] < 0.5:
            half = 0.5 * (0.2 + 0.4 * float(u[2])) * bw
            return np.array([cx - half, -1.0, cx + half, size + 1.0]), 0
        half = 0.5 * (0.2 + 0.4 * float(u[2])) * bh
        return np.array([-1.0, cy - half, size + 1.0, cy + half]), 1
    area = (0.1 + 0.4 * float(u[2])) * bw * bh
    aspect = 2.0 ** (2.0 * float(u[1]) - 1.0)
    ow, oh = min(math.sqrt(area * aspect), bw), min(math.sqrt(area / aspect), bh)
    return np.array([cx - ow / 2.0, cy - oh / 2.0, cx + ow / 2.0, cy + oh / 2.0]), None


def _paint(image: np.ndarray, rect: np.ndarray, texture: np.ndarray, m: np.ndarray | None = None) -> None:
    """Paint ``texture`` (in search-crop pixels) inside ``rect`` of ``image``, in place; ``m`` (2x3) maps the
    image's pixels to the texture's (None: the same pixels)."""
    h, w = image.shape[:2]
    x1, y1 = max(int(math.ceil(rect[0])), 0), max(int(math.ceil(rect[1])), 0)
    x2, y2 = min(int(math.ceil(rect[2])), w), min(int(math.ceil(rect[3])), h)
    if x2 <= x1 or y2 <= y1:
        return
    patch = texture if m is None else cv2.warpAffine(texture, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                                     borderMode=cv2.BORDER_WRAP)
    image[y1:y2, x1:x2] = patch[y1:y2, x1:x2]


def static_occluder(template: np.ndarray, template_box, search: np.ndarray, search_box,
                    u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put one occluder, still in the scene while the target moves, in front of the target in both crops.

    The template's occluder covers part of the target (:func:`_occluder_rect`, ``u[0:5]``); in the search
    crop the same occluder, with the same look, sits where it would be had the target moved by ``d``
    against it: its place relative to the target, scaled by the crops' box-size ratio, plus ``d`` of
    ``0.3-1.5`` target sizes in a random direction (``u5``, ``u6``). So the template holds something the
    label never follows. Its look (``u7``): a flat colour (``u8..u10``), or half the time a piece of the
    search crop itself, cyclically shifted by ``(u8, u9)`` of its side. Boxes and labels keep the whole
    target, as annotations do. Returns new ``(template, search)`` uint8 images.

    The ranges (20-60 % bands, 10-50 % rectangles, 0.3-1.5 target sizes) are this option's own choice, set
    so the target is never hidden whole and the occluder leaves it in most search crops; they were not
    tuned (BENCHMARKS.md "Generalisation", "Where the default model still fails").
    """
    tb, sb = (np.asarray(b, dtype=np.float64).reshape(4) for b in (template_box, search_box))
    t_c, s_c = (tb[:2] + tb[2:]) / 2.0, (sb[:2] + sb[2:]) / 2.0
    t_wh, s_wh = np.maximum(tb[2:] - tb[:2], 1.0), np.maximum(sb[2:] - sb[:2], 1.0)
    scale = float(np.sqrt(np.prod(s_wh) / np.prod(t_wh)))  # search / template pixels
    angle, reach = 2.0 * math.pi * float(u[5]), (0.3 + 1.2 * float(u[6])) * float(np.mean(s_wh))
    d = reach * np.array([math.cos(angle), math.sin(angle)])
    side = search.shape[0]
    if u[7] < 0.5:
        texture = np.empty_like(search)
        texture[:] = (np.asarray(u[8:11]) * 255.0).astype(np.uint8)
    else:
        texture = np.roll(search, (int(u[8] * side), int(u[9] * side)), axis=(0, 1))
    # template pixel -> search pixel: the occluder keeps its offset from the target, scaled, moved by d
    offset = s_c + d - scale * t_c
    m_t = np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]])
    rect_t, band_axis = _occluder_rect(tb, template.shape[0], u)
    rect_s = scale * rect_t + np.tile(offset, 2)
    if band_axis is not None:  # a band crosses the whole search crop too
        rect_s[1 - band_axis], rect_s[3 - band_axis] = -1.0, side + 1.0
    template, search = template.copy(), search.copy()
    _paint(template, rect_t, texture, m_t)
    _paint(search, rect_s, texture)
    return template, search


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian pixel noise of standard deviation ``sigma`` grey levels (sensor noise), rounded and clamped."""
    if sigma <= 0:
        return image
    noisy = image.astype(np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def label_shift(params: SideParams) -> tuple[float, float]:
    """The requested search shift ``(shift_x, shift_y)`` for the official label centre (facts §5.2).

    Under a horizontal flip the target moves to the mirrored place, so ``shift_x`` is negated.
    """
    sx, sy = params.shift
    return (-sx if params.flip else sx, sy)


def augment_pair(template: np.ndarray, template_box_xyxy, template_offset: float,
                 search: np.ndarray, search_box_xyxy, search_offset: float, cfg, rng: np.random.Generator,
                 exemplar_size: int = EXEMPLAR_SIZE, search_size: int = SEARCH_SIZE,
                 crop_size: int = CROP_SIZE) -> dict[str, np.ndarray]:
    """Augment one decoded pair (parameters drawn first from ``rng``, see :func:`draw_params`).

    Returns a dict: ``template`` ``(127, 127, 3)`` uint8 BGR, ``search`` ``(255, 255, 3)`` uint8 BGR,
    ``template_box`` / ``search_box`` ``(4,)`` float32 xyxy in output pixels, ``shift`` ``(2,)`` float32
    (:func:`label_shift`).
    """
    pt, ps = draw_params(rng, cfg)
    t_img, t_box = apply_side(template, template_box_xyxy, template_offset, exemplar_size, pt, crop_size)
    s_img, s_box = apply_side(search, search_box_xyxy, search_offset, search_size, ps, crop_size)
    # the two steps beyond the official recipe draw after it, so switching them on moves no draw above
    if cfg.occlusion_prob > 0:
        u = rng.random(_N_OCCLUSION_UNIFORMS)
        if u[0] < cfg.occlusion_prob:
            t_img, s_img = static_occluder(t_img, t_box, s_img, s_box, u[1:])
    if cfg.noise_sigma > 0:
        t_img = add_noise(t_img, float(rng.random()) * cfg.noise_sigma, rng)
        s_img = add_noise(s_img, float(rng.random()) * cfg.noise_sigma, rng)
    return {
        "template": t_img, "search": s_img,
        "template_box": t_box.astype(np.float32), "search_box": s_box.astype(np.float32),
        "shift": np.asarray(label_shift(ps), dtype=np.float32),
    }


def row_rng(seed: int, pair_id: Any) -> np.random.Generator:
    """The generator of one row: ``SeedSequence([seed, pair_id as two 32-bit words])``.

    ``pair_id`` is a 16-hex-digit string (or bytes); anything else is hashed through its text form.
    """
    if isinstance(pair_id, bytes):
        pair_id = pair_id.decode("utf-8", "replace")
    text = str(pair_id)
    try:
        words = [int(text[:8], 16), int(text[8:16], 16)] if len(text) == 16 else None
    except ValueError:
        words = None
    if words is None:
        h = hashlib.sha1(text.encode("utf-8")).hexdigest()
        words = [int(h[:8], 16), int(h[8:16], 16)]
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *words]))


def _column(batch: dict[str, Any], name: str) -> Any:
    if name not in batch:
        raise KeyError(f"augment_pairs: batch has no {name!r} column (has {sorted(batch)})")
    return batch[name]


def _boxes(col: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(col)
    if arr.dtype == object:  # Ray / pandas give list columns as an object array of arrays
        arr = np.stack([np.asarray(v, dtype=np.float64) for v in col]) if n else np.zeros((0, 4))
    arr = np.asarray(arr, dtype=np.float64).reshape(n, -1)
    if arr.shape[1] != 4:
        raise ValueError(f"augment_pairs: {name} must have 4 values per row, got {arr.shape}")
    return arr


def negative_partners(batch: dict[str, Any], valid: np.ndarray, prob: float, seed: int) -> np.ndarray:
    """Which rows become negative pairs, and whose template they take: ``(n,)`` int, -1 for a positive row.

    With probability ``prob`` (``AugmentConfig.negative_prob``) a valid row takes the template of another valid
    row of the batch from a different video (``dataset`` and ``video`` columns; without them any other row),
    as DaSiamRPN's semantic negatives and SOTS's AUG.COMMON.NEG do (facts §7.4): the search still shows an
    object, just not the template's. The draw and the partner come from a generator of ``(seed, pair_id)``
    apart from the augmentation's own (:func:`row_rng` of ``seed + 1``), so ``prob = 0`` leaves every other
    draw as it was; a row with no eligible partner stays positive.
    """
    n = len(valid)
    partner = np.full(n, -1, dtype=np.int64)
    if prob <= 0 or n < 2:
        return partner
    ids = batch.get("pair_id")
    videos = [f"{d}/{v}" for d, v in zip(batch["dataset"], batch["video"], strict=True)] \
        if "dataset" in batch and "video" in batch else [str(i) for i in range(n)]
    videos = np.asarray(videos)
    for i in np.flatnonzero(valid):
        rng = row_rng(int(seed) + 1, ids[i] if ids is not None else f"row{i}")
        u, pick = rng.random(2)
        if u >= prob:
            continue
        others = np.flatnonzero(valid & (videos != videos[i]))
        if len(others):
            partner[i] = others[min(int(pick * len(others)), len(others) - 1)]
    return partner


def augment_pairs(batch: dict[str, Any], cfg, seed: int, *, chw_float: bool = False,
                  exemplar_size: int = EXEMPLAR_SIZE, search_size: int = SEARCH_SIZE,
                  crop_size: int = CROP_SIZE) -> dict[str, np.ndarray]:
    """Decode and augment a batch of pair records (a Ray Data ``map_batches`` function, numpy format).

    Args:
        batch: columns of :data:`data_prep.records.PAIR_SCHEMA` (at least ``template_jpeg``,
            ``search_jpeg``, ``template_box``, ``search_box``, ``template_offset``, ``search_offset``;
            ``pair_id`` seeds each row, ``template_side`` / ``search_side`` are checked against ``cfg``).
        cfg: :class:`ocean.config.AugmentConfig`.
        seed: e.g. derived from (run seed, epoch); with ``pair_id`` present every row's augmentation depends
            only on (seed, pair_id). Without ``pair_id`` rows are seeded by (seed, position in the batch).
        chw_float: return images as ``(B, 3, H, W)`` float32 0-255 BGR (the network input, facts §7.5)
            instead of ``(B, H, W, 3)`` uint8 (4x smaller to move between processes).

    Returns:
        ``template`` ``(B, 127, 127, 3)`` uint8 (or ``(B, 3, 127, 127)`` float32), ``search``
        ``(B, 255, 255, 3)`` uint8 (or CHW float32), ``template_box`` / ``search_box`` ``(B, 4)`` float32
        xyxy in output pixels, ``shift`` ``(B, 2)`` float32 requested search shift (facts §5.2),
        ``valid`` ``(B,)`` bool (False where a JPEG did not decode: zero images, NaN boxes), ``error``
        ``(B,)`` str (the decode reason, "" when valid) and ``negative`` ``(B,)`` bool (the row's template is
        another video's, :func:`negative_partners`; its ``template_box`` is that template's); ``pair_id`` and
        ``dataset`` are passed through.

    Raises:
        ValueError: stored crops smaller than ``cfg``'s augmentation window needs (the data was prepared
            for a smaller shift / scale), or malformed box columns.
    """
    t_jpeg, s_jpeg = _column(batch, "template_jpeg"), _column(batch, "search_jpeg")
    n = len(t_jpeg)
    t_box, s_box = _boxes(_column(batch, "template_box"), n, "template_box"), _boxes(
        _column(batch, "search_box"), n, "search_box")
    t_off = np.asarray(_column(batch, "template_offset"), dtype=np.float64).reshape(n)
    s_off = np.asarray(_column(batch, "search_offset"), dtype=np.float64).reshape(n)
    need = {
        "template_side": stored_side(exemplar_size, cfg.template_shift, cfg.template_scale, crop_size),
        "search_side": stored_side(search_size, cfg.search_shift, cfg.search_scale, crop_size),
    }
    for name, side in need.items():
        if name in batch and n and int(np.min(np.asarray(batch[name]))) < side:
            raise ValueError(
                f"stored {name} {int(np.min(np.asarray(batch[name])))} px < {side} px needed by this "
                f"AugmentConfig: prepare the data again for this augmentation or reduce its shift / scale")
    ids = batch.get("pair_id")

    templates = np.zeros((n, exemplar_size, exemplar_size, 3), dtype=np.uint8)
    searches = np.zeros((n, search_size, search_size, 3), dtype=np.uint8)
    out_t_box = np.full((n, 4), np.nan, dtype=np.float32)
    out_s_box = np.full((n, 4), np.nan, dtype=np.float32)
    shift = np.zeros((n, 2), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    error = np.full(n, "", dtype=object)
    for i in range(n):
        rng = row_rng(seed, ids[i] if ids is not None else f"row{i}")
        t_img, t_err = decode_image(t_jpeg[i])
        s_img, s_err = decode_image(s_jpeg[i])
        if t_img is None or s_img is None:
            error[i] = f"template:{t_err}" if t_img is None else f"search:{s_err}"
            continue
        r = augment_pair(t_img, t_box[i], t_off[i], s_img, s_box[i], s_off[i], cfg, rng,
                         exemplar_size, search_size, crop_size)
        templates[i], searches[i] = r["template"], r["search"]
        out_t_box[i], out_s_box[i], shift[i] = r["template_box"], r["search_box"], r["shift"]
        valid[i] = True
    negative = negative_partners(batch, valid, float(cfg.negative_prob), seed)
    if (negative >= 0).any():
        templates[negative >= 0] = templates[negative[negative >= 0]]  # fancy indexing: copies, order-safe
        out_t_box[negative >= 0] = out_t_box[negative[negative >= 0]]
    out: dict[str, np.ndarray] = {
        "template": templates, "search": searches, "template_box": out_t_box, "search_box": out_s_box,
        "shift": shift, "valid": valid, "error": error.astype(str), "negative": negative >= 0,
    }
    if chw_float:
        out["template"] = templates.transpose(0, 3, 1, 2).astype(np.float32)
        out["search"] = searches.transpose(0, 3, 1, 2).astype(np.float32)
    for name in ("pair_id", "dataset"):
        if name in batch:
            out[name] = np.asarray(batch[name])
    return out
