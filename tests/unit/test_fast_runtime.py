"""The inference fast path (ocean/fast.py, ``tracker.runtime``): same outputs as the eager network, built once.

The paper network on the official reference data goes through it in test_official_equivalence.py; here
small networks with non-trivial BatchNorm statistics cover both backbone layouts and the head variants.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from ocean.config import ConfigError, apply_overrides, smoke, tracker_config
from ocean.fast import FusedConv, fast_network, runtime_network
from ocean.model import build_model
from ocean.tracker import OceanTracker

TOL = 1e-4  # relative to the max |value| of each output (issue 15)


def _net(seed: int = 0, layout: str = "pysot", **head) -> nn.Module:
    """A smoke network drawn by the official reference data's weight rule (conv weights N(0, 0.75^2 / fan-in),
    and non-trivial BatchNorm eval statistics (else folding would be nearly a no-op). Untrained, its
    correlation maps reach ~1e4, so the regression's ``adjust`` is set to 1e-3 to keep exp() in the range a
    trained network works in (about 1-100 px) instead of at its clamp, where exp() turns float32 rounding of
    the maps (1e-6 relative, fast or eager alike) into 1e-4 differences of the boxes."""
    cfg = smoke().model
    cfg = dataclasses.replace(cfg, head=dataclasses.replace(cfg.head, **head),
                              backbone=dataclasses.replace(cfg.backbone, layout=layout))
    torch.manual_seed(seed)
    net = build_model(cfg)
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen) * 0.75 / m.weight[0].numel() ** 0.5)
            if m.bias is not None:
                m.bias.data.copy_(0.01 * torch.randn(m.bias.shape, generator=gen))
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.7 + 0.6 * torch.rand(n, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))
    net.reg_pred.adjust.data.fill_(1e-3)
    return net.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _compare(eager: nn.Module, fast: nn.Module, sizes=(255, 287)) -> dict[str, float]:
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(1, 3, 127, 127, generator=gen) * 255
    errors = {}
    with torch.inference_mode():
        eager.template(z)
        fast.template(z)
        for s in sizes:
            x = torch.rand(1, 3, s, s, generator=gen) * 255
            ref, got = eager.track(x), fast.track(x)
            assert set(ref) == set(got)
            for key, value in ref.items():
                if value is None:
                    assert got[key] is None
                else:
                    assert got[key].shape == value.shape
                    errors[f"{key}_{s}"] = _rel(got[key], value)
    return errors


@pytest.mark.parametrize("variant", [
    {},  # pysot layout, align head, softmax fusion of three dilated encoders
    {"align": False, "fusion": "sum"},
    {"combination": "single"},
    {"correlation": "normalised"},
    {"correlation": "normalised", "correlation_branches": "cls", "align": False},
    {"correlation": "normalised", "colour_cue": True},
])
def test_fast_network_matches_eager(variant):
    eager = _net(**variant)
    before = {k: v.clone() for k, v in eager.state_dict().items()}
    fast = fast_network(eager)
    errors = _compare(eager, fast)
    assert errors and max(errors.values()) <= TOL, errors
    # Something was folded, and the eager network is untouched (its BatchNorms still there, same weights).
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, FusedConv) for m in fast.modules()) > 10
    assert any(isinstance(m, nn.BatchNorm2d) for m in eager.modules())
    assert all(torch.equal(before[k], v) for k, v in eager.state_dict().items())


@pytest.fixture
def one_thread():
    """One torch thread, as evaluation and tuning workers run: the fast path's fused oneDNN calls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
def test_fused_onednn_path_matches_eager(one_thread):
    """The fused calls run the template branch (channels-last features) and only it: in ``track`` they never
    measured faster than the folded plain convolutions (ocean/fast.py)."""
    eager = _net()
    fast = fast_network(eager)
    seen = []
    fast.backbone.register_forward_hook(lambda _m, _i, out: seen.append(out))
    errors = _compare(eager, fast)
    assert max(errors.values()) <= TOL, errors
    template, *tracks = seen  # _compare: one template, then one track per search size
    assert tracks
    assert template.is_contiguous(memory_format=torch.channels_last)  # the fused path ran
    assert not template.is_contiguous()
    assert all(t.is_contiguous() for t in tracks)


def test_fast_network_torchvision_layout_and_batches():
    eager = _net(seed=3, layout="torchvision", template_crop_border=4)
    fast = fast_network(eager)
    assert max(_compare(eager, fast, sizes=(255,)).values()) <= TOL
    # The training forward (batch 3) through the folded copy gives the same maps too.
    gen = torch.Generator().manual_seed(2)
    z, x = torch.rand(3, 3, 127, 127, generator=gen) * 255, torch.rand(3, 3, 255, 255, generator=gen) * 255
    with torch.inference_mode():
        ref, got = eager(z, x), fast(z, x)
    for key in ("cls", "reg", "align"):
        assert _rel(got[key], ref[key]) <= TOL


def test_folding_is_not_trivially_exact():
    """The check bites: a fast copy of a network with other BatchNorm statistics is far off."""
    eager, other = _net(seed=0), _net(seed=0)
    for m in other.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.mul_(2.0)
    assert max(_compare(eager, fast_network(other), sizes=(255,)).values()) > 100 * TOL


def test_runtime_network_caches_until_weights_change():
    net = _net()
    fast = runtime_network(net, "fast")
    assert runtime_network(net, "fast") is fast  # one copy per network: every tracker of a worker shares it
    assert runtime_network(net, "eager") is net
    assert runtime_network(fast, "fast") is fast  # already fast
    with torch.no_grad():
        net.cls_pred.bias.add_(1.0)  # weights changed in place (an optimizer step, load_state_dict)
    rebuilt = runtime_network(net, "fast")
    assert rebuilt is not fast and max(_compare(net, rebuilt, sizes=(255,)).values()) <= TOL
    net.train()
    assert runtime_network(net, "fast") is net  # training mode: never a folded copy
    with pytest.raises(ValueError, match="unknown runtime"):
        runtime_network(net.eval(), "tensorrt")


def test_tracker_boxes_identical_through_the_fast_runtime():
    net = _net()
    gen = np.random.default_rng(0)
    frames = [gen.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(5)]
    for f in frames:  # a bright square that moves: something to follow
        f[100:140, 130:170] = 250
    boxes = {}
    for runtime in ("eager", "fast"):
        trk = OceanTracker(net, dataclasses.replace(tracker_config("vot2018"), runtime=runtime))
        assert (trk.net is net) == (runtime == "eager")
        trk.init(frames[0], [130, 100, 40, 40])
        boxes[runtime] = np.array([trk.track(f)[0] for f in frames[1:]])
    np.testing.assert_allclose(boxes["fast"], boxes["eager"], atol=1e-3)


def test_runtime_is_a_checked_tracker_key():
    cfg = smoke()
    assert cfg.tracker.runtime == "eager"  # the official arithmetic by default
    assert apply_overrides(cfg, ["tracker.runtime=fast"]).tracker.runtime == "fast"
    with pytest.raises(ConfigError, match="runtime"):
        apply_overrides(cfg, ["tracker.runtime=tensorrt"])
