"""Command-line pieces every ``ocean`` command shares: ``NAME=VALUE`` lists, tracker overrides, the Ray and
MLflow flags, the logging flags and set-up, and usage errors (one line on stderr, exit status 2)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Iterable, Sequence

from ocean.storage import is_uri


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def main_for(module_name: str, argv: list[str] | None = None) -> int:
    """Entry point for ``python -m jobs.<name>``: the same arguments as ``ocean <name>``."""
    mod = sys.modules[module_name]
    spec = getattr(mod, "__spec__", None)
    name = spec.name if spec is not None else module_name  # "jobs.track" even when run as __main__
    parser = argparse.ArgumentParser(
        prog=f"python -m {name}",
        description=getattr(mod, "DESCRIPTION", None) or getattr(mod, "HELP", None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.add_arguments(parser)
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    return call_command(mod.run, args, mod.COMMAND)


def call_command(run, args: argparse.Namespace, command: str) -> int:
    """Set up logging (:func:`setup_logging`), then run a command; a :class:`jobs.common.UsageError` or
    :class:`ocean.config.ConfigError` it lets through (or a bad ``$OCEAN_LOG_LEVEL``) is one line and exit
    status 2. SIGTERM / Ctrl-C stop it with one line and status 128 + the signal (its MLflow run ends KILLED)."""
    from ocean.config import ConfigError
    from pipelines.raysession import MissingGpus, received_signal, stop_on_signals

    stop_on_signals(command)  # SIGTERM: the handler says so at once (the unwinding may not finish)
    try:
        setup_logging(log_level(args), command)
        return int(run(args) or 0)
    except (UsageError, ConfigError, MissingGpus) as exc:
        return fail(command, exc)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into it (pipelines.raysession.stop_on_signals)
        signum = received_signal()
        if signum is None:  # Ctrl-C (a SIGTERM was announced by its handler)
            signum = signal.SIGINT
            print(f"ocean {command}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + int(signum)


LOG_LEVELS = ("debug", "info", "warning", "error")
PROJECT_LOGGERS = ("jobs", "pipelines", "ocean", "data_prep", "__main__")


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level {debug,info,warning,error}`` and ``-q/--quiet`` (= warning), on every command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower,
                       help="how much the console shows (default $OCEAN_LOG_LEVEL, else info)")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="warnings and errors only, no progress output (the command's results still print)")


def log_level(args: argparse.Namespace) -> str:
    """The level the flags ask for: ``--log-level``, ``-q`` (warning), ``$OCEAN_LOG_LEVEL``, else info;
    UsageError for a bad ``$OCEAN_LOG_LEVEL``."""
    if getattr(args, "log_level", None):
        return args.log_level
    if getattr(args, "quiet", False):
        return "warning"
    level = os.environ.get("OCEAN_LOG_LEVEL", "").strip().lower() or "info"
    if level not in LOG_LEVELS:
        raise UsageError(f"OCEAN_LOG_LEVEL={level!r}: one of {', '.join(LOG_LEVELS)}")
    return level


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS NAME[ORIGIN]: message``, ``WARNING`` / ``ERROR`` / ``DEBUG`` before NAME when not info.
    NAME is the logger's last part (``pipelines.train_loop`` -> ``train_loop``; the command's own module
    -> ``ocean COMMAND``); ORIGIN names the Ray worker a forwarded record came from (``rank 0``)."""

    def __init__(self, command: str | None = None):
        super().__init__(datefmt="%H:%M:%S")
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.rsplit(".", 1)[-1]
        if self.command and (record.name == "__main__" or record.name == f"jobs.{self.command.replace('-', '_')}"):
            name = f"ocean {self.command}"
        origin = getattr(record, "origin", None)
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        text = f"{self.formatTime(record, self.datefmt)} {level}{name}{f'[{origin}]' if origin else ''}: "
        text += record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: str = "info", command: str | None = None, stream=None) -> logging.Handler:
    """Once per process (again replaces the earlier set-up): the project's loggers (:data:`PROJECT_LOGGERS`)
    at ``level``, others at warning, all to one stderr handler in :class:`ConsoleFormatter`'s format; Ray
    workers take the same level (:func:`pipelines.console.worker_logging`). Returns the handler."""
    if level.lower() not in LOG_LEVELS:
        raise UsageError(f"log level {level!r}: one of {', '.join(LOG_LEVELS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "ocean_console", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(ConsoleFormatter(command))
    handler.ocean_console = True
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
    return handler


def reset_logging() -> None:
    """Undo :func:`setup_logging` (tests: each starts like a fresh process)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "ocean_console", False)]:
        root.removeHandler(old)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


def fail(command: str, exc: BaseException | str) -> int:
    """Print ``ocean COMMAND: error: MESSAGE`` on stderr and return exit status 2."""
    print(f"ocean {command}: error: {exc}", file=sys.stderr)
    return 2


def name_value(text: str, flag: str, form: str = "NAME=VALUE") -> tuple[str, str]:
    """``"got10k=/data/GOT"`` -> ``("got10k", "/data/GOT")``; UsageError (``expected FORM``) when either side
    is empty."""
    name, sep, value = str(text).partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UsageError(f"{flag} {text!r}: expected {form}")
    return name.strip(), value.strip()


def parse_name_values(items: Iterable[str], flag: str, choices: Sequence[str] | None = None,
                      lower: bool = True, form: str = "NAME=VALUE") -> dict[str, str]:
    """``["otb=/data/OTB", ...]`` -> ``{"otb": "/data/OTB"}``; UsageError for a malformed item, a name not in
    ``choices`` or a name given twice."""
    out: dict[str, str] = {}
    for item in items:
        name, value = name_value(item, flag, form)
        name = name.lower() if lower else name
        if choices is not None and name not in choices:
            raise UsageError(f"{flag} {item!r}: unknown name {name!r}; one of {', '.join(choices)}")
        if name in out:
            raise UsageError(f"{flag} {name} given twice")
        out[name] = value
    return out


def parse_count_values(items: Iterable[str], flag: str) -> dict[str, int]:
    """``["got10k=1000"]`` -> ``{"got10k": 1000}``; counts must be integers >= 0."""
    out: dict[str, int] = {}
    for item in items:
        name, value = name_value(item, flag)
        try:
            count = int(value)
        except ValueError:
            raise UsageError(f"{flag} {item!r}: {value!r} is not an integer") from None
        if count < 0:
            raise UsageError(f"{flag} {item!r} must be >= 0")
        out[name] = count
    return out


def tracker_overrides(json_path: str | None, sets: Iterable[str], when: str = "at tracking time",
                      config_path: str | None = None) -> list[str]:
    """``--config FILE``'s tracker section, ``--tracker-config FILE``, then the ``--set`` items, as
    ``tracker.KEY=VALUE`` strings (the files' values type- and range-checked here, the ``--set`` values where
    they are applied); UsageError for an unreadable file, a bad value in it or a non-tracker key."""
    from ocean.config import ConfigError, tracker_file_overrides

    items: list[str] = []
    for flag, path, schema in (("--config", config_path, "config"), ("--tracker-config", json_path, "tracker")):
        if path is not None:
            try:
                items += tracker_file_overrides(path, schema)
            except ConfigError as exc:
                raise UsageError(f"{flag} {exc}") from None
    for item in sets:
        key = item.strip()
        if not key.startswith("tracker."):
            raise UsageError(f"--set {item!r}: only tracker.* keys can be changed {when}")
        items.append(key)
    _check_runtime(items)
    return items


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, tracker_only=True)
    parser.add_argument("--tracker-config", metavar="FILE",
                        help="YAML or JSON object of tracker hyper-parameters, flat or {tracker: {...}} (e.g. "
                             "best_tracker.json of tune-tracker); applied after --config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="tracker.KEY=VALUE",
                        help="override one tracker hyper-parameter (repeatable; applied after --tracker-config)")
    parser.add_argument("--runtime", dest="overrides", action=_RuntimeAction, choices=("eager", "fast", "onnx"),
                        help="how the network runs: eager (default: the module as trained, the official arithmetic), "
                             "fast (BatchNorm folded, fused oneDNN convolutions) or onnx (exported graphs in "
                             "onnxruntime, the export extra); the same as "
                             "--set tracker.runtime=NAME")


class _RuntimeAction(argparse.Action):
    """``--runtime NAME`` = ``--set tracker.runtime=NAME`` (kept in order among the ``--set`` items)."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, items + [f"tracker.runtime={values}"])


def _check_runtime(items: list[str]) -> None:
    """UsageError when the tracker items ask for the onnx runtime and onnx / onnxruntime are missing."""
    chosen = [item.split("=", 1)[1].strip() for item in items if item.split("=", 1)[0].strip() == "tracker.runtime"]
    if chosen and chosen[-1] == "onnx":
        from ocean.export import ExportUnavailableError, require_onnx

        try:
            require_onnx()
        except ExportUnavailableError as exc:
            raise UsageError(f"--runtime onnx: {exc}") from None


def add_gpu_wait_argument(parser: argparse.ArgumentParser) -> None:
    """``--wait-for-gpus SECONDS`` (with ``--gpu``): pipelines.raysession.require_gpus."""
    parser.add_argument("--wait-for-gpus", type=float, default=0.0, metavar="SECONDS",
                        help="with --gpu on a cluster whose GPU nodes start on demand: ask the autoscaler for them "
                             "and wait up to SECONDS (default 0: refuse at once when the cluster has too few)")


def gpu_wait(args: argparse.Namespace) -> float:
    """``--wait-for-gpus``, checked (UsageError when negative or not finite)."""
    import math

    if not math.isfinite(args.wait_for_gpus) or args.wait_for_gpus < 0:
        raise UsageError(f"--wait-for-gpus {args.wait_for_gpus:g}: seconds >= 0")
    return float(args.wait_for_gpus)


def add_ray_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")


def add_mlflow_arguments(parser: argparse.ArgumentParser, experiment: str) -> None:
    parser.add_argument("--mlflow-uri", metavar="URI",
                        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else a sqlite file under --out)")
    parser.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")


def absolute(path_or_uri: str | None) -> str | None:
    """A local path made absolute (so it means the same on the driver and in Ray workers); URIs unchanged
    (``s3://``, ``file://``, and MLflow's ``models:/`` and ``runs:/``)."""
    if path_or_uri is None or is_uri(path_or_uri) or re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(path_or_uri)):
        return path_or_uri
    from pathlib import Path

    return str(Path(path_or_uri).expanduser().resolve())


