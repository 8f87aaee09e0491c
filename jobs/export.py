"""``ocean export``: a checkpoint's network as ONNX graphs for deployment (onnxruntime, TensorRT, ...)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from jobs.common import UsageError, absolute, main_for

log = logging.getLogger(__name__)

COMMAND = "export"
HELP = "export a checkpoint's network to ONNX (template graph + per-frame track graph, alignment head included)"
DESCRIPTION = """\
Export the network of a checkpoint to ONNX (opset 19), in the two graphs a deployed tracker runs:

  OUT.onnx            the per-frame track graph: `search` (1, 3, S, S) float32 raw BGR 0-255, S dynamic
                      (255 / 271 / 287), and the template kernels -> `cls` (p_r logits), `reg` (l, t, r, b in
                      search-crop pixels) and, with the alignment head, `align` (p_o logits)
  OUT.template.onnx   once per video: `template` (1, 3, 127, 127) -> the kernels `cls_kernel_0..2`,
                      `reg_kernel_0..2`, fed by name to the track graph
  OUT.json            the tensor contract, the checkpoint's configuration (tracker hyper-parameters included)

The alignment head's deformable convolution is the standard ONNX DeformConv operator, which onnxruntime
runs on CPU. Unless --no-verify, both graphs are run in onnxruntime on random inputs and compared with the
PyTorch network (search 255 and 287); the largest relative difference is printed and more than 1e-4 is an
error (exit status 1). The same graphs back `--runtime onnx` of `ocean track` / `ocean evaluate`.

Needs the `export` extra (pip install 'ocean-ray[export]': onnx, onnxruntime). A missing checkpoint, an
output that cannot be written or missing packages stop the command with one line and exit status 2.

Example:
  ocean export --checkpoint runs/checkpoints/epoch-0050.pt --onnx deploy/ocean.onnx"""

VERIFY_TOL = 1e-4  # relative to the max |value| of each output, as the official-equivalence test


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or URI (file://, s3://)")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx",
                   help="the track graph's path or URI; OUT.template.onnx and OUT.json are written beside it")
    p.add_argument("--no-verify", action="store_true", help="do not compare onnxruntime's outputs with PyTorch's")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _check_writable(out: str) -> None:
    from ocean.storage import is_uri

    if is_uri(out):
        return  # object stores are checked by the write itself (ocean.storage names the location)
    parent = Path(out).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--onnx {out}: cannot create its folder ({exc.strerror or exc})") from None
    if Path(out).is_dir():
        raise UsageError(f"--onnx {out}: is a folder; name the .onnx file")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--onnx {out}: the folder {parent} is not writable")


def run(args: argparse.Namespace) -> int:
    from ocean.export import ExportUnavailableError, require_onnx

    try:
        require_onnx()
    except ExportUnavailableError as exc:
        raise UsageError(f"--onnx: {exc}") from None
    checkpoint, out = absolute(args.checkpoint), absolute(args.onnx)
    _check_writable(out)

    import torch

    from ocean.checkpoint import CheckpointError, load_model
    from ocean.export import OnnxNetwork, export_onnx
    from ocean.storage import StorageError, is_uri

    if not is_uri(checkpoint) and not Path(checkpoint).is_file():
        raise UsageError(f"--checkpoint {checkpoint}: no such file")
    try:
        net, cfg = load_model(checkpoint, map_location="cpu")
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UsageError(f"--checkpoint {checkpoint}: cannot load it ({exc})") from None
    log.info(f"exporting {checkpoint} (align head: {net.align is not None}) to {out}")
    try:
        paths = export_onnx(net, out, cfg)
    except (OSError, StorageError) as exc:
        raise UsageError(f"--onnx {out}: cannot write it ({exc})") from None
    summary: dict = {"checkpoint": checkpoint, "written": paths, "align": net.align is not None}
    status = 0
    if not args.no_verify:
        errors = verify(net, OnnxNetwork.load(out), torch)
        summary["max_relative_difference"] = errors
        worst = max(errors.values())
        if worst > VERIFY_TOL:
            log.error(f"onnxruntime differs from PyTorch by {worst:.2e} (relative) > {VERIFY_TOL:g}: {errors}")
            status = 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {paths['track']} (track), {paths['template']} (template), {paths['meta']}")
        if "max_relative_difference" in summary:
            diffs = ", ".join(f"{k} {v:.1e}" for k, v in summary["max_relative_difference"].items())
            print(f"onnxruntime vs PyTorch, max relative difference: {diffs}")
    return status


def verify(net, onnx_net, torch) -> dict[str, float]:
    """Max |difference| / max |value| of every output, onnxruntime vs PyTorch, at search 255 and 287."""
    gen = torch.Generator().manual_seed(0)
    size = int(net.cfg.exemplar_size)
    z = torch.rand(1, 3, size, size, generator=gen) * 255
    errors: dict[str, float] = {}
    with torch.inference_mode():
        net.template(z)
        onnx_net.template(z)
        for s in (size + 128, size + 160):  # 255 and 287 for the 127 / stride-8 geometry
            x = torch.rand(1, 3, s, s, generator=gen) * 255
            ref, got = net.track(x), onnx_net.track(x)
            for key, value in ref.items():
                if value is not None:
                    scale = float(value.abs().max()) or 1.0
                    errors[f"{key}_{s}"] = float((got[key] - value).abs().max()) / scale
    return errors


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
