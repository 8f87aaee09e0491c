"""`ocean quickstart` end to end, which is also the project's learning test (issues 5 and 8).

The README's main job on its defaults -- synthetic data (size small, 4x its training scenes, half on busy
backgrounds) -> Ray pair records -> the smoke
preset trained with Ray Train (2 DDP workers, 10 epochs x 1,200 pairs) -> Ray evaluation of the trained
and an untrained model on the synthetic OTB / VOT2018 / GOT-10k / LaSOT benchmarks and on the held-out
scenes of data_prep.heldout_scenes (another generator, never trained on; offline and with the online module)
-> MLflow -- must finish, write summary.json, track held-out sequences far better than the untrained network,
do better than it on the held-out scenes (issue 14), better still there with the online module, and reuse all
of its work when run again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.learning]

REPO = Path(__file__).resolve().parents[2]
SCORE_KEYS = {"success_auc", "precision", "norm_precision", "ao", "sr50", "sr75", "eao", "accuracy", "robustness"}

# Learning thresholds. Measured on the 2-core machine, smoke preset (normalised correlation), 10 epochs x
# 1,200 pairs, seed 0, 2026-12-03, three runs with identical scores: synthetic OTB success AUC untrained
# 0.246, trained 0.712 (epoch losses 3.00, 1.69, 1.38, 1.22, 1.11, 1.04, 1.00, 0.96, 0.94, 0.92); on
# 2026-12-04 with the sampled deformable conv (same arithmetic up to rounding) 0.787, same losses to 0.02;
# on 2026-12-04 with the quickstart's data at --scenes 4 --busy 0.5: 0.774 (final loss 1.12); on 2026-12-05
# with the log-L1 regression loss (loss.reg_loss, smoke since): 0.785 (final loss 1.93, another loss's scale);
# the same day with brightness and contrast jitter of +-40 % (augment.illumination_jitter, smoke since): 0.715
# (final loss 2.06); 2026-12-06, the same checkpoint tracked with 3 scales (tracker.scales, smoke since): 0.755.
# The thresholds keep a wide margin on both sides (another CPU's kernels can take another path).
MIN_TRAINED_AUC = 0.45
MIN_GAIN = 0.30
# Held-out scenes (data_prep.heldout_scenes; BENCHMARKS.md "Generalisation"): the same runs scored 0.407 there
# (untrained 0.222; OpenCV CSRT 0.705, KCF 0.492), the 2026-12-04 run 0.307, and 0.367 with the data at
# --scenes 4 --busy 0.5 (0.35-0.40 over three one-process seeds), 0.377 with the log-L1 regression loss
# (0.335-0.447 over three quickstart seeds), 0.476 with the brightness and contrast jitter (0.411-0.476 over
# three quickstart seeds), 0.511 since the smoke tracker searches 3 scales (tracker.scales, 2026-12-06;
# 0.431-0.511 over three quickstart seeds, the same checkpoints); the plain correlation of the official code
# scored 0.216 with 5 epochs. Issue 14's goal of 0.5 is met by this run on this machine, but not by every seed,
# and another CPU's rounding moves a run as far as a seed does (BENCHMARKS.md "Generalisation"), so the
# floor is not the goal: it holds what the recipe bought, with room for one run's spread.
MIN_HELDOUT_AUC = 0.36
MIN_HELDOUT_GAIN = 0.06


def _run(workdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    cmd = [str(Path(sys.executable).parent / "ocean"), "quickstart", "--workdir", str(workdir)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=REPO)


def test_quickstart_learns_end_to_end_and_reuses_its_work(tmp_path):
    work = tmp_path / "qs"
    first = _run(work)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(first.stdout[-4000:])
    summary = json.loads((work / "summary.json").read_text())
    assert Path(summary["checkpoint"]).exists() and summary["checkpoint"].endswith(".pt")
    assert (Path(summary["pairs"]) / "manifest.json").exists()
    assert set(summary["benchmarks"]) == {"otb", "vot2018", "got10k", "lasot", "heldout", "heldout_online"}
    for name, entry in summary["benchmarks"].items():
        assert set(entry) == {"trained", "untrained"}
        assert entry["trained"] and set(entry["trained"]) <= SCORE_KEYS, (name, entry)
        assert set(entry["trained"]) == set(entry["untrained"])
    assert "eao" in summary["benchmarks"]["vot2018"]["trained"]
    assert summary["synthetic"] == {"seed": 0, "size": "small", "scenes": 4, "busy": 0.5}  # the command's defaults
    for name, d in summary["data"].items():
        assert d["pairs_written"] > 0, name
    assert summary["plots"] and all(Path(p).exists() for p in summary["plots"])
    assert "mlflow ui --backend-store-uri sqlite:///" in first.stdout
    assert "| benchmark | metric | untrained | trained |" in first.stdout

    # it learned: held-out synthetic OTB sequences, trained vs untrained
    otb = summary["benchmarks"]["otb"]
    assert otb["trained"]["success_auc"] >= MIN_TRAINED_AUC, otb
    assert otb["trained"]["success_auc"] >= otb["untrained"]["success_auc"] + MIN_GAIN, otb
    got = summary["benchmarks"]["got10k"]
    assert got["trained"]["ao"] > got["untrained"]["ao"], got
    # it generalises: scenes from another generator (backgrounds, targets, effects), never trained on
    heldout = summary["benchmarks"]["heldout"]
    assert heldout["trained"]["success_auc"] >= MIN_HELDOUT_AUC, heldout
    assert heldout["trained"]["success_auc"] >= heldout["untrained"]["success_auc"] + MIN_HELDOUT_GAIN, heldout
    # and the online module (paper Sec. 4.2) tracks them better still: 0.481 against 0.367 offline on the
    # 2026-12-04 run, 0.470 against 0.377 with the log-L1 loss of 12-05, 0.519 against 0.476 with the
    # brightness and contrast jitter (0.043-0.099 over three seeds), 0.529 against 0.511 with the 3-scale search
    # (0.018-0.090 over three seeds; BENCHMARKS.md "Generalisation")
    online = summary["benchmarks"]["heldout_online"]
    assert online["trained"]["success_auc"] > heldout["trained"]["success_auc"], (online, heldout)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=summary["mlflow_uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert any(r.info.run_id == summary["training"]["mlflow_run_id"] for r in runs)
    assert len(runs) >= 2  # training + evaluation

    second = _run(work)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "reusing the existing synthetic data" in second.stderr  # progress: the console (stderr)
    assert "reusing train.json" in second.stderr and "reusing evaluation.json" in second.stderr
    assert "reusing evaluation-heldout.json" in second.stderr
    assert "reusing evaluation-heldout-online.json" in second.stderr
    again = json.loads((work / "summary.json").read_text())
    assert again["benchmarks"] == summary["benchmarks"] and again["checkpoint"] == summary["checkpoint"]
