"""How much a Winograd F(4x4, 3x3) convolution could save on the paper network's 3x3 layers (CPU, batch 1).

Issue 15 item 1 asks for ``track`` at <= 0.8x of the eager network's time. ``model_speed.py --runtimes``
shows the eager convolutions already run at about the rate of a large float32 matrix product, so only less
arithmetic can go further. Winograd's F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016) computes each 4x4 output tile of a stride-1 3x3 convolution with 36 multiplications
per input-output channel pair instead of 144. This probe writes it in plain PyTorch (input tiles gathered
with ``unfold`` and transformed by one 36 x 36 matrix product, the 36 channel products as one ``bmm``, the
output transform as one 16 x 36 product) and times it against ``F.conv2d`` on the layer shapes of the paper
network's ``track`` at 255 (``backbone.layer3.0.downsample``, the bottleneck 3x3 convolutions, the
towers), interleaved, median of ``--repeats``. It also prints each layer's largest error relative to the
largest output value: the fast path's contract is 1e-4.

    python benchmarks/winograd_probe.py [--threads 2] [--repeats 20] [--network [--min-channels 128]]

``--network`` then times the whole paper network (random init) three ways, interleaved: eager, the ``fast``
runtime, and the ``fast`` runtime with every stride-1 3x3 convolution of at least ``--min-channels`` inputs
(dilated and unpadded ones included) on Winograd, with the outputs' error against eager.

Not a runtime: nothing in ``ocean/`` uses it (BENCHMARKS.md "Inference fast path" says why).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)

# F(4x4, 3x3) transforms (Lavin & Gray 2016, Sec. 4.2)
_BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
_AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                   dtype=torch.float64)
_BB = torch.kron(_BT, _BT).float()  # (36, 36): transformed tile = BB @ flattened 6x6 input tile
_AA = torch.kron(_AT, _AT).float()  # (16, 36): flattened 4x4 output tile = AA @ transformed product

# (in, out, map side) of the stride-1, padding-1 3x3 convolutions in the paper network's track at 255
LAYERS = {
    "layer3.0.downsample (512 -> 1024, 31x31)": (512, 1024, 31),
    "layer3 bottleneck 3x3 (256, 31x31)": (256, 256, 31),
    "tower (256, 25x25)": (256, 256, 25),
    "layer2 bottleneck 3x3 (128, 31x31)": (128, 128, 31),
    "layer1 bottleneck 3x3 (64, 63x63)": (64, 64, 63),
}


def winograd_weight(w: torch.Tensor) -> torch.Tensor:
    """(Co, Ci, 3, 3) -> (36, Co, Ci): G w G^T per channel pair, computed in float64."""
    u = _G @ w.double() @ _G.T
    return u.permute(2, 3, 0, 1).reshape(36, w.shape[0], w.shape[1]).float().contiguous()


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None,
                     padding: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """``F.conv2d(x, w, bias, padding=padding, dilation=dilation)`` (stride 1) with ``u = winograd_weight(w)``.

    A dilated convolution is split by output phase: the outputs ``(dh m + i, dw n + j)`` of phase ``(i, j)``
    are a plain 3x3 convolution of the padded input's sub-image ``[i::dh, j::dw]``, so every phase's tiles
    go into the same ``bmm``.
    """
    n, c, h, w = x.shape
    (ph, pw), (dh, dw) = padding, dilation
    co = u.shape[1]
    ho, wo = h + 2 * ph - 2 * dh, w + 2 * pw - 2 * dw
    th, tw = math.ceil(math.ceil(ho / dh) / 4), math.ceil(math.ceil(wo / dw) / 4)  # 4x4 output tiles per phase
    hp, wp = dh * (4 * th + 2), dw * (4 * tw + 2)
    xp = F.pad(x, (pw, max(wp - w - pw, 0), ph, max(hp - h - ph, 0)))[:, :, :hp, :wp]
    sub = xp.reshape(n, c, 4 * th + 2, dh, 4 * tw + 2, dw).permute(0, 1, 3, 5, 2, 4)
    tiles = sub.unfold(4, 6, 4).unfold(5, 6, 4)  # (n, c, dh, dw, th, tw, 6, 6)
    t = n * dh * dw * th * tw
    tiles = tiles.permute(1, 0, 2, 3, 4, 5, 6, 7).reshape(c * t, 36)
    v = torch.matmul(_BB, tiles.T).view(36, c, t)
    m = torch.bmm(u, v)
    y = torch.mm(_AA, m.view(36, co * t)).view(4, 4, co, n, dh, dw, th, tw)
    y = y.permute(3, 2, 6, 0, 4, 7, 1, 5).reshape(n, co, 4 * th * dh, 4 * tw * dw)[:, :, :ho, :wo]
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def probe(ci: int, co: int, side: int, repeats: int, gen: torch.Generator) -> tuple[dict, float, float]:
    """Median ms of the direct and Winograd convolutions and of the Winograd ``bmm`` alone, the median
    per-repeat ratio Winograd / direct, and the largest error relative to the largest output value."""
    x = torch.randn(1, ci, side, side, generator=gen).relu()  # post-ReLU features
    w = torch.randn(co, ci, 3, 3, generator=gen) / (3 * ci ** 0.5)
    b = torch.randn(co, generator=gen)
    u = winograd_weight(w)
    t = (side + 3) // 4
    v = torch.randn(36, ci, t * t, generator=gen)
    fns = {"direct": lambda: F.conv2d(x, w, b, padding=1), "winograd": lambda: winograd_conv3x3(x, u, b),
           "bmm": lambda: torch.bmm(u, v)}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        ref, out = fns["direct"](), fns["winograd"]()
        err = float((out - ref).abs().max() / ref.abs().max())
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                samples[k].append((time.perf_counter() - t0) * 1000)
    ms = {k: statistics.median(v) for k, v in samples.items()}
    ratio = statistics.median(wi / di for wi, di in zip(samples["winograd"], samples["direct"], strict=True))
    return ms, ratio, err


def winograd_network(eager: torch.nn.Module, min_channels: int) -> tuple[torch.nn.Module, int]:
    """A ``fast_network`` copy of ``eager`` whose stride-1 3x3 convolutions with at least ``min_channels``
    inputs run :func:`winograd_conv3x3` (then the residual and ReLU), and how many were swapped."""
    from ocean.fast import FusedConv, fast_network

    net = fast_network(eager)
    swapped = 0
    for m in net.modules():
        if (isinstance(m, FusedConv) and tuple(m.weight.shape[2:]) == (3, 3) and tuple(m.stride) == (1, 1)
                and m.groups == 1 and m.weight.shape[1] >= min_channels):
            u = winograd_weight(m.weight)

            def forward(x, residual=None, m=m, u=u):
                y = winograd_conv3x3(x, u, m.bias, tuple(m.padding), tuple(m.dilation))
                y = y if residual is None else y + residual
                return F.relu(y) if m.relu else y

            m.forward = forward
            swapped += 1
    return net, swapped


def compare_network(repeats: int, min_channels: int) -> None:
    """eager, fast and fast + Winograd on the paper network (random init), timed as model_speed.py does."""
    from model_speed import network_ops, time_interleaved  # benchmarks/model_speed.py

    from ocean.config import preset
    from ocean.fast import fast_network
    from ocean.model import build_model

    torch.manual_seed(0)
    eager = build_model(preset("paper").model).eval()
    wino, swapped = winograd_network(eager, min_channels)
    nets = {"eager": eager, "fast": fast_network(eager), "fast + Winograd": wino}
    ops = network_ops()
    with torch.inference_mode():
        outs = {}
        for r, net in nets.items():
            ops["template"](net)
            outs[r] = ops["track_255"](net)
    errs = {k: float((outs["fast + Winograd"][k] - outs["eager"][k]).abs().max() / outs["eager"][k].abs().max())
            for k in ("cls", "reg", "align") if outs["eager"].get(k) is not None}
    timed = time_interleaved(nets, repeats)
    print(f"{swapped} convolutions on Winograd (>= {min_channels} input channels); track 255 outputs against "
          "eager, max error / max value: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    print("| operation | " + " | ".join(nets) + " |")
    print("|---" * (len(nets) + 1) + "|")
    for op in ("template", "track_255", "track_287"):
        cells = [f"{timed['ms'][f'{op}/{r}']:.1f} ms ({timed['ratio_to_eager'].get(f'{op}/{r}', 1.0):.2f}x)"
                 for r in nets]
        print(f"| {op} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--network", action="store_true",
                   help="also time the whole paper network: eager, fast, and fast with Winograd layers")
    p.add_argument("--min-channels", type=int, default=128,
                   help="with --network: the fewest input channels a 3x3 layer needs to go on Winograd")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{cpu_model()}, threads {a.threads}, torch {torch.__version__}, {a.repeats} interleaved repeats, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")
    print("| layer | direct | Winograd (its bmm) | Winograd / direct | max error / max output |")
    print("|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for name, (ci, co, side) in LAYERS.items():
        ms, ratio, err = probe(ci, co, side, a.repeats, gen)
        print(f"| {name} | {ms['direct']:.2f} ms | {ms['winograd']:.2f} ms ({ms['bmm']:.2f}) | {ratio:.2f}x "
              f"| {err:.1e} |")
    if a.network:
        compare_network(max(3, a.repeats // 2), a.min_channels)


if __name__ == "__main__":
    main()
