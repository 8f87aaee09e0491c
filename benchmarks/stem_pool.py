"""The stem's max pooling (``ocean.backbone.StemMaxPool``) against plain ``nn.MaxPool2d``, whole network.

One process, random weights (speed does not depend on them), batch 1, inference mode, the two poolings
swapped into the same network repeat by repeat (their order alternating): template (127) and track (255)
of the smoke and paper presets. Prints each median and the median of the per-repeat ratios stem / plain,
and checks that both give the same outputs bit for bit.

    python benchmarks/stem_pool.py [--threads 1] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (evaluation workers use 1)")
    ap.add_argument("--repeats", type=int, default=15, help="timed repeats per pooling (the paper net: half)")
    args = ap.parse_args()

    import torch
    from torch import nn

    from ocean.backbone import StemMaxPool
    from ocean.config import paper, smoke
    from ocean.model import build_model

    torch.set_num_threads(args.threads)
    print(f"{cpu_model()}, {os.cpu_count()} cores, {args.threads} thread(s), load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| preset | operation | plain nn.MaxPool2d | StemMaxPool | stem / plain |")
    print("|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for name, cfg in (("smoke", smoke()), ("paper", paper())):
        net = build_model(cfg.model).eval()
        pools = {"plain": nn.MaxPool2d(3, stride=2, padding=1), "stem": StemMaxPool(3, stride=2, padding=1)}
        z, x = torch.randn(1, 3, 127, 127, generator=gen), torch.randn(1, 3, 255, 255, generator=gen)
        repeats = args.repeats if name == "smoke" else max(3, args.repeats // 2)
        for op in ("template", "track"):
            times: dict[str, list[float]] = {k: [] for k in pools}
            outs: dict[str, object] = {}
            with torch.inference_mode():
                net.template(z)
                for r in range(repeats + 1):  # repeat 0 warms up
                    for k in (list(pools) if r % 2 else list(pools)[::-1]):
                        net.backbone.maxpool = pools[k]
                        t0 = time.perf_counter()
                        outs[k] = net.template_kernels(z) if op == "template" else net.track(x)
                        if r:
                            times[k].append(time.perf_counter() - t0)
            flat = {k: (v[0] + v[1] if op == "template" else [t for t in v.values() if t is not None])
                    for k, v in outs.items()}  # template: (cls, reg) kernel lists; track: the output maps
            same = all(torch.equal(p, s) for p, s in zip(flat["plain"], flat["stem"], strict=True))
            assert same, f"{name} {op}: the two poolings gave different outputs"
            ratio = statistics.median(s / p for s, p in zip(times["stem"], times["plain"], strict=True))
            print(f"| {name} | {op} | {statistics.median(times['plain']) * 1e3:.1f} ms | "
                  f"{statistics.median(times['stem']) * 1e3:.1f} ms | {ratio:.3f} |")
    print(f"outputs bit-equal; load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
