"""Rendering of synthetic tracking scenes: textured shapes moving over a textured, panning background.

Targets keep one texture for a whole sequence (so a tracker must learn appearance), move smoothly, change
scale and aspect, may pass behind an occluding wall and leave the frame; look-alike distractors share the
target's shape family but not its texture / colour. All randomness comes from the ``rng`` argument.

Coordinates: 0-based pixels; boxes ``x, y, w, h`` with integer values (the sprite is resized to exactly
that box, so the box is the tight box of the drawn shape). Frames are BGR ``uint8`` ``(H, W, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("disc", "square", "triangle", "diamond", "star", "cross")
_SPRITE = 64  # sprite canvas side (pixels) before resizing to the box
_GONE = 0.02  # visible / in-view fraction below which a target counts as fully hidden / out of view
_PAN = 16  # background margin for the camera pan (pixels)


def shape_mask(shape: str, side: int = _SPRITE) -> np.ndarray:
    """``(side, side)`` float32 mask in [0, 1] of ``shape``, touching all four canvas edges."""
    s = side * 4  # draw large, then shrink: anti-aliased edges
    canvas = np.zeros((s, s), np.uint8)
    c = s / 2
    if shape == "disc":
        cv2.ellipse(canvas, (int(c), int(c)), (int(c), int(c)), 0, 0, 360, 255, -1)
    elif shape == "square":
        cv2.rectangle(canvas, (0, 0), (s - 1, s - 1), 255, -1)
        cv2.rectangle(canvas, (s // 3, s // 3), (2 * s // 3, 2 * s // 3), 0, -1)  # a framed square
    else:
        if shape == "triangle":
            pts = [(c, 0), (s, s), (0, s)]
        elif shape == "diamond":
            pts = [(c, 0), (s, c), (c, s), (0, c)]
        elif shape == "star":
            ang = np.pi / 2 + np.arange(10) * np.pi / 5
            rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
            pts = list(zip(c + rad * c * np.cos(ang), c - rad * c * np.sin(ang), strict=True))
        elif shape == "cross":
            a, b = s * 0.33, s * 0.67
            pts = [(a, 0), (b, 0), (b, a), (s, a), (s, b), (b, b), (b, s), (a, s), (a, b), (0, b), (0, a), (a, a)]
        else:
            raise ValueError(f"unknown shape {shape!r}")
        poly = np.array(pts, np.float64)
        poly -= poly.min(0)
        poly *= (s - 1) / poly.max(0)  # stretch to touch every edge
        cv2.fillPoly(canvas, [np.round(poly).astype(np.int32)], 255)
    return cv2.resize(canvas, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def texture(rng: np.random.Generator, side: int = _SPRITE, colours: tuple[np.ndarray, np.ndarray] | None = None
            ) -> np.ndarray:
    """``(side, side, 3)`` uint8 BGR texture: one of stripes, checks, rings or blobs in two random colours
    (or in ``colours``, so that a distractor can share the target's colours but not its pattern)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    kind = int(rng.integers(4))
    freq = float(rng.uniform(2.0, 6.0))
    if kind == 0:
        ang = rng.uniform(0, np.pi)
        t = np.sin(2 * np.pi * freq * (np.cos(ang) * xx + np.sin(ang) * yy)) > 0
    elif kind == 1:
        t = (np.floor(xx * freq) + np.floor(yy * freq)) % 2 == 0
    elif kind == 2:
        t = np.sin(2 * np.pi * freq * np.hypot(xx - 0.5, yy - 0.5)) > 0
    else:
        low = rng.random((5, 5)).astype(np.float32)
        t = cv2.resize(low, (side, side), interpolation=cv2.INTER_CUBIC) > 0.5
    if colours is not None:
        c1, c2 = colours
    else:
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        while np.abs(c1.astype(int) - c2).sum() < 150:  # keep the pattern visible
            c2 = rng.integers(0, 256, 3)
    img = np.where(t[..., None], c1, c2).astype(np.float32)
    img += rng.normal(0, 8, img.shape)  # fine grain
    return np.clip(img, 0, 255).astype(np.uint8)


def random_mask(rng: np.random.Generator, side: int = _SPRITE) -> np.ndarray:
    """A ``(side, side)`` float32 mask of a random star-shaped polygon (5-11 corners, each at 0.35-1.0 of the
    radius), stretched to touch all four canvas edges as :func:`shape_mask`'s shapes do."""
    s = side * 4
    n = int(rng.integers(5, 12))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(0.35, 1.0, n)
    poly = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    poly -= poly.min(0)
    poly *= (s - 1) / np.maximum(poly.max(0), 1e-6)
    canvas = np.zeros((s, s), np.uint8)
    cv2.fillPoly(canvas, [np.round(poly).astype(np.int32)], 255)
    return cv2.resize(canvas, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def wide_texture(rng: np.random.Generator, side: int = _SPRITE) -> np.ndarray:
    """A target appearance from a wider family than :func:`texture`'s two-colour patterns: one of those,
    a quilt of 2-5 x 2-5 random colour cells, a smooth field of several colours, or a patch of
    :func:`busy_background` clutter (any pattern can be a target)."""
    kind = int(rng.integers(4))
    if kind == 0:
        return texture(rng, side)
    if kind == 1:
        cells = rng.integers(0, 256, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.uint8)
        img = cv2.resize(cells, (side, side), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    elif kind == 2:
        low = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
        img = cv2.resize(low, (side, side), interpolation=cv2.INTER_CUBIC)
    else:
        img = busy_background(rng, side, side, side * rng.uniform(0.3, 0.6)).astype(np.float32)
    img += rng.normal(0, 8, img.shape)  # fine grain, as texture()
    return np.clip(img, 0, 255).astype(np.uint8)


def look_alike(rng: np.random.Generator, mask: np.ndarray, tex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A near twin of a sprite: the same mask and pattern, its hue turned by 40-140 degrees and the whole
    sprite mirrored left-right, top-bottom or both. What a tracker must not confuse with its target, and
    what a network trained on unrelated distractors only never has to tell apart."""
    hsv = cv2.cvtColor(tex, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.integers(20, 71))) % 180  # OpenCV hue: 0-179 = 0-358 deg
    flip = int(rng.integers(-1, 2))  # cv2.flip codes: 1 left-right, 0 top-bottom, -1 both
    return cv2.flip(mask, flip), cv2.flip(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), flip)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 textured background: coloured multi-scale noise plus faint stripes."""
    out = np.zeros((height, width, 3), np.float32)
    for cells, amp in ((4, 90.0), (16, 45.0), (48, 20.0)):
        low = rng.random((cells * height // width + 2, cells + 2, 3)).astype(np.float32)
        out += amp * cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    out += 15 * np.sin((np.cos(ang) * xx + np.sin(ang) * yy) / rng.uniform(3, 9))[..., None]
    out += rng.uniform(-40, 40, 3)
    return np.clip(out, 0, 255).astype(np.uint8)


def busy_background(rng: np.random.Generator, width: int, height: int, side: float) -> np.ndarray:
    """A background as busy as the targets: :func:`background` covered with target-like clutter (shapes of
    :data:`SHAPES` in :func:`texture` textures, sides 0.4-1.6x ``side``), or a quilt of texture tiles. A
    network must then match the template, not find "the one textured thing" (issue 14: a model trained on
    smooth backgrounds only scored every busy background cell as target)."""
    img = background(rng, width, height)
    if rng.random() < 0.2:  # quilt: the whole frame tiled with textures
        y = 0
        while y < height:
            th, x = int(rng.uniform(0.5, 1.5) * side), 0
            while x < width:
                tw = int(rng.uniform(0.5, 1.5) * side)
                img[y:y + th, x:x + tw] = cv2.resize(texture(rng), (tw, th))[: height - y, : width - x]
                x += tw
            y += th
        return img
    for _ in range(int(rng.integers(15, 40)) * width * height // (320 * 240)):
        w, h = (side * rng.uniform(0.4, 1.6, 2)).astype(int) + 4
        x, y = int(rng.integers(-w // 2, width)), int(rng.integers(-h // 2, height))
        _paste(img, texture(rng), shape_mask(SHAPES[int(rng.integers(len(SHAPES)))]), np.array([x, y, w, h]))
    return img


def _photometric(rng: np.random.Generator, frames: list[np.ndarray], centres: np.ndarray) -> None:
    """In place: an illumination ramp with flicker, and motion blur along the target's motion or defocus
    blur on some frames (each effect on about half of the scenes)."""
    n = len(frames)
    gain = np.exp(_smooth(rng, n, 0.6)) if rng.random() < 0.5 else np.ones(n)
    gain *= 1 + 0.1 * (rng.random(n) < 0.1) * rng.choice([-1.0, 1.0], n)
    blur = int(rng.integers(3))  # 0 none, 1 motion, 2 defocus
    for i in range(n):
        img = frames[i]
        if blur == 1 and i > 0:
            v = centres[i] - centres[i - 1]
            k = int(min(13, np.hypot(*v) * 1.5))
            if k >= 3:
                ker = np.zeros((k, k), np.float32)
                d, c = v / (np.hypot(*v) + 1e-9), (k - 1) / 2
                cv2.line(ker, (round(c - d[0] * c), round(c - d[1] * c)), (round(c + d[0] * c), round(c + d[1] * c)), 1.0)
                img = cv2.filter2D(img, -1, ker / max(ker.sum(), 1e-6))
        elif blur == 2 and rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.0, 2.5)))
        frames[i] = np.clip(img.astype(np.float32) * gain[i], 0, 255).astype(np.uint8)


def _smooth(rng: np.random.Generator, n: int, amp: float, terms: int = 2) -> np.ndarray:
    t = np.arange(n) / max(n, 1)
    out = np.zeros(n)
    for _ in range(terms):
        out += rng.uniform(0.3, 1.0) * amp * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 2 * np.pi))
    return out / terms


def _colours(tex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two colours of a :func:`texture` (its first pixel's and the one farthest from it)."""
    pix = tex.reshape(-1, 3).astype(np.int64)
    c1 = pix[0]
    return np.clip(c1, 0, 255), np.clip(pix[int(np.argmax(np.abs(pix - c1).sum(1)))], 0, 255)


@dataclass
class _Mover:
    mask: np.ndarray  # (S, S) float32
    tex: np.ndarray  # (S, S, 3) uint8
    boxes_xywh: np.ndarray  # (N, 4) int


def _widened(rng: np.random.Generator, share: float, mover: _Mover) -> _Mover:
    """``mover`` with a :func:`random_mask` and a :func:`wide_texture`, for a ``share`` of the calls (no draw
    at 0, so a scene of ``wide_targets=0`` is drawn as before)."""
    if share > 0 and rng.random() < share:
        return _Mover(random_mask(rng), wide_texture(rng), mover.boxes_xywh)
    return mover


def _trajectory(
    rng: np.random.Generator, n: int, fw: int, fh: int, side: float, exit_frame: int | None, wide: bool = False
) -> np.ndarray:
    """(N, 4) int boxes x, y, w, h: smooth motion, scale and aspect change, optional exit through a side.
    ``wide``: aspect ratios 0.45-2.2 and up to about ±60 % size change (else 0.67-1.5 and ±35 %)."""
    scale = np.exp(_smooth(rng, n, 0.6 if wide else 0.35))
    aspect = np.exp(rng.uniform(-0.8, 0.8) + _smooth(rng, n, 0.4) if wide else rng.uniform(-0.4, 0.4) + _smooth(rng, n, 0.25))
    w = np.maximum(side * scale * np.sqrt(aspect), 6)
    h = np.maximum(side * scale / np.sqrt(aspect), 6)
    cx0, cy0 = rng.uniform(0.3, 0.7) * fw, rng.uniform(0.3, 0.7) * fh
    cx = cx0 + _smooth(rng, n, 0.3 * fw) + np.cumsum(np.full(n, rng.uniform(-1, 1)))
    cy = cy0 + _smooth(rng, n, 0.25 * fh)
    cx = np.clip(cx, w / 2, fw - w / 2)
    cy = np.clip(cy, h / 2, fh - h / 2)
    if exit_frame is not None:
        half = max(3, n // 8)
        t = np.arange(n)
        bump = np.clip(1.6 * (1 - np.abs(t - exit_frame) / half), 0, 1)  # plateau of full exit
        go_left = cx[exit_frame] < fw / 2
        dist = (cx + w) if go_left else (fw - cx + w)
        cx = cx - bump * (dist + 4) if go_left else cx + bump * (dist + 4)
    boxes = np.stack([np.round(cx - w / 2), np.round(cy - h / 2), np.round(w), np.round(h)], 1)
    return boxes.astype(np.int64)


def _paste(img: np.ndarray, tex: np.ndarray, mask: np.ndarray, box_xywh: np.ndarray) -> np.ndarray | None:
    """Alpha-blend the sprite resized to the box into ``img``; return the clipped (H, W) mask or None."""
    x, y, w, h = (int(v) for v in box_xywh)
    fh, fw = img.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
    if x2 <= x1 or y2 <= y1:
        return None
    m = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)[y1 - y : y2 - y, x1 - x : x2 - x, None]
    t = cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)[y1 - y : y2 - y, x1 - x : x2 - x]
    roi = img[y1:y2, x1:x2]
    roi[:] = (m * t + (1 - m) * roi).astype(np.uint8)
    full = np.zeros((fh, fw), np.float32)
    full[y1:y2, x1:x2] = m[..., 0]
    return full


@dataclass
class Scene:
    """A rendered sequence.

    Attributes:
        frames: N BGR uint8 images ``(H, W, 3)``.
        boxes_xywh: ``(T, N, 4)`` float, 0-based pixel boxes of the T targets (also where hidden).
        visible: ``(T, N)`` fraction of each target's drawn area that is in the image and not occluded.
        in_view: ``(T, N)`` fraction of each target's area inside the image.
        shapes: the T targets' shape names (the "class").
    """

    frames: list[np.ndarray]
    boxes_xywh: np.ndarray
    visible: np.ndarray
    in_view: np.ndarray
    shapes: list[str]

    @property
    def out_of_view(self) -> np.ndarray:
        """``(T, N)`` bool: (almost) none of the target inside the image."""
        return self.in_view < _GONE

    @property
    def full_occlusion(self) -> np.ndarray:
        """``(T, N)`` bool: in view but (almost) none of it visible."""
        return ~self.out_of_view & (self.visible < _GONE)

    @property
    def absent(self) -> np.ndarray:
        """``(T, N)`` bool: out of view or fully occluded."""
        return self.visible < _GONE


def render_scene(
    rng: np.random.Generator,
    n_frames: int,
    frame_size: tuple[int, int],
    n_targets: int = 1,
    n_distractors: int = 2,
    events: bool = True,
    full_occlusion: bool = True,
    variety: bool = False,
    busy: float = 0.0,
    lookalike: float = 0.0,
    wide_targets: float = 0.0,
) -> Scene:
    """Render ``n_frames`` frames of ``frame_size = (width, height)``.

    With ``events``, each target may leave the frame once and may pass behind a moving wall (the wall is
    1.8x the target, so it hides it completely for a few frames, unless ``full_occlusion`` is False, when
    it is 0.6x and hides part of it). Frame 0 always shows every target fully.

    ``variety`` (the training streams) widens what a network sees: two scenes in five get a
    :func:`busy_background`, 0-1 more distractors, half of them in the target's colours, target sides
    0.10-0.30 of the frame, aspect ratios 0.45-2.2, more scale change, and :func:`_photometric`
    illumination change and blur. Without it the scene is drawn as the benchmarks always were.

    ``busy`` (without ``variety``): the share of scenes drawn on a :func:`busy_background`, everything else as
    the benchmarks (BENCHMARKS.md, "Generalisation"); 0 draws nothing more.

    ``lookalike``: the share of distractors redrawn as look-alikes of the first target (:func:`look_alike`:
    its shape and pattern, recoloured and flipped), so that a network has to tell the target from its
    near twin; 0 draws nothing more (the same scene as without the argument).

    ``wide_targets``: the share of targets and distractors given a :func:`random_mask` shape and a
    :func:`wide_texture` appearance instead of one of :data:`SHAPES` in a two-colour :func:`texture`; 0 draws
    nothing more.
    """
    fw, fh = frame_size
    backgrounds_vary = variety or busy > 0
    if backgrounds_vary:
        side_base = min(fw, fh) * (rng.uniform(0.10, 0.30) if variety else rng.uniform(0.14, 0.26))
        on_busy = rng.random() < (0.4 if variety else busy)
        bg = busy_background(rng, fw + 2 * _PAN, fh + 2 * _PAN, side_base) if on_busy else \
            background(rng, fw + 2 * _PAN, fh + 2 * _PAN)
        if variety:
            n_distractors += int(rng.integers(0, 2))
    else:
        bg = background(rng, fw + 2 * _PAN, fh + 2 * _PAN)
    pan_x = np.clip(_PAN + _smooth(rng, n_frames, _PAN), 0, 2 * _PAN).astype(int)
    pan_y = np.clip(_PAN + _smooth(rng, n_frames, _PAN / 2), 0, 2 * _PAN).astype(int)
    if not backgrounds_vary:
        side_base = min(fw, fh) * rng.uniform(0.14, 0.26)
    targets: list[_Mover] = []
    shapes: list[str] = []
    walls: list[tuple[np.ndarray, np.ndarray]] = []  # (tex, boxes) of occluders
    for _ in range(n_targets):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        shapes.append(shape)
        exit_frame = None
        if events and n_frames >= 12 and rng.random() < 0.6:
            exit_frame = int(rng.uniform(0.5, 0.8) * n_frames)
        side = side_base * rng.uniform(0.8, 1.2)
        boxes = _trajectory(rng, n_frames, fw, fh, side, exit_frame, wide=variety)
        boxes[0] = _trajectory(rng, 1, fw, fh, side, None)[0] if exit_frame == 0 else boxes[0]
        targets.append(_widened(rng, wide_targets, _Mover(shape_mask(shape), texture(rng), boxes)))
        if events and n_frames >= 12 and rng.random() < 0.7:
            tc = int(rng.uniform(0.2, 0.45) * n_frames)
            k = 1.8 if full_occlusion else 0.6
            ww, wh = boxes[:, 2].max() * k, boxes[:, 3].max() * k
            speed = (ww + boxes[tc, 2]) / max(3, n_frames // 6)
            cx = boxes[:, 0] + boxes[:, 2] / 2 + speed * (np.arange(n_frames) - tc)
            cy = boxes[:, 1] + boxes[:, 3] / 2
            wall = np.stack([np.round(cx - ww / 2), np.round(cy - wh / 2), np.full(n_frames, round(ww)),
                             np.full(n_frames, round(wh))], 1).astype(np.int64)
            walls.append((texture(rng), wall))
    distractors = []
    for _ in range(n_distractors):
        shape = shapes[int(rng.integers(len(shapes)))] if shapes else SHAPES[int(rng.integers(len(SHAPES)))]
        side = side_base * rng.uniform(0.7, 1.3)
        tex = texture(rng, colours=_colours(targets[0].tex)) if variety and targets and rng.random() < 0.5 \
            else texture(rng)
        distractors.append(_widened(rng, wide_targets,
                                    _Mover(shape_mask(shape), tex, _trajectory(rng, n_frames, fw, fh, side, None, wide=variety))))
    if lookalike > 0 and targets:
        for j, d in enumerate(distractors):
            if rng.random() < lookalike:
                mask, tex = look_alike(rng, targets[0].mask, targets[0].tex)
                distractors[j] = _Mover(mask, tex, d.boxes_xywh)
    wall_mask = np.ones((_SPRITE, _SPRITE), np.float32)

    frames = []
    visible = np.zeros((n_targets, n_frames))
    in_view = np.zeros((n_targets, n_frames))
    areas = np.array([[cv2.resize(t.mask, (int(b[2]), int(b[3]))).sum() for b in t.boxes_xywh] for t in targets])
    for i in range(n_frames):
        img = bg[pan_y[i] : pan_y[i] + fh, pan_x[i] : pan_x[i] + fw].copy()
        for d in distractors:
            _paste(img, d.tex, d.mask, d.boxes_xywh[i])
        placed = [_paste(img, t.tex, t.mask, t.boxes_xywh[i]) for t in targets]
        cover = np.zeros((fh, fw), np.float32)
        for tex, wall in walls:
            m = _paste(img, tex, wall_mask, wall[i])
            if m is not None:
                cover = np.maximum(cover, m)
        for j, m in enumerate(placed):
            if m is not None and areas[j, i] > 0:
                in_view[j, i] = min(1.0, m.sum() / areas[j, i])
                visible[j, i] = min(1.0, (m * (1 - cover)).sum() / areas[j, i])
        frames.append(img)
    if variety:
        centres = targets[0].boxes_xywh[:, :2] + targets[0].boxes_xywh[:, 2:] / 2 if targets else np.zeros((n_frames, 2))
        _photometric(rng, frames, centres.astype(np.float64))
    boxes = np.stack([t.boxes_xywh for t in targets]).astype(np.float64) if targets else np.zeros((0, n_frames, 4))
    return Scene(frames, boxes, visible, in_view, shapes)
