"""Target-centred crops in the official crop511 reference frame, JPEG encoding and safe decoding.

A stored crop is the central ``side`` x ``side`` square of a box's official 511 x 511 x-crop (facts §7.1),
rendered straight from the source image with one affine warp, so its pixels are the crop511's in that region
(to float rounding) and training's augmentation of it is exactly the official one. ``side`` keeps only what
that augmentation can reach. The 511 frame: :class:`CropGeometry`; the stored side: :func:`stored_side`;
rendering: :func:`crop_region`. :func:`decode_image` never raises on bad data: it returns a reason.
Reduced-resolution decoding (libjpeg's DCT scaling, jpeg_decode.md): :func:`decode_factor` picks a frame's
factor from the crops it serves, :func:`decode_scaled` decodes at it, and ``crop_region(..., decode_factor=f)``
renders the same crop geometry from the reduced image.

Coordinates are 0-based pixels; boxes are ``x1, y1, x2, y2`` (``*_xyxy``). Images are ``(H, W, 3)`` uint8
BGR (OpenCV order).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ocean.geometry import context_size, mean_color

# facts §7.1: the crop511 reference frame and the exemplar size it is built around
CROP_SIZE = 511
EXEMPLAR_SIZE = 127
CONTEXT_AMOUNT = 0.5
# OpenCV keeps bilinear sample positions to 1/2**INTER_BITS px (INTER_BITS = 5, imgproc.hpp); one extra pixel
# on each side of the stored crop covers that rounding.
_INTERP_GUARD_PX = 1
# libjpeg's DCT-domain scaling as cv2.imdecode exposes it: output side ceil(side / f) -- jpeg_decode.md §1
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# a frame is decoded at 1/f only when every crop it serves takes at least REDUCE_MARGIN * f source pixels
# per crop pixel (so each crop still downsamples the reduced image by >= REDUCE_MARGIN) -- jpeg_decode.md §3
REDUCE_MARGIN = 2.0


# --------------------------------------------------------------------------------------------------------
# Geometry


def window_extent(size: int, shift: float, scale: float) -> float:
    """Largest augmentation window side ``L = size (1 + scale) + 2 shift`` in 511-frame pixels (facts §7.5)."""
    return size * (1.0 + scale) + 2.0 * shift


def stored_side(size: int, shift: float, scale: float, crop_size: int = CROP_SIZE) -> int:
    """Side of the stored crop that holds every window the augmentation can draw.

    Training never looks further from the centre than its augmentation window can reach, so only the central
    part of the 511 frame that the augmentation can touch is stored. An augmentation window for output size
    ``S`` (127 or 255) with shift ``SH`` and scale ``SC`` (facts §7.5) is a rectangle of side ``S * s``
    (``s in [1 - SC, 1 + SC]``, per axis) centred at ``255 + t`` (``|t| <= SH``) in the 511 frame. Its
    farthest edge lies at distance ``L / 2`` from the centre, with::

        L = S * (1 + SC) + 2 * SH                      (the largest window side needed, :func:`window_extent`)

    The warp samples the 511 frame at continuous positions inside ``[255 - L/2, 255 + L/2]``; bilinear
    interpolation reads the integer pixels around each position, and OpenCV rounds positions to 1/32 px
    (``INTER_BITS = 5``), so one more pixel is kept on each side. The stored crop is the central square::

        half = ceil(L / 2) + 1
        side = min(2 * half + 1, 511)                 (odd, centred on pixel 255)
        offset = (511 - side) // 2                    (its top-left corner in the 511 frame, x = y)

    Defaults (AugmentConfig): template ``L = 127 * 1.05 + 8 = 141.35 -> side 145``; search
    ``L = 255 * 1.18 + 128 = 428.9 -> side 433``.
    """
    half = math.ceil(window_extent(size, shift, scale) / 2.0) + _INTERP_GUARD_PX
    return min(2 * half + 1, crop_size)


def stored_sides(augment, exemplar_size: int = EXEMPLAR_SIZE, search_size: int = 255,
                 crop_size: int = CROP_SIZE) -> tuple[int, int]:
    """``(template_side, search_side)`` for an :class:`ocean.config.AugmentConfig` (145, 433 by default)."""
    return (
        stored_side(exemplar_size, augment.template_shift, augment.template_scale, crop_size),
        stored_side(search_size, augment.search_shift, augment.search_scale, crop_size),
    )


@dataclass(frozen=True)
class CropGeometry:
    """Where a stored crop lies, in the 511 frame and in the source image.

    The official pipeline (facts §7.1) cuts every annotated object out of its frame as a 511 x 511 "x-crop":
    centre ``c`` = box centre, context ``p = 0.5 (w + h)``, ``s_z = sqrt((w + p)(h + p))``,
    ``s_x = s_z * 511 / 127``, one affine warp of the square ``[c - s_x/2, c + s_x/2]`` to 511 x 511 with
    scale ``(511 - 1) / s_x``, borders filled with the image's mean BGR colour. In that **511 frame** the
    target sits at ``(255, 255)`` with size ``(w, h) * 127 / s_z``, and training (facts §7.5) cuts its 127
    template and 255 search windows out of it around ``(255, 255)``. A stored crop is the central ``side`` x
    ``side`` square of that frame (:func:`stored_side`), its top-left corner at ``(offset, offset)``.

    Attributes:
        side: crop side in pixels (square).
        offset: top-left corner of the crop in the 511 frame (same for x and y; 0 for a full crop511).
        scale: 511-frame pixels per source pixel, ``(crop_size - 1) / s_x`` (facts §7.1).
        s_x: side of the source square the 511 frame covers, source pixels.
        center_xy: target centre in the source image, source pixels (maps to ``(crop_size - 1) / 2``).
        crop_size: the reference frame's side (511).
    """

    side: int
    offset: int
    scale: float
    s_x: float
    center_xy: tuple[float, float]
    crop_size: int = CROP_SIZE

    def matrix(self, decode_factor: int = 1) -> np.ndarray:
        """``(2, 3)`` float64 affine map source pixel -> crop pixel (what ``cv2.warpAffine`` receives).

        ``decode_factor`` f > 1: the map from the pixels of the source decoded at 1/f (:func:`decode_scaled`)
        instead. Reduced pixel ``i`` averages full pixels ``[f i, f (i + 1))``, so it is centred on full pixel
        ``x = f i + (f - 1) / 2`` (jpeg_decode.md §2), and the map is ``u = scale (f i + (f - 1) / 2) + t``.
        """
        cx, cy = self.center_xy
        # u_511 = scale * (x - (cx - s_x / 2)), the official crop_hwc mapping (facts §7.1); crop = u_511 - offset
        tx = -self.scale * (cx - self.s_x / 2.0) - self.offset
        ty = -self.scale * (cy - self.s_x / 2.0) - self.offset
        if decode_factor == 1:
            return np.array([[self.scale, 0.0, tx], [0.0, self.scale, ty]], dtype=np.float64)
        f = float(decode_factor)
        half = self.scale * (f - 1.0) / 2.0  # jpeg_decode.md §2
        return np.array([[self.scale * f, 0.0, tx + half], [0.0, self.scale * f, ty + half]], dtype=np.float64)

    def to_crop(self, pts_xy: np.ndarray) -> np.ndarray:
        """Source pixels ``(..., 2)`` -> crop pixels ``(..., 2)``."""
        m = self.matrix()
        pts = np.asarray(pts_xy, dtype=np.float64)
        return pts * self.scale + m[:, 2]

    def to_source(self, pts_xy: np.ndarray) -> np.ndarray:
        """Crop pixels ``(..., 2)`` -> source pixels ``(..., 2)``."""
        m = self.matrix()
        return (np.asarray(pts_xy, dtype=np.float64) - m[:, 2]) / self.scale


@dataclass
class StoredCrop:
    """A crop and where its target is.

    Attributes:
        image: ``(side, side, 3)`` uint8 BGR.
        box_xyxy: ``(4,)`` float64 target box in crop pixels.
        geometry: :class:`CropGeometry`.
    """

    image: np.ndarray
    box_xyxy: np.ndarray
    geometry: CropGeometry


def crop_geometry(box_xyxy, side: int, context_amount: float = CONTEXT_AMOUNT,
                  crop_size: int = CROP_SIZE, exemplar_size: int = EXEMPLAR_SIZE) -> CropGeometry:
    """Geometry of the central ``side`` x ``side`` region of a box's crop511 frame (facts §7.1).

    Raises ValueError for a box with non-finite values or non-positive width / height.
    """
    # Python floats, not numpy: the same float64 arithmetic, without numpy's per-call overhead on 4 scalars
    # (this runs once per stored crop).
    box = _box4(box_xyxy)
    if not all(map(math.isfinite, box)):
        raise ValueError(f"box {list(box)} is not finite")
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        raise ValueError(f"box {list(box)} has a non-positive width or height")
    if not (1 <= side <= crop_size) or (crop_size - side) % 2:
        raise ValueError(f"side {side} must be in [1, {crop_size}] with {crop_size} - side even (centred)")
    s_z = context_size((box[2] - box[0], box[3] - box[1]), context_amount)  # facts §7.1 (source px)
    s_x = s_z * crop_size / exemplar_size  # s_z + 2 ((511 - 127) / 2) s_z / 127 -- facts §7.1
    return CropGeometry(
        side=int(side),
        offset=(crop_size - side) // 2,
        scale=(crop_size - 1) / s_x,  # facts §7.1
        s_x=s_x,
        center_xy=((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0),
        crop_size=crop_size,
    )


def source_per_crop_pixel(box_xyxy, context_amount: float = CONTEXT_AMOUNT, crop_size: int = CROP_SIZE,
                          exemplar_size: int = EXEMPLAR_SIZE) -> float:
    """Source pixels per crop pixel of ``box_xyxy``'s crops, ``s_x / (crop_size - 1)`` (1 / ``scale``,
    facts §7.1): the same for its template and search crops, both regions of one 511 frame. NaN for a box
    :func:`crop_geometry` would refuse."""
    box = _box4(box_xyxy)
    w, h = box[2] - box[0], box[3] - box[1]
    if not (all(map(math.isfinite, box)) and w > 0 and h > 0):
        return math.nan
    return context_size((w, h), context_amount) * crop_size / exemplar_size / (crop_size - 1)  # facts §7.1


def decode_factor(boxes, context_amount: float = CONTEXT_AMOUNT, crop_size: int = CROP_SIZE,
                  exemplar_size: int = EXEMPLAR_SIZE, margin: float = REDUCE_MARGIN) -> int:
    """The reduced-decode factor of a frame whose crops are cut around ``boxes``: the largest f of 8, 4, 2
    with every box's :func:`source_per_crop_pixel` >= ``margin`` * f, else 1 (also for no boxes or a box
    with no valid crop). jpeg_decode.md §3."""
    ratios = [source_per_crop_pixel(b, context_amount, crop_size, exemplar_size) for b in boxes]
    if not ratios or not all(r > 0 for r in ratios):  # NaN compares False
        return 1
    low = min(ratios)
    for f in (8, 4, 2):
        if low >= margin * f:
            return f
    return 1


def _box4(box_xyxy) -> tuple[float, float, float, float]:
    """Four Python floats from any 4-element box (tuple, list, ``(4,)`` or ``(1, 4)`` array)."""
    if isinstance(box_xyxy, np.ndarray):
        box_xyxy = box_xyxy.reshape(4).tolist()
    x1, y1, x2, y2 = map(float, box_xyxy)
    return x1, y1, x2, y2


def target_box(box_xyxy, geometry: CropGeometry, context_amount: float = CONTEXT_AMOUNT,
               exemplar_size: int = EXEMPLAR_SIZE,
               mode: Literal["official", "exact"] = "official") -> np.ndarray:
    """The target box in crop pixels, ``(4,)`` float64 xyxy.

    ``official``: TK ``_toBBox`` (facts §7.5): size ``(w, h) * 127 / s_z`` centred at ``crop_size // 2`` of the
    511 frame, shifted by ``-offset``. ``exact``: the source box through :meth:`CropGeometry.to_crop`; it is
    ``510 / 511`` of the official size (0.2 % smaller) with the same centre.
    """
    if mode == "exact":
        box = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
        return geometry.to_crop(box.reshape(2, 2)).reshape(4)
    if mode != "official":
        raise ValueError(f"unknown box mode {mode!r}")
    box = _box4(box_xyxy)
    s_z = context_size((box[2] - box[0], box[3] - box[1]), context_amount)  # facts §7.1 (source px)
    w = (box[2] - box[0]) * exemplar_size / s_z
    h = (box[3] - box[1]) * exemplar_size / s_z
    c = geometry.crop_size // 2 - geometry.offset  # TK _toBBox: (imw // 2, imh // 2)
    return np.array([c - w / 2.0, c - h / 2.0, c + w / 2.0, c + h / 2.0], dtype=np.float64)


def crop_region(image: np.ndarray, box_xyxy, side: int, *, context_amount: float = CONTEXT_AMOUNT,
                crop_size: int = CROP_SIZE, exemplar_size: int = EXEMPLAR_SIZE,
                padding: tuple[float, float, float] | np.ndarray | None = None,
                box_mode: Literal["official", "exact"] = "official", out: np.ndarray | None = None,
                decode_factor: int = 1) -> StoredCrop:
    """Render the central ``side`` x ``side`` region of ``box_xyxy``'s crop511 frame with one affine warp.

    The crop is rendered straight from the source image with ONE affine warp at the 511 frame's scale,
    translated by ``-offset``: its pixels are the 511 crop's pixels in that region (to float rounding), so the
    downstream augmentation is exactly the official one.

    Args:
        image: ``(H, W, 3)`` uint8 BGR source frame.
        box_xyxy: target box in source pixels.
        side: odd crop side (see :func:`stored_side`); ``crop_size`` gives the full crop511.
        padding: border colour (3 values); default the image's mean colour (facts §7.1) with ``cv2.mean``
            (:func:`ocean.geometry.mean_color`).
        box_mode: see :func:`target_box`.
        out: optional ``(side, side, 3)`` uint8 C-contiguous array to render into (every pixel is written), so
            a loop over many crops reuses one buffer instead of allocating ~0.5 MB per crop; the returned
            image is then ``out`` itself and is overwritten by the next call with the same buffer.
        decode_factor: ``image`` is the source decoded at 1/``decode_factor`` (:func:`decode_scaled`);
            ``box_xyxy``, the geometry and the returned box stay in full-resolution source pixels.

    Returns:
        :class:`StoredCrop` (image ``(side, side, 3)`` uint8, box in crop pixels, geometry).
    """
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ValueError(f"expected an (H, W, 3) image, got {None if image is None else image.shape}")
    geometry = crop_geometry(box_xyxy, side, context_amount, crop_size, exemplar_size)
    if padding is None:
        padding = mean_color(image)
    if out is not None and (out.shape != (side, side, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous ({side}, {side}, 3) uint8 array, got {out.shape} {out.dtype}")
    crop = cv2.warpAffine(image, geometry.matrix(decode_factor), (side, side), dst=out, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in padding))
    box = target_box(box_xyxy, geometry, context_amount, exemplar_size, box_mode)
    return StoredCrop(image=crop, box_xyxy=box, geometry=geometry)


def crop511(image: np.ndarray, box_xyxy, context_amount: float = CONTEXT_AMOUNT,
            crop_size: int = CROP_SIZE, exemplar_size: int = EXEMPLAR_SIZE,
            padding: tuple[float, float, float] | np.ndarray | None = None) -> np.ndarray:
    """The official 511 x 511 x-crop (facts §7.1): ``(511, 511, 3)`` uint8 BGR, target at (255, 255)."""
    return crop_region(image, box_xyxy, crop_size, context_amount=context_amount, crop_size=crop_size,
                       exemplar_size=exemplar_size, padding=padding).image


# --------------------------------------------------------------------------------------------------------
# JPEG


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a uint8 BGR image at ``quality`` (DataConfig.jpeg_quality; crop511 used 95, facts §17)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality {quality} is not in [1, 100]")
    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"cv2.imencode failed for an image of shape {image.shape}")
    return buf.tobytes()


_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"


def jpeg_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete JPEG stream, or None. Cheap header / trailer checks only.

    Reasons: ``empty``, ``not_jpeg`` (no SOI marker 0xFFD8), ``truncated_jpeg`` (the stream does not end
    with the EOI marker 0xFFD9, ignoring trailing zero / whitespace padding). libjpeg decodes a truncated
    file partially (grey bottom rows, a warning on stderr) and OpenCV returns the image, so the trailer is
    the only reliable signal. Files with non-padding data appended after EOI are rejected too.
    """
    if not data:
        return "empty"
    if data[:2] != _SOI:
        return "not_jpeg"
    tail = bytes(data[-64:]).rstrip(b"\x00\r\n\t ")
    if not tail.endswith(_EOI):
        return "truncated_jpeg"
    return None


