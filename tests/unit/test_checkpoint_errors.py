"""Bad checkpoint files give one error naming the file and the reason (ocean.checkpoint), on the command line
one line and exit status 2; a training run resumes from the newest epoch file that loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ocean.checkpoint import (
    CheckpointError,
    checkpoint_uri,
    load_checkpoint,
    load_model,
    newest_readable,
    resume_training,
    save_checkpoint,
    save_training_checkpoint,
)
from ocean.config import smoke
from ocean.model import build_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("good") / "good.pt"
    save_checkpoint(str(path), build_model(smoke().model), smoke(), epoch=1)
    return path


def bad_files(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """``{case: (file, expected reason pattern)}``."""
    data = good.read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], r"truncated or damaged \(\d+ bytes of a torch zip archive"),
        "empty": (b"", r"empty file \(0 bytes"),
        "random": (np.random.default_rng(0).bytes(5000), r"not a torch checkpoint \(5000 bytes"),
    }
    out = {}
    for name, (raw, why) in cases.items():
        (folder / f"{name}.pt").write_bytes(raw)
        out[name] = (folder / f"{name}.pt", why)
    torch.save({"w": torch.ones(2)}, folder / "layout.pt")
    out["layout"] = (folder / "layout.pt", r"not an ocean-ray checkpoint \(format None")
    torch.save({"format": "ocean-ray/1", "config": {}, "model": {"x": 1}}, folder / "notensor.pt")
    out["notensor"] = (folder / "notensor.pt", r"wrong layout \(model entries that are not tensors")
    small = smoke()
    torch.save({"format": "ocean-ray/1", "config": __import__("ocean.config").config.to_dict(small),
                "model": {"only.this": torch.ones(1)}}, folder / "weights.pt")
    out["weights"] = (folder / "weights.pt", r"its weights do not fit the network of its config")
    return out


def test_each_bad_checkpoint_names_the_file_and_the_reason(good, tmp_path):
    for name, (path, why) in bad_files(good, tmp_path).items():
        with pytest.raises(CheckpointError, match=rf"^checkpoint {path}: {why}") as exc:
            load_model(str(path))
        assert "\n" not in str(exc.value), name
    with pytest.raises(CheckpointError, match=r"missing.pt: no such file or object"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match=r"cannot read it \(.*is a directory"):
        load_checkpoint(str(tmp_path))
    net, cfg = load_model(str(good))  # the good one still loads
    assert cfg.preset == smoke().preset and not net.training


def test_track_with_a_bad_checkpoint_is_one_line_and_exit_2(good, tmp_path):
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i:04d}.jpg"), np.zeros((64, 64, 3), np.uint8))
    files = bad_files(good, tmp_path)
    for name in ("random", "empty"):  # UnpicklingError / EOFError tracebacks before
        path = files[name][0]
        proc = subprocess.run([sys.executable, "-m", "jobs.track", "--checkpoint", str(path), "--frames", str(frames),
                               "--init", "1,1,5,5", "--out", str(tmp_path / "t.txt")], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines == [f"ocean track: error: checkpoint {path}: {lines[0].split(': ', 3)[-1]}"]
        assert "Traceback" not in proc.stderr and str(path) in lines[0]


def _epoch_file(out: str, epoch: int, net, cfg):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    save_training_checkpoint(checkpoint_uri(out, epoch), net, cfg, opt, epoch=epoch, trainable_layers=[],
                             lr=0.1, history=[{"epoch": e} for e in range(1, epoch + 1)], metrics={}, seed=0)


def test_resume_skips_unreadable_newest_epoch_files_and_says_so(tmp_path):
    cfg = smoke()
    out = str(tmp_path / "run")
    torch.manual_seed(1)
    net = build_model(cfg.model)
    for epoch in (1, 2):
        _epoch_file(out, epoch, net, cfg)
    e2 = Path(checkpoint_uri(out, 2))
    good2 = e2.read_bytes()
    e2.write_bytes(good2[: len(good2) // 3])  # a truncated newest file
    Path(checkpoint_uri(out, 3)).write_bytes(b"")  # and an empty one after it
    fresh = build_model(cfg.model)
    point, history, _ = resume_training(out, fresh)
    assert point.epoch == 1 and point.uri == checkpoint_uri(out, 1) and len(history) == 1
    assert [u for u, _ in point.skipped] == [checkpoint_uri(out, 3), checkpoint_uri(out, 2)]
    lines = point.messages()
    assert lines[0].startswith(f"warning: skipping unreadable checkpoint {checkpoint_uri(out, 3)}: empty file")
    assert lines[1].startswith(f"warning: skipping unreadable checkpoint {checkpoint_uri(out, 2)}: truncated")
    assert lines[2] == f"resuming after epoch 1 from {checkpoint_uri(out, 1)}"
    for a, b in zip(fresh.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    Path(checkpoint_uri(out, 1)).write_bytes(b"junk")  # nothing readable: start over, and say so
    point, _ = newest_readable(out)
    assert point.epoch == 0 and point.uri is None and len(point.skipped) == 3
    assert point.messages()[-1] == "no readable checkpoint left: training starts from epoch 0"
    assert newest_readable(str(tmp_path / "none"))[0].messages() == []  # a fresh run: nothing to say
