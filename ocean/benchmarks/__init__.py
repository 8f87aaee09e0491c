"""Benchmark toolkit: readers for OTB / VOT / GOT-10k / LaSOT, protocols, metrics, result files, scoring,
reports and plots.

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
from ocean.benchmarks.readers import read_benchmark, read_got10k, read_lasot, read_otb, read_vot
from ocean.benchmarks.report import summary_table
from ocean.benchmarks.results import (
    read_ope_result,
    read_vot_result,
    write_ope_result,
    write_vot_result,
)
from ocean.benchmarks.scoring import BENCHMARKS, score_benchmark, score_sequences, score_tracks
from ocean.benchmarks.sequence import AnnotationError, Sequence

__all__ = [
    "AnnotationError",
    "BENCHMARKS",
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
    "read_got10k",
    "read_lasot",
    "read_ope_result",
    "read_otb",
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
    "write_vot_result",
]
