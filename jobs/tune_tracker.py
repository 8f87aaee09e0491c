"""``ocean tune-tracker``: search the tracker hyper-parameters of a checkpoint with Ray Tune (TPE + ASHA)."""

from __future__ import annotations

import argparse
import json

from jobs.common import (
    UsageError,
    add_gpu_wait_argument,
    add_mlflow_arguments,
    add_ray_argument,
    add_tracker_arguments,
    fail,
    gpu_wait,
    main_for,
    parse_name_values,
    tracker_overrides,
)

COMMAND = "tune-tracker"
HELP = "search the tracker hyper-parameters (TPE + ASHA on Ray Tune) on a validation benchmark"
DESCRIPTION = """\
Search the tracker hyper-parameters (penalty_k, lr, window_influence, search sizes and, on VOT with the
align head, the p_r / p_o ratio) of one checkpoint on a declared VALIDATION benchmark, as the official
tuning script does (ocean_facts §11) but on current Ray Tune:

* TPE proposals (Optuna's TPESampler through Ray Tune's OptunaSearch, seeded by --seed);
* ASHA early stopping over sequences: every trial tracks the validation sequences in one fixed seeded
  order and reports the running score after each, so bad trials stop after --sequences-per-rung sequences;
  the defaults' trial (trial 0) always tracks every sequence, so its score compares with the best one's;
* objective: EAO (that year's interval) on vot2018 / vot2019, success AUC on otb / lasot, AO on got10k.

Spaces (--space): official = ocean_facts §11.1 (penalty_k 0.001-0.2, lr 0.3-0.8, window_influence
0.15-0.65 in steps of 0.001, small_sz {255}, big_sz {287, 303, 319}, ratio 0.7-1.0 on VOT with align);
sots = §11.2 (same ranges, small_sz {255, 271}, big_sz {271, 287}). Trial 0 is always the benchmark's
default hyper-parameters (the checkpoint's tracker section + the official preset, what `ocean evaluate`
uses, then --config FILE's tracker section, --tracker-config FILE and --set tracker.KEY=VALUE as in
`ocean evaluate`, e.g. --set tracker.online=true to tune with the online update), so the best result is
never worse than the defaults on these sequences; when a default lies outside the space, the space is
widened just enough to contain it (printed). The values not searched stay as set and go into
best_tracker.json with the best ones.

Do not tune on the test set: a GOT-10k root without full ground truth (the test split) is refused. OTB,
VOT and LaSOT have no separate validation split; a warning names the split used.

Output under --out (a folder or s3://bucket/prefix):
  best_tracker.json   {"tracker": {...}}: pass it to `ocean track --tracker-config` / `ocean evaluate
                      --tracker-config`
  trials.csv          every trial: params, score, sequences done, completed / stopped_early / error
  score_vs_trial.png  score of every trial and the best so far
  tune_summary.json   best, defaults, search space, cost (trials, stopped early, CPU/GPU-hours, wall time)
MLflow (--mlflow-uri, $MLFLOW_TRACKING_URI, else OUT/mlflow.db): a parent run with the best params, score
and cost, and one nested run per trial.

Resources: each trial takes --cpus-per-trial Ray CPUs (default 1; on a 2-core machine the local Ray
instance has 4 logical CPUs) and runs torch with 1 thread; --max-concurrent trials at once (1 makes the
search deterministic for a seed). --gpu gives each trial --gpus-per-trial of a GPU and tracks on cuda.

Example:
  ocean tune-tracker --checkpoint runs/smoke/last.pt --benchmark got10k=data/GOT-10k/val \\
      --out runs/tune-got10k --trials 200 --max-concurrent 2"""

