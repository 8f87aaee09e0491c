"""Benchmark toolkit: readers for OTB / VOT / GOT-10k / LaSOT / LaSOT_ext / UAV123 (UAV20L, @10fps) / DTB70 /
NfS / TNL2K / TrackingNet, protocols, metrics, result files, scoring, evaluation-server zips, reports and
plots.

See the module docstrings for conventions; everything is 0-based pixel x,y,w,h unless a name says
otherwise (``poly_xy8``), and rates are fractions in [0, 1] (VOT robustness: failures per 100 frames).
"""

from ocean.benchmarks.metrics import (
    EAO_INTERVALS,
    got10k_ious,
    got10k_summary,
    norm_precision_curve,
    ope_sequence,
    ope_summary,
    precision_curve,
    success_curve,
    vot_summary,
)
from ocean.benchmarks.plots import (
    plot_accuracy_robustness,
    plot_curves,
    plot_eao,
    plot_norm_precision,
    plot_precision,
    plot_success,
)
from ocean.benchmarks.protocols import OnePassResult, Tracker, VotResult, run_one_pass, run_vot_supervised
from ocean.benchmarks.readers import (
    read_benchmark,
    read_dtb70,
    read_got10k,
    read_lasot,
    read_nfs,
    read_otb,
    read_tnl2k,
    read_trackingnet,
    read_uav,
    read_vot,
)
from ocean.benchmarks.report import summary_table
from ocean.benchmarks.results import (
    read_ope_result,
    read_vot_result,
    write_ope_result,
    write_vot_result,
)
from ocean.benchmarks.scoring import BENCHMARKS, CONVENTIONS, score_benchmark, score_sequences, score_tracks
from ocean.benchmarks.sequence import AnnotationError, Sequence
from ocean.benchmarks.submission import write_submission

__all__ = [
    "AnnotationError",
    "BENCHMARKS",
    "CONVENTIONS",
    "EAO_INTERVALS",
    "OnePassResult",
    "Sequence",
    "Tracker",
    "VotResult",
    "got10k_ious",
    "got10k_summary",
    "norm_precision_curve",
    "ope_sequence",
    "ope_summary",
    "plot_accuracy_robustness",
    "plot_curves",
    "plot_eao",
    "plot_norm_precision",
    "plot_precision",
    "plot_success",
    "precision_curve",
    "read_benchmark",
    "read_dtb70",
    "read_got10k",
    "read_lasot",
    "read_nfs",
    "read_ope_result",
    "read_otb",
    "read_tnl2k",
    "read_trackingnet",
    "read_uav",
    "read_vot",
    "read_vot_result",
    "run_one_pass",
    "run_vot_supervised",
    "score_benchmark",
    "score_sequences",
    "score_tracks",
    "success_curve",
    "summary_table",
    "vot_summary",
    "write_ope_result",
    "write_submission",
    "write_vot_result",
]
