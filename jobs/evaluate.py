"""``ocean evaluate``: run and score checkpoints on whole benchmarks, Ray-parallel, logged to MLflow."""

from __future__ import annotations

import argparse
import logging

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

log = logging.getLogger(__name__)

COMMAND = "evaluate"
HELP = "evaluate checkpoints (or a training run's epochs) on benchmarks, in parallel on Ray; score and log"
BENCHMARK_NAMES = ("otb", "vot2018", "vot2019", "got10k", "lasot", "lasot_ext", "uav123", "uav20l", "uav123_10fps",
                   "dtb70", "nfs", "tnl2k", "trackingnet")
DESCRIPTION = """\
Track every sequence of each --benchmark with each checkpoint, write the result files in the benchmark's
own format, score them with the project's toolkit (the same code as `ocean score`) and log it all to MLflow.

Checkpoints: --checkpoint URI (repeatable; a file, file:// or s3:// URI written by training), or
--run RUN_ID: the checkpoints logged by that MLflow training run (all, or --epochs 3,5,... or 30-50 or
30-50:5 or a mix; the epoch is the number of completed epochs, as in `epoch-0003.pt`). They are read from
the run's `checkpoints.json` artifact (what `ocean train` logs when it ends), else the checkpoint files
under the run's output folder (its `ocean.out` tag: what a training still going has written so far), else
a `checkpoint_uris` tag/param, per-epoch `checkpoint.e<N>` tags, or its *.pt artifacts.

--follow (with --run): evaluate the checkpoints present, then keep listing the run's checkpoints every
--poll seconds (default 30) and evaluate each new one as it appears (its OUT/<checkpoint>/ files, its
headline scores on stderr). It stops when the run is no longer RUNNING (after a last listing), when every
--epochs epoch (default: the run's last epoch, its optim.epochs) has been evaluated, when no new
checkpoint appeared for --follow-idle seconds (default 7200; a training killed hard leaves its run
RUNNING), or at Ctrl-C while waiting. A last round then scores all the checkpoints together (the stored
sequences reused, nothing tracked twice): OUT's summary, evaluation.json and metric_vs_epoch.png, and one
MLflow evaluation (registering the best) as without --follow; the rounds before it log nothing to MLflow.

--benchmark NAME=ROOT (repeatable), NAME one of otb, vot2018, vot2019, got10k, lasot, lasot_ext, uav123,
uav20l, uav123_10fps, dtb70, nfs, tnl2k, trackingnet; ROOT as for `ocean score --dataset` (its --help
lists each layout): the OTB folder, the VOT `sequences` folder, GOT-10k/val, the LaSOT root, the UAV123
download root, ..., each a local folder or s3://bucket/prefix (the workers then read the frames straight
from the store). On a cluster, ROOT and the checkpoints must be readable from every node (s3:// or a
shared folder); a ROOT that cannot be read stops the command before any work. GOT-10k/test and
TrackingNet TEST (first box only) are tracked, their result files written and zipped for the evaluation
server (OUT/<checkpoint>/<benchmark>/submission.zip); they cannot be scored here (their sequences are
listed under `rejected`). Every summary.json states the benchmark's frame-counting `convention`.

Output under --out (a folder or s3://bucket/prefix):
  OUT/<checkpoint>/<benchmark>/results/     result files (`ocean score --results` takes this folder)
  OUT/<checkpoint>/<benchmark>/summary.json the `ocean score` keys (fractions 0..1; VOT robustness per
                                            100 frames) + per-sequence values, checkpoint, tracker config
  OUT/<checkpoint>/<benchmark>/submission.zip  GOT-10k / TrackingNet test splits: the server's zip
  OUT/<checkpoint>/<benchmark>/per_sequence.csv and plots: success.png, precision.png, norm_precision.png;
                                            VOT eao_curve.png, accuracy_robustness.png
  OUT/plots/  all checkpoints per benchmark, and metric_vs_epoch.png when several epochs are evaluated
  OUT/per_sequence.csv, OUT/summary.md, OUT/evaluation.json
<checkpoint> is the checkpoint's file name without extension (prefixed with its folder when two collide).

Tracker hyper-parameters, in this order: the checkpoint's `tracker` section, the benchmark's official
preset (ocean_facts §9.3), --config FILE (a configuration as `ocean config` prints it: only its tracker
section), --tracker-config FILE (YAML or JSON of TrackerConfig fields, or {"tracker": {...}} as
`ocean tune-tracker` saves), then --set tracker.KEY=VALUE (repeatable). --set tracker.online=true adds the
online update (paper Sec. 4.2); on vot2018 / vot2019 the preset is then the official online one (no p_o,
ocean_facts §10.4).

Parallelism: --workers N Ray actors (default 2), each loading a checkpoint's model once and taking
sequence after sequence, 1 torch thread and --cpus-per-worker logical CPUs each (default 1), --gpu for one
GPU per worker. --ray-address joins a cluster (or RAY_ADDRESS, as `ray job submit` sets); otherwise a local
Ray instance is started. --local runs a plain loop in this process instead (same numbers).
--batch-sequences K: each worker (or the local loop) tracks K sequences in lockstep with one search forward
for all of them, the next sequence joining as one ends (the same boxes with the default eager runtime; with
--runtime fast within 1e-3 px, oneDNN's fused kernels round differently by batch size; online module per
sequence; worth it on a GPU, BENCHMARKS.md "Batched evaluation"); a Ray call then takes up to K sequences.

MLflow: --mlflow-uri (default $MLFLOW_TRACKING_URI, else OUT/mlflow.db): a parent run per evaluation and a
child run per checkpoint tagged with its training run (ocean.training_run_id), checkpoint URI, epoch and
data manifest hash; metrics <benchmark>.<metric>, per-sequence CSV, summaries and plots as artifacts.
--validation NAME ranks the checkpoints on that benchmark's headline metric (one-pass benchmarks
success_auc, got10k ao, vot eao): the parent run gets tags best_epoch / best_checkpoint, the best child is_best=true.

Model registry: with --run (or --register-name NAME) the best checkpoint is logged as an mlflow.pytorch
model of its child run and registered as a new version of NAME (default ocean-tracker) with the alias
`best`, its headline score as a version tag and in the description (--validation defaults to the first
--benchmark then). `ocean track --checkpoint models:/ocean-tracker@best` tracks with it. --no-register
skips this.

Each sequence's result files are stored under --out as soon as it is tracked, with a record
(OUT/<checkpoint>/<benchmark>/sequences/<seq>.json); running the same command again tracks only what is
missing: a stored sequence is reused when the checkpoint's content, the tracker hyper-parameters, the
benchmark sequence and the device are the same (--no-resume tracks everything again). A lost Ray worker
(killed process, lost node) is restarted and its sequence run again elsewhere; the report's timing counts
`items_retried` and `sequences_reused`.

A sequence that fails (an unreadable frame...) is recorded with its error in summary.json (`failed`) and
the CSV, and the rest is still scored; the printed table counts them per benchmark (`failed`) and MLflow
gets the metric `failed_sequences` (per benchmark on the child runs), the tag `ocean.failed_sequences` with
their names and the artifact failed_sequences.json. A missing checkpoint or unreadable benchmark root
stops with status 2 before any tracking. Exit status 1 when every sequence failed (nothing was scored;
the MLflow parent run ends FAILED), or when some failed and --strict is given; else 0.

Example:
  ocean evaluate --run 3f2a... --epochs all --benchmark otb=data/OTB100 \\
      --benchmark vot2018=data/vot2018/sequences --validation vot2018 --out runs/eval --workers 4"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", action="append", metavar="URI", help="checkpoint file or URI (repeatable)")
    src.add_argument("--run", metavar="MLFLOW_RUN_ID", help="evaluate the checkpoints logged by this training run")
    p.add_argument("--epochs", default="all", metavar="3,5,...|A-B[:STEP]|all",
                   help="with --run: the epochs to evaluate, e.g. 3,5 or 30-50 or 30-50:5 (default all)")
    p.add_argument("--follow", action="store_true",
                   help="with --run: keep evaluating new checkpoints as the training writes them (see above)")
    p.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                   help="with --follow: seconds between listings of the run's checkpoints (default 30)")
    p.add_argument("--follow-idle", type=float, default=7200.0, metavar="SECONDS",
                   help="with --follow: stop when no new checkpoint appeared for this long (default 7200)")
    p.add_argument("--benchmark", action="append", required=True, metavar="NAME=ROOT",
                   help=f"benchmark and its root folder or s3://bucket/prefix (repeatable); NAME in "
                        f"{', '.join(BENCHMARK_NAMES)}")
    p.add_argument("--out", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    p.add_argument("--title", action="append", default=[], metavar="NAME=TEXT",
                   help="the data's name in NAME's plot titles, for data in a benchmark's layout that is not that "
                        "benchmark (e.g. otb='my clips (OTB protocol)'; default the benchmark's name; repeatable)")
    add_tracker_arguments(p)
    p.add_argument("--workers", type=int, default=2, help="Ray workers (actors), default 2")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="logical CPUs Ray reserves per worker (default 1; fractions allowed)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--batch-sequences", type=int, default=1, metavar="K",
                   help="sequences each worker tracks in lockstep, one forward for all (default 1)")
    add_gpu_wait_argument(p)
    add_ray_argument(p)
    p.add_argument("--local", action="store_true", help="no Ray: a plain loop in this process")
    add_mlflow_arguments(p, "ocean-evaluate")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--run-name", help="MLflow run name of the evaluation (default evaluate-<time>)")
    p.add_argument("--validation", metavar="NAME", help="benchmark that picks the best checkpoint / epoch")
    p.add_argument("--max-sequences", type=int, metavar="N",
                   help="evaluate only the first N sequences of each benchmark (smoke runs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any sequence failed")
    p.add_argument("--no-resume", action="store_true",
                   help="track every sequence again, even those whose results are stored under --out")
    p.add_argument("--register-name", metavar="NAME",
                   help="register the best checkpoint in the MLflow model registry under NAME with alias "
                        "'best' (default with --run: ocean-tracker; with --checkpoint only when given)")
    p.add_argument("--no-register", action="store_true", help="register nothing in the model registry")


def parse_benchmarks(items: list[str]) -> dict[str, str]:
    """``["otb=/data/OTB", ...]`` -> ``{"otb": "/data/OTB"}``; UsageError for a bad or repeated NAME."""
    return parse_name_values(items, "--benchmark", BENCHMARK_NAMES, form="NAME=ROOT")


def parse_epochs(text: str) -> list[int] | None:
    """``"all"`` -> None, ``"3,5, 7"`` -> [3, 5, 7], ``"1,30-50:10"`` -> [1, 30, 40, 50]."""
    from ocean.epoch_range import parse_epoch_range

    if text.strip().lower() == "all":
        return None
    try:
        epochs = sorted({e for t in text.replace(" ", "").split(",") if t for e in parse_epoch_range(t).epochs})
    except ValueError as exc:
        raise UsageError(f"--epochs {text!r}: expected a comma list of epochs (N, A-B or A-B:STEP) or 'all' "
                         f"({str(exc).split(': ', 1)[-1]})") from None
    if not epochs:
        raise UsageError(f"--epochs {text!r}: no epoch given")
    return epochs


def run(args: argparse.Namespace) -> int:
    from pipelines.eval_lineage import LineageError
    from pipelines.evaluate import EvaluationError

    try:
        return _run(args)
    except (UsageError, EvaluationError, LineageError) as exc:
        return fail(COMMAND, exc)


def _check_follow(args: argparse.Namespace) -> None:
    if args.follow and not args.run:
        raise UsageError("--follow only applies with --run")
    if not (args.poll > 0 and args.follow_idle > 0):
        raise UsageError("--poll and --follow-idle must be positive numbers of seconds")


def _follow(args: argparse.Namespace, uri: str, settings) -> dict:
    """``--follow``: evaluate the run's checkpoints as they appear (pipelines.eval_follow)."""
    from pipelines.eval_follow import FollowSettings, follow_run

    report = follow_run(FollowSettings(uri, args.run, parse_epochs(args.epochs), args.poll, args.follow_idle), settings)
    f = report["follow"]
    print(f"followed run {args.run}: {len(f['rounds'])} rounds (epochs evaluated as they appeared: "
          f"{[r['epochs'] for r in f['rounds'] if not r['final']]}), stopped: {f['stopped']}"
          + (f"; epochs {f['missing']} never appeared" if f["missing"] else ""))
    return report


