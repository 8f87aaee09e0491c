"""``python -m jobs.vot_tracker`` run by the real VOT toolkit (its ``vot evaluate``, in process) through
deploy/vot/trackers.ini on a local workspace made of a real VOT clip (10 frames), in the VOT 2018 baseline
(supervised) experiment with one failure forced: the result file appears, the failure and the
re-initialisation are where the protocol puts them, and every box is the project's own tracker's on the same
frames; nothing is downloaded."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from importlib.metadata import PackageNotFoundError, distribution, requires, version
from pathlib import Path

import cv2
import numpy as np
import pytest
import vot
import vot.dataset
import vot.workspace
from conftest import REPO, SHARED
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from trax import Polygon, Rectangle
from vot.region import Special
from vot.region.io import read_trajectory
from vot.utilities.cli import do_evaluate

from jobs.cli import main
from jobs.vot_tracker import region_to_box
from ocean.benchmarks.regions import polygon_to_init_box_xywh
from ocean.integrations import build_tracker

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra brings tomli
    import tomli as tomllib

CAR = SHARED / "data" / "real_sequences" / "vot" / "vot2014_car"
FRAMES = 10
JUMP = 3  # the ground truth of this frame is moved off the target: the tracker fails there (overlap 0)
SKIP = 5  # the toolkit re-initialises SKIP frames after a failure (the VOT 2018 baseline, formats.md §2.2)
STACK = f"""title: ocean-ray local stack (the vot2018/shortterm baseline, one repetition)
experiments:
  baseline:
    type: supervised
    repetitions: 1
    skip_initialize: {SKIP}
    analyses:
      - type: supervised_average_ar
        sensitivity: 30
"""


def _no_network(*args, **kwargs):
    raise AssertionError(f"the VOT toolkit tried to reach the network {args}")


def make_workspace(root: Path, checkpoint: str) -> Path:
    """A VOT workspace: config.yaml naming a local stack, sequences/list.txt and the clip in the legacy
    layout (frames beside groundtruth.txt, formats.md §2.2), and deploy/vot/trackers.ini filled in."""
    seq = root / "sequences" / "car"
    seq.mkdir(parents=True)
    for i in range(1, FRAMES + 1):
        shutil.copy(CAR / f"{i:08d}.jpg", seq / f"{i:08d}.jpg")
    gt = (CAR / "groundtruth.txt").read_text().splitlines(keepends=True)[:FRAMES]
    gt[JUMP] = "500,20,530,20,530,50,500,50\n"  # far from the car (x < 60 in these frames)
    (seq / "groundtruth.txt").write_text("".join(gt))
    (root / "sequences" / "list.txt").write_text("car\n")
    (root / "stack.yaml").write_text(STACK)
    (root / "config.yaml").write_text("registry:\n- .\nstack: stack.yaml\nsequences: sequences\n")
    ini = (REPO / "deploy" / "vot" / "trackers.ini").read_text()
    ini = ini.replace("/path/to/ocean-ray/.venv/bin/python", sys.executable).replace(
        "/path/to/checkpoint.pt", checkpoint).replace("/path/to/ocean-ray", str(REPO)).replace(
        "--device auto", "--device cpu")
    assert "/path/to" not in ini
    (root / "trackers.ini").write_text(ini)
    return root


def test_vot_toolkit_runs_the_trax_tracker(ckpts, tmp_path, monkeypatch):
    if not CAR.is_dir():
        pytest.skip(f"{CAR} is absent (the shared real sequences)")
    monkeypatch.setattr(vot.dataset, "download_dataset", _no_network)
    monkeypatch.setattr(vot.workspace, "download_dataset", _no_network, raising=False)
    monkeypatch.setattr(vot, "check_updates", _no_network)
    monkeypatch.setattr("requests.get", _no_network)
    workspace = make_workspace(tmp_path / "workspace", ckpts[0])

    do_evaluate(argparse.Namespace(workspace=str(workspace), trackers=["Ocean"], force=False, persist=False,
                                   experiments=None))

    result = workspace / "results" / "Ocean" / "baseline" / "car" / "car_001.bin"
    assert result.is_file(), sorted(str(p.relative_to(workspace)) for p in workspace.rglob("*"))
    trajectory = read_trajectory(str(result))
    codes = [r.code if isinstance(r, Special) else None for r in trajectory]
    assert codes == [1, None, None, 2, 0, 0, 0, 0, 1, None]  # init, failure at JUMP, re-init SKIP later

    tracker, _ = build_tracker(ckpts[0], "vot2018", "cpu")
    frames = sorted((workspace / "sequences" / "car").glob("*.jpg"))
    polygons = np.loadtxt(workspace / "sequences" / "car" / "groundtruth.txt", delimiter=",")
    compared = 0
    for index, (path, region) in enumerate(zip(frames, trajectory, strict=True)):
        image = cv2.imread(str(path))
        if codes[index] == 1:
            tracker.init(image, polygon_to_init_box_xywh(polygons[index]))
        elif codes[index] in (None, 2):
            box, _ = tracker.track(image)
            if codes[index] is None:
                toolkit = np.array([region.x, region.y, region.width, region.height])
                np.testing.assert_allclose(toolkit, box, atol=1e-3)  # float32 in TraX and in the .bin file
                compared += 1
    assert compared == 3


def test_regions_and_bad_arguments(capsys):
    assert region_to_box(Rectangle.create(3.5, 4, 20, 10)).tolist() == [3.5, 4.0, 20.0, 10.0]
    points = [(6.0, 193.0), (6.0, 166.0), (49.0, 166.0), (49.0, 193.0)]
    np.testing.assert_allclose(region_to_box(Polygon.create(points)),
                               polygon_to_init_box_xywh(np.ravel(points)), atol=1e-5)
    assert main(["vot-tracker", "--checkpoint", "/nonexistent/ckpt.pt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--checkpoint /nonexistent/ckpt.pt: no such file" in err[0]


def test_dev_install_covers_vot_toolkit_without_opencv_python():
    """vot-toolkit comes with --no-deps (Makefile NODEPS_DEV): the dev extra must hold its other requirements,
    and opencv-python (which would overwrite opencv-python-headless's cv2) must stay out."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = {canonicalize_name(Requirement(r).name)
              for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    needed = {canonicalize_name(Requirement(r).name) for r in requires("vot-toolkit") if "extra ==" not in r}
    assert needed - listed == {"opencv-python"}
    assert re.search(r"^NODEPS_DEV := .*\bvot-toolkit==" + re.escape(version("vot-toolkit")) + r"\b",
                     (REPO / "Makefile").read_text(), re.M)
    with pytest.raises(PackageNotFoundError):
        distribution("opencv-python")
    assert cv2.__file__.startswith(str(Path(distribution("opencv-python-headless").locate_file("cv2"))))
