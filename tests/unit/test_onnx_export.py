"""ONNX export (ocean/export.py, ``ocean export``): onnxruntime on CPU reproduces the network, the alignment
head's deformable convolution included; bad inputs are one line and exit status 2.

The export extra (onnx, onnxruntime) is optional: without it the parity tests skip, saying so, and the
command's refusal is still tested (the packages are hidden from the import system).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import pytest
import torch
from test_fast_runtime import TOL, _net

from jobs.cli import main as cli
from ocean.checkpoint import save_checkpoint
from ocean.config import smoke

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'ocean-ray[export]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'ocean-ray[export]')")

from ocean.export import OnnxNetwork, export_onnx, export_paths  # noqa: E402  (after the skips)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A smoke checkpoint (alignment head on, conditioned weights, test_fast_runtime._net)."""
    path = tmp_path_factory.mktemp("export") / "smoke.pt"
    save_checkpoint(str(path), _net(seed=5), smoke())
    return str(path)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_graphs_reproduce_the_network_at_every_search_size(tmp_path):
    net = _net(seed=5)
    paths = export_onnx(net, str(tmp_path / "ocean.onnx"), smoke())
    assert paths == export_paths(str(tmp_path / "ocean.onnx"))
    meta = json.loads((tmp_path / "ocean.json").read_text())
    assert meta["opset"] == 19 and meta["config"]["model"]["head"]["channels"] == 32
    track = onnx.load(paths["track"])
    onnx.checker.check_model(track)
    assert "DeformConv" in {n.op_type for n in track.graph.node}  # the alignment head, as the standard op
    assert [i.name for i in track.graph.input][:1] == ["search"] and len(track.graph.input) == 1 + 6
    runner = OnnxNetwork.load(str(tmp_path / "ocean.onnx"), threads=1)
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(1, 3, 127, 127, generator=gen) * 255
    with torch.inference_mode():
        net.template(z)
        runner.template(z)
        for s in (255, 271, 287):  # one graph, any search size
            x = torch.rand(1, 3, s, s, generator=gen) * 255
            ref, got = net.track(x), runner.track(x)
            n = {255: 25, 271: 27, 287: 29}[s]  # ocean.geometry.score_size
            for key in ("cls", "reg", "align"):
                assert got[key].shape == ref[key].shape == (1, 4 if key == "reg" else 1, n, n)
                assert _rel(got[key], ref[key]) <= TOL, (s, key, _rel(got[key], ref[key]))


@pytest.mark.parametrize("variant", [{"align": False}, {"correlation": "normalised"},
                                     {"correlation": "normalised", "colour_cue": True}], ids=["no-align", "ncc", "colour"])
def test_graphs_of_other_heads(variant, tmp_path):
    """Without the alignment head (the OTB configuration), and with the normalised correlation (and the colour
    cue: one more kernel, ``cls_colour_kernel``) at 287."""
    net = _net(seed=6, **variant)
    export_onnx(net, str(tmp_path / "net.onnx"))
    runner = OnnxNetwork.load(str(tmp_path / "net.onnx"), threads=1)
    s = 255 if "align" in variant else 287
    z = torch.rand(1, 3, 127, 127, generator=torch.Generator().manual_seed(1)) * 255
    x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(2)) * 255
    with torch.inference_mode():
        net.template(z)
        runner.template(z)
        ref, got = net.track(x), runner.track(x)
    if "colour_cue" in variant:
        assert "cls_colour_kernel" in [i.name for i in onnx.load(str(tmp_path / "net.onnx")).graph.input]
    if "align" in variant:
        assert got["align"] is None and ref["align"] is None
    for key in ("cls", "reg") if "align" in variant else ("cls", "reg", "align"):
        assert _rel(got[key], ref[key]) <= TOL, (key, _rel(got[key], ref[key]))