def decode_image(source: bytes | bytearray | memoryview | np.ndarray | str | Path, name: str | None = None,
                 ) -> tuple[np.ndarray | None, str | None]:
    """Decode a JPEG (or other OpenCV-readable image) from bytes or a path, never raising on bad data.

    Returns ``(image, None)`` with ``image`` ``(H, W, 3)`` uint8 BGR (grey images are expanded), or
    ``(None, reason)`` with reason one of ``unreadable_file``, ``empty``, ``not_jpeg`` (only for a file
    named ``.jpg``/``.jpeg``: the path, or ``name`` for bytes read from elsewhere), ``truncated_jpeg``,
    ``corrupt_image``.
    """
    data, problem = _checked_bytes(source, name)
    if problem is not None:
        return None, problem
    return _decode_full(data)


def _checked_bytes(source, name: str | None) -> tuple[bytes | None, str | None]:
    """``(data, None)`` or ``(None, reason)``: the bytes of ``source`` and the cheap checks of
    :func:`decode_image`."""
    expect_jpeg = name is not None and os.path.splitext(name)[1].lower() in (".jpg", ".jpeg")
    if isinstance(source, (str, Path)):
        path = os.fspath(source)  # plain open(), no pathlib parsing: this runs once per frame of a shard task
        expect_jpeg = os.path.splitext(path)[1].lower() in (".jpg", ".jpeg")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None, "unreadable_file"
    elif isinstance(source, np.ndarray):
        data = source.tobytes()
    else:
        data = bytes(source)
    if not data:
        return None, "empty"
    if data[:2] == _SOI or expect_jpeg:
        problem = jpeg_problem(data)
        if problem is not None:
            return None, problem
    return data, None


