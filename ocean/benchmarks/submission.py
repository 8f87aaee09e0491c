"""Submission zips for the benchmarks scored by an evaluation server (formats.md §2.3, §2.9).

GOT-10k test: the zip holds, at its top level, one folder per sequence with ``<seq>_001.txt`` (x,y,w,h,
0-based, commas) and ``<seq>_time.txt`` (seconds per frame) -- what the got10k toolkit's report step and
pytracking's packing script produce from a tracker's result folder. TrackingNet TEST: the zip holds
``<seq>.txt`` (x,y,w,h, commas) for every sequence, flat. :func:`write_submission` writes the one a
benchmark needs from ONE tracker's result folder (the layout of :mod:`ocean.benchmarks.results`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from ocean.benchmarks.readers import BENCHMARK_FAMILY
from ocean.benchmarks.sequence import AnnotationError, Sequence

# the benchmark families whose test split only an evaluation server scores
SERVER_FAMILIES = ("got10k", "trackingnet")


def _entries(family: str, tracker_dir: Path, names: Iterable[str]) -> list[tuple[Path, str]]:
    """(file, name in the zip) for every sequence; AnnotationError listing the sequences without a result."""
    out, missing = [], []
    for name in names:
        if family == "got10k":
            box, times = tracker_dir / name / f"{name}_001.txt", tracker_dir / name / f"{name}_time.txt"
            if not (box.is_file() and times.is_file()):
                missing.append(name)
                continue
            out += [(box, f"{name}/{box.name}"), (times, f"{name}/{times.name}")]
        else:
            box = tracker_dir / f"{name}.txt"
            if not box.is_file():
                missing.append(name)
                continue
            out.append((box, box.name))
    if missing:
        raise AnnotationError(
            f"{tracker_dir}: no result files for {len(missing)} of the sequences, e.g. {missing[0]} "
            "(the server needs every sequence)"
        )
    return out


def write_submission(benchmark: str, tracker_dir: Path, sequence_names: Iterable[str], out_zip: Path) -> Path:
    """Zip ONE tracker's results on ``benchmark`` (got10k or trackingnet) for the evaluation server.

    ``sequence_names``: every sequence of the split (a missing result file is an AnnotationError naming
    it). Returns ``out_zip``. GOT-10k entries: ``<seq>/<seq>_001.txt`` and ``<seq>/<seq>_time.txt``;
    TrackingNet entries: ``<seq>.txt``.
    """
    family = BENCHMARK_FAMILY.get(benchmark)
    if family not in SERVER_FAMILIES:
        raise ValueError(f"{benchmark}: no evaluation-server submission (only {', '.join(SERVER_FAMILIES)})")
    entries = _entries(family, Path(tracker_dir), sorted(sequence_names))
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_zip, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path, arcname in entries:
            z.write(path, arcname)
    return out_zip


def needs_server(benchmark: str, sequences: list[Sequence]) -> bool:
    """True for a GOT-10k or TrackingNet test split (sequences with only the first GT box)."""
    return BENCHMARK_FAMILY.get(benchmark) in SERVER_FAMILIES and any(not s.gt_complete for s in sequences)


def submission_for(benchmark: str, sequences: list[Sequence], tracker_dir: Path, out_dir: Path) -> dict:
    """For a test split (:func:`needs_server`): write ``out_dir/submission.zip`` from ``tracker_dir`` and
    return ``{"submission": path}``, or ``{"submission_error": reason}`` when a result is missing; ``{}``
    for anything else."""
    if not needs_server(benchmark, sequences):
        return {}
    try:
        return {"submission": str(write_submission(benchmark, tracker_dir, [s.name for s in sequences],
                                                   Path(out_dir) / "submission.zip"))}
    except (AnnotationError, OSError) as exc:
        return {"submission_error": str(exc)}