# --------------------------------------------------------------------------------------------------------
# Configuration: --preset -> --config FILE -> --set, checked (ocean.config), errors one line and exit status 2.


def add_config_argument(parser: argparse.ArgumentParser, tracker_only: bool = False) -> None:
    """``--config FILE``: a YAML or JSON configuration (the schema ``ocean config`` prints, complete or
    partial), applied on the preset and before ``--set``; of a tracking command only the tracker section."""
    parser.add_argument(
        "--config", metavar="FILE",
        help=("configuration file (YAML or JSON, as `ocean config` prints); only its tracker section is used, "
              "on top of the checkpoint's and the --benchmark preset; before --tracker-config and --set")
        if tracker_only else
        ("configuration file (YAML or JSON, as `ocean config` prints, complete or partial), applied on top of "
         "--preset and before --set"))


def _set_overrides(cfg, items: Iterable[str], flag: str):
    from ocean.config import ConfigError, apply_overrides

    try:
        return apply_overrides(cfg, list(items))
    except ConfigError as exc:
        raise UsageError(f"{flag} {exc}") from None


def load_config(args: argparse.Namespace, base=None, extra: dict[str, str] | None = None):
    """The configuration of a command: ``base`` (default ``--preset``, else paper) -> ``--config FILE`` ->
    ``--set`` items (``args.overrides``) -> ``extra`` (``{flag: "KEY=VALUE"}`` of shortcut flags such as
    ``--epochs``). UsageError naming the flag, the key and the reason."""
    from ocean.config import ConfigError, config_file, preset

    cfg = base if base is not None else preset(getattr(args, "preset", None) or "paper")
    if getattr(args, "config", None):
        try:
            cfg = config_file(args.config, cfg)
        except ConfigError as exc:
            raise UsageError(f"--config {exc}") from None
    cfg = _set_overrides(cfg, getattr(args, "overrides", None) or [], "--set")
    for flag, item in (extra or {}).items():
        cfg = _set_overrides(cfg, [item], flag)
    return cfg


