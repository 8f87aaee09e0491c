"""The ``ocean`` command line.

:func:`main` (the ``ocean`` entry point) dispatches to one module per sub-command, ``jobs/<name>.py``, found by
:func:`_command_modules` (what each such module defines: its docstring); ``python -m jobs.<name> ARGS`` takes
exactly the arguments of ``ocean <name> ARGS``. A command module that fails to import is reported on stderr
and left out; the other commands still work.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
from types import ModuleType

import jobs
from jobs.common import add_logging_arguments, call_command


def _command_modules() -> list[ModuleType]:
    """The sub-command modules ``jobs/<name>.py``, by name. Each defines::

        COMMAND = "score"                 # the sub-command name (``ocean score``)
        HELP = "one line for ``ocean --help``"
        DESCRIPTION = "longer text for ``ocean score --help``"   # optional
        def add_arguments(parser: argparse.ArgumentParser) -> None: ...
        def run(args: argparse.Namespace) -> int: ...           # exit status

    and ends with ``if __name__ == "__main__": raise SystemExit(main_for(__name__))`` so that
    ``python -m jobs.<name> ARGS`` (what ``ray job submit`` runs; :func:`jobs.common.main_for`) takes exactly the
    arguments of ``ocean <name> ARGS``. Modules keep heavy imports (torch, ray, mlflow) inside ``run`` so that
    ``ocean --help`` stays fast.
    """
    mods = []
    for info in sorted(pkgutil.iter_modules(jobs.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "cli":
            continue
        try:
            mod = importlib.import_module(f"jobs.{info.name}")
        except Exception as exc:  # one broken command must not take the others down
            logging.getLogger(__name__).warning(f"ocean: command module jobs.{info.name} failed to import: {exc!r}")
            continue
        if hasattr(mod, "COMMAND") and hasattr(mod, "run"):
            mods.append(mod)
    return mods


def _add_command(sub: argparse._SubParsersAction, mod: ModuleType) -> None:
    p = sub.add_parser(
        mod.COMMAND,
        help=getattr(mod, "HELP", None),
        description=getattr(mod, "DESCRIPTION", None) or getattr(mod, "HELP", None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.add_arguments(p)
    add_logging_arguments(p)
    p.set_defaults(_run=mod.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocean",
        description=(
            "Ocean (ECCV 2020) object-aware anchor-free tracking, with Ray data preparation, "
            "training, tuning and evaluation. Run `ocean COMMAND --help` for each command."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        _add_command(sub, mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return call_command(args._run, args, args.command)


if __name__ == "__main__":
    raise SystemExit(main())