def _run(args: argparse.Namespace) -> int:
    import os

    from pipelines.eval_lineage import checkpoints_of_run
    from pipelines.eval_registry import DEFAULT_NAME as DEFAULT_REGISTERED_NAME
    from pipelines.evaluate import EvaluateSettings, evaluate
    from pipelines.tracking import tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in job logs
    from jobs.common import absolute

    benchmarks = {k: absolute(v) for k, v in parse_benchmarks(args.benchmark).items()}  # as Ray workers see them
    args.out, args.tracker_config = absolute(args.out), absolute(args.tracker_config)
    args.checkpoint = [absolute(c) for c in args.checkpoint] if args.checkpoint else args.checkpoint
    if args.validation is not None and args.validation not in benchmarks:
        raise UsageError(
            f"--validation {args.validation}: not one of the --benchmark names {sorted(benchmarks)}"
        )
    titles = parse_name_values(args.title, "--title", sorted(benchmarks), form="NAME=TEXT")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.batch_sequences < 1:
        raise UsageError("--batch-sequences must be at least 1")
    _check_follow(args)
    overrides = tracker_overrides(args.tracker_config, args.overrides, when="at evaluation time",
                                  config_path=args.config)
    training_run = None
    register = None if args.no_register or args.no_mlflow else (args.register_name or (
        DEFAULT_REGISTERED_NAME if args.run else None))
    validation = args.validation
    if register and validation is None:  # the best checkpoint is what gets registered
        validation = next(iter(benchmarks))
        log.info(f"validation: {validation} (the first --benchmark; --validation NAME to choose)")
    if args.run:
        if args.no_mlflow and not args.mlflow_uri:
            raise UsageError("--run needs MLflow: give --mlflow-uri (or MLFLOW_TRACKING_URI)")
        uri = tracking_uri(args.mlflow_uri, args.out)
        pairs = [] if args.follow else checkpoints_of_run(uri, args.run, parse_epochs(args.epochs))
        checkpoints = [u for _e, u in pairs]  # with --follow: listed round by round (pipelines.eval_follow)
        training_run = args.run
        log.info(f"run {args.run}: following its checkpoints, listed every {args.poll:g} s" if args.follow else
                 f"run {args.run}: {len(checkpoints)} checkpoints (epochs {', '.join(str(e) for e, _ in pairs)})")
    else:
        if args.epochs != "all":
            raise UsageError("--epochs only applies with --run")
        checkpoints = args.checkpoint
    settings = (
        EvaluateSettings(
            checkpoints,
            benchmarks,
            args.out,
            tracker_overrides=overrides,
            workers=args.workers,
            use_gpu=args.gpu, gpu_wait_s=gpu_wait(args),
            mlflow_uri=args.mlflow_uri,
            validation=validation,
            local=args.local,
            ray_address=args.ray_address,
            max_sequences=args.max_sequences,
            cpus_per_worker=args.cpus_per_worker,
            batch_sequences=args.batch_sequences,
            experiment=args.experiment,
            run_name=args.run_name,
            training_run_id=training_run,
            log_mlflow=not args.no_mlflow,
            progress=not args.quiet,
            resume=not args.no_resume,
            register_name=register,
            titles=titles,
        )
    )
    report = _follow(args, uri, settings) if args.follow else evaluate(settings)
    return _report(args, report, register, validation)


