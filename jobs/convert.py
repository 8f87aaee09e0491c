"""``ocean convert``: turn an official Ocean checkpoint or an ImageNet ResNet-50 file into this project's weights."""

from __future__ import annotations

import argparse
import json
import logging

from jobs.common import UsageError, absolute, main_for

log = logging.getLogger(__name__)

COMMAND = "convert"
HELP = "convert a TracKit / SOTS Ocean checkpoint or an ImageNet ResNet-50 file into this project's weights"
DESCRIPTION = """\
Convert official weights into this project's layout (the whole key map: docs/reference/checkpoint_keys.md).

--from trackit          TracKit Ocean (snapshot/OceanV.pth for VOT, OceanO.pth for OTB / GOT-10k / LaSOT)
--from sots             SOTS Ocean (no alignment branch)
--from trackit-online   TracKit's online checkpoint: the Siamese network plus the online branch
                        (features.features.layeronline.*), written to OUT_STEM.online.pt beside OUT and
                        set as tracker.online_params.weights (features=layeronline); its DiMP
                        classifier.* entries have no counterpart here and are listed as dropped
--from pysot-resnet50   pysot's ImageNet ResNet-50 (resnet50.model) -> a pysot-layout backbone
--from torchvision-resnet50 [--layout torchvision|pysot]
                        torchvision's ImageNet ResNet-50 -> the torchvision layout (exact), or the pysot
                        layout where the shapes allow (its two 3x3 downsample convs are left out, listed)

The Ocean sources give a checkpoint that `ocean track`, `ocean evaluate` and `ocean tune-tracker` load: the
`paper` preset's network (the official one) with the alignment head when the file has one (--no-align
drops it), and the default tracker section (pick the benchmark's values with --benchmark at tracking
time). The ResNet-50 sources give a backbone state_dict for `--set model.backbone.pretrained=OUT`.

The input may be a plain state_dict or a dict holding it under `state_dict` (or `model`), with or without
the `module.` prefix; it is read with torch.load(weights_only=True). Every entry is mapped, or dropped by a
named rule (listed on stderr), or the command stops with status 2 naming the unmapped entries; so does a
weight the network needs and the file lacks, or a shape that does not fit.

Examples:
  ocean convert --from trackit --in snapshot/OceanV.pth --out ocean-vot.pt
  ocean convert --from trackit --in snapshot/OceanO.pth --out ocean-otb.pt --no-align
  ocean convert --from pysot-resnet50 --in pretrain/resnet50.model --out backbone.pt"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ocean.convert import SOURCES

    p.add_argument("--from", dest="source", required=True, choices=list(SOURCES), help="what the input file is")
    p.add_argument("--in", dest="input", required=True, metavar="FILE", help="the weight file (path or URI)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the result (path or URI)")
    p.add_argument("--no-align", action="store_true",
                   help="drop the alignment head (the OTB / GOT-10k / LaSOT network, ocean_facts §4.3)")
    p.add_argument("--layout", choices=("torchvision", "pysot"),
                   help="backbone layout for --from torchvision-resnet50 (default torchvision)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    from ocean.convert import ConvertError, convert, write_conversion
    from ocean.storage import StorageError

    source_uri, out = absolute(args.input), absolute(args.out)
    try:
        conv = convert(source_uri, args.source, align=False if args.no_align else None, layout=args.layout)
    except ConvertError as exc:
        raise UsageError(str(exc)) from None
    for key, reason in sorted(conv.dropped.items()):
        log.info(f"dropped {key}: {reason}")
    for key, reason in sorted(conv.not_converted.items()):
        log.warning(f"not converted {key}: {reason}")
    try:
        written = write_conversion(conv, out, source_uri)
    except (OSError, StorageError) as exc:
        raise UsageError(f"cannot write {args.out}: {exc}") from None
    summary = {
        "source": conv.source, "input": source_uri, "sha256": conv.sha256, "written": written, "kind": conv.kind,
        "mapped": len(conv.mapped), "dropped": len(conv.dropped), "not_converted": sorted(conv.not_converted),
        "align": bool(conv.config.model.head.align) if conv.config is not None else None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        what = "checkpoint" if conv.kind == "tracker" else "backbone state_dict"
        print(f"{conv.source}: {len(conv.mapped)} entries mapped, {len(conv.dropped)} dropped, "
              f"{len(conv.not_converted)} not converted -> {what} {written[0]}")
        for extra in written[1:]:
            print(f"online branch -> {extra} (tracker.online_params.weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
