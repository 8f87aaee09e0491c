"""The inference fast path: an eval-only copy of :class:`ocean.model.OceanNet` that computes the same outputs
in less time.

:func:`fast_network` returns a new ``OceanNet`` (the original is untouched; same ``template`` / ``track``
contract, same module names, so hooks and the tracker work unchanged) in which

* every BatchNorm (eval statistics) is folded into the convolution before it (backbone, neck, the encoders
  of the feature combination, the towers): ``w' = w g / sqrt(v + eps)``, ``b' = (b - m) g / sqrt(v + eps)
  + beta``;
* in the template branch, on CPU in float32 with one torch thread (how evaluation and tuning workers run),
  each convolution and the ReLU after it (and a bottleneck's last convolution, its residual addition and
  ReLU) run as one oneDNN call (``torch.ops.mkldnn._convolution_pointwise``) with weights prepacked once, on
  channels-last (NHWC) features;
* otherwise (``track``, more threads, CUDA, other dtypes, a torch without those ops) the folded convolution
  runs as ``F.conv2d`` followed by the ReLU. The fused calls took the template to 0.72-0.80x of eager on
  both hosts measured but never made ``track`` faster (0.98-1.03x on an AVX2 host, 1.04-1.09x on an
  AVX-512 one, where the plain folded convolutions run it at 0.97-0.99x): BENCHMARKS.md "Inference fast
  path", inference_runtimes.md §2.

* the alignment head's deformable convolution runs as bilinear sampling plus one matrix product
  (:func:`ocean.model.deform_conv3x3_sampled`, about twice as fast as torchvision's CPU kernel at batch 1).

Outputs agree with the eager network within float32 rounding (about 1e-6 relative; the tests hold them to 1e-4). :func:`runtime_network` picks the
network of a tracker's ``runtime`` setting and keeps one fast copy per eager network while its weights are
unchanged.
"""

from __future__ import annotations

import contextvars
import copy
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ocean.backbone import Bottleneck, ResNet50Backbone

RUNTIMES = ("eager", "fast", "onnx")


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias of ``bn(conv(x))`` as one convolution (eval statistics)."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else None
    if bn is None:
        return w.clone(), (b.clone() if b is not None else None)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = w * scale.view(-1, 1, 1, 1)
    b0 = b if b is not None else torch.zeros_like(bn.running_mean)
    return w.contiguous(), (b0 - bn.running_mean) * scale + bn.bias.detach()


def _mkldnn_ok(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and _HAS_POINTWISE and not x.requires_grad


_HAS_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
# Set while a fast network's template branch runs: the only place the fused calls are used (module docstring).
_FUSE = contextvars.ContextVar("ocean_fast_fuse", default=False)


class FusedConv(nn.Module):
    """A convolution with its BatchNorm folded in and an optional ReLU (eval only)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, relu: bool = False):
        super().__init__()
        w, b = _fold(conv, bn)
        self.weight = nn.Parameter(w, requires_grad=False)
        self.bias = nn.Parameter(b, requires_grad=False) if b is not None else None
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups = conv.groups
        self.relu = relu
        if isinstance(self.padding, str):
            raise ValueError("string padding is not supported by the fast path")
        # The weight reordered once into oneDNN's blocked layout (inference_runtimes.md §2): a plain weight
        # is reordered on every call, which costs as much as the convolution itself on these map sizes.
        self._packed = None
        if _HAS_POINTWISE and w.device.type == "cpu" and w.dtype == torch.float32:
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                w, list(self.padding), list(self.stride), list(self.dilation), self.groups,
                [1, w.shape[1] * self.groups, 32, 32])

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``relu?(conv(x) [+ residual])``."""
        if self._packed is not None and _FUSE.get() and _mkldnn_ok(x) and torch.get_num_threads() == 1:
            # Fused calls only in the template branch and with one thread (evaluation and tuning workers): with
            # two they measured slower than oneDNN's plain convolution on the template, and in `track` they
            # never gained (inference_runtimes.md §2).
            x = x.contiguous(memory_format=torch.channels_last)
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, self._packed, self.bias, list(self.padding), list(self.stride), list(self.dilation),
                    self.groups, "relu" if self.relu else "none", [], "")
            residual = residual.contiguous(memory_format=torch.channels_last)
            return torch.ops.mkldnn._convolution_pointwise(
                x, residual, self._packed, self.bias, list(self.padding), list(self.stride),
                list(self.dilation), self.groups, "add", None, "relu" if self.relu else "none", [], "")
        y = F.conv2d(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                     self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        return F.relu(y) if self.relu else y


class FastBottleneck(nn.Module):
    """:class:`ocean.backbone.Bottleneck` with folded BatchNorms; conv3 + residual + ReLU in one call."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1 = FusedConv(block.conv1, block.bn1, relu=True)
        self.conv2 = FusedConv(block.conv2, block.bn2, relu=True)
        self.conv3 = FusedConv(block.conv3, block.bn3, relu=True)
        ds = block.downsample
        self.downsample = None if ds is None else FusedConv(ds[0], ds[1] if len(ds) > 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv3(self.conv2(self.conv1(x)), residual=identity)


def _is_conv_bn(seq: nn.Module) -> bool:
    return (isinstance(seq, nn.Sequential) and len(seq) in (2, 3) and isinstance(seq[0], nn.Conv2d)
            and isinstance(seq[1], nn.BatchNorm2d) and (len(seq) == 2 or isinstance(seq[2], nn.ReLU)))


def _replace(module: nn.Module) -> None:
    """Swap, in place, every conv + BN (+ ReLU) Sequential, every Bottleneck and every other Conv2d under
    ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, Bottleneck):
            setattr(module, name, FastBottleneck(child))
        elif _is_conv_bn(child):
            setattr(module, name, FusedConv(child[0], child[1], relu=len(child) == 3))
        elif isinstance(child, nn.Conv2d):  # a convolution with no BatchNorm (predictors): prepacked alone
            setattr(module, name, FusedConv(child))
        else:
            _replace(child)


