"""``ocean train``: train Ocean on prepared pair records with Ray Train (DDP), checkpoints and MLflow."""

from __future__ import annotations

import argparse
import logging

from jobs.common import add_mlflow_arguments, add_ray_argument, fail, main_for

log = logging.getLogger(__name__)

COMMAND = "train"
HELP = "train on pair records with Ray Train (DDP on CPU or GPU), resumable checkpoints, MLflow tracking"
DESCRIPTION = """\
Train the Ocean network on the parquet pair records written by `ocean prepare`.

  ocean train --data DIR_OR_S3 --out DIR_OR_S3 [--preset smoke] [--workers 2] [--gpu] [--epochs N]
              [--set optim.base_lr=0.004 ...]

Data: Ray Data reads the pair records (local folder or s3://bucket/prefix; the S3 endpoint and keys come
from AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY on every node), draws each epoch's pairs
(data.pairs_per_epoch per dataset, a fresh reproducible subset every epoch from --seed), decodes and
augments them in CPU tasks and streams batches to the workers.

Batch: optim.batch_size is the GLOBAL batch whatever --workers is (it must divide by --workers); each
worker takes batch/workers pairs per step, accumulated over micro-batches when that exceeds
--max-worker-batch. The run prints the split.

Output under --out: checkpoints/epoch-NNNN.pt after every epoch (model, optimizer, schedule, RNG, config;
`ocean.checkpoint.load_model` reads them), ray/ (Ray Train state) and, for a local --out, mlflow.db.
A lost worker is restarted from the newest epoch file (--max-failures); running the same command again
resumes at the first unfinished epoch (same --out and --run-name). Too many consecutive non-finite or
exploding losses (optim.max_bad_steps) stop the run with an error naming the step (exit status 3).

MLflow: --mlflow-uri, else $MLFLOW_TRACKING_URI, else sqlite under --out (local) or ./mlruns.db. Look at it
with `mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`. On a Ray cluster of several nodes it must be a
tracking server (http://HOST:5000): a sqlite or file store is refused at once (exit status 2).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="pair records: folder or s3://bucket/prefix (ocean prepare --out)")
    parser.add_argument("--out", required=True, help="run folder or s3:// URI for checkpoints and Ray state")
    parser.add_argument("--preset", choices=("paper", "smoke"), default="paper",
                        help="configuration preset (default paper; smoke trains on a CPU in minutes)")
    parser.add_argument("--config", help="a JSON config file (from `ocean config`) instead of --preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.base_lr=0.004 (repeatable)")
    parser.add_argument("--epochs", type=int, help="shortcut for --set optim.epochs=N")
    parser.add_argument("--workers", type=int, default=2, help="DDP workers (default 2)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL, bf16 autocast)")
    parser.add_argument("--max-worker-batch", type=int,
                        help="largest per-worker micro-batch; larger per-worker batches accumulate gradients")
    parser.add_argument("--cpus-per-worker", type=float,
                        help="CPUs reserved per training worker (default 0.5 on CPU, 1 with --gpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init, epoch composition, augmentation")
    parser.add_argument("--max-failures", type=int, default=2, help="worker-group restarts allowed (default 2)")
    add_ray_argument(parser)
    add_mlflow_arguments(parser, "ocean-train")
    parser.add_argument("--run-name", help="run name: Ray Train run and MLflow run (default ocean-train)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from data_prep.pair_index import TrainingDataError
    from ocean.config import apply_overrides, from_dict, preset
    from ocean.engine import TrainingDiverged
    from pipelines.tracking import TrackingStoreError
    from pipelines.train import TrainSettings, train

    cfg = from_dict(json.loads(Path(args.config).read_text())) if args.config else preset(args.preset)
    overrides = list(args.overrides) + ([f"optim.epochs={args.epochs}"] if args.epochs else [])
    cfg = apply_overrides(cfg, overrides)
    try:
        result = train(TrainSettings(args.data, args.out, cfg, workers=args.workers, use_gpu=args.gpu,
                                     max_worker_batch=args.max_worker_batch, cpus_per_worker=args.cpus_per_worker,
                                     seed=args.seed, ray_address=args.ray_address, mlflow_uri=args.mlflow_uri,
                                     experiment=args.experiment, run_name=args.run_name,
                                     max_failures=args.max_failures))
    except TrainingDiverged as exc:
        log.error(f"training diverged: {exc}")
        return 3
    except TrainingDataError as exc:
        print(f"ocean train: {exc}")
        return 2
    except TrackingStoreError as exc:
        return fail(COMMAND, exc)
    print(f"trained {result['epochs']} epochs, final loss {result['final_loss']:.4f}")
    print(f"final checkpoint: {result['checkpoints'][-1]}")
    print(f"MLflow run {result['mlflow_run_id']} at {result['mlflow_uri']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
