"""benchmarks/size_bias.py measures the raw size the network predicts one step from the true state."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

import ocean.tracker as tracker_module

# one search crop: the smoke checkpoints search 3 scales (facts §9.6), and a crop cut larger or smaller would
# move the raw size with the classification's pick; these tests are about the regression's own prediction
REGRESSION_ALONE = ["tracker.scales=1"]
_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "size_bias.py"


def _load():
    spec = importlib.util.spec_from_file_location("size_bias", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_step_sizes_reads_the_raw_prediction(tmp_path, bench, ckpts):
    """Doubling every regressed distance (the ExpRegression bias + ln 2) doubles the measured ratio: the script
    reads the prediction before the size smoothing, which would have moved the state only part of the way."""
    from ocean.benchmarks.readers import read_otb
    from ocean.checkpoint import load_model, save_checkpoint

    size_bias = _load()
    original = tracker_module.update_size
    before = size_bias.one_step_sizes(ckpts[0], bench["otb"], REGRESSION_ALONE)
    assert tracker_module.update_size is original  # the spy is removed again
    seqs = read_otb(Path(bench["otb"]))
    assert before["all"]["frames"] == sum(len(s.frames) - 1 for s in seqs)  # the first frame of each inits
    assert set(before) == {"all", *(s.name for s in seqs)}

    net, cfg = load_model(ckpts[0])
    with torch.no_grad():
        net.reg_pred.bias += math.log(2.0)
    doubled = tmp_path / "doubled.pt"
    save_checkpoint(str(doubled), net, cfg, epoch=1)
    after = size_bias.one_step_sizes(str(doubled), bench["otb"], REGRESSION_ALONE)
    assert 1.6 < after["all"]["ratio_geomean"] / before["all"]["ratio_geomean"] < 2.5


def test_follow_slope_is_zero_for_a_regression_that_ignores_the_image(tmp_path, bench, ckpts):
    """With the regression's convolution zeroed every cell predicts the same distances in crop pixels, so the
    predicted size is the state's times a constant: the slope is 0 whatever the image. The untrained network,
    its exponent's scale raised so that its distances vary with the image, gives another slope."""
    from ocean.benchmarks.readers import read_otb
    from ocean.checkpoint import load_model, save_checkpoint

    size_bias = _load()
    original = tracker_module.update_size
    frames = sum(len(s.frames) - 1 for s in read_otb(Path(bench["otb"])))
    net, cfg = load_model(ckpts[0])
    with torch.no_grad():
        net.reg_pred.adjust.fill_(3.0)
    varied = tmp_path / "varied.pt"
    save_checkpoint(str(varied), net, cfg, epoch=1)
    untrained = size_bias.follow_slopes(str(varied), bench["otb"], REGRESSION_ALONE)
    assert tracker_module.update_size is original
    assert untrained["samples"] == 2 * frames and math.isfinite(untrained["size_slope"])

    with torch.no_grad():
        for p in net.reg_pred.parameters():
            if p.dim() == 4:  # the conv weight; its bias (and the exp's scale) stay
                p.zero_()
    constant = tmp_path / "constant.pt"
    save_checkpoint(str(constant), net, cfg, epoch=1)
    flat = size_bias.follow_slopes(str(constant), bench["otb"], REGRESSION_ALONE)
    assert flat["samples"] == 2 * frames
    assert abs(flat["size_slope"]) < 1e-6
    assert abs(untrained["size_slope"] - flat["size_slope"]) > 1e-3  # the measure tells the two apart
