"""The Ocean network: backbone, neck, feature combination, anchor-free regression, object-aware classification.

:class:`OceanNet` (built by :func:`build_model` from a ``ModelConfig``) takes float (B, 3, H, W) images in
raw BGR 0-255 (facts §1.3) and returns a dict of score maps: ``cls`` (p_r logits), ``reg`` (box distances
l, t, r, b in search-crop pixels) and ``align`` (p_o logits or None); shapes, units and the data flow are in
its docstring. Any batch size and search size; torch only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from ocean.backbone import ResNet50Backbone, load_backbone_weights
from ocean.config import HeadConfig, ModelConfig
from ocean.geometry import score_grid_torch

# ImageNet statistics of torchvision's weights (RGB, [0, 1]).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class NonFiniteOutputError(FloatingPointError):
    """The network produced inf / NaN boxes (diverged weights or absurd inputs); facts §16."""


def conv_bn_relu(cin: int, cout: int, *, dilation: tuple[int, int] = (1, 1), padding: int = 0,
                 bias: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=padding, dilation=dilation, bias=bias),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def xcorr_depthwise(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depth-wise cross-correlation (SiamRPN++ style, facts §2): valid, no flip, no bias.

    search (B, C, H, W), kernel (B or 1, C, h, w) -> (B, C, H-h+1, W-w+1). A single template is broadcast
    over a batch of search images (tracking several candidates with one template).
    """
    b, c, h, w = search.shape
    if kernel.shape[0] != b:
        if kernel.shape[0] != 1:
            raise ValueError(f"template batch {kernel.shape[0]} does not match search batch {b}")
        kernel = kernel.expand(b, -1, -1, -1)
    out = F.conv2d(search.reshape(1, b * c, h, w), kernel.reshape(b * c, 1, *kernel.shape[2:]), groups=b * c)
    return out.reshape(b, c, out.shape[-2], out.shape[-1])


