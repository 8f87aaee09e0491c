"""The preparation command line (ocean prepare) refuses bad arguments before any work: no Ray, no S3 (the
job on a real cluster: tests/integration/test_prepare_cluster.py)."""

from __future__ import annotations


def test_cli_rejects_bad_arguments_before_any_work(tmp_path, capsys):
    from jobs.cli import main

    assert main(["prepare", "--dataset", "nope=/x", "--out", str(tmp_path / "o")]) == 1
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["prepare", "--dataset", f"got10k={tmp_path / 'missing'}", "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err
    # malformed or repeated NAME=ROOT: a usage error (jobs/common.py), exit status 2 as argparse's
    assert main(["prepare", "--dataset", "got10k", "--out", str(tmp_path)]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert main(["prepare", "--dataset", f"got10k={tmp_path}", "--dataset", f"got10k={tmp_path}",
                 "--out", str(tmp_path / "o")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["prepare", "--dataset", f"got10k={tmp_path}", "--pairs", "got10k=-1", "--out", str(tmp_path / "o")]) == 2
    assert ">= 0" in capsys.readouterr().err
