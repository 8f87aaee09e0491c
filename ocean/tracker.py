"""The Ocean tracker: one network, one target, frame by frame (facts §9).

:class:`OceanTracker` reproduces the official TracKit test-time procedure (TK ``lib/tracker/ocean.py`` init /
track / update) over any network with the inference contract of :mod:`ocean.model` (spelled out in its
docstring). The tracker reads no files; images are ``(H, W, 3)`` uint8 BGR arrays and boxes are
``x, y, w, h`` in 0-based image pixels (top-left corner), as for OTB / GOT-10k result files after their
1-based shift is undone (facts §9.1).

An optional online module (paper Sec. 4.2, facts §10) can be plugged in; see :class:`OnlineModule`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from ocean.config import TrackerConfig
from ocean.crop import crop_side, get_subwindow
from ocean.fast import runtime_network
from ocean.geometry import context_size, mean_color, score_grid, score_size

# Defaults when the network does not say (OceanNet has .cfg.exemplar_size and .stride).
EXEMPLAR_SIZE = 127  # template crop side -- paper Sec. 5.1, facts §9.1
STRIDE = 8  # total backbone stride -- facts §1.2

Maps = tuple[np.ndarray, np.ndarray]  # one crop's (p_cls (n, n), reg (4, n, n)), float64 on the host


class OnlineModule(Protocol):
    """Hook for the online classifier of paper Sec. 4.2 (facts §10); implemented by :mod:`ocean.online`.

    ``score`` returns a 2-D map over the search region (any side; it is resized bicubically to the
    tracker's ``n x n`` score map, facts §10.2) that is fused *after* the Hann window (facts §9.2 step 4).
    """

    def init(self, image_bgr_uint8: np.ndarray, box_xywh: np.ndarray) -> None: ...

    def score(self, image_bgr_uint8: np.ndarray, state: TrackState) -> np.ndarray: ...

    def update(self, image_bgr_uint8: np.ndarray, state: TrackState, box_xywh: np.ndarray,
               score: float) -> None: ...


@dataclass
class TrackState:
    """Per-video tracker state (image pixels, 0-based; float64)."""

    center_xy: np.ndarray  # (2,) target centre (cx, cy)
    size_wh: np.ndarray  # (2,) target width, height
    image_wh: tuple[int, int]  # (W, H) of the first frame
    search_size: int  # S, fixed for the video (facts §9.1)
    avg_chans: np.ndarray  # (3,) BGR padding colour from the first frame (facts §9.1, §13.3 item 9)
    frame: int = 0  # frames seen, the init frame being 0
    # (2,) image centre (x, y) of the box the Siamese branch alone (before the online fusion) would choose
    # this frame; None without an online module. Read by the online update gate (ocean.online).
    siamese_xy: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------------------
# Pure helpers (unit-tested on their own)


def choose_search_size(box_wh: tuple[float, float], image_wh: tuple[int, int], cfg: TrackerConfig) -> int:
    """The once-per-video search size: ``big_sz`` if target area / image area < 0.004 -- facts §9.1."""
    ratio = (box_wh[0] * box_wh[1]) / float(image_wh[0] * image_wh[1])
    return int(cfg.big_sz if ratio < cfg.small_object_area else cfg.small_sz)


def hann_window(n: int) -> np.ndarray:
    """``outer(hanning(n), hanning(n))``, ``(n, n)`` float64: 0 at the border, 1 at the centre -- facts §9.1."""
    h = np.hanning(n)
    return np.outer(h, h)


def _change(r: np.ndarray) -> np.ndarray:
    return np.maximum(r, 1.0 / r)


def size_penalty(pred_w: np.ndarray, pred_h: np.ndarray, target_wh_crop: np.ndarray,
                 penalty_k: float) -> np.ndarray:
    """Scale / aspect-ratio penalty ``exp(-(r_c s_c - 1) k)`` of every cell -- facts §9.2 step 3.

    Args:
        pred_w, pred_h: ``(n, n)`` predicted box sizes in search-crop pixels.
        target_wh_crop: ``(2,)`` current target size times ``scale_z`` (search-crop pixels).
        penalty_k: the hyper-parameter ``penalty_k``.
    Returns ``(n, n)`` values in ``(0, 1]``.
    """
    # sz(w, h) = sqrt((w + (w+h)/2)(h + (w+h)/2)), the context size at 0.5 -- facts §9.2 step 3
    s_c = _change(context_size((pred_w, pred_h), 0.5) / context_size(target_wh_crop, 0.5))
    r_c = _change((target_wh_crop[0] / target_wh_crop[1]) / (pred_w / pred_h))
    return np.exp(-(r_c * s_c - 1.0) * penalty_k)


def scale_factors(scales: int, step: float) -> np.ndarray:
    """The search crops' sizes relative to the state's: ``step ** (i - (scales - 1) / 2)``, i = 0..scales-1
    (``tracker.scales`` / ``tracker.scale_step``; ``[1.0]`` for the official single crop, facts §9.6)."""
    if scales < 1:
        raise ValueError(f"scales must be at least 1, got {scales}")
    return float(step) ** (np.arange(scales, dtype=np.float64) - (scales - 1) / 2.0)


def update_size(size_wh: np.ndarray, pred_wh: np.ndarray, lr_eff: float, mode: str) -> np.ndarray:
    """Size smoothing (image pixels) -- facts §9.2 step 7.

    ``"single"`` (SOTS Ocean): ``w + lr (pw - w)``. ``"double"`` (TracKit, which the per-benchmark presets
    were tuned with): ``res = lr pw + (1 - lr) w`` then ``(1 - lr) w + lr res = w + lr^2 (pw - w)``.
    """
    res = lr_eff * pred_wh + (1.0 - lr_eff) * size_wh
    if mode == "single":
        return res
    if mode == "double":
        return (1.0 - lr_eff) * size_wh + lr_eff * res
    raise ValueError(f"unknown size_update {mode!r}; use 'single' or 'double'")


def clip_state(center_xy: np.ndarray, size_wh: np.ndarray, image_wh: tuple[int, int],
               min_size: float) -> tuple[np.ndarray, np.ndarray]:
    """cx in [0, W], cy in [0, H], w in [min_size, W], h in [min_size, H] -- facts §9.2 step 8."""
    width, height = image_wh
    cx = min(max(float(center_xy[0]), 0.0), float(width))
    cy = min(max(float(center_xy[1]), 0.0), float(height))
    w = min(max(float(size_wh[0]), min_size), float(width))
    h = min(max(float(size_wh[1]), min_size), float(height))
    return np.array([cx, cy]), np.array([w, h])


def state_to_box_xywh(center_xy: np.ndarray, size_wh: np.ndarray) -> np.ndarray:
    """``[max(0, cx - w/2), max(0, cy - h/2), w, h]`` -- facts §9.2 step 9 (w, h are not shrunk)."""
    return np.array([max(0.0, center_xy[0] - size_wh[0] / 2), max(0.0, center_xy[1] - size_wh[1] / 2),
                     size_wh[0], size_wh[1]], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------


class OceanTracker:
    """Single-object Ocean tracker (facts §9). ``init`` once per video, then ``track`` every frame.

    The network implements the inference contract of :mod:`ocean.model`::

        net.template(z)   # z: (1, 3, 127, 127) float32 raw BGR 0..255; stores the template features
        out = net.track(x)  # x: (1, 3, S, S) float32 raw BGR 0..255 ((n, 3, S, S) with tracker.scales = n)
        out["cls"]   (1, 1, n, n) p_r logits;  out["reg"] (1, 4, n, n) l, t, r, b distances (search-crop px)
        out["align"] (1, 1, n, n) p_o logits or None

    The procedure is the official one (TK ``lib/tracker/ocean.py`` init / track / update): context-0.5 crops
    padded with the first frame's mean colour, a search size chosen once per video, a Hann window, the
    scale / aspect-ratio penalty, the p_r / p_o fusion, size smoothing and the clipping to the image. With
    ``tracker.scales`` = n > 1 (a project option, facts §9.6) each frame's search is cut at n scales.

    Args:
        net: a network with ``template(z)`` / ``track(x)`` (the contract above), in eval mode.
        cfg: tracker hyper-parameters (:func:`ocean.config.tracker_config`).
        device: where crops are sent; default = the device of the network's first parameter (CPU if it
            has none).
        online: optional online module (:class:`OnlineModule`), fused after the window. When None and
            ``cfg.online`` is True, :func:`ocean.online.build_online` builds one from ``net``. With
            ``cfg.use_align`` too, p_o enters p_cls before the penalty and the online map comes after the
            window, the order of TK ``update``; the official online run never has both (its VOT online
            entry turns p_o off, :data:`ocean.config.ONLINE_TRACKER_PRESETS`, facts §10.4).
        online_weight: ω' of the online fusion ``pscore = ω' online + (1 - ω') pscore``; None =
            ``cfg.online_weight`` (paper Sec. 4.2 uses 0.5; facts §9.3 lists 0.5 / 0.7 per VOT year).

    After each ``track`` call, ``last_net_seconds`` holds the time spent in the network (forward and the copy
    of its outputs to the host) and ``nonfinite_frames`` counts frames whose score map had no finite value
    (the state was kept and the score reported as 0).
    """

    def __init__(self, net: Any, cfg: TrackerConfig, device: str | torch.device | None = None,
                 online: OnlineModule | None = None, online_weight: float | None = None) -> None:
        if cfg.size_update not in ("single", "double"):
            raise ValueError(f"unknown size_update {cfg.size_update!r}")
        if online is None and cfg.online:
            # imported here: the online module is optional; ocean.online never imports this module
            from ocean.online import build_online

            online = build_online(net, cfg)
        self.net = runtime_network(net, getattr(cfg, "runtime", "eager"))  # tracker.runtime (ocean/fast.py)
        self.cfg = cfg
        if device is None:
            param = next(iter(net.parameters()), None) if hasattr(net, "parameters") else None
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        net_cfg = getattr(net, "cfg", None)
        self.exemplar_size = int(getattr(net_cfg, "exemplar_size", EXEMPLAR_SIZE))
        self.stride = int(getattr(net, "stride", STRIDE))
        self.online = online
        # the search crops' sizes relative to the state's; [1.0] = the official single crop (facts §9.6)
        self.scale_factors = scale_factors(int(getattr(cfg, "scales", 1)), float(getattr(cfg, "scale_step", 1.0)))
        self.online_weight = float(cfg.online_weight if online_weight is None else online_weight)
        self.state: TrackState | None = None
        self.last_net_seconds = 0.0
        self.nonfinite_frames = 0
        self.uses_align = False
        self._window: np.ndarray | None = None
        self._grid_xy: tuple[np.ndarray, np.ndarray] | None = None

    # -- helpers ------------------------------------------------------------------------------------------

    def _to_tensor(self, patch_uint8: np.ndarray) -> torch.Tensor:
        """``(S, S, 3)`` uint8 -> ``(1, 3, S, S)`` float32 raw BGR 0..255 on the tracker's device."""
        chw = np.ascontiguousarray(patch_uint8.transpose(2, 0, 1))
        return torch.from_numpy(chw).to(self.device).float().unsqueeze(0)

    @staticmethod
    def _check_image(image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
                or image.dtype != np.uint8:
            raise ValueError("expected an (H, W, 3) uint8 BGR image, got "
                             f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")

    def _keep_state(self) -> tuple[np.ndarray, float]:
        """A frame the network could not score: count it, keep the previous box, report score 0."""
        assert self.state is not None
        self.nonfinite_frames += 1
        self.state.frame += 1
        return state_to_box_xywh(self.state.center_xy, self.state.size_wh), 0.0

    # -- public API ---------------------------------------------------------------------------------------

    def init(self, image_bgr_uint8: np.ndarray, box_xywh: np.ndarray | list[float]) -> None:
        """Start a video: ``box_xywh`` = the target in the first frame (0-based pixels, top-left + size)."""
        z = self.prepare_template(image_bgr_uint8, box_xywh)
        with torch.inference_mode():
            self.net.template(z)
        self.start_online(image_bgr_uint8, box_xywh)

    def track(self, image_bgr_uint8: np.ndarray) -> tuple[np.ndarray, float]:
        """Locate the target in the next frame.

        Returns ``(box_xywh, score)``: the box as float64 ``(4,)`` in 0-based image pixels (facts §9.2
        step 9) and the fused classification score ``p_cls`` (penalty-free, before the window) of the
        chosen cell, in ``[0, 1]``.
        """
        x, scale_z = self.prepare_search(image_bgr_uint8)
        # 2. Network -- facts §9.2 step 2.
        t0 = time.perf_counter()
        with torch.inference_mode():
            try:
                out = self.net.track(x)
            except FloatingPointError:  # ocean.model.NonFiniteOutputError: diverged weights (facts §16)
                self.last_net_seconds = time.perf_counter() - t0
                return self._keep_state()
            maps = self.output_maps(out)
        self.last_net_seconds = time.perf_counter() - t0
        return self.score_to_box(image_bgr_uint8, maps, scale_z)

    # -- the steps of init / track (also driven by ocean.batch_tracker, K videos per forward) -------------

    def prepare_template(self, image_bgr_uint8: np.ndarray, box_xywh: np.ndarray | list[float]) -> torch.Tensor:
        """Init, first step: check the inputs, set the video state, return the template crop
        ``(1, 3, 127, 127)`` that the network's template branch takes."""
        self._check_image(image_bgr_uint8)
        box = np.asarray(box_xywh, dtype=np.float64).reshape(-1)
        if box.size != 4 or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"init box must be 4 finite values x, y, w, h with w, h > 0, got {box.tolist()}")
        height, width = image_bgr_uint8.shape[:2]
        center = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])  # facts §9.1
        size = box[2:4].copy()
        search_size = choose_search_size((size[0], size[1]), (width, height), self.cfg)
        avg_chans = mean_color(image_bgr_uint8, "numpy")  # first frame only -- facts §9.1, §13.3 item 9
        self.state = TrackState(center_xy=center, size_wh=size, image_wh=(width, height),
                                search_size=search_size, avg_chans=avg_chans)
        n = score_size(search_size, self.exemplar_size, self.stride)
        self._window = hann_window(n)
        self._grid_xy = score_grid(n, search_size, self.stride)

        # Template crop: s_z = round(sqrt(...)) with banker's rounding -- facts §9.1.
        s_z = crop_side(context_size(size, self.cfg.context_amount), "bankers")
        z = get_subwindow(image_bgr_uint8, (center[0], center[1]), max(s_z, 1), self.exemplar_size,
                          avg_chans)
        return self._to_tensor(z)

    def start_online(self, image_bgr_uint8: np.ndarray, box_xywh: np.ndarray | list[float]) -> None:
        """Init, last step (after the template branch ran): the online module's first fit, if any."""
        if self.online is not None:
            self.online.init(image_bgr_uint8, np.asarray(box_xywh, dtype=np.float64).reshape(-1).copy())

    def prepare_search(self, image_bgr_uint8: np.ndarray) -> tuple[torch.Tensor, float]:
        """Track, first step: the search crop ``(1, 3, S, S)`` for the network and ``scale_z`` (crop
        pixels per image pixel) that :meth:`score_to_box` needs -- facts §9.2 step 1. With ``tracker.scales``
        = n > 1, n crops ``(n, 3, S, S)`` cut at the state's size times :attr:`scale_factors` (facts §9.6);
        ``scale_z`` stays the state's own (factor 1)."""
        if self.state is None:
            raise RuntimeError("call init() before track()")
        self._check_image(image_bgr_uint8)
        st = self.state
        s_z = context_size(st.size_wh, self.cfg.context_amount)
        scale_z = self.exemplar_size / s_z
        crops = []
        for k in self.scale_factors:
            s_x = s_z * k * st.search_size / self.exemplar_size
            crops.append(self._to_tensor(get_subwindow(image_bgr_uint8, (st.center_xy[0], st.center_xy[1]),
                                                       max(crop_side(s_x, "half_away"), 1), st.search_size,
                                                       st.avg_chans)))
        return (crops[0] if len(crops) == 1 else torch.cat(crops, 0)), scale_z

    def output_maps(self, out: dict[str, Any]) -> Maps | list[Maps]:
        """Track, second step: the network's output for this video -> ``(p_cls (n, n), reg (4, n, n))``
        float64 on the host, p_o fused into p_cls when used -- facts §4.3. One crop (batch row 0) gives one
        such pair; the crops of a scale search (``tracker.scales`` > 1, rows in :attr:`scale_factors` order)
        a list of them."""
        rows = len(self.scale_factors)
        maps = [self._row_maps(out, i) for i in range(rows)]
        return maps[0] if rows == 1 else maps

    def _row_maps(self, out: dict[str, Any], i: int) -> Maps:
        cfg = self.cfg
        p_r = torch.sigmoid(out["cls"][i, 0]).double()
        align = out.get("align")
        self.uses_align = bool(cfg.use_align and align is not None)
        if self.uses_align:
            # p_cls = ratio p_r + (1 - ratio) p_o -- facts §4.3
            p_cls_t = cfg.ratio * p_r + (1.0 - cfg.ratio) * torch.sigmoid(align[i, 0]).double()
        else:
            p_cls_t = p_r
        return p_cls_t.cpu().numpy(), out["reg"][i].double().cpu().numpy()

    def _scored_cells(self, maps: Maps, scale_z: float) -> dict[str, np.ndarray]:
        """Per-cell boxes (search-crop pixels), the penalty and the windowed score of one crop -- facts §3,
        §9.2 steps 3-4 (before the online fusion)."""
        st = self.state
        assert st is not None and self._window is not None and self._grid_xy is not None
        cfg = self.cfg
        p_cls, reg = maps
        n = self._window.shape[0]
        if p_cls.shape != (n, n) or reg.shape != (4, n, n):
            raise ValueError(f"network output shapes cls {tuple(p_cls.shape)} / reg {tuple(reg.shape)} do not "
                             f"match the {n}x{n} score map of S={st.search_size} (facts §1.2)")
        grid_x, grid_y = self._grid_xy
        x1, y1 = grid_x - reg[0], grid_y - reg[1]
        x2, y2 = grid_x + reg[2], grid_y + reg[3]
        # Distances come out of exp() so widths are > 0; the floor only keeps a degenerate net finite.
        pred_w = np.maximum(x2 - x1, 1e-6)
        pred_h = np.maximum(y2 - y1, 1e-6)
        penalty = size_penalty(pred_w, pred_h, st.size_wh * scale_z, cfg.penalty_k)
        pscore = penalty * p_cls
        pscore = pscore * (1.0 - cfg.window_influence) + self._window * cfg.window_influence
        return dict(p_cls=p_cls, x1=x1, y1=y1, x2=x2, y2=y2, pred_w=pred_w, pred_h=pred_h, penalty=penalty,
                    pscore=pscore)

    def _choose_scale(self, maps: list[Maps], scale_z: float) -> tuple[int, dict[str, np.ndarray]]:
        """The scale search's pick (facts §9.6): the crop whose best finite windowed, penalised score is
        highest, and its scored cells; on a tie the crop nearest the state's own size (no evidence, no size
        change). The penalty compares each cell's box with the state's size in that crop's pixels, so a crop
        cut larger or smaller pays for the size change it implies, as SiamFC's scale penalty makes it pay."""
        if len(maps) != len(self.scale_factors):
            raise ValueError(f"{len(maps)} score maps for {len(self.scale_factors)} search scales")
        best, pick, cells = -np.inf, 0, None
        for i in sorted(range(len(maps)), key=lambda j: (abs(np.log(self.scale_factors[j])), j)):
            c = self._scored_cells(maps[i], scale_z / self.scale_factors[i])
            ps = c["pscore"]
            ok = np.isfinite(ps) & np.isfinite(c["pred_w"]) & np.isfinite(c["pred_h"])
            top = float(ps[ok].max()) if ok.any() else -np.inf
            if cells is None or top > best:
                best, pick, cells = top, i, c
        assert cells is not None
        return pick, cells

    def score_to_box(self, image_bgr_uint8: np.ndarray, maps: Maps | list[Maps] | None,
                     scale_z: float) -> tuple[np.ndarray, float]:
        """Track, last step: score maps -> the new state and ``(box_xywh, score)`` (facts §9.2 steps 3-9);
        ``maps=None`` is a frame the network could not score (the state is kept, score 0)."""
        if maps is None:
            return self._keep_state()
        st = self.state
        assert st is not None and self._window is not None
        cfg = self.cfg
        S = st.search_size
        n = self._window.shape[0]
        # Per-cell boxes in search-crop pixels (facts §3), penalty and window (facts §9.2 steps 3-4); with a
        # scale search, those of the chosen crop, whose pixels are scale_z / k per image pixel (facts §9.6).
        if isinstance(maps, list):
            pick, cells = self._choose_scale(maps, scale_z)
            k = float(self.scale_factors[pick])
            scale_z = scale_z / k
        else:
            k, cells = 1.0, self._scored_cells(maps, scale_z)
        p_cls, penalty, pscore = cells["p_cls"], cells["penalty"], cells["pscore"]
        x1, y1, x2, y2 = cells["x1"], cells["y1"], cells["x2"], cells["y2"]
        pred_w, pred_h = cells["pred_w"], cells["pred_h"]

        def image_xy(r: int, c: int) -> np.ndarray:
            """Image centre of cell (r, c)'s box -- facts §9.2 step 6 (the grid centre is floor(S/2), §3)."""
            return st.center_xy + (np.array([(x1[r, c] + x2[r, c]) / 2, (y1[r, c] + y2[r, c]) / 2]) - S // 2) / scale_z

        if self.online is not None:
            st.siamese_xy = image_xy(*np.unravel_index(int(np.argmax(np.where(np.isfinite(pscore), pscore, -np.inf))),
                                                       pscore.shape))
            # the online map sampled at the chosen crop's cells (the crop of the state's size times k)
            at = st if k == 1.0 else dataclasses.replace(st, size_wh=st.size_wh * k)
            online_map = np.asarray(self.online.score(image_bgr_uint8, at), dtype=np.float64)
            if online_map.shape != (n, n):  # bicubic onto the Siamese grid -- facts §10.2
                online_map = cv2.resize(online_map, (n, n), interpolation=cv2.INTER_CUBIC)
            pscore = self.online_weight * online_map + (1.0 - self.online_weight) * pscore

        # A cell with a non-finite score or box can never be chosen (a diverged network must not move the
        # target to infinity); a frame without any usable cell keeps the previous state and is counted.
        finite = np.isfinite(pscore) & np.isfinite(pred_w) & np.isfinite(pred_h) \
            & np.isfinite(x1) & np.isfinite(y1)
        if not finite.any():
            return self._keep_state()
        pscore = np.where(finite, pscore, -np.inf)

        # 5. Select -- facts §9.2 step 5.
        r, c = np.unravel_index(int(np.argmax(pscore)), pscore.shape)

        # 6. Back to the image -- facts §9.2 step 6.
        new_center = image_xy(r, c)
        pred_wh = np.array([pred_w[r, c], pred_h[r, c]]) / scale_z

        # 7. Size smoothing with lr_eff = penalty p_cls lr (before the window) -- facts §9.2 step 7.
        score = float(p_cls[r, c])
        lr_eff = float(penalty[r, c]) * score * cfg.lr
        if not np.isfinite(lr_eff):
            lr_eff = 0.0
        new_size = update_size(st.size_wh, pred_wh, lr_eff, cfg.size_update)

        # 8. Clip -- facts §9.2 step 8.
        st.center_xy, st.size_wh = clip_state(new_center, new_size, st.image_wh, cfg.min_size)
        st.frame += 1
        box_xywh = state_to_box_xywh(st.center_xy, st.size_wh)
        if self.online is not None:
            self.online.update(image_bgr_uint8, st, box_xywh.copy(), score)
        return box_xywh, score
