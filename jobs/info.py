"""``ocean info``: parameter counts and feature / score-map sizes of a configuration."""

from __future__ import annotations

import argparse
import json

from jobs.common import add_config_argument, load_config, main_for

COMMAND = "info"
HELP = "print the model's parameter counts and feature sizes (JSON with --json)"
DESCRIPTION = """Build the network of a preset (with --config FILE and --set overrides) on the CPU and report, measured on the
built model: params_total, params_backbone, params_neck, params_head (encoders + towers + predictors),
params_align, template_feature (shape), score_size (search size -> score-map side).

For the paper preset the numbers equal the official model's (ocean_facts §16):
26,459,217 total = 13,786,176 backbone + 262,656 neck + 11,820,304 head + 590,081 alignment.

Example:  ocean info --preset smoke --set model.head.align=false --json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="paper", help="configuration preset: paper (default) or smoke")
    add_config_argument(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. model.backbone.layout=torchvision (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from ocean.model import model_info

    cfg = load_config(args)
    info = model_info(cfg.model)
    info["preset"] = args.preset
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        shown = f"{value:,}" if isinstance(value, int) else value
        print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
