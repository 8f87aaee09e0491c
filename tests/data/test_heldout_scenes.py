"""The held-out evaluation scenes (data_prep.heldout_scenes): an OTB benchmark the readers score, written
apart from the training generator, deterministic, with every effect the family promises."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np

from data_prep import heldout_scenes
from data_prep.heldout_scenes import HELDOUT_SEED, render_sequence, write_heldout_otb
from ocean.benchmarks.readers import read_otb


def test_written_as_an_otb_benchmark_the_reader_scores(tmp_path: Path) -> None:
    meta = write_heldout_otb(tmp_path / "h", sequences=3, frames=8, frame_size=(160, 120))
    seqs = read_otb(tmp_path / "h")
    assert [s.name for s in seqs] == ["Heldout01", "Heldout02", "Heldout03"] == sorted(meta["sequences"])
    for s in seqs:
        assert len(s.frames) == 8 and s.gt_xywh.shape == (8, 4)
        x, y, w, h = s.gt_xywh.T
        assert (w >= 2).all() and (h >= 2).all() and (x >= 0).all() and (y >= 0).all()
        assert (x + w <= 160).all() and (y + h <= 120).all()
    first = (tmp_path / "h" / "Heldout01" / "img" / "0001.jpg").read_bytes()
    again = write_heldout_otb(tmp_path / "h2", sequences=3, frames=8, frame_size=(160, 120))
    assert again == meta and (tmp_path / "h2" / "Heldout01" / "img" / "0001.jpg").read_bytes() == first
    assert json.loads((tmp_path / "h" / "attributes.json").read_text())["params"]["seed"] == HELDOUT_SEED


def test_scale_change_sequences_change_size() -> None:
    for k in range(6):
        seq = render_sequence(np.random.default_rng([HELDOUT_SEED, heldout_scenes._STREAM, k]), "x", 30, (192, 144))
        area = seq.boxes_xywh[:, 2] * seq.boxes_xywh[:, 3]
        if seq.attributes["scale_change"]:
            assert area.max() / area.min() > 1.25, (k, area.min(), area.max())
        else:
            assert area.max() / area.min() < 1.1, (k, area.min(), area.max())


def test_the_family_covers_every_effect() -> None:
    attrs = [render_sequence(np.random.default_rng([HELDOUT_SEED, heldout_scenes._STREAM, k]), "x", 2,
                             (96, 72)).attributes for k in range(12)]
    assert {a["background"] for a in attrs} >= {"clutter", "hatch", "checks", "blotches"}
    for key in ("scale_change", "occlusion", "motion_blur", "illumination", "camera_shake"):
        assert any(a[key] for a in attrs), key
    assert all(a["distractors"] >= 1 for a in attrs)


def test_designed_apart_from_the_training_generator() -> None:
    """No import of the training scene renderer or the synthetic datasets, and a stream id none of the
    training streams uses."""
    tree = ast.parse(Path(heldout_scenes.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.startswith("data_prep") for m in imported), imported
    from data_prep.synthetic import _STREAMS

    assert heldout_scenes._STREAM not in _STREAMS.values()