def fast_network(net: nn.Module) -> nn.Module:
    """An eval-only fast copy of ``net`` (an :class:`ocean.model.OceanNet`); ``net`` is not modified.

    The copy has the same ``template`` / ``track`` / ``forward`` (inference only: no gradients flow through
    the folded weights) and the same top-level module names.
    """
    fast = copy.deepcopy(net).eval()
    fast._kernels = None
    for p in fast.parameters():
        p.requires_grad_(False)
    for bb in fast.modules():
        if isinstance(bb, ResNet50Backbone):  # the stem: conv1 + bn1 + relu
            bb.conv1 = FusedConv(bb.conv1, bb.bn1, relu=True)
            bb.bn1, bb.relu = nn.Identity(), nn.Identity()
    _replace(fast)
    if getattr(fast, "align", None) is not None:
        fast.align.kernel = "sampled"
    fast.fast_runtime = True
    # the template branch of template(), template_kernels() and forward() alike
    fast._template_kernels = _Fused(type(fast)._template_kernels.__get__(fast))
    return fast


class _Fused:
    """Calls ``fn`` with the fused calls allowed (module docstring)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        token = _FUSE.set(True)
        try:
            return self.fn(*args)
        finally:
            _FUSE.reset(token)


# ----------------------------------------------------------------------------------------------------------
# Runtime selection (tracker.runtime)

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_version(net: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is modified in place (optimizer steps, load_state_dict)."""
    return tuple((id(t), t._version) for t in (*net.parameters(), *net.buffers()))


def runtime_network(net: Any, runtime: str) -> Any:
    """The network to track with for ``runtime`` (``eager`` | ``fast`` | ``onnx``, config ``tracker.runtime``).

    ``eager`` returns ``net``; ``fast`` a :func:`fast_network` copy, built once per network and weights
    version (cached, so every tracker of an evaluation worker shares it); ``onnx`` an
    :class:`ocean.export.OnnxNetwork` running the exported graphs in onnxruntime (CPU). Networks that are not
    an ``OceanNet`` (test doubles, wrappers) and networks in training mode are returned unchanged.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    from ocean.model import OceanNet

    if runtime == "eager" or not isinstance(net, OceanNet) or net.training or getattr(net, "fast_runtime", False):
        return net
    version = _weights_version(net)
    hit = _CACHE.get(net)
    if hit is not None and hit[0] == (runtime, version):
        return hit[1]
    if runtime == "fast":
        built = fast_network(net)
    else:
        from ocean.export import OnnxNetwork

        built = OnnxNetwork.from_network(net)
    _CACHE[net] = ((runtime, version), built)
    return built
