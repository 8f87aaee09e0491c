"""ocean tune-tracker: the test split is refused on the command line (a real tuning run:
tests/integration/test_tune_tracker_run.py)."""

from __future__ import annotations

import pytest

from ocean.tuning import TuneTrackerError, read_validation


def test_got10k_test_split_is_refused(synth_root, tmp_path):
    import shutil

    from jobs.cli import main

    test_root = tmp_path / "GOT-10k" / "test"
    shutil.copytree(synth_root / "benchmarks" / "got10k" / "val", test_root)
    for gt in test_root.glob("*/groundtruth.txt"):  # the test split publishes only the first box
        gt.write_text(gt.read_text().splitlines()[0] + "\n")
    with pytest.raises(TuneTrackerError, match="TEST split"):
        read_validation("got10k", test_root)
    rc = main(["tune-tracker", "--checkpoint", str(tmp_path / "none.pt"), "--benchmark", f"got10k={test_root}",
               "--out", str(tmp_path / "out"), "--no-mlflow"])
    assert rc == 2
    assert not (tmp_path / "out" / "best_tracker.json").exists()
