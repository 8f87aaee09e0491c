"""ONNX export of the Ocean network and an onnxruntime runner with the tracker's network contract.

A deployed tracker computes the template once per video and scores every frame against it, so the export
is two graphs (opset 19), written side by side by :func:`export_onnx`:

* ``OUT.template.onnx``: ``template`` (1, 3, 127, 127) float32 raw BGR 0-255 -> the template kernels
  ``cls_kernel_0..2``, ``reg_kernel_0..2`` (1, C, 5, 5), (1, C, 3, 5), (1, C, 5, 3): one per dilated
  encoder (C = 256 for the paper network), and with ``model.head.colour_cue`` ``cls_colour_kernel``
  (1, 3, 7, 7) after the cls ones;
* ``OUT.onnx``: ``search`` (1, 3, S, S) float32 raw BGR 0-255 (S dynamic: 255, 271, 287, ...) and the six
  kernels -> ``cls`` (1, 1, n, n) p_r logits, ``reg`` (1, 4, n, n) l, t, r, b distances in
  search-crop pixels and, with the alignment head, ``align`` (1, 1, n, n) p_o logits; n = 25 / 27 / 29 for
  S = 255 / 271 / 287 (``ocean.geometry.score_size``);
* ``OUT.json``: the contract above, the network and tracker configuration, the opset.

The alignment head's ``torchvision.ops.deform_conv2d`` becomes the standard ONNX ``DeformConv`` operator
(opset 19; same offset layout: channel 2k = dy, 2k + 1 = dx of tap k, taps row-major), which onnxruntime
runs on CPU. The graphs are traced with the TorchScript exporter (``torch.onnx.export(dynamo=False)``); its
symbolic for the torchvision op is registered here. onnx / onnxruntime are the optional ``export`` extra.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ocean.model import xcorr_depthwise_batch1

OPSET = 19  # the first opset with DeformConv -- inference_runtimes.md §3
TEMPLATE_INPUT, SEARCH_INPUT = "template", "search"


def kernel_names(net: nn.Module) -> list[str]:
    """The template kernels' tensor names: ``cls_kernel_0..k-1`` (then ``cls_colour_kernel`` with
    ``model.head.colour_cue``) then ``reg_kernel_0..k-1``."""
    enc = net.cls_encode
    k = len(getattr(enc, "inner", enc).template_convs)
    colour = ["cls_colour_kernel"] if getattr(net, "colour", None) is not None else []
    return [f"cls_kernel_{i}" for i in range(k)] + colour + [f"reg_kernel_{i}" for i in range(k)]


class ExportUnavailableError(RuntimeError):
    """onnx or onnxruntime is not installed (the ``export`` extra)."""


def require_onnx(runtime: bool = True) -> None:
    """Raise :class:`ExportUnavailableError` (one line) unless onnx (and onnxruntime) import."""
    missing = []
    for name in ("onnx", "onnxruntime") if runtime else ("onnx",):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportUnavailableError(
            f"{' and '.join(missing)} not installed: pip install 'ocean-ray[export]' (or pip install onnx onnxruntime)")


def _deform_conv2d_symbolic(g, inp, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                            n_weight_grps, n_offset_grps, use_mask):
    from torch.onnx import symbolic_helper as sh

    stride = [sh._get_const(stride_h, "i", "stride_h"), sh._get_const(stride_w, "i", "stride_w")]
    pad = [sh._get_const(pad_h, "i", "pad_h"), sh._get_const(pad_w, "i", "pad_w")]
    dil = [sh._get_const(dil_h, "i", "dil_h"), sh._get_const(dil_w, "i", "dil_w")]
    kernel = sh._get_tensor_sizes(weight)[2:]
    inputs = [inp, weight, offset, bias]
    if sh._get_const(use_mask, "b", "use_mask"):
        inputs.append(mask)
    return g.op("DeformConv", *inputs, dilations_i=dil, group_i=sh._get_const(n_weight_grps, "i", "groups"),
                kernel_shape_i=kernel, offset_group_i=sh._get_const(n_offset_grps, "i", "offset_groups"),
                pads_i=pad + pad, strides_i=stride)


_REGISTERED = False


def _register_symbolics() -> None:
    global _REGISTERED
    if not _REGISTERED:
        import torchvision  # noqa: F401  (registers torchvision::deform_conv2d)

        torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic, OPSET)
        _REGISTERED = True


class _ExportCombination(nn.Module):
    """A :class:`ocean.model.FeatureCombination` whose depth-wise xcorr keeps static kernel shapes in the
    trace (batch 1: ``conv2d(search, kernel^T, groups=C)``, the same sums as ``xcorr_depthwise``)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def encode_template(self, z: torch.Tensor) -> list[torch.Tensor]:
        return self.inner.encode_template(z)

    def forward(self, kernels: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        enc = self.inner
        corrs = []
        for conv, k in zip(enc.search_convs, kernels, strict=True):
            xs = conv(x)
            corrs.append(enc.correlate(xs, xcorr_depthwise_batch1(xs, k), k))
        return enc.fuse(corrs)


def _exportable(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (eval, CPU) with trace-friendly feature combinations. The alignment head exports
    as the standard ``DeformConv`` operator whichever kernel trained it (``model.head.deform_kernel``: both
    compute the same convolution)."""
    net = copy.deepcopy(net).to("cpu").eval()
    if getattr(net, "align", None) is not None:
        net.align.kernel = "torchvision"
    net.cls_encode = _ExportCombination(net.cls_encode)
    net.reg_encode = _ExportCombination(net.reg_encode)
    if getattr(net, "colour", None) is not None:
        net.colour.batch1 = True
    return net


class TemplateGraph(nn.Module):
    """``template`` -> the template kernels (cls encoders' then reg encoders')."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls_k, reg_k = self.net._template_kernels(z)
        return (*cls_k, *reg_k)


class TrackGraph(nn.Module):
    """(``search``, kernels...) -> ``cls``, ``reg`` (, ``align``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.kernels = sum(name.startswith("cls_") for name in kernel_names(net))

    def forward(self, x: torch.Tensor, *kernels: torch.Tensor):
        k = self.kernels
        out = self.net._head((list(kernels[:k]), list(kernels[k:])), x, x.shape[-1])
        return (out["cls"], out["reg"]) + ((out["align"],) if out["align"] is not None else ())


def _export(module: nn.Module, args: tuple, names_in: list[str], names_out: list[str], dynamic: dict) -> bytes:
    _register_symbolics()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer / deprecation notes: the parity test checks the graphs
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, input_names=names_in,
                          output_names=names_out, dynamic_axes=dynamic, do_constant_folding=True)
    return buf.getvalue()


def export_graphs(net: nn.Module) -> dict[str, bytes]:
    """``{"template": bytes, "track": bytes}``: the two serialized ONNX models of ``net`` (eval mode, CPU)."""
    require_onnx(runtime=False)
    net = _exportable(net)
    size = int(net.cfg.exemplar_size)
    z = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    search = int(net.cfg.exemplar_size) + 8 * 16  # 255 for the 127 / stride-8 geometry; any S traces the same
    x = torch.rand(1, 3, search, search, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        kernels = TemplateGraph(net)(z)
    names = kernel_names(net)
    outs = ["cls", "reg"] + (["align"] if net.align is not None else [])
    spatial = {2: "S", 3: "S"}
    return {
        "template": _export(TemplateGraph(net), (z,), [TEMPLATE_INPUT], names, {}),
        "track": _export(TrackGraph(net), (x, *kernels), [SEARCH_INPUT, *names], outs,
                         {SEARCH_INPUT: spatial, **{o: {2: "n", 3: "n"} for o in outs}}),
    }


def export_paths(out: str) -> dict[str, str]:
    """The files :func:`export_onnx` writes for ``--onnx OUT.onnx`` (a path or a URI):
    ``{"track": OUT.onnx, "template": OUT.template.onnx, "meta": OUT.json}``."""
    out = str(out)
    stem = out[: -len(".onnx")] if out.endswith(".onnx") else out
    return {"track": out, "template": f"{stem}.template.onnx", "meta": f"{stem}.json"}


def export_onnx(net: nn.Module, out: str, config: Any = None) -> dict[str, str]:
    """Write the track graph to ``out`` (a path or URI), the template graph and a JSON description beside
    it (:func:`export_paths`); returns the paths. ``config``: the checkpoint's ``OceanConfig``, recorded."""
    from ocean.config import to_dict
    from ocean.storage import write_bytes

    paths = export_paths(out)
    graphs = export_graphs(net)
    meta = {
        "format": "ocean-onnx/1",
        "opset": OPSET,
        "template_graph": Path(paths["template"]).name,
        "track_graph": Path(paths["track"]).name,
        "inputs": {"template": "(1, 3, 127, 127) float32, raw BGR 0-255, no normalisation (template graph)",
                   "search": "(1, 3, S, S) float32, raw BGR 0-255; S = the tracker's small_sz / big_sz (track graph)",
                   "kernels": "the template graph's outputs, fed by name unchanged to the track graph"},
        "kernels": kernel_names(net),
        "outputs": {"cls": "(1, 1, n, n) p_r logits", "reg": "(1, 4, n, n) l, t, r, b in search-crop pixels",
                    "align": "(1, 1, n, n) p_o logits (only with the alignment head)"},
        "exemplar_size": int(net.cfg.exemplar_size),
        "stride": int(net.stride),
        "config": to_dict(config) if config is not None else None,
    }
    write_bytes(paths["template"], graphs["template"])
    write_bytes(paths["meta"], (json.dumps(meta, indent=2, default=str) + "\n").encode())
    write_bytes(paths["track"], graphs["track"])
    return paths


class OnnxNetwork:
    """The tracker's network contract (``template(z)`` / ``track(x)``, ``cfg``, ``stride``) over the two
    exported graphs in onnxruntime (CPU). Outputs are CPU torch tensors."""

    def __init__(self, template_model: bytes | str, track_model: bytes | str, cfg: Any, stride: int,
                 threads: int | None = None):
        require_onnx()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads if threads is not None else torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # No busy-waiting between calls: the tracker's own work and other processes need the cores
        # (inference_runtimes.md §2).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self._template = ort.InferenceSession(template_model, opts, providers=providers)
        self._track = ort.InferenceSession(track_model, opts, providers=providers)
        self._outputs = [o.name for o in self._track.get_outputs()]
        self.cfg = cfg
        self.stride = stride
        self._features: dict[str, np.ndarray] | None = None
        self.training = False

    @classmethod
    def from_network(cls, net: nn.Module, threads: int | None = None) -> OnnxNetwork:
        graphs = export_graphs(net)
        return cls(graphs["template"], graphs["track"], net.cfg, int(net.stride), threads)

    @classmethod
    def load(cls, out: str | Path, threads: int | None = None) -> OnnxNetwork:
        """Open what :func:`export_onnx` wrote for ``out``."""
        from ocean.config import ModelConfig, from_dict
        from ocean.storage import read_bytes

        paths = export_paths(str(out))
        meta = json.loads(read_bytes(paths["meta"]))
        cfg = from_dict(meta["config"]).model if meta.get("config") else ModelConfig()
        return cls(read_bytes(paths["template"]), read_bytes(paths["track"]), cfg, int(meta["stride"]), threads)

    def parameters(self):  # the tracker asks for a device through this: none, so CPU
        return iter(())

    def eval(self) -> OnnxNetwork:
        return self

    def template(self, z: torch.Tensor) -> None:
        names = [o.name for o in self._template.get_outputs()]
        self._features = dict(zip(names, self._template.run(None, {TEMPLATE_INPUT: _numpy(z)}), strict=True))

    def track(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Score search crops ``(B, 3, S, S)`` against the stored template; the graph is traced at batch 1,
        so several crops (a scale search, ``tracker.scales``) run one after the other."""
        if self._features is None:
            raise RuntimeError("call template() before track()")
        rows = [self._track.run(None, {SEARCH_INPUT: _numpy(x[i:i + 1]), **self._features}) for i in range(len(x))]
        values = [np.concatenate(parts, 0) for parts in zip(*rows, strict=True)]
        out: dict[str, torch.Tensor | None] = {"align": None}
        out.update({k: torch.from_numpy(v) for k, v in zip(self._outputs, values, strict=True)})
        if not torch.isfinite(out["reg"]).all():
            from ocean.model import NonFiniteOutputError

            raise NonFiniteOutputError("the regression branch produced non-finite box distances")
        return out


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