def xcorr_depthwise_batch1(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """:func:`xcorr_depthwise` for one search image and one template (batch 1) as a single grouped conv, the
    same sums with static kernel shapes in an ONNX trace (``ocean.export``)."""
    return F.conv2d(search, kernel.transpose(0, 1), groups=kernel.shape[1])


# Keeps the normalised correlation finite where a window or a kernel is constant (variance 0).
NCC_EPS = 1e-5


def unit_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """Each channel of ``kernel`` (B, C, h, w) made zero-mean with unit L2 norm (template side of
    :func:`normalised_response`)."""
    k = kernel - kernel.mean(dim=(2, 3), keepdim=True)
    return k / (k.square().sum(dim=(2, 3), keepdim=True) + NCC_EPS).sqrt()


def normalised_response(search: torch.Tensor, corr: torch.Tensor, kernel_hw: tuple[int, int]) -> torch.Tensor:
    """Per-channel normalised cross-correlation from ``corr = xcorr(search, unit_kernel(k))``.

    Divides by each search window's own standard deviation times sqrt(h*w) (the window's L2 norm after its
    mean is removed; the zero-mean kernel makes the window mean drop out of ``corr``), so every cell is the
    Pearson correlation of the window with the template channel, in [-1, 1].
    """
    h, w = kernel_hw
    both = torch.cat([search, search.square()], dim=1)
    # The window sums as two 1-D box filters of shifted additions (h + w reads per cell; equal to
    # F.avg_pool2d up to rounding and, forward plus backward, ~4x faster on CPU: BENCHMARKS.md "Training step")
    rows, cols = both.shape[-2] - h + 1, both.shape[-1] - w + 1
    sums = sum(both[:, :, i:i + rows] for i in range(h))
    sums = sum(sums[..., j:j + cols] for j in range(w))
    mean, mean_sq = (sums / (h * w)).chunk(2, dim=1)
    var = (mean_sq - mean.square()).clamp(min=0)
    return corr / (var * (h * w) + NCC_EPS).sqrt()


# Dilations (dH, dW) of the three parallel encoders: Phi_11, Phi_12 (2 along Y), Phi_21 (2 along X)
# -- facts §2, paper Eq. 9.
DILATIONS = ((1, 1), (2, 1), (1, 2))


class FeatureCombination(nn.Module):
    """Three dilated 3x3 conv encoders per side (template / search, not shared), depth-wise xcorr, fusion.

    ``fusion="softmax"``: sum weighted by softmax(theta), theta learnable, init ones (official, facts §2);
    ``fusion="sum"``: the plain sum of paper Eq. 9.

    ``correlation="plain"``: the depth-wise xcorr (official); ``"normalised"``: each channel's response is
    the Pearson correlation of the search window with the template (:func:`normalised_response`): a busy
    search region no longer responds strongly to every template just because its features are strong.
    """

    def __init__(self, channels: int, fusion: str = "softmax", combination: str = "dilated3",
                 correlation: str = "plain"):
        super().__init__()
        if combination not in ("dilated3", "single"):
            raise ValueError(f"unknown combination {combination!r}")
        if correlation not in ("plain", "normalised"):
            raise ValueError(f"unknown correlation {correlation!r}")
        self.correlation = correlation
        dilations = DILATIONS if combination == "dilated3" else DILATIONS[:1]
        self.template_convs = nn.ModuleList(conv_bn_relu(channels, channels, dilation=d) for d in dilations)
        self.search_convs = nn.ModuleList(conv_bn_relu(channels, channels, dilation=d) for d in dilations)
        self.fusion = fusion
        if fusion == "softmax" and len(dilations) > 1:
            self.fusion_logits = nn.Parameter(torch.ones(len(dilations)))
        elif fusion == "softmax":
            self.fusion = "sum"  # one encoder: nothing to weigh
        elif fusion != "sum":
            raise ValueError(f"unknown fusion {fusion!r}")

    def encode_template(self, z: torch.Tensor) -> list[torch.Tensor]:
        kernels = [conv(z) for conv in self.template_convs]
        if self.correlation == "normalised":  # template-side work, once per video
            kernels = [unit_kernel(k) for k in kernels]
        return kernels

    def correlate(self, search: torch.Tensor, corr: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """``corr`` (the xcorr of ``search`` with ``kernel``) as this combination's response."""
        if self.correlation == "plain":
            return corr
        return normalised_response(search, corr, tuple(kernel.shape[-2:]))

    def forward(self, kernels: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        corrs = []
        for conv, k in zip(self.search_convs, kernels, strict=True):
            xs = conv(x)
            corrs.append(self.correlate(xs, xcorr_depthwise(xs, k), k))
        return self.fuse(corrs)

    def fuse(self, corrs: list[torch.Tensor]) -> torch.Tensor:
        if self.fusion == "sum":
            return torch.stack(corrs).sum(0)
        weights = torch.softmax(self.fusion_logits, 0)
        return sum(w * c for w, c in zip(weights, corrs, strict=True))


class ColourCue(nn.Module):
    """The colour layout of the template compared with the search region's, added to the classification
    branch (``model.head.colour_cue``, a project option; BENCHMARKS.md "Generalisation").

    Both crops are averaged over the backbone's stride (8 x 8 pixel cells, so the cells line up with the
    feature map's), the template's cells cropped as its features are (``template_crop_border``); each colour
    channel's response is the normalised correlation of the search window with the template's layout
    (:func:`normalised_response`, in [-1, 1]: a target among clutter of other colours, or a recoloured
    look-alike, scores low whatever the deep features say). A 1x1 convolution, zero at initialisation,
    maps the three responses onto the cls encoder's channels, where they are added before the tower: a fixed,
    training-free measurement that the classifier learns how far to trust.
    """

    def __init__(self, channels: int, stride: int, border: int):
        super().__init__()
        self.stride, self.border = stride, border
        self.proj = nn.Conv2d(3, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.batch1 = False  # ONNX export: the depth-wise xcorr as one grouped conv (ocean.export)

    def encode_template(self, z: torch.Tensor) -> torch.Tensor:
        """The template crop's zero-mean, unit-norm colour kernel (B, 3, h, w)."""
        cells = F.avg_pool2d(z, self.stride, self.stride)
        b = self.border
        if b > 0:
            cells = cells[:, :, b:-b, b:-b]
        return unit_kernel(cells)

    def forward(self, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        cells = F.avg_pool2d(x, self.stride, self.stride)
        corr = (xcorr_depthwise_batch1 if self.batch1 else xcorr_depthwise)(cells, kernel)
        return self.proj(normalised_response(cells, corr, tuple(kernel.shape[-2:])))


class Tower(nn.Sequential):
    """``n`` x [3x3 conv (padding 1, bias) -> BN -> ReLU] -- facts §3."""

    def __init__(self, channels: int, n: int):
        super().__init__(*[conv_bn_relu(channels, channels, padding=1, bias=True) for _ in range(n)])


class ExpRegression(nn.Module):
    """Box distances ``exp(adjust * conv3x3(x) + bias)``, adjust a learnable scalar (init 0.1), bias a
    learnable 1x4x1x1 (init 1.0): about e = 2.7 px everywhere at initialisation -- facts §3.

    The exponent is clamped at ``max_exponent`` (guard, facts §16) so an overflowing exponent yields a
    large finite box instead of inf.
    """

    def __init__(self, channels: int, adjust_init: float, bias_init: float, max_exponent: float):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.adjust = nn.Parameter(torch.tensor(float(adjust_init)))
        self.bias = nn.Parameter(torch.full((1, 4, 1, 1), float(bias_init)))
        self.max_exponent = max_exponent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp((self.adjust * self.conv(x) + self.bias).clamp(max=self.max_exponent))


def deform_conv3x3_sampled(x: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d(x, offsets, weight, padding=1)`` for a 3x3 kernel (stride 1, dilation 1,
    one offset group, no mask, no bias) as bilinear sampling plus one matrix product.

    Tap k = (a, b) of output cell (i, j) reads ``x`` at ``(i - 1 + a + dy_k, j - 1 + b + dx_k)`` with offsets
    in torchvision's layout (channel 2k = dy_k, 2k+1 = dx_k). ``F.grid_sample`` (bilinear, zero padding,
    ``align_corners=True``, so grid -1 / +1 are the centres of the first / last cells) interpolates exactly as
    torchvision's kernel does, corners outside the map reading zero. The result equals torchvision's up to
    float rounding; the point is the backward pass, which on CPU runs vectorised instead of through
    torchvision's per-sample loops (BENCHMARKS.md "Training step").
    """
    b, c, h, w = x.shape
    if h < 2 or w < 2:  # grid_sample's normalisation needs two cells per side
        return deform_conv2d(x, offsets, weight, padding=(1, 1))
    ho, wo = offsets.shape[-2:]
    off = offsets.reshape(b, 9, 2, ho, wo)
    taps = torch.arange(3, device=x.device, dtype=x.dtype) - 1
    ky = taps.repeat_interleave(3).view(1, 9, 1, 1)
    kx = taps.repeat(3).view(1, 9, 1, 1)
    ii = torch.arange(ho, device=x.device, dtype=x.dtype).view(1, 1, ho, 1)
    jj = torch.arange(wo, device=x.device, dtype=x.dtype).view(1, 1, 1, wo)
    ys = (ii + ky + off[:, :, 0]) * (2.0 / (h - 1)) - 1.0
    xs = (jj + kx + off[:, :, 1]) * (2.0 / (w - 1)) - 1.0
    grid = torch.stack([xs, ys], dim=-1).reshape(b, 9 * ho, wo, 2)
    cols = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    cols = cols.reshape(b, c * 9, ho * wo)  # (c, tap) ordering, as weight.reshape(out, c * 9)
    out = torch.matmul(weight.reshape(weight.shape[0], c * 9), cols)
    return out.reshape(b, weight.shape[0], ho, wo)


class AlignHead(nn.Module):
    """Object-aware classification p_o (paper Sec. 3.2, facts §4.2).

    A 3x3 deformable conv (no bias) over the regression-tower features, sampling at the predicted box's
    corners, edge midpoints and centre; ReLU; 1x1 conv -> one logit. ``kernel``: "torchvision" runs
    ``torchvision.ops.deform_conv2d`` (the official arithmetic); "sampled" the same convolution as
    :func:`deform_conv3x3_sampled` (equal up to rounding, a much faster backward on CPU).
    """

    def __init__(self, channels: int, kernel: str = "torchvision"):
        super().__init__()
        if kernel not in ("torchvision", "sampled"):
            raise ValueError(f"unknown deformable-conv kernel {kernel!r}")
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        bound = 1.0 / math.sqrt(channels * 9)  # uniform(-1/sqrt(n), 1/sqrt(n)), n = C*9 -- facts §4.2
        nn.init.uniform_(self.weight, -bound, bound)
        self.cls = nn.Conv2d(channels, 1, 1)
        self.kernel = kernel

    def forward(self, features: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        # float32 under autocast: torchvision's CPU kernel has no bf16 / fp16 version (its CUDA autocast
        # rule casts to float32 the same way); outside autocast the inputs are float32 already. The sampled
        # kernel keeps float32 too, so both kernels see the same precision.
        conv = deform_conv3x3_sampled if self.kernel == "sampled" else _deform_conv3x3_torchvision
        with torch.autocast(features.device.type, enabled=False):
            x = conv(features.float(), offsets.float(), self.weight.float())
        return self.cls(F.relu(x))


def _deform_conv3x3_torchvision(x: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return deform_conv2d(x, offsets, weight, padding=(1, 1))


def box_offsets(reg: torch.Tensor, search_size: int, stride: int = 8,
                center_origin: float | None = None) -> torch.Tensor:
    """Deformable-conv offsets that put the 9 taps of a 3x3 kernel on each cell's predicted box.

    Args:
        reg: (B, 4, H, W) distances l, t, r, b in search pixels.
        search_size: S, the search crop side.
        center_origin: the pixel that maps to the central cell; ``None`` = floor(S/2) (the grid), the
            official code uses S/2 (facts §4.1 step 2).

    Returns (B, 18, H, W) offsets in feature cells, channel 2k = dy_k, 2k+1 = dx_k for taps k row-major
    (torchvision / mmcv DCN layout, facts §4.1 step 6). Tap (ky, kx) of cell (i, j) samples
    ``(cy_f + ky h_f / 2, cx_f + kx w_f / 2)``: the box centre, edge midpoints and corners (paper Eq. 3),
    with the box size in cells ``(x2 - x1 + 1) / stride`` as in the official code (facts §4.1 step 3).
    """
    b, _, h, w = reg.shape
    xs, ys = score_grid_torch(w, search_size, stride, device=reg.device, dtype=reg.dtype)
    dl, dt, dr, db = reg.unbind(1)
    x1, y1, x2, y2 = xs - dl, ys - dt, xs + dr, ys + db
    origin = float(search_size // 2) if center_origin is None else center_origin
    cx = ((x1 + x2) / 2 - origin) / stride + w // 2
    cy = ((y1 + y2) / 2 - origin) / stride + h // 2
    half_w = (x2 - x1 + 1) / stride / 2
    half_h = (y2 - y1 + 1) / stride / 2
    jj = torch.arange(w, device=reg.device, dtype=reg.dtype).view(1, 1, w)
    ii = torch.arange(h, device=reg.device, dtype=reg.dtype).view(1, h, 1)
    taps = torch.tensor([-1.0, 0.0, 1.0], device=reg.device, dtype=reg.dtype)
    ky = taps.repeat_interleave(3).view(1, 9, 1, 1)  # row-major: k = 3 (ky + 1) + (kx + 1)
    kx = taps.repeat(3).view(1, 9, 1, 1)
    dy = (cy - ii).unsqueeze(1) + ky * (half_h.unsqueeze(1) - 1)
    dx = (cx - jj).unsqueeze(1) + kx * (half_w.unsqueeze(1) - 1)
    offsets = torch.stack([dy, dx], dim=2).reshape(b, 18, h, w)
    # Guard (facts §16): never hand non-finite or absurd offsets to deform_conv2d. A tap further than
    # H + W + 2 cells from its cell is outside the map either way (it reads zeros), so clamping there
    # changes no output; NaN (already reported by the caller) becomes 0.
    limit = float(h + w + 2)
    return torch.nan_to_num(offsets, nan=0.0, posinf=limit, neginf=-limit).clamp(-limit, limit)


class OceanNet(nn.Module):
    """The Ocean network (offline part).

    Data flow (facts §1-§4, paper Sec. 3 and 4.1)::

        template 127 -> backbone -> neck (1x1 -> 256, BN) -> centre crop 15 -> 7 --+
        search   255 -> backbone -> neck ---------------------------------------+--+
            +--> cls encoder: 3 dilated convs per side, depth-wise xcorr, fused (+ ColourCue, an option)
                 -> cls tower -> p_r
            +--> reg encoder (same, separate weights) -> reg tower -> exp(a conv + b) = l, t, r, b
                 reg-tower features + boxes -> deformable 3x3 -> p_o

    Inputs are float (B, 3, H, W) images in raw BGR 0-255 (facts §1.3); a model whose backbone expects
    ImageNet-normalised RGB (``input_norm="imagenet_rgb"``) converts internally, so callers never change.
    Outputs are a dict: ``cls`` (B,1,n,n) p_r logits (x0.1 already applied), ``reg`` (B,4,n,n) distances
    l,t,r,b in search-crop pixels from each cell's grid point (``ocean.geometry.score_grid``), ``align``
    (B,1,n,n) p_o logits or None. n = ``ocean.geometry.score_size(S)``: 25 / 27 / 29 for S = 255 / 271 / 287.

    Training: ``forward(template, search)``. Tracking: ``template(z)`` once, then ``track(x)`` per frame.
    Both are batch- and search-size agnostic (no grids hard-wired to batch 32 or S = 255; facts §4.3).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        head: HeadConfig = cfg.head
        bb = cfg.backbone
        self.input_norm = bb.input_norm
        self.stride = cfg.stride
        self.backbone = ResNet50Backbone(layout=bb.layout, width=bb.width, blocks=bb.blocks)
        c = head.channels
        self.neck = nn.Sequential(nn.Conv2d(self.backbone.out_channels, c, 1, bias=False), nn.BatchNorm2d(c))
        self.cls_encode = FeatureCombination(c, head.fusion, head.combination, head.correlation)
        self.reg_encode = FeatureCombination(
            c, head.fusion, head.combination, head.correlation if head.correlation_branches == "both" else "plain")
        self.cls_tower = Tower(c, head.tower_convs)
        self.colour = ColourCue(c, cfg.stride, head.template_crop_border) if head.colour_cue else None
        self.reg_tower = Tower(c, head.tower_convs)
        self.cls_pred = nn.Conv2d(c, 1, 3, padding=1)
        self.reg_pred = ExpRegression(c, head.reg_adjust_init, head.reg_bias_init, head.reg_exp_clamp)
        self.align = AlignHead(c, head.deform_kernel) if head.align else None
        self.register_buffer("_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        self._kernels: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        if bb.pretrained:
            from ocean.storage import load_torch

            load_backbone_weights(self.backbone, load_torch(bb.pretrained))

    # ----------------------------------------------------------------------------------------------
    def parts(self) -> dict[str, list[nn.Module]]:
        """The network's parts as counted by ``ocean info`` (facts §16)."""
        return {
            "backbone": [self.backbone],
            "neck": [self.neck],
            "head": [self.cls_encode, self.reg_encode, self.cls_tower, self.reg_tower, self.cls_pred,
                     self.reg_pred] + ([self.colour] if self.colour is not None else []),
            "align": [self.align] if self.align is not None else [],
        }

    def _normalise(self, img: torch.Tensor) -> torch.Tensor:
        if self.input_norm == "raw_bgr":
            return img
        return (img.flip(1) - self._mean) / self._std  # BGR -> RGB, ImageNet mean / std

    def _features(self, img: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(self._normalise(img)))

    def _template_kernels(self, z: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        f = self._features(z)
        k = self.cfg.head.template_crop_border
        if k > 0:
            f = f[:, :, k:-k, k:-k]
        cls_kernels = self.cls_encode.encode_template(f)
        if self.colour is not None:  # the colour kernel rides last in the cls list (batched tracking stacks it too)
            cls_kernels = [*cls_kernels, self.colour.encode_template(z)]
        return cls_kernels, self.reg_encode.encode_template(f)

    def _head(self, kernels, x: torch.Tensor, search_size: int) -> dict[str, torch.Tensor | None]:
        xf = self._features(x)
        cls_kernels, reg_kernels = kernels
        if self.colour is not None:
            cls_in = self.cls_encode(cls_kernels[:-1], xf)
            colour = self.colour(cls_kernels[-1], x)
            if colour.shape != cls_in.shape:
                raise ValueError(f"model.head.colour_cue: the colour response {tuple(colour.shape)} does not line "
                                 f"up with the correlation {tuple(cls_in.shape)} (a backbone layout whose feature "
                                 "cells are not the input's stride-sized cells)")
            cls_feat = self.cls_tower(cls_in + colour)
        else:
            cls_feat = self.cls_tower(self.cls_encode(cls_kernels, xf))
        reg_feat = self.reg_tower(self.reg_encode(reg_kernels, xf))
        cls = self.cfg.head.cls_logit_scale * self.cls_pred(cls_feat)
        reg = self.reg_pred(reg_feat)
        if not torch.isfinite(reg).all():
            raise NonFiniteOutputError(
                "the regression branch produced non-finite box distances "
                f"(input range [{x.min().item():.3g}, {x.max().item():.3g}]); the weights have diverged or "
                "the input is not a 0-255 image"
            )
        align = None
        if self.align is not None:
            origin = search_size / 2 if self.cfg.head.align_center == "official" else None
            align = self.align(reg_feat, box_offsets(reg, search_size, self.stride, origin))
        return {"cls": cls, "reg": reg, "align": align}

    # ----------------------------------------------------------------------------------------------
    def forward(self, template: torch.Tensor, search: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Training forward: template (B,3,127,127), search (B,3,S,S) -> {cls, reg, align}."""
        return self._head(self._template_kernels(template), search, search.shape[-1])

    @torch.no_grad()
    def template(self, z: torch.Tensor) -> None:
        """Compute and keep the template kernels (once per video)."""
        self._kernels = self._template_kernels(z)

    @torch.no_grad()
    def track(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Score a search crop against the stored template."""
        if self._kernels is None:
            raise RuntimeError("call template() before track()")
        return self._head(self._kernels, x, x.shape[-1])

    # Batched tracking (ocean.batch_tracker): the template kernels are returned instead of kept, so K videos'
    # kernels can be stacked along the batch and each search crop meets its own template (xcorr_depthwise
    # pairs kernel row i with search row i).
    @torch.no_grad()
    def template_kernels(self, z: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The template kernels of a batch of template crops (B, 3, 127, 127), row i for crop i."""
        return self._template_kernels(z)

    @torch.no_grad()
    def track_with(self, kernels: tuple[list[torch.Tensor], list[torch.Tensor]],
                   x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Score search crops (B, 3, S, S) against ``kernels`` (:meth:`template_kernels`, batch B)."""
        return self._head(kernels, x, x.shape[-1])


def build_model(cfg: ModelConfig) -> OceanNet:
    return OceanNet(cfg)


def count_parameters(modules: list[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def model_info(cfg: ModelConfig, search_sizes: tuple[int, ...] = (255, 271, 287)) -> dict:
    """Parameter counts by part and feature / score-map sizes, measured on a real forward pass."""
    net = build_model(cfg).eval()
    parts = {k: count_parameters(v) for k, v in net.parts().items()}
    info = {
        "params_total": count_parameters([net]),
        "params_backbone": parts["backbone"],
        "params_neck": parts["neck"],
        "params_head": parts["head"],
        "params_align": parts["align"],
        "backbone_layout": cfg.backbone.layout,
        "exemplar_size": cfg.exemplar_size,
        "stride": cfg.stride,
    }
    with torch.no_grad():
        z = torch.zeros(1, 3, cfg.exemplar_size, cfg.exemplar_size)
        k = cfg.head.template_crop_border
        zf = net._features(z)
        info["template_feature"] = list(zf[:, :, k:-k, k:-k].shape if k > 0 else zf.shape)
        kernels = net._template_kernels(z)
        info["score_size"] = {
            s: int(net._head(kernels, torch.zeros(1, 3, s, s), s)["cls"].shape[-1]) for s in search_sizes
        }
    return info
