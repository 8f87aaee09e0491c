"""The network and the tracker on a CUDA device: the same numbers as on the CPU. Skips without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ocean.config import paper, smoke, tracker_config
from ocean.model import build_model
from ocean.tracker import OceanTracker

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("preset", [paper, smoke])
def test_forward_on_cuda_matches_cpu(preset):
    torch.manual_seed(0)
    net = build_model(preset().model).eval()
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(2, 3, 127, 127, generator=gen) * 255
    x = torch.rand(2, 3, 255, 255, generator=gen) * 255
    with torch.no_grad():
        cpu = net(z, x)
        cuda = net.to("cuda")(z.to("cuda"), x.to("cuda"))
    for key in ("cls", "reg", "align"):
        if cpu.get(key) is not None:
            # cuDNN may use TF32 for float32 convolutions: allow 1e-3 of the map's largest value
            assert _max_rel(cuda[key], cpu[key]) < 1e-3, key


def test_tracker_boxes_on_cuda_match_cpu():
    torch.manual_seed(0)
    net = build_model(smoke().model).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(5)]
    boxes = {}
    for device in ("cpu", "cuda"):
        tracker = OceanTracker(net.to(device), tracker_config("otb"), device=device)
        tracker.init(frames[0], np.array([100.0, 80.0, 40.0, 50.0]))
        boxes[device] = np.stack([tracker.track(f)[0] for f in frames[1:]])
    assert np.abs(boxes["cuda"] - boxes["cpu"]).max() < 0.05


def test_online_tracker_runs_on_cuda():
    """`tracker.online=true` on a VOT preset (the official online entry, facts §10.4) with the net on CUDA: the
    online module follows the net's device and tracks."""
    from ocean.config import layered_tracker_config

    torch.manual_seed(0)
    net = build_model(smoke().model).eval().to("cuda")
    trk = OceanTracker(net, layered_tracker_config(None, "vot2018", ["tracker.online=true"]))
    assert trk.online is not None and trk.online.device.type == "cuda" and not trk.cfg.use_align
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(4)]
    trk.init(frames[0], [140, 100, 40, 30])
    for frame in frames[1:]:
        box, score = trk.track(frame)
        assert np.isfinite(box).all() and 0.0 <= score <= 1.0
