"""``ocean train``: train Ocean on prepared pair records with Ray Train (DDP), checkpoints and MLflow."""

from __future__ import annotations

import argparse
import logging
import os

from jobs.common import (
    UsageError,
    add_config_argument,
    add_gpu_wait_argument,
    add_mlflow_arguments,
    add_ray_argument,
    fail,
    gpu_wait,
    load_config,
    main_for,
)

log = logging.getLogger(__name__)

COMMAND = "train"
HELP = "train on pair records with Ray Train (DDP on CPU or GPU), resumable checkpoints, MLflow tracking"
DESCRIPTION = """\
Train the Ocean network on the parquet pair records written by `ocean prepare`.

  ocean train --data DIR_OR_S3 --out DIR_OR_S3 [--preset smoke] [--workers 2] [--gpu] [--epochs N]
              [--config FILE.yaml] [--set optim.base_lr=0.004 ...]

Backbone weights: the paper preset starts from ImageNet weights as the official code does: give them with
--set model.backbone.pretrained=PATH_OR_S3 (a pysot-layout ResNet-50, e.g. from `ocean convert --from
pysot-resnet50`). Without them the command stops (exit status 2) unless --set
model.backbone.allow_random_init=true asks for a random backbone; the smoke preset sets that itself.

Data: Ray Data reads the pair records (local folder or s3://bucket/prefix; the S3 endpoint and keys come
from AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY on every node), draws each epoch's pairs
(data.pairs_per_epoch per dataset, a fresh reproducible subset every epoch from --seed), decodes and
augments them in CPU tasks and streams batches to the workers.

Batch: optim.batch_size is the GLOBAL batch whatever --workers is (it must divide by --workers); each
worker takes batch/workers pairs per step, accumulated over micro-batches when that exceeds
--max-worker-batch. The run prints the split.

Output under --out: checkpoints/epoch-NNNN.pt after every epoch (model, optimizer, schedule, RNG, config;
`ocean.checkpoint.load_model` reads them), plots/training_{loss,lr}.png at the end (also in the MLflow
run under plots/), ray/ (Ray Train state) and, for a local --out, mlflow.db.
A lost worker is restarted from the newest epoch file (--max-failures); running the same command again
resumes at the first unfinished epoch (same --out and --run-name). Too many consecutive non-finite or
exploding losses (optim.max_bad_steps) stop the run with an error naming the step (exit status 3).

MLflow: --mlflow-uri, else $MLFLOW_TRACKING_URI, else sqlite under --out (local) or ./mlruns.db. Look at it
with `mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`. The run's dataset input is the pair store
(the same dataset `ocean prepare` logged; tag ocean.prepare_run_id names that run); the final network is
logged as an mlflow.pytorch model (`mlflow.pytorch.load_model(...)` gives it back; its URI is printed at
the end); rank 0 logs system metrics (--no-system-metrics to turn them off). On a Ray cluster of several nodes it must be a
tracking server (http://HOST:5000): a sqlite or file store is refused at once (exit status 2).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="pair records: folder or s3://bucket/prefix (ocean prepare --out)")
    parser.add_argument("--out", required=True, help="run folder or s3:// URI for checkpoints and Ray state")
    parser.add_argument("--preset", choices=("paper", "smoke"), default="paper",
                        help="configuration preset (default paper; smoke trains on a CPU in minutes)")
    add_config_argument(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.base_lr=0.004 (repeatable)")
    parser.add_argument("--epochs", type=int, help="shortcut for --set optim.epochs=N")
    parser.add_argument("--workers", type=int, default=2, help="DDP workers (default 2)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL, bf16 autocast)")
    add_gpu_wait_argument(parser)
    parser.add_argument("--max-worker-batch", type=int,
                        help="largest per-worker micro-batch; larger per-worker batches accumulate gradients")
    parser.add_argument("--cpus-per-worker", type=float,
                        help="CPUs reserved per training worker (default 0.5 on CPU, 1 with --gpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init, epoch composition, augmentation")
    parser.add_argument("--max-failures", type=int, default=2, help="worker-group restarts allowed (default 2)")
    add_ray_argument(parser)
    add_mlflow_arguments(parser, "ocean-train")
    parser.add_argument("--run-name", help="run name: Ray Train run and MLflow run (default ocean-train)")
    parser.add_argument("--system-metrics", action=argparse.BooleanOptionalAction, default=True,
                        help="log rank 0's node CPU, memory, disk, network (GPU with pynvml) as system/... "
                             "metrics (default on)")
    parser.add_argument("--system-metrics-interval", type=float, default=None, metavar="SECONDS",
                        help="seconds between system-metric samples (default 10, MLflow's own default)")


def run(args: argparse.Namespace) -> int:
    from data_prep.pair_index import TrainingDataError
    from jobs.common import absolute
    from ocean.checkpoint import CheckpointError
    from ocean.config import random_init_refusal
    from ocean.engine import TrainingDiverged
    from ocean.storage import StorageError
    from pipelines.tracking import TrackingStoreError
    from pipelines.train import TrainSettings, train

    args.data, args.out = absolute(args.data), absolute(args.out)  # the same folders in every Ray worker
    cfg = load_config(args, extra={"--epochs": f"optim.epochs={args.epochs}"} if args.epochs is not None else None)
    wait_s, interval = gpu_wait(args), _interval(args.system_metrics_interval)
    refusal = random_init_refusal(cfg)  # no silent random backbone (ocean_facts §1.3)
    if refusal:
        raise UsageError(refusal)
    cfg = _local_weights(cfg, absolute)
    try:
        result = train(TrainSettings(args.data, args.out, cfg, workers=args.workers, use_gpu=args.gpu,
                                     gpu_wait_s=wait_s,
                                     max_worker_batch=args.max_worker_batch, cpus_per_worker=args.cpus_per_worker,
                                     seed=args.seed, ray_address=args.ray_address, mlflow_uri=args.mlflow_uri,
                                     experiment=args.experiment, run_name=args.run_name,
                                     max_failures=args.max_failures, system_metrics=args.system_metrics,
                                     **interval))
    except TrainingDiverged as exc:
        log.error(f"training diverged: {exc}")
        return 3
    except TrainingDataError as exc:
        return fail(COMMAND, exc)
    except (TrackingStoreError, StorageError, CheckpointError) as exc:
        return fail(COMMAND, exc)
    print(f"trained {result['epochs']} epochs, final loss {result['final_loss']:.4f}")
    print(f"final checkpoint: {result['checkpoints'][-1]}")
    print(f"MLflow run {result['mlflow_run_id']} at {result['mlflow_uri']}; final model {result['model_uri']}")
    return 0


def _local_weights(cfg, absolute):
    """``cfg`` with a local ``model.backbone.pretrained`` checked (UsageError when there is no such file) and
    made absolute, so that every Ray worker reads the same file; a URI is left to the workers."""
    import dataclasses

    path = cfg.model.backbone.pretrained
    if not path or "://" in path:
        return cfg
    if not os.path.isfile(os.path.expanduser(path)):
        raise UsageError(f"model.backbone.pretrained {path}: no such file")
    backbone = dataclasses.replace(cfg.model.backbone, pretrained=absolute(path))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone))


def _interval(seconds: float | None) -> dict:
    """``{"system_metrics_interval": seconds}`` when given (> 0), else nothing (the settings' default)."""
    if seconds is None:
        return {}
    if not seconds > 0:
        raise UsageError(f"--system-metrics-interval {seconds}: must be > 0 seconds")
    return {"system_metrics_interval": seconds}


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
