"""``ocean score``: score existing result files of any tracker on a benchmark."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from jobs.common import fail, main_for

log = logging.getLogger(__name__)

COMMAND = "score"
HELP = ("score a tracker's result files on OTB, VOT2018/2019, GOT-10k, LaSOT, LaSOT_ext, UAV123/UAV20L/"
        "UAV123@10fps, DTB70, NfS, TNL2K or TrackingNet (test splits: the server's zip)")
BENCHMARK_NAMES = ("otb", "vot2018", "vot2019", "got10k", "lasot", "lasot_ext", "uav123", "uav20l", "uav123_10fps",
                   "dtb70", "nfs", "tnl2k", "trackingnet")
DESCRIPTION = """\
Score existing result files of ANY tracker and write the metrics as JSON.

--dataset ROOT is the folder that holds the sequences (a local folder or s3://bucket/prefix):
  otb      the OTB-100 folder (<Seq>/img/, groundtruth_rect.txt, 1-based)
  vot2018, vot2019
           the VOT `sequences` folder (list.txt, <seq>/groundtruth.txt, frames flat or in color/)
  got10k   GOT-10k/val, or GOT-10k/test (no GT beyond frame 1: --submission writes the server's zip)
  lasot, lasot_ext
           the LaSOT (or LaSOT_ext) root (<cat>/<seq>/...; testing_set.txt, when present, selects)
  uav123, uav20l, uav123_10fps
           the UAV123 (or UAV123_10fps) download root: anno/<UAV123|UAV20L|UAV123_10fps>/<seq>.txt,
           data_seq/<UAV123|UAV123_10fps>/<video>/000001.jpg (configSeqs.m, when present, gives start frames)
  dtb70    the DTB70 folder (<Seq>/img/00001.jpg, groundtruth_rect.txt)
  nfs      the NfS folder (<Seq>/30/<Seq>.txt, <Seq>/30/<Seq>/00001.jpg): the 30 fps version
  tnl2k    the TNL2K test folder (<seq>/imgs/, <seq>/groundtruth.txt)
  trackingnet
           a TrackingNet split folder (TEST, or TRAIN_<k>: anno/<seq>.txt, frames/<seq>/0.jpg ...); TEST has
           the first box only: --submission writes the server's zip

--results DIR is the folder of ONE tracker, in that benchmark's own result format:
  otb, dtb70, lasot*, uav*  DIR/<seq>.txt                 x,y,w,h per line, 1-based (pysot / toolkit files)
  nfs, tnl2k, trackingnet   DIR/<seq>.txt                 x,y,w,h per line, as the GT file (unshifted)
  got10k       DIR/<seq>/<seq>_001.txt            x,y,w,h per line, 0-based (+ optional <seq>_time.txt)
  vot*         DIR/baseline/<seq>/<seq>_001.txt   1 (init), 2 (failure), 0 (skipped) or x,y,w,h, 0-based

JSON keys (rates are FRACTIONS in 0..1, not percent):
  one-pass    success_auc (21 IoU thresholds), precision (20 px), norm_precision (0.20)
  got10k      ao, sr50, sr75 (first frame excluded, visible frames pooled)
  vot*        eao (2018: L in [100, 356], 2019: [46, 291]), accuracy, robustness (failures per
              100 frames), num_failures
plus `convention` (how that benchmark's own toolkit counts frames: whether frame 1 counts, what happens
to frames where the target is absent; printed with the scores), per_sequence values, curves, and
`rejected` (sequences whose result file is missing or malformed; they are left out of the scores and
listed with the reason; --strict makes that an error exit).

--submission FILE.zip (got10k, trackingnet): zip DIR for the evaluation server (GOT-10k: <seq>/<seq>_001.txt
and <seq>/<seq>_time.txt per sequence; TrackingNet: <seq>.txt per sequence, flat); every sequence of ROOT
must have its result files.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True, choices=BENCHMARK_NAMES)
    parser.add_argument(
        "--dataset", required=True, metavar="ROOT", help="folder holding the sequences (a path or s3://bucket/prefix)"
    )
    parser.add_argument(
        "--results", required=True, type=Path, metavar="DIR", help="result folder of ONE tracker"
    )
    parser.add_argument("--json", required=True, type=Path, metavar="FILE", help="where to write the scores")
    parser.add_argument(
        "--plots", type=Path, metavar="DIR", help="also write the plots (PNG) and summary.md here"
    )
    parser.add_argument("--name", default=None, help="tracker name for plots and table (default: DIR's name)")
    parser.add_argument("--title", default=None, metavar="DATASET",
                        help="the data's name in the plots' titles, for data in the benchmark's layout that is not "
                             "the benchmark itself (default: the benchmark's name, e.g. OTB-100)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any sequence was rejected")
    parser.add_argument("--submission", type=Path, metavar="FILE.zip",
                        help="got10k / trackingnet: also zip the results for the evaluation server")


def run(args: argparse.Namespace) -> int:
    from ocean.benchmarks.plots import plot_curves
    from ocean.benchmarks.readers import read_benchmark
    from ocean.benchmarks.report import format_score, summary_table
    from ocean.benchmarks.scoring import score_sequences
    from ocean.benchmarks.sequence import AnnotationError
    from ocean.benchmarks.submission import SERVER_FAMILIES, write_submission
    from ocean.datapath import check_readable_folder
    from ocean.storage import StorageError

    if not args.results.is_dir():
        return fail(COMMAND, f"results folder {args.results} does not exist")
    if args.submission is not None and args.benchmark not in SERVER_FAMILIES:
        return fail(COMMAND, f"--submission: {args.benchmark} has no evaluation server (only {', '.join(SERVER_FAMILIES)})")
    try:
        root = check_readable_folder(str(args.dataset), f"benchmark {args.benchmark}: root")
        sequences = read_benchmark(args.benchmark, root)
        scores = score_sequences(args.benchmark, sequences, args.results)
        if args.submission is not None:
            zipped = write_submission(args.benchmark, args.results, [s.name for s in sequences], args.submission)
    except (AnnotationError, FileNotFoundError, ValueError, StorageError) as e:
        return fail(COMMAND, e)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(scores, indent=2))
    name = args.name or args.results.resolve().name
    from ocean.benchmarks.scoring import SCORE_KEYS

    keys = [k for k in SCORE_KEYS if scores.get(k) is not None]
    print(
        f"{args.benchmark}: {scores['num_sequences']} sequences scored; "
        + ", ".join(f"{k}={format_score(scores[k])}" for k in keys)  # as the tables and plot legends
        + f"\n  convention: {scores['convention']}"
    )
    if args.submission is not None:
        print(f"submission for the evaluation server: {zipped} ({len(sequences)} sequences)")
    if args.plots is not None:
        plot_curves({name: scores}, args.benchmark, args.plots, dataset=args.title)
        args.plots.mkdir(parents=True, exist_ok=True)
        (args.plots / "summary.md").write_text(summary_table({name: scores}))
    if scores["rejected"]:
        log.warning(
            f"{len(scores['rejected'])} sequences rejected (see 'rejected' in {args.json}):"
            + "".join(f"\n  {seq}: {why}" for seq, why in list(scores["rejected"].items())[:10])
        )
        if args.strict or (scores["num_sequences"] == 0 and args.submission is None):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main_for(__name__))