BENCHMARK_NAMES = ("otb", "vot2018", "vot2019", "got10k", "lasot")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="URI", help="checkpoint file or URI (file://, s3://)")
    p.add_argument("--benchmark", required=True, metavar="NAME=ROOT",
                   help=f"the validation benchmark and its root ({', '.join(BENCHMARK_NAMES)}; roots as for "
                        "`ocean score --dataset`, a folder or s3://, e.g. got10k=data/GOT-10k/val)")
    p.add_argument("--out", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    add_tracker_arguments(p)
    p.add_argument("--trials", type=int, default=20, metavar="N",
                   help="number of trials, the defaults included (default 20; the official advice is "
                        "1,500-5,000 on the full benchmarks, ocean_facts §11.1)")
    p.add_argument("--max-concurrent", type=int, default=2, metavar="K", help="trials at once (default 2)")
    p.add_argument("--space", choices=["official", "sots"], default="official",
                   help="search space: official (TracKit, ocean_facts §11.1) or sots (§11.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler and the sequence order")
    p.add_argument("--sequences-per-rung", type=int, default=None, metavar="N",
                   help="ASHA grace period: sequences a trial tracks before it can be stopped; later rungs "
                        "at N x reduction factor^k (default: a quarter of the sequences, at least 1)")
    p.add_argument("--reduction-factor", type=float, default=2.0,
                   help="ASHA reduction factor: keep the top 1/F at each rung (default 2)")
    p.add_argument("--max-sequences", type=int, default=None, metavar="N",
                   help="use only the first N sequences of the seeded order (smoke runs)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray CPUs per trial (default 1)")
    p.add_argument("--gpu", action="store_true", help="track on cuda; each trial takes --gpus-per-trial")
    add_gpu_wait_argument(p)
    p.add_argument("--gpus-per-trial", type=float, default=0.25,
                   help="fraction of a GPU per trial with --gpu (default 0.25: 4 trials per GPU as SOTS)")
    add_ray_argument(p)
    add_mlflow_arguments(p, "ocean-tune-tracker")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _check(args: argparse.Namespace) -> tuple[str, str]:
    """The benchmark's (name, root); UsageError for a malformed --benchmark or an out-of-range number."""
    ((name, root),) = parse_name_values([args.benchmark], "--benchmark", BENCHMARK_NAMES).items()
    for flag, value, low in (("--trials", args.trials, 1), ("--max-concurrent", args.max_concurrent, 1)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.sequences_per_rung is not None and args.sequences_per_rung < 1:
        raise UsageError(f"--sequences-per-rung must be >= 1, got {args.sequences_per_rung}")
    if args.reduction_factor <= 1:
        raise UsageError(f"--reduction-factor must be > 1, got {args.reduction_factor}")
    if args.cpus_per_trial <= 0 or (args.gpu and args.gpus_per_trial <= 0):
        raise UsageError("--cpus-per-trial and --gpus-per-trial must be > 0")
    return name, root


def _overrides(args: argparse.Namespace, benchmark: str) -> tuple[str, ...]:
    """--config / --tracker-config / --set as ``tracker.KEY=VALUE`` strings, checked on the benchmark's preset
    (UsageError naming the key)."""
    from ocean.config import layered_tracker_config

    items = tracker_overrides(args.tracker_config, args.overrides, when="when tuning", config_path=args.config)
    try:
        layered_tracker_config(None, benchmark, items)
    except ValueError as exc:
        raise UsageError(f"--set {exc}") from None
    return tuple(items)


def run(args: argparse.Namespace) -> int:
    try:
        name, root = _check(args)
        overrides = _overrides(args, name)
        from jobs.common import absolute

        root, args.checkpoint, args.out = absolute(root), absolute(args.checkpoint), absolute(args.out)  # trials run elsewhere
    except UsageError as exc:
        return fail(COMMAND, exc)

    from ocean.tuning import TuneTrackerError, format_report
    from pipelines.tune_tracker import TuneTrackerSettings, tune_tracker

    try:
        summary = tune_tracker(TuneTrackerSettings(
            args.checkpoint, name, root, args.out, trials=args.trials, max_concurrent=args.max_concurrent,
            space=args.space, seed=args.seed, mlflow_uri=args.mlflow_uri, use_gpu=args.gpu, gpu_wait_s=gpu_wait(args),
            grace_period=args.sequences_per_rung, reduction_factor=args.reduction_factor,
            cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
            ray_address=args.ray_address, experiment=args.experiment, log_mlflow=not args.no_mlflow,
            max_sequences=args.max_sequences, verbose=0 if args.quiet else 1, tracker_overrides=overrides))
    except TuneTrackerError as exc:
        return fail(COMMAND, exc)
    print(format_report(summary))
    print(json.dumps({"best": summary["best"], "cost": summary["cost"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