def _decode_full(data: bytes) -> tuple[np.ndarray | None, str | None]:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None, "corrupt_image"
    return image, None


def decode_scaled(source: bytes | bytearray | memoryview | np.ndarray | str | Path, factor: int,
                  name: str | None = None) -> tuple[np.ndarray | None, str | None, int, tuple[int, int]]:
    """:func:`decode_image` at 1/``factor`` (1, 2, 4 or 8) where libjpeg can scale in the DCT domain.

    Returns ``(image, None, used, (width, height))``: ``image`` the source decoded at 1/``used``, ``(width,
    height)`` the full-resolution size. ``used`` is ``factor`` for a Huffman-coded JPEG (baseline, extended
    or progressive) without an EXIF orientation other than 1 whose reduced image has the expected size
    ``ceil(side / factor)`` (jpeg_decode.md §1); anything else is decoded at full resolution (``used`` = 1),
    as are failures of the reduced decode, so a broken file gets :func:`decode_image`'s reason. On failure:
    ``(None, reason, 1, (0, 0))``.
    """
    if factor not in (1, 2, 4, 8):
        raise ValueError(f"decode factor {factor} is not 1, 2, 4 or 8")
    data, problem = _checked_bytes(source, name)
    if problem is not None:
        return None, problem, 1, (0, 0)
    header = jpeg_header(data) if factor > 1 else None
    if header is not None and header[2] == 1:
        w, h = header[0], header[1]
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED_FLAGS[factor])
        if image is not None and image.shape[:2] == (-(-h // factor), -(-w // factor)):  # jpeg_decode.md §1
            return image, None, factor, (w, h)
    image, problem = _decode_full(data)
    if image is None:
        return None, problem, 1, (0, 0)
    return image, None, 1, (int(image.shape[1]), int(image.shape[0]))


# Start-of-frame markers of Huffman-coded DCT JPEGs (baseline, extended, progressive): the ones libjpeg
# scales in the DCT domain (lossless and arithmetic-coded streams are decoded at full size) -- jpeg_decode.md §1
_SOF_SCALABLE = {0xC0, 0xC1, 0xC2}
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_EXIF_ORIENTATION_TAG = 0x0112


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """``(width, height, exif_orientation)`` of a Huffman-coded DCT JPEG, read from its markers up to the
    start-of-frame segment (orientation 1 when there is no EXIF orientation); None for any other stream or
    a header that does not parse."""
    n = len(data)
    if data[:2] != _SOI:
        return None
    orientation = 1
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            i += 2
            continue
        if marker in _SOF_OTHER or marker in (0xD9, 0xDA):  # not scalable, or no frame header before the scan
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2 or i + 2 + length > n:
            return None
        if marker in _SOF_SCALABLE:
            if length < 7:
                return None
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return (w, h, orientation) if w > 0 and h > 0 else None
        if marker == 0xE1:
            orientation = _exif_orientation(data[i + 4:i + 2 + length], orientation)
        i += 2 + length
    return None


def _exif_orientation(segment: bytes, default: int) -> int:
    """The orientation tag of an APP1 EXIF segment's first IFD, ``default`` when it has none; 0 when the
    segment does not parse (treated as "not 1": decoded at full size)."""
    if segment[:6] != b"Exif\x00\x00":
        return default
    tiff = segment[6:]
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 0
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 0
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    for k in range(count):
        e = ifd + 2 + 12 * k
        if e + 12 > len(tiff):
            return 0
        if int.from_bytes(tiff[e:e + 2], order) == _EXIF_ORIENTATION_TAG:
            return int.from_bytes(tiff[e + 8:e + 10], order)
    return default
