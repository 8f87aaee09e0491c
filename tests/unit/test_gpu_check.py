"""benchmarks/gpu_check.py on the CPU with tiny sizes: every section of the GPU check runs, so the script a
lent GPU machine runs cannot rot (issue 15 item 6). No timings are asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_every_section_runs_on_the_cpu_and_is_recorded(tmp_path):
    proc = _run("--device", "cpu", "--tiny", "--amp", "none", "--dtypes", "fp32,bf16", "--input-procs", "2",
                "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = result["sections"]
    assert set(sections) == {"train", "fed", "tracker", "jpeg"}
    assert not [name for name, s in sections.items() if "error" in s]
    for label in ("backbone_frozen", "backbone_training"):
        assert sections["train"][label]["pairs_per_s"] > 0 and sections["train"][label]["skipped_steps"] == 0
    assert sections["train"]["backbone_frozen"]["epoch"] < sections["train"]["backbone_training"]["epoch"]
    assert 0.0 <= sections["fed"]["data_wait_fraction"] <= 1.0 and sections["fed"]["pairs_per_s"] > 0
    assert sections["tracker"]["fp32"]["max_box_diff_px"] == 0.0  # the reference against itself
    assert sections["tracker"]["bf16"]["fps"] > 0  # autocast around the network, align head included
    assert sections["jpeg"]["torchvision_cpu"]["images_per_s"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.strip() in proc.stdout  # printed as well
    assert table.count("\n| ") >= 7 and "FAILED" not in table


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    proc = _run("--device", "cpu", "--sections", "train,bogus", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown sections ['bogus']" in proc.stderr
    if not torch.cuda.is_available():
        proc = _run("--device", "cuda", "--out", str(tmp_path))
        assert proc.returncode == 2
        assert proc.stderr.strip() == "gpu_check: no CUDA device here (use --device cpu --tiny for the CPU run)"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_align_head_runs_under_cpu_autocast(dtype):
    """torchvision's CPU deform_conv2d has no bf16 / fp16 kernel: the head runs it in float32 under autocast."""
    from ocean.model import AlignHead

    gen = torch.Generator().manual_seed(0)
    head = AlignHead(8)
    feats = torch.rand(1, 8, 5, 5, generator=gen)
    offsets = torch.rand(1, 18, 5, 5, generator=gen)
    ref = head(feats, offsets)
    with torch.autocast("cpu", dtype=dtype):
        low = head(feats, offsets)
    assert torch.allclose(low.float(), ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(("runtime", "tolerance"), [("eager", 1e-4), ("fast", 1e-3)])
def test_the_batched_evaluation_step_of_the_gpu_check_runs_on_the_cpu(tmp_path, runtime, tolerance):
    """benchmarks/gpu_check.sh's second step (benchmarks/eval_batched.py), tiny, on the CPU. Batched boxes are
    batch 1's: exactly with eager (the contract, <= 1e-4 px); with the fast runtime within 1e-3 px (oneDNN's
    fused kernels round differently by batch size: 2.1e-4 px measured here on 2026-12-03)."""
    out = tmp_path / "eval_batched.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_batched.py"), "--preset", "smoke",
                           "--batches", "1,2", "--sequences", "2", "--frames", "3", "--repeats", "1",
                           "--forward-repeats", "0", "--runtime", runtime, "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 2], rows
    assert all(r["max_box_diff_px"] <= tolerance for r in rows), rows