def test_ocean_export_command(checkpoint, tmp_path, capsys):
    out = tmp_path / "deploy" / "ocean.onnx"
    assert cli(["export", "--checkpoint", checkpoint, "--onnx", str(out), "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.is_file() and (tmp_path / "deploy" / "ocean.template.onnx").is_file()
    assert summary["align"] is True and max(summary["max_relative_difference"].values()) <= TOL
    assert set(summary["max_relative_difference"]) == {f"{k}_{s}" for k in ("cls", "reg", "align") for s in (255, 287)}


def _one_line_exit_2(argv, capsys, needle: str) -> None:
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_ocean_export_bad_inputs(checkpoint, tmp_path, capsys, monkeypatch):
    _one_line_exit_2(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--onnx", str(tmp_path / "a.onnx")],
                     capsys, "no such file")
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the output folder should be
    _one_line_exit_2(["export", "--checkpoint", checkpoint, "--onnx", str(blocker / "a.onnx")], capsys, "--onnx")
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root may write anywhere
        _one_line_exit_2(["export", "--checkpoint", checkpoint, "--onnx", str(tmp_path / "ro" / "a.onnx")],
                         capsys, "not writable")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the export extra were not installed
    _one_line_exit_2(["export", "--checkpoint", checkpoint, "--onnx", str(tmp_path / "b.onnx")], capsys,
                     "onnxruntime not installed")


def test_track_runtime_onnx(checkpoint, tmp_path, capsys, monkeypatch):
    """`ocean track --runtime onnx` gives the eager boxes; without onnxruntime it is one line, exit 2."""
    import cv2
    import numpy as np

    frames = tmp_path / "frames"
    frames.mkdir()
    gen = np.random.default_rng(0)
    for i in range(4):
        img = gen.integers(0, 255, (180, 240, 3), dtype=np.uint8)
        img[60 + 3 * i:100 + 3 * i, 90:130] = 250
        cv2.imwrite(str(frames / f"{i:04d}.png"), img)
    boxes = {}
    for runtime in ("eager", "onnx"):
        out = tmp_path / f"{runtime}.txt"
        assert cli(["track", "--checkpoint", checkpoint, "--frames", str(frames), "--init", "90,60,40,40",
                    "--benchmark", "vot2018", "--runtime", runtime, "--out", str(out), "-q"]) == 0
        boxes[runtime] = np.loadtxt(out, delimiter=",")
    np.testing.assert_allclose(boxes["onnx"], boxes["eager"], atol=1e-3)
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    _one_line_exit_2(["track", "--checkpoint", checkpoint, "--frames", str(frames), "--init", "90,60,40,40",
                      "--runtime", "onnx", "--out", str(tmp_path / "x.txt")], capsys, "onnxruntime not installed")


def test_tracker_runtime_onnx_through_the_config(checkpoint):
    from ocean.checkpoint import load_model
    from ocean.config import tracker_config
    from ocean.tracker import OceanTracker

    net, _ = load_model(checkpoint)
    trk = OceanTracker(net, dataclasses.replace(tracker_config("vot2018"), runtime="onnx"))
    assert isinstance(trk.net, OnnxNetwork)
    assert OceanTracker(net, dataclasses.replace(tracker_config(), runtime="onnx")).net is trk.net  # cached


def test_onnx_network_scores_several_crops_at_once(checkpoint):
    """A scale search (``tracker.scales``) sends its crops as one batch; the batch-1 graph runs them in turn."""
    from ocean.checkpoint import load_model

    net, _ = load_model(checkpoint)
    runtime = OnnxNetwork.from_network(net)
    g = torch.Generator().manual_seed(0)
    z, x = torch.rand(1, 3, 127, 127, generator=g) * 255, torch.rand(3, 3, 255, 255, generator=g) * 255
    net.template(z)
    runtime.template(z)
    ref, got = net.track(x), runtime.track(x)
    for key in ("cls", "reg"):
        assert got[key].shape == ref[key].shape == (3, *ref[key].shape[1:])
        assert _rel(got[key], ref[key]) <= TOL, key
        assert _rel(got[key][2:], net.track(x[2:])[key]) <= TOL, key  # row 2 is crop 2's alone