def config_overrides(args: argparse.Namespace, base) -> list[str]:
    """``--config FILE`` then ``--set`` as ``KEY=VALUE`` strings, for jobs whose pipeline applies overrides
    itself: the file's keys whose value differs from ``base`` (checked here), then the ``--set`` items
    (checked here too, on top of ``base`` and the file). UsageError naming the flag, the key and the reason."""
    from ocean.config import ConfigError, file_overrides

    items: list[str] = []
    if getattr(args, "config", None):
        try:
            items = file_overrides(args.config, base)
        except ConfigError as exc:
            raise UsageError(f"--config {exc}") from None
    sets = list(getattr(args, "overrides", None) or [])
    _set_overrides(_set_overrides(base, items, "--config"), sets, "--set")
    return items + sets


def check_synthetic_options(size: str, scenes: int, busy: float) -> None:
    """UsageError for a ``--scenes`` / ``--busy`` that :func:`data_prep.synthetic.generate` would refuse."""
    from data_prep.synthetic import SIZES, scaled_spec

    if not 0.0 <= busy <= 1.0:
        raise UsageError(f"--busy {busy}: a share between 0 and 1")
    try:
        scaled_spec(SIZES[size], scenes)
    except ValueError as exc:
        raise UsageError(f"--scenes {scenes}: {exc}") from None
