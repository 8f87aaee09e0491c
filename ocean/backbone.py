"""The modified ResNet-50 backbone (conv1 .. layer3, output stride 8) and its ImageNet weight loading.

:class:`ResNet50Backbone` builds the official ``"pysot"`` layout (facts §1.1) or a ``"torchvision"`` layout
that loads torchvision's ImageNet weights unchanged. Input: a float tensor (B, 3, H, W); normalisation is
the model's job (``OceanNet``), not the backbone's. Output: the layer3 feature, ``4 * 4 * width`` channels
(1024 for ResNet-50), post-ReLU.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

EXPANSION = 4  # bottleneck expansion -- ResNet-50


class StemMaxPool(nn.MaxPool2d):
    """The stem's 3x3 / stride 2 / padding 1 max pooling (facts §1.1), the same values faster on CPU.

    Without gradients, a CPU input in the default (NCHW) layout is pooled in channels-last order and
    handed back in NCHW: the maxima are the same elements, bit for bit, and PyTorch's channels-last CPU
    kernel, layout changes included, is 2-4x faster than the NCHW one, which also computes the argmax
    indices that only a backward needs. On one thread (the evaluation workers') the smoke network's track
    takes 4-6 % less time; the paper network's does not measurably change (BENCHMARKS.md "Inference fast
    path"). With gradients (training) it is plain ``nn.MaxPool2d``: there the two kernels cost the same at
    the search size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad) and x.dim() == 4
                and x.is_contiguous() and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
                and not torch.compiler.is_compiling()):
            return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return super().forward(x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4) with a residual; facts §1.1."""

    def __init__(self, inplanes: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, layout: Literal["pysot", "torchvision"] = "pysot"):
        super().__init__()
        if layout == "pysot":
            # Padding 2 - stride (0 for stride 2); a dilated block with a downsample uses dilation d // 2
            # -- facts §1.1 "special case".
            padding = 2 - stride
            if downsample is not None and dilation > 1:
                dilation = dilation // 2
                padding = dilation
            if dilation > 1:
                padding = dilation
        else:
            padding = dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Backbone(nn.Module):
    """conv1, bn1, relu, maxpool, layer1, layer2, layer3 of a (modified) ResNet-50.

    Two layouts of the same network:

    * ``"pysot"`` (default) -- what the official code builds (facts §1.1, the SiamRPN++ ``resnet_atrous``
      layout): conv1 with padding 0; the stride-2 3x3 conv of layer2's first block and every 3x3 conv with
      stride 2 have padding 0; layer2's downsample is a 3x3 stride-2 conv with padding 0; layer3 has stride 1
      and dilation 2, its downsample is a 3x3 conv with padding 1, and its first block is undilated.
      127 -> 15x15, 255 -> 31x31 (facts §1.2).
    * ``"torchvision"`` -- torchvision's ResNet-50 module names and shapes (1x1 downsample convs, conv1
      padding 3, stride-2 3x3 convs with padding 1), with layer3 dilated as torchvision's
      ``replace_stride_with_dilation`` does, so ImageNet weights from torchvision load unchanged.
      127 -> 16x16, 255 -> 32x32; the model crops the template to 8x8 so the score maps keep their sizes.

    Both output the layer3 feature: ``4 * 4 * width`` channels (1024 for ResNet-50), post-ReLU.

    Args:
        layout: ``"pysot"`` or ``"torchvision"`` (above).
        width: planes of layer1 (64 for ResNet-50; the smoke preset narrows it).
        blocks: blocks in layer1..layer3 ((3, 4, 6) for ResNet-50).
    """

    def __init__(self, *, layout: Literal["pysot", "torchvision"] = "pysot", width: int = 64,
                 blocks: tuple[int, int, int] = (3, 4, 6)):
        super().__init__()
        if layout not in ("pysot", "torchvision"):
            raise ValueError(f"unknown backbone layout {layout!r}")
        self.layout = layout
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=0 if layout == "pysot" else 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = StemMaxPool(3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, blocks[0])
        self.layer2 = self._make_layer(width * 2, blocks[1], stride=2)
        self.layer3 = self._make_layer(width * 4, blocks[2], dilation=2)
        self.out_channels = width * 4 * EXPANSION
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        out = planes * EXPANSION
        downsample = None
        if stride != 1 or self.inplanes != out:
            if self.layout == "torchvision" or (stride == 1 and dilation == 1):
                conv = nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False)
            else:
                # 3x3 downsample: stride 2 / padding 0 (layer2) or dilation 1 / padding 1 (layer3)
                # -- facts §1.1.
                dd, pad = (dilation // 2, dilation // 2) if dilation > 1 else (1, 0)
                conv = nn.Conv2d(self.inplanes, out, 3, stride=stride, padding=pad, dilation=dd, bias=False)
            downsample = nn.Sequential(conv, nn.BatchNorm2d(out))
        # torchvision's replace_stride_with_dilation gives the first block the previous dilation (1).
        first_dilation = 1 if (self.layout == "torchvision" and dilation > 1) else dilation
        layers = [Bottleneck(self.inplanes, planes, stride=stride, dilation=first_dilation,
                             downsample=downsample, layout=self.layout)]
        self.inplanes = out
        layers += [Bottleneck(out, planes, dilation=dilation, layout=self.layout) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # N(0, sqrt(2 / (k*k*out))) for convs, BN weight 1 / bias 0 -- facts §1.1.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


_STRIP_PREFIXES = ("module.", "feature_extractor.", "features.features.", "features.", "backbone.")


def clean_backbone_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the prefixes ImageNet checkpoints carry (``module.``, ``feature_extractor.``,
    ``features.features.`` -- facts §1.3) and drop what the backbone does not have (``fc``, ``layer4``)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in _STRIP_PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        if key.startswith(("fc.", "layer4.")):
            continue
        out[key] = value
    return out


def load_backbone_weights(backbone: ResNet50Backbone, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load ImageNet weights into ``backbone``; returns ``{"missing": [...], "unexpected": [...]}``.

    Shapes must match exactly (a pysot checkpoint into the torchvision layout, or the reverse, fails
    with a message naming the first mismatching key); the stem must be covered (facts §1.3 warns that
    TracKit's own ``trans_model`` silently skips conv1 / bn1).
    """
    state = clean_backbone_state_dict(state)
    own = backbone.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"pretrained weight {key!r} has shape {tuple(value.shape)} but the {backbone.layout!r} "
                f"backbone expects {tuple(own[key].shape)}: is this checkpoint for the other layout?"
            )
    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if "conv1.weight" in missing or len(missing) == len([k for k in own if not k.endswith("num_batches_tracked")]):
        raise ValueError(f"pretrained weights cover none of the stem / backbone (missing e.g. {missing[:3]})")
    return {"missing": missing, "unexpected": list(result.unexpected_keys)}