def _report(args: argparse.Namespace, report: dict, register: str | None, validation: str | None) -> int:
    """Print the evaluation's tables and where things went; the exit status (1: nothing scored, or a
    failure with --strict)."""
    from ocean.benchmarks.report import all_failed, format_score, headline_table

    print()
    print(headline_table(report), end="")
    t = report["timing"]
    print(
        f"\n{t['sequences_tracked']} sequences tracked in {t['tracking_seconds']:.1f} s ({t['sequences_per_second']:.2f} seq/s) on "
        f"{t['workers']} {'local loop' if t['local'] else 'Ray workers'}; {t['model_loads']} model loads "
        f"({t['model_load_seconds']:.2f} s); {t['sequences_reused']} reused from --out, {t['items_retried']} "
        "run again after a lost worker"
    )
    if report["best"]:
        b = report["best"]
        print(f"best on {b['benchmark']} ({b['metric']} {format_score(b['value'])}): {b['name']} (epoch {b['epoch']})")
    if report["mlflow"]:
        m = report["mlflow"]
        print(f"MLflow: {m['tracking_uri']} experiment {m['experiment_id']}, run {m['parent_run_id']}")
        if m.get("registered"):
            r = m["registered"]
            print(f"registered {r['uri']} (version {r['version']}): `ocean track --checkpoint {r['uri']}` loads it")
        elif register:
            log.warning(f"nothing registered: no checkpoint has a {validation} score")
    print(f"results: {args.out}")
    failed = report["failed"]
    if failed:
        log.warning(f"{len(failed)} of {report['sequences_total']} sequences failed:" + "".join(
            f"\n  {f['benchmark']}/{f['sequence']} ({f['checkpoint']}): {f['error']}" for f in failed[:10]))
    if all_failed(report):
        log.error(f"every one of the {len(failed)} sequences failed, nothing was scored (first: "
                  f"{failed[0]['benchmark']}/{failed[0]['sequence']}: {failed[0]['error']})")
        return 1
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
