"""``ocean quickstart``: the whole system end to end on synthetic data (the README's main job)."""

from __future__ import annotations

import argparse

from jobs.common import add_config_argument, add_ray_argument, config_overrides, main_for

COMMAND = "quickstart"
HELP = "run the whole system end to end on synthetic data (minutes on a laptop)"
DESCRIPTION = """Generate synthetic datasets in the real on-disk layouts, prepare pair records with Ray tasks, train
the smoke preset with Ray Train (2 CPU workers), evaluate the trained and an untrained model on synthetic
OTB / VOT2018 / GOT-10k / LaSOT benchmarks and on held-out scenes of another generator (there also with the
online module, --set tracker.online=true) with Ray, and log everything to MLflow. Prints a summary table and
writes WORKDIR/summary.json. Running it again reuses every finished stage; a WORKDIR holding synthetic data
of other --size / --scenes / --busy / --seed is refused.

The training data: --size small with --scenes 4 (four times its training videos and images, the same
pairs per epoch), half of the scenes on busy backgrounds (--busy 0.5): with these the held-out score
rose over three seeds (BENCHMARKS.md "Generalisation"); --scenes 1 --busy 0 is the earlier data.

Defaults: a local Ray instance, WORKDIR as object storage, a sqlite MLflow store in WORKDIR.
Point it elsewhere with --storage s3://bucket/prefix (endpoint and keys from AWS_* variables),
--mlflow-uri http://host:5000 and --ray-address HOST:PORT (or RAY_ADDRESS).

Example:  ocean quickstart --workdir ocean-work"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="ocean-work", help="working folder (default: ./ocean-work)")
    p.add_argument("--storage", default=None, metavar="URI",
                   help="where pair records go: a folder or s3://bucket/prefix (default WORKDIR/pairs)")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default sqlite in WORKDIR)")
    add_ray_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("tiny", "small"), default="small", help="synthetic data size")
    # the defaults of pipelines.quickstart.QuickstartSettings (not imported here: `ocean --help` stays light;
    # tests/unit/test_cli.py checks they agree)
    p.add_argument("--scenes", type=int, default=4, metavar="K",
                   help="K times the synthetic training videos and images of --size, the same pairs per epoch "
                        "(default 4)")
    p.add_argument("--busy", type=float, default=0.5, metavar="S",
                   help="share of the synthetic training scenes on busy backgrounds, 0..1 (default 0.5; "
                        "BENCHMARKS.md \"Generalisation\")")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the smoke preset's)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers (default 2)")
    p.add_argument("--gpu", action="store_true", help="train and evaluate on GPUs")
    p.add_argument("--max-sequences", type=int, default=None,
                   help="evaluate at most this many sequences per benchmark (faster smoke runs)")
    add_config_argument(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override on top of the smoke preset (repeatable)")


def run(args: argparse.Namespace) -> int:
    from jobs.common import UsageError, absolute, check_synthetic_options
    from ocean.config import smoke
    from pipelines.quickstart import QuickstartSettings, run_quickstart, synthetic_mismatch

    overrides = config_overrides(args, smoke())  # --config FILE then --set, checked on the smoke preset
    check_synthetic_options(args.size, args.scenes, args.busy)
    settings = QuickstartSettings(absolute(args.workdir), storage_uri=absolute(args.storage),
                                  mlflow_uri=args.mlflow_uri,
                                  ray_address=args.ray_address, seed=args.seed, size=args.size,
                                  scenes=args.scenes, busy=args.busy, epochs=args.epochs,
                                  overrides=tuple(overrides), workers=args.workers,
                                  use_gpu=args.gpu, max_sequences=args.max_sequences)
    mismatch = synthetic_mismatch(settings)
    if mismatch:
        raise UsageError(mismatch)
    run_quickstart(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
