"""``ocean config``: print a preset's configuration, or the generated configuration reference."""

from __future__ import annotations

import argparse
import json

from jobs.common import main_for

COMMAND = "config"
HELP = "print a preset's configuration (JSON) or the configuration reference (markdown)"
DESCRIPTION = """Print the full configuration of a preset after --set overrides, as JSON (the form it travels in
across Ray and is stored in checkpoints), flattened to dotted keys with --flat, or the reference of every
key with its paper / smoke defaults and its source (--reference; docs/configuration.md is this output).

Examples:
  ocean config --preset smoke --set optim.epochs=3
  ocean config --flat | grep optim.
  ocean config --reference > docs/configuration.md"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="paper", help="paper (default) or smoke")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override (repeatable)")
    p.add_argument("--flat", action="store_true", help="dotted key = value lines instead of nested JSON")
    p.add_argument("--reference", action="store_true", help="the markdown reference of every key")


def run(args: argparse.Namespace) -> int:
    from ocean.config import apply_overrides, flatten, preset, to_dict

    if args.reference:
        from ocean.config_doc import reference_markdown

        print(reference_markdown(), end="")
        return 0
    cfg = apply_overrides(preset(args.preset), args.overrides)
    if args.flat:
        for key, value in flatten(cfg).items():
            print(f"{key} = {json.dumps(value)}")
    else:
        print(json.dumps(to_dict(cfg), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
