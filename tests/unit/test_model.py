"""The network: parameter counts (facts §16), sizes, the alignment sampling, guards. No Ray."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch
from torchvision.ops import deform_conv2d

from ocean.backbone import ResNet50Backbone, StemMaxPool, load_backbone_weights
from ocean.config import BackboneConfig, ModelConfig, apply_overrides, paper, smoke
from ocean.geometry import score_size
from ocean.model import (
    AlignHead,
    ColourCue,
    FeatureCombination,
    box_offsets,
    build_model,
    deform_conv3x3_sampled,
    model_info,
    normalised_response,
    unit_kernel,
    xcorr_depthwise,
)


def test_paper_parameter_counts_equal_the_official_model():
    info = model_info(paper().model)
    # facts §16, measured on the official network
    assert info["params_total"] == 26_459_217
    assert info["params_backbone"] == 13_786_176
    assert info["params_neck"] == 262_656
    assert info["params_head"] == 11_820_304
    assert info["params_align"] == 590_081
    assert info["template_feature"] == [1, 256, 7, 7]
    assert info["score_size"] == {255: 25, 271: 27, 287: 29}


def test_without_alignment_and_plain_sum():
    cfg = apply_overrides(paper(), ["model.head.align=false"])
    assert model_info(cfg.model, search_sizes=())["params_total"] == 25_869_136  # facts §16 "total without alignment"
    cfg = apply_overrides(paper(), ["model.head.fusion=sum"])
    assert model_info(cfg.model, search_sizes=())["params_head"] == 11_820_304 - 6  # two 3-vectors of fusion logits gone


@pytest.mark.parametrize("s", [255, 271, 287, 303])
def test_score_size_formula_and_batch_agnostic_forward(s):
    net = build_model(smoke().model).train()
    out = net(torch.rand(3, 3, 127, 127) * 255, torch.rand(3, 3, s, s) * 255)
    n = score_size(s)
    assert out["cls"].shape == (3, 1, n, n)
    assert out["reg"].shape == (3, 4, n, n)
    assert out["align"].shape == (3, 1, n, n)
    assert (out["reg"] > 0).all()


def test_backbone_feature_sizes_follow_facts_table():
    bb = ResNet50Backbone(layout="pysot", width=8, blocks=(1, 1, 1)).eval()
    # facts §1.2: 127 -> 15, 255 -> 31, 271 -> 33, 287 -> 35
    for s, f in [(127, 15), (255, 31), (271, 33), (287, 35)]:
        assert bb(torch.zeros(1, 3, s, s)).shape[-1] == f
    tv = ResNet50Backbone(layout="torchvision", width=8, blocks=(1, 1, 1)).eval()
    assert tv(torch.zeros(1, 3, 127, 127)).shape[-1] == 16
    assert tv(torch.zeros(1, 3, 255, 255)).shape[-1] == 32


def test_torchvision_layout_loads_torchvision_resnet50_weights(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    ref = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        ref.conv1.weight.normal_()
    path = tmp_path / "resnet50.pth"
    torch.save(ref.state_dict(), path)
    cfg = ModelConfig(backbone=BackboneConfig(layout="torchvision", pretrained=str(path),
                                              input_norm="imagenet_rgb"))
    net = build_model(cfg)
    assert torch.equal(net.backbone.conv1.weight, ref.conv1.weight)
    assert torch.equal(net.backbone.layer3[5].conv3.weight, ref.layer3[5].conv3.weight)
    assert net.input_norm == "imagenet_rgb"
    # the pysot layout must refuse these weights with a clear message (3x3 vs 1x1 downsample)
    with pytest.raises(ValueError, match="other layout"):
        load_backbone_weights(ResNet50Backbone(layout="pysot"), ref.state_dict())


@pytest.mark.parametrize("shape", [(1, 8, 67, 67), (3, 16, 64, 64), (2, 4, 9, 10)])
def test_the_stem_max_pooling_is_bit_equal_with_and_without_gradients(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    x[0, 0, 0, :3] = float("-inf")  # padding and a -inf input must not mix up
    x[-1, -1, 4, 4] = float("nan")  # a NaN propagates in both kernels
    pool, ref = StemMaxPool(3, stride=2, padding=1), torch.nn.MaxPool2d(3, stride=2, padding=1)
    want = ref(x)
    with torch.inference_mode():
        got = pool(x)  # the channels-last kernel
    assert got.is_contiguous() and got.shape == want.shape
    assert torch.equal(got.nan_to_num(), want.nan_to_num()) and torch.equal(got.isnan(), want.isnan())
    xa, xb = x.nan_to_num().requires_grad_(), x.nan_to_num().requires_grad_()
    (pool(xa) * torch.arange(want[0].numel()).view(want.shape[1:])).sum().backward()  # training: NCHW kernel
    (ref(xb) * torch.arange(want[0].numel()).view(want.shape[1:])).sum().backward()
    assert torch.equal(xa.grad, xb.grad)


def test_xcorr_depthwise_matches_a_loop():
    x, k = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 2, 3)
    out = xcorr_depthwise(x, k)
    assert out.shape == (2, 3, 5, 5)
    b, c, i, j = 1, 2, 3, 4
    expected = (x[b, c, i:i + 2, j:j + 3] * k[b, c]).sum()
    assert torch.allclose(out[b, c, i, j], expected, atol=1e-5)


def test_alignment_with_zero_offsets_is_a_plain_3x3_conv():
    torch.manual_seed(0)
    head = AlignHead(8)
    feats = torch.randn(2, 8, 9, 9)
    zero = torch.zeros(2, 18, 9, 9)
    plain = torch.nn.functional.conv2d(feats, head.weight, padding=1)
    assert torch.allclose(deform_conv2d(feats, zero, head.weight, padding=(1, 1)), plain, atol=1e-5)


def test_the_nine_taps_sit_on_the_box_for_a_hand_picked_box():
    # Cell (12, 12) of a 25x25 map (S = 255) sits at pixel (127, 127). Predicted distances
    # l, t, r, b = 16, 8, 24, 40 -> box x 111..151, y 119..167.
    n, s = 25, 255
    reg = torch.full((1, 4, n, n), 10.0)
    reg[0, :, 12, 12] = torch.tensor([16.0, 8.0, 24.0, 40.0])
    off = box_offsets(reg, s)
    # By hand (facts §4.1): cx_f = (131 - 127)/8 + 12 = 12.5, cy_f = (143 - 127)/8 + 12 = 14,
    # w_f = (40 + 1)/8 = 5.125, h_f = (48 + 1)/8 = 6.125.
    cx, cy, hw, hh = 12.5, 14.0, 5.125 / 2, 6.125 / 2
    for k in range(9):
        ky, kx = k // 3 - 1, k % 3 - 1
        y = 12 + ky + off[0, 2 * k, 12, 12].item()
        x = 12 + kx + off[0, 2 * k + 1, 12, 12].item()
        assert y == pytest.approx(cy + ky * hh, abs=1e-5)
        assert x == pytest.approx(cx + kx * hw, abs=1e-5)


def test_deform_conv_reads_the_taps_where_the_offsets_say():
    # A ramp feature f(y, x) = 3y + 5x and a kernel that keeps only tap k: the output at the cell must
    # be the ramp at that tap's sampling point (bilinear sampling is exact on a linear ramp).
    n = 25
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                            indexing="ij")
    feats = (3 * ys + 5 * xs).view(1, 1, n, n)
    reg = torch.full((1, 4, n, n), 10.0)
    reg[0, :, 12, 12] = torch.tensor([16.0, 8.0, 24.0, 40.0])
    off = box_offsets(reg, 255)
    cx, cy, hw, hh = 12.5, 14.0, 5.125 / 2, 6.125 / 2
    for k in range(9):
        weight = torch.zeros(1, 1, 3, 3)
        weight.view(-1)[k] = 1.0
        out = deform_conv2d(feats, off, weight, padding=(1, 1))
        ky, kx = k // 3 - 1, k % 3 - 1
        assert out[0, 0, 12, 12].item() == pytest.approx(3 * (cy + ky * hh) + 5 * (cx + kx * hw), abs=1e-3)


@pytest.mark.parametrize("hw", [(25, 25), (9, 13)])
def test_the_sampled_deform_conv_equals_torchvision_forward_and_backward(hw):
    """The smoke preset's kernel (``model.head.deform_kernel=sampled``) is torchvision's convolution: taps
    inside the map, on its border, between the last cell and the zero padding, and far outside."""
    h, w = hw
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, h, w, generator=gen, requires_grad=True)
    off = torch.randn(2, 18, h, w, generator=gen) * 4
    off[0, :, 0, 0] = -1.5  # every tap of a corner cell partly or wholly outside
    off[1, :, -1, -1] = 0.5
    off[1, 0, 2, 2] = float(h + w)  # far outside: reads zeros
    off.requires_grad_()
    weight = torch.randn(5, 6, 3, 3, generator=gen, requires_grad=True)
    ref = deform_conv2d(x, off, weight, padding=(1, 1))
    got = deform_conv3x3_sampled(x, off, weight)
    assert got.shape == ref.shape == (2, 5, h, w)
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    grads_ref = torch.autograd.grad((ref * ref.detach().sin()).sum(), (x, off, weight))
    grads_got = torch.autograd.grad((got * ref.detach().sin()).sum(), (x, off, weight))
    for name, a, b in zip(("features", "offsets", "weight"), grads_got, grads_ref, strict=True):
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()), name


def test_the_deform_kernel_option_changes_the_arithmetic_only():
    torch.manual_seed(0)
    tv, sampled = AlignHead(8, "torchvision"), AlignHead(8, "sampled")
    sampled.load_state_dict(tv.state_dict())
    feats, off = torch.randn(2, 8, 25, 25), torch.randn(2, 18, 25, 25) * 3
    a, b = tv(feats, off), sampled(feats, off)
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
    assert smoke().model.head.deform_kernel == "sampled" and paper().model.head.deform_kernel == "torchvision"
    with pytest.raises(ValueError, match="unknown deformable-conv kernel"):
        AlignHead(8, "mmcv")


def test_official_center_origin_is_one_sixteenth_cell_off():
    reg = torch.full((1, 4, 25, 25), 10.0)
    grid = box_offsets(reg, 255)
    official = box_offsets(reg, 255, center_origin=127.5)
    assert torch.allclose(grid - official, torch.full_like(grid, 1 / 16), atol=1e-6)


def test_normalised_correlation_is_the_pearson_correlation_of_each_window():
    gen = torch.Generator().manual_seed(0)
    x, k = torch.rand(2, 3, 12, 12, generator=gen), torch.rand(2, 3, 4, 5, generator=gen)
    out = normalised_response(x, xcorr_depthwise(x, unit_kernel(k)), (4, 5))
    assert out.shape == (2, 3, 9, 8)
    for b, c, i, j in ((1, 2, 3, 4), (0, 0, 0, 0), (0, 1, 8, 7)):
        window, kern = x[b, c, i:i + 4, j:j + 5].flatten(), k[b, c].flatten()
        expected = torch.corrcoef(torch.stack([window, kern]))[0, 1]
        assert torch.allclose(out[b, c, i, j], expected, atol=1e-4)
    # An affine change of a search channel (gain > 0, offset) leaves its response unchanged, and the template
    # itself, pasted into the search region, scores 1 where it sits: a busy region no longer wins by energy.
    scaled = 7.0 * x + 3.0
    again = normalised_response(scaled, xcorr_depthwise(scaled, unit_kernel(k)), (4, 5))
    assert torch.allclose(again, out, atol=1e-3)
    x[0, :, 2:6, 3:8] = k[0]
    hit = normalised_response(x, xcorr_depthwise(x, unit_kernel(k)), (4, 5))
    assert torch.allclose(hit[0, :, 2, 3], torch.ones(3), atol=1e-4)
    assert (hit[0].flatten(1).argmax(1) == 2 * 8 + 3).all()


def test_normalised_correlation_option_builds_per_branch():
    cfg = smoke()  # the smoke preset's choice (the paper preset keeps the official plain xcorr)
    net = build_model(cfg.model)
    assert net.cls_encode.correlation == net.reg_encode.correlation == "normalised"
    net = build_model(apply_overrides(cfg, ["model.head.correlation_branches=cls"]).model).eval()
    assert (net.cls_encode.correlation, net.reg_encode.correlation) == ("normalised", "plain")
    z = torch.rand(1, 3, 127, 127, generator=torch.Generator().manual_seed(1)) * 255
    net.template(z)
    assert all(torch.allclose(k.flatten(2).mean(2), torch.zeros(1), atol=1e-5) for k in net._kernels[0])
    out = net.track(torch.rand(1, 3, 255, 255, generator=torch.Generator().manual_seed(2)) * 255)
    assert out["cls"].shape == (1, 1, 25, 25) and torch.isfinite(out["cls"]).all()
    plain = build_model(apply_overrides(cfg, ["model.head.correlation=plain"]).model)
    assert plain.cls_encode.correlation == plain.reg_encode.correlation == "plain"
    assert paper().model.head.correlation == "plain"  # the official xcorr
    with pytest.raises(ValueError, match="correlation"):
        FeatureCombination(8, correlation="cosine")


def test_the_colour_cue_finds_the_templates_colours_and_not_a_recoloured_twin():
    """``model.head.colour_cue``: the template's 8 x 8-cell colour layout correlated with the search region's.
    Pasted into a search crop on a cell boundary, the template scores 1 in every channel at its place; the
    same pattern with its colours turned (a look-alike) scores lower there in every channel whose contrast the
    turn reverses (each channel's layout is compared, not the absolute colour); the zero-initialised projection
    starts the network as if the cue were absent."""
    gen = torch.Generator().manual_seed(3)
    cue = ColourCue(channels=3, stride=8, border=4)
    with torch.no_grad():
        cue.proj.weight.copy_(torch.eye(3).view(3, 3, 1, 1))  # the raw per-channel responses
    z = torch.full((1, 3, 127, 127), 120.0)  # on grey
    z[:, :, 40:90, 30:100] = torch.tensor([30.0, 200.0, 90.0]).view(1, 3, 1, 1)  # a two-colour target
    z[:, :, 60:70, 50:60] = torch.tensor([220.0, 20.0, 160.0]).view(1, 3, 1, 1)
    x = torch.rand(1, 3, 255, 255, generator=gen) * 255
    x[:, :, 64:191, 64:191] = z[0]  # search cell 8 = template cell 0: the response's centre cell (12, 12)
    twin = x.clone()
    twin[:, :, 64:191, 64:191] = z[0, [1, 2, 0]]  # the same shapes, the colours turned
    kernel = cue.encode_template(z)
    assert kernel.shape == (1, 3, 7, 7)
    with torch.no_grad():
        response, turned = cue(kernel, x), cue(kernel, twin)
    assert response.shape == (1, 3, 25, 25)
    assert torch.allclose(response[0, :, 12, 12], torch.ones(3), atol=1e-3)
    assert float(response.abs().max()) <= 1 + 1e-4
    # blue and green reverse their contrast with the grey, red keeps its (darker, lighter)
    assert turned[0, :2, 12, 12].max() < -0.9 and turned[0, 2, 12, 12] > 0.9
    net = build_model(apply_overrides(smoke(), ["model.head.colour_cue=true"]).model).eval()
    assert net.colour is not None and not net.colour.proj.weight.any() and not net.colour.proj.bias.any()
    assert net.colour in net.parts()["head"]  # trained with the head (ocean.engine.build_optimizer)
    net.template(z)
    assert len(net._kernels[0]) == len(net.cls_encode.template_convs) + 1  # the colour kernel rides last
    assert net.track(x)["cls"].shape == (1, 1, 25, 25)
    assert build_model(smoke().model).colour is None and paper().model.head.colour_cue is False


def test_template_track_equals_training_forward():
    torch.manual_seed(1)
    net = build_model(smoke().model).eval()
    z, x = torch.rand(1, 3, 127, 127) * 255, torch.rand(1, 3, 271, 271) * 255
    net.template(z)
    tracked = net.track(x)
    with torch.no_grad():
        full = net(z, x)
    for key in ("cls", "reg", "align"):
        assert torch.allclose(tracked[key], full[key], atol=1e-4)
    with pytest.raises(RuntimeError, match="template"):
        build_model(smoke().model).track(x)


def test_exponent_clamp_keeps_boxes_finite_and_offsets_bounded():
    net = build_model(smoke().model).eval()
    with torch.no_grad():
        net.reg_pred.bias.fill_(1e4)  # an exploded regression: exp(1e4) would be inf
    net.template(torch.rand(1, 3, 127, 127) * 255)
    out = net.track(torch.rand(1, 3, 255, 255) * 255)
    assert torch.isfinite(out["reg"]).all()
    assert torch.isfinite(out["align"]).all()
    assert out["reg"].max().item() == pytest.approx(torch.exp(torch.tensor(10.0)).item(), rel=1e-4)
    off = box_offsets(out["reg"], 255)
    assert off.abs().max() <= 25 + 25 + 2


def test_diverged_weights_and_overflowing_input_give_a_clear_error_not_a_crash():
    # facts §16: the official CPU path segfaulted inside deform_conv2d on NaN offsets. Run in a
    # subprocess so that a segfault fails this test instead of killing the test run.
    # Whether a 1e38 input reaches the regression output as NaN depends on the CPU's kernels (some
    # max / ReLU kernels drop NaN), so the overflowing input must only not crash; NaN weights (a
    # diverged run) make the box distances non-finite on every CPU and must give the clear error.
    code = textwrap.dedent("""
        import torch
        from ocean.config import smoke
        from ocean.model import build_model, NonFiniteOutputError

        def run(net, value):
            net.template(torch.full((1, 3, 127, 127), value))
            try:
                out = net.track(torch.full((1, 3, 255, 255), value))
            except NonFiniteOutputError as e:
                return f"CLEAR ERROR: {e}"
            finite = all(torch.isfinite(v).all() for v in out.values() if v is not None)
            return "FINITE" if finite else "NON-FINITE OUTPUT"

        net = build_model(smoke().model).eval()
        print("overflow", run(net, 1e38))
        with torch.no_grad():
            net.reg_pred.bias.fill_(float("nan"))  # the last op before exp: no ReLU can drop it
        print("diverged", run(net, 100.0))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"process died (code {proc.returncode}): {proc.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["overflow"] == "FINITE" or lines["overflow"].startswith(
        "CLEAR ERROR: the regression branch produced non-finite"), lines
    assert lines["diverged"].startswith("CLEAR ERROR: the regression branch produced non-finite"), lines


def test_model_config_is_frozen():
    cfg = paper()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.stride = 16  # type: ignore[misc]


def test_ablation_switches_build_and_run():
    # paper Table 4 baseline: a single (1,1) encoder per branch, no alignment head
    cfg = apply_overrides(smoke(), ["model.head.combination=single", "model.head.align=false"])
    net = build_model(cfg.model)
    assert len(net.cls_encode.search_convs) == 1 and net.align is None
    out = net(torch.rand(2, 3, 127, 127) * 255, torch.rand(2, 3, 255, 255) * 255)
    assert out["cls"].shape == (2, 1, 25, 25) and out["align"] is None
    full = model_info(smoke().model)["params_head"]
    assert model_info(cfg.model)["params_head"] < full
