"""``ocean ablate``: the paper's component (Table 4) and training-data (Table 5) ablations on Ray Tune."""

from __future__ import annotations

import argparse
import logging

from jobs.common import (
    UsageError,
    add_config_argument,
    add_gpu_wait_argument,
    add_mlflow_arguments,
    add_ray_argument,
    config_overrides,
    fail,
    gpu_wait,
    main_for,
    parse_name_values,
)

log = logging.getLogger(__name__)

COMMAND = "ablate"
HELP = "paper ablations (Table 4 components, Table 5 data): one Ray Tune trial per training, table in MLflow"
DESCRIPTION = """\
Train and evaluate every row of the paper's ablation tables and write them with our numbers beside the
paper's (VOT2018 EAO, ocean_facts §13.4).

  ocean ablate --data PAIRS --benchmark vot2018=ROOT [--benchmark otb=ROOT ...] --out DIR_OR_S3
               [--study components|data|both] [--preset smoke|paper] [--epochs N|A-B|A-B:STEP] [--pairs-per-epoch N]
               [--max-sequences N] [--workers N] [--gpu] [--rows baseline,+centralized] [--set key=value ...]

Studies (each row = the previous one + one change; the changes are config options):
  components  baseline (every in-box cell positive, one encoder, no align head)  -> + centralized sampling
              (labels.cls_rule=l1_cells) -> + feature combination (model.head.combination=dilated3)
              -> + object-aware classification (model.head.align=true, tracker.use_align=true)
              -> + online update (tracker.online=true; only when the online module is installed)
  data        the full model trained on YTB/VID/DET/COCO -> + GOT-10k -> + LaSOT (data.pairs_per_epoch);
              a row whose added dataset is not in the prepared data is skipped with a warning

Epochs: --epochs A-B (or A-B:STEP) trains every row B epochs (optim.epochs), tracks the checkpoints of
epochs A..B on the --validation benchmark and keeps the one with the best headline score (EAO on VOT,
success AUC on OTB / LaSOT, AO on GOT-10k val; the earliest on a tie); the row reports that score and
epoch, and the other benchmarks are tracked with that checkpoint only. The official code picks its epoch
this way among epochs 30-50 (`--epochs 30-50`, ocean_facts §11.3 / §11.4). --epochs N: train N epochs and
evaluate the last one only (the default: the preset's optim.epochs).

Budget: --pairs-per-epoch is the total pairs of every epoch of every row
(default: the preset's mix, 600,000 for paper), split over the datasets present in proportion to the
preset's mix; --max-sequences limits each benchmark. A 10-minute smoke:
  ocean ablate --preset smoke --epochs 1 --pairs-per-epoch 16 --max-sequences 1 --set optim.batch_size=8 ...

Each training is a Ray Tune trial (one at a time by default, --max-concurrent-trials to change) that
runs `ocean train`'s Ray Train job and then `ocean evaluate` on the checkpoints of --epochs. Rows that
differ only in the tracker (+ online update) share one training.

Output: OUT/ablation.md and OUT/ablation.json (the tables, with each row's best epoch), OUT/ablation-epochs.png
(each row's score per epoch, with a range), OUT/train/<row>/ (trainings; re-running the same command resumes
them), OUT/eval/<row>/ (the epochs on --validation), OUT/eval/<row>/best/ (the best epoch on the others),
OUT/tune/. MLflow (--mlflow-uri, else $MLFLOW_TRACKING_URI,
else OUT/mlflow.db): a parent run with the table as an artifact and one child run per row (switches as
params, scores as metrics, tags linking the training and evaluation runs, which are nested under it); on a
Ray cluster of several nodes it must be a tracking server (http://HOST:5000): a sqlite or file store is
refused at once (exit status 2).
Our numbers match the paper's only at the paper's budget (preset paper, 50 epochs) on VOT2018.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="pair records (ocean prepare --out): folder or s3://")
    parser.add_argument("--benchmark", dest="benchmarks", action="append", required=True,
                        metavar="NAME=ROOT", help="benchmark to evaluate on: otb, vot2018, vot2019, got10k, lasot "
                        "(repeatable; ROOT a folder or s3://bucket/prefix)")
    parser.add_argument("--validation", metavar="NAME",
                        help="benchmark that picks each row's epoch, the 'ours' column (default vot2018 when given, "
                        "else the first)")
    parser.add_argument("--out", required=True, help="output folder or s3:// URI")
    parser.add_argument("--study", choices=("components", "data", "both"), default="components",
                        help="which table: components (Table 4), data (Table 5) or both (default components)")
    parser.add_argument("--rows", help="run only these rows, comma-separated (components: baseline, centralized, "
                        "combination, object_aware, online; data: ytb_vid_det_coco, got10k, lasot; '+' allowed)")
    parser.add_argument("--preset", choices=("paper", "smoke"), default="paper",
                        help="configuration preset (default paper; smoke trains on a CPU in minutes)")
    parser.add_argument("--epochs", metavar="N|A-B|A-B:STEP",
                        help="train every row to the last epoch and keep the best of these epochs on --validation "
                        "(e.g. 30-50, the official choice; 30-50:5; default: the preset's last epoch only)")
    parser.add_argument("--pairs-per-epoch", type=int, help="total training pairs per epoch of every row")
    parser.add_argument("--max-sequences", type=int, help="evaluate only the first N sequences of each benchmark")
    parser.add_argument("--workers", type=int, default=2, help="DDP training workers and evaluation actors (default 2)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per training worker and evaluation actor")
    add_gpu_wait_argument(parser)
    parser.add_argument("--max-concurrent-trials", type=int, default=1,
                        help="trainings running at once (default 1, for small machines)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every row (default 0)")
    add_config_argument(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every row, e.g. --set optim.batch_size=8 (repeatable; "
                        "the study's switches cannot be overridden)")
    add_ray_argument(parser)
    add_mlflow_arguments(parser, "ocean-ablate")


def _epochs(text: str):
    """``--epochs`` as an EpochRange; UsageError (one line, status 2) when malformed."""
    from ocean.epoch_range import parse_epoch_range

    try:
        return parse_epoch_range(text)
    except ValueError as exc:
        raise UsageError(f"--epochs {exc}") from None


def run(args: argparse.Namespace) -> int:
    from ocean.config import preset

    try:
        from jobs.common import absolute

        benchmarks = {k: absolute(v) for k, v in parse_name_values(args.benchmarks, "--benchmark").items()}
        overrides = config_overrides(args, preset(args.preset))  # --config FILE then --set, checked
        epochs = None if args.epochs is None else _epochs(args.epochs)
    except UsageError as exc:
        return fail(COMMAND, exc)
    rows = [r for r in args.rows.split(",") if r.strip()] if args.rows else None
    args.data, args.out = absolute(args.data), absolute(args.out)  # Tune trials run in folders of their own

    from data_prep.pair_index import TrainingDataError
    from pipelines.ablate import AblateSettings, AblationError, ablate
    from pipelines.evaluate import EvaluationError
    from pipelines.tracking import TrackingStoreError

    try:
        report = ablate(AblateSettings(
            args.data, benchmarks, args.out, study=args.study, preset=args.preset, epochs=epochs,
            pairs_per_epoch=args.pairs_per_epoch, workers=args.workers, use_gpu=args.gpu, gpu_wait_s=gpu_wait(args),
            max_sequences=args.max_sequences, mlflow_uri=args.mlflow_uri, validation=args.validation,
            overrides=tuple(overrides), ray_address=args.ray_address, rows=rows,
            max_concurrent_trials=args.max_concurrent_trials, seed=args.seed, experiment=args.experiment,
            verbose=not args.quiet))
    except (AblationError, EvaluationError, TrainingDataError, TrackingStoreError) as exc:
        return fail(COMMAND, exc)
    except RuntimeError as exc:  # every trial failed
        fail(COMMAND, exc)
        return 1
    print(report["markdown"])
    failed = [r["key"] for s in report["studies"] for r in report["rows"][s] if r["status"] == "failed"]
    ml = report["mlflow"]
    print(f"table: {args.out.rstrip('/')}/ablation.md; MLflow parent run {ml['parent_run_id']} at {ml['tracking_uri']}")
    if failed:
        log.error(f"rows failed: {failed} (see the table's status column and the child runs)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
