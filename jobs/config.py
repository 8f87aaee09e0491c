"""``ocean config``: print a configuration (YAML or JSON), or the generated configuration reference."""

from __future__ import annotations

import argparse
import json

from jobs.common import add_config_argument, load_config, main_for

COMMAND = "config"
HELP = "print a preset's configuration (YAML or JSON) or the configuration reference (markdown)"
DESCRIPTION = """Print the full configuration of a preset after --config FILE and --set overrides: as YAML (the
default) or JSON (--format json; the form it travels in across Ray and is stored in checkpoints), both the
schema --config FILE reads on every command that takes --set; flattened to dotted keys with --flat; or the
reference of every key with its paper / smoke defaults, allowed values and source (--reference;
docs/configuration.md is this output). Every value is type- and range-checked; a bad one is one line, exit 2.

Examples:
  ocean config --preset paper > my.yaml        # edit, then: ocean train --config my.yaml ...
  ocean config --preset smoke --set optim.epochs=3 --format json > smoke3.json
  ocean config --config my.yaml --flat | grep optim.
  ocean config --reference > docs/configuration.md"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="paper", help="paper (default) or smoke")
    add_config_argument(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override (repeatable)")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml",
                   help="output format (default yaml); both read back with --config")
    p.add_argument("--flat", action="store_true", help="dotted key = value lines instead of the nested form")
    p.add_argument("--reference", action="store_true", help="the markdown reference of every key")


def run(args: argparse.Namespace) -> int:
    from ocean.config import flatten, to_dict

    if args.reference:
        from ocean.config_doc import reference_markdown

        print(reference_markdown(), end="")
        return 0
    cfg = load_config(args)
    if args.flat:
        for key, value in flatten(cfg).items():
            print(f"{key} = {json.dumps(value)}")
    elif args.format == "json":
        print(json.dumps(to_dict(cfg), indent=2))
    else:
        print(to_yaml(to_dict(cfg)), end="")
    return 0


def to_yaml(data: dict) -> str:
    """Block-style YAML in the field order, lists on one line (``blocks: [3, 4, 6]``)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=110)


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
