"""``ocean prepare``: dataset downloads -> parquet pair shards (local folder or S3), on a Ray cluster."""

from __future__ import annotations

import argparse
import logging

from jobs.common import (
    UsageError,
    add_config_argument,
    add_mlflow_arguments,
    add_ray_argument,
    load_config,
    main_for,
    parse_count_values,
    parse_name_values,
)

log = logging.getLogger(__name__)

COMMAND = "prepare"
HELP = "crop training pairs from dataset downloads into parquet shards (local or s3://), on Ray"
DESCRIPTION = """\
Read untouched dataset downloads, sample template/search pairs (deterministic from --seed), crop each side
around its target as the official crop511 does but only as large as the augmentation needs, and write
parquet shards of at most --shard-pairs pairs to OUT:

  OUT/shards/shard-<dataset>-<nnnnn>.parquet   pair rows (data_prep.records schema)
  OUT/stats/shard-<dataset>-<nnnnn>.json       per-shard counts and sha256 (the manifest is rebuilt from them)
  OUT/rejects/reader-<dataset>.jsonl           items the dataset readers refused (reason, source path)
  OUT/rejects/shard-<dataset>-<nnnnn>.jsonl    frames that failed to decode (corrupt / truncated JPEGs, ...)
  OUT/job.json                                 the job's fingerprint (config + seed + plan)
  OUT/manifest.json                            written last: counts per dataset, shard list with sha256

Datasets (NAME=ROOT, repeat --dataset): got10k, lasot, vid, det, coco, ytbb, each ROOT in its real
download layout (`ocean synth` writes small ones), a local folder or s3://bucket/prefix (endpoint and keys
as for OUT below). The shard tasks read frames straight from the store; YT-BB videos are fetched to a
task-local temporary file and deleted after use. Local or S3, the same inputs give byte-identical shards.
A root that cannot be read (missing folder, unreachable endpoint, missing bucket or prefix) stops the
command with one line and exit status 2 before any work. YT-BB reads extracted frames when ROOT/frames exists,
else decodes the videos at the annotated timestamps (--ytbb-media to choose).
LaSOT: only its official training split (1,120 videos: ROOT/training_set.txt, else the list the project
ships) unless --set data.lasot_split=all. GOT-10k: --set data.got10k_vot_exclude=true leaves out the 1,000
train videos the VOT challenge forbids for a model tested on VOT (docs/reference/formats.md §1.7).

OUT is a folder or s3://bucket/prefix. The S3 endpoint and keys come from the standard variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) or from
s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http. The bucket must exist: a missing bucket or an
unreachable endpoint stops the job before any work. Keys are passed to the Ray workers inside task
arguments and are never printed or stored.

Ray: --ray-address ADDR (or $RAY_ADDRESS) uses that cluster; otherwise a local Ray is started. With
`ray job submit`, run `python -m jobs.prepare` with the same arguments. On a multi-node cluster put the
dataset roots and OUT in object storage (s3://), or on storage every node sees at the same path.

Listing: the annotation files of GOT-10k, LaSOT, ImageNet VID and DET are parsed by Ray tasks, each taking
a group of sequence / snippet / annotation folders, and the driver merges their compact tables in folder
order (--listing driver parses them on the driver; the plan is the same). COCO's JSON and YT-BB's CSV are
parsed once, on the driver.

Re-running: the same command after a crash or kill finishes the job (done shards are skipped, none is
duplicated); re-running a finished job changes nothing. An OUT that holds a different job (other seed,
pairs, config or data) is refused.

Pair counts: --pairs NAME=N, else data.pairs_per_epoch x data.pool_factor, capped at the bound: the
distinct template/search pairs of present frames within the dataset's frame range (a still image, COCO or
DET, gives one pair per object). A capped default is noted, a capped --pairs gets a warning line.

MLflow: the job is one run (--mlflow-uri, else $MLFLOW_TRACKING_URI, else OUT/mlflow.db for a local OUT,
./mlruns.db otherwise; --experiment, default ocean-prepare; --no-mlflow for none): config and settings as
params, the counts and rejects as metrics, manifest.json and a rejects summary as artifacts, and the pair
store as its dataset (source OUT, digest the manifest's sha256). OUT/mlflow_run.json names the run;
`ocean train` logs the same dataset as its input and tags this run (ocean.prepare_run_id). A re-run of the
same job continues the same run.

Counts (manifest, and the table printed at the end): pairs requested, bound, planned = the smaller of the
two; frames read = frames used + frames rejected; pairs planned = pairs written + pairs dropped (a pair whose
frame failed to decode is dropped and counted, not re-drawn).

Examples:
  ocean prepare --dataset got10k=/data/GOT-10k --dataset coco=/data/coco --out s3://ocean-data/pairs/v1
  AWS_ENDPOINT_URL=http://s3.local:8333 ocean prepare --dataset got10k=s3://raw/got10k --out s3://ocean-data/pairs/v1
  ocean synth --out /tmp/synth && ocean prepare --preset smoke \\
      $(for d in got10k lasot vid det coco ytbb; do echo --dataset $d=/tmp/synth/$d; done) --out /tmp/pairs
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=ROOT",
                        help="a dataset and its download folder or s3://bucket/prefix (repeat); NAME in got10k, "
                             "lasot, vid, det, coco, ytbb")
    parser.add_argument("--out", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    parser.add_argument("--pairs", action="append", default=[], metavar="NAME=N",
                        help="pairs to prepare for a dataset (default: data.pairs_per_epoch x data.pool_factor); "
                             "capped, with a warning, at the distinct pairs the dataset can supply")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair plan (default 0)")
    parser.add_argument("--preset", choices=("paper", "smoke"), default="paper",
                        help="config preset: paper = official pair counts (600k/epoch x pool 4), smoke = small")
    add_config_argument(parser)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="config override, e.g. data.pool_factor=2 or data.frame_range.got10k=50 (repeat)")
    parser.add_argument("--jpeg-quality", type=int, default=None, metavar="Q",
                        help="JPEG quality of the stored crops, 1-100 (default data.jpeg_quality)")
    parser.add_argument("--shard-pairs", type=int, default=None, metavar="N",
                        help="most pairs per shard (default 2000, about 50 MB)")
    parser.add_argument("--ytbb-media", choices=("auto", "frames", "videos"), default=None,
                        help="YT-BB source: extracted frames, videos, or auto (frames when ROOT/frames exists)")
    add_ray_argument(parser)
    parser.add_argument("--task-cpus", type=float, default=None,
                        help="CPUs each shard task reserves (default 1; on a one-node Ray with more logical CPUs "
                             "than cores, such as the local one this command starts, logical CPUs per core, so "
                             "no more shard tasks run at once than there are cores)")
    parser.add_argument("--listing", choices=("ray", "driver"), default="ray",
                        help="who parses the annotation files: Ray tasks split by sequence folders (default) or "
                             "the driver alone; both give the same plan")
    parser.add_argument("--no-progress", action="store_true", help="no progress output (Ray Data's bars or log lines)")
    add_mlflow_arguments(parser, "ocean-prepare")
    parser.add_argument("--no-mlflow", action="store_true", help="no MLflow run for this job")


def run(args: argparse.Namespace) -> int:
    from data_prep.manifest import JobMismatch, cap_lines, rejection_lines, summary_table
    from data_prep.shards import DEFAULT_SHARD_PAIRS
    from ocean.storage import InputLocationError, StorageError
    from pipelines.prepare import PrepareSettings, ShardFailed, run_prepare

    datasets = parse_name_values(args.dataset, "--dataset", lower=False)  # unknown names: the job says which
    from jobs.common import absolute

    datasets, args.out = {k: absolute(v) for k, v in datasets.items()}, absolute(args.out)  # as Ray tasks see them
    pairs = parse_count_values(args.pairs, "--pairs")
    cfg = load_config(args)
    reader_options = {"ytbb": {"media": args.ytbb_media}} if args.ytbb_media and "ytbb" in datasets else None
    try:
        manifest, info = run_prepare(PrepareSettings(
            datasets, args.out, cfg, pairs=pairs or None, seed=args.seed,
            shard_pairs=args.shard_pairs or DEFAULT_SHARD_PAIRS, jpeg_quality=args.jpeg_quality,
            ray_address=args.ray_address, reader_options=reader_options, task_cpus=args.task_cpus,
            progress=not (args.no_progress or args.quiet), listing=args.listing, mlflow_uri=args.mlflow_uri,
            experiment=args.experiment, log_mlflow=not args.no_mlflow))
    except InputLocationError as exc:  # a dataset root that cannot be read: a bad command-line value
        raise UsageError(str(exc)) from None
    except (StorageError, JobMismatch, ShardFailed, OSError, ValueError, KeyError) as exc:  # OSError: a store lost mid-job
        log.error(str(exc))
        return 1
    print(summary_table(manifest))
    for line in cap_lines(manifest) + rejection_lines(manifest):
        print(line)
    t = manifest["totals"]
    print(f"{t['pairs_written']} pairs in {t['shards']} shards ({t['bytes'] / 1e6:.1f} MB); "
          f"{info['shards_run']} shards run on {info['nodes']} node(s), {info['shards_skipped']} already done; "
          f"{info['seconds']:.1f} s")
    if info.get("mlflow_run_id"):
        print(f"MLflow run {info['mlflow_run_id']} (its dataset input: this pair store; OUT/mlflow_run.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
