"""The smoke preset's training step on CPU: where its time goes, and what the two kernels it changed save.

The quickstart trains the smoke network in two DDP ranks of one torch thread each, at 8 pairs a rank, and it
is compute-bound (BENCHMARKS.md "Generalisation"): its wall time is this step. A profile of the step showed
two kernels far slower than their arithmetic: torchvision's CPU ``deform_conv2d`` backward (~30 % of the
step) and ``F.avg_pool2d`` computing the window means of the normalised correlation (~12 %). This script
times, in one process, interleaved repeat by repeat:

* ``before``: torchvision's deformable conv and the 2-D ``avg_pool2d`` window means (the code before);
* ``pool``: torchvision's deformable conv and the window sums as shifted additions (``normalised_response``);
* ``now``: the sampled deformable conv too (``model.head.deform_kernel=sampled``, the smoke preset's).

Each variant has its own network and optimizer built from the same seed; the batch is the same random
uint8 pair batch for all. It prints the median step time of each variant, the median of the per-repeat
ratios to ``before``, and the top operators of a profile of ``before`` and ``now``.

    python benchmarks/train_step.py [--threads 1] [--batch 8] [--repeats 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model  # noqa: E402

import ocean.model as model_mod  # noqa: E402
from ocean.config import smoke  # noqa: E402
from ocean.engine import train_step  # noqa: E402
from ocean.model import build_model  # noqa: E402

_CURRENT_RESPONSE = model_mod.normalised_response


def avgpool_response(search: torch.Tensor, corr: torch.Tensor, kernel_hw: tuple[int, int]) -> torch.Tensor:
    """``ocean.model.normalised_response`` as it was: the window means from two ``F.avg_pool2d`` calls."""
    h, w = kernel_hw
    mean = F.avg_pool2d(search, (h, w), stride=1)
    mean_sq = F.avg_pool2d(search.square(), (h, w), stride=1)
    var = (mean_sq - mean.square()).clamp(min=0)
    return corr / (var * (h * w) + model_mod.NCC_EPS).sqrt()


VARIANTS = {  # name -> (deform kernel, window-mean function)
    "before": ("torchvision", avgpool_response),
    "pool": ("torchvision", _CURRENT_RESPONSE),
    "now": ("sampled", _CURRENT_RESPONSE),
}


@contextmanager
def response(fn):
    model_mod.normalised_response = fn
    try:
        yield
    finally:
        model_mod.normalised_response = _CURRENT_RESPONSE


def build(kernel: str, seed: int):
    cfg = smoke()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, head=dataclasses.replace(cfg.model.head, deform_kernel=kernel)))
    torch.manual_seed(seed)
    net = build_model(cfg.model).train()
    return cfg, net, torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)


def batch_of(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"template": torch.randint(0, 256, (n, 127, 127, 3), generator=gen, dtype=torch.uint8),
            "search": torch.randint(0, 256, (n, 255, 255, 3), generator=gen, dtype=torch.uint8),
            "search_box": torch.tensor([[100.0, 96.0, 164.0, 150.0]]).repeat(n, 1),
            "search_shift": torch.zeros(n, 2)}


def top_ops(step, rows: int) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [(e.key, round(100 * e.self_cpu_time_total / total, 1)) for e in events[:rows]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a quickstart rank runs 1)")
    ap.add_argument("--batch", type=int, default=8, help="pairs per step (a quickstart rank's 8)")
    ap.add_argument("--repeats", type=int, default=12, help="timed repeats per variant, after 2 warm-ups")
    ap.add_argument("--profile-rows", type=int, default=8, help="operators listed per profile (0: none)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = batch_of(args.batch, 0)
    nets = {name: build(kernel, 0) for name, (kernel, _) in VARIANTS.items()}

    def step(name):
        cfg, net, opt = nets[name]
        with response(VARIANTS[name][1]):
            train_step(net, batch, cfg, opt)

    load0 = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    order = list(VARIANTS)
    for r in range(args.repeats + 2):
        for name in order[r % len(order):] + order[:r % len(order)]:  # rotate the order every repeat
            t = time.perf_counter()
            step(name)
            if r >= 2:
                times[name].append(time.perf_counter() - t)
    load1 = os.getloadavg()[0]
    res = {"threads": args.threads, "batch": args.batch, "repeats": args.repeats, "cpu": cpu_model(),
           "load_1min": [round(load0, 2), round(load1, 2)], "torch": torch.__version__, "variants": {}}
    for name in VARIANTS:
        ratios = [t / b for t, b in zip(times[name], times["before"], strict=True)]
        res["variants"][name] = {"median_ms": round(1000 * statistics.median(times[name]), 1),
                                 "ratio_to_before": round(statistics.median(ratios), 3)}
    if args.profile_rows:
        res["profile"] = {name: top_ops(lambda n=name: step(n), args.profile_rows) for name in ("before", "now")}
    print(f"Smoke training step, batch {args.batch}, {args.threads} torch thread(s), {res['cpu']}, "
          f"load {load0:.1f} -> {load1:.1f}, median of {args.repeats}\n")
    print("| variant | deformable conv | window means | step | vs before |")
    print("|---|---|---|---|---|")
    for name, (kernel, fn) in VARIANTS.items():
        v = res["variants"][name]
        means = "avg_pool2d" if fn is avgpool_response else "shifted additions"
        print(f"| {name} | {kernel} | {means} | {v['median_ms']} ms | {v['ratio_to_before']:.2f}x |")
    for name, ops in res.get("profile", {}).items():
        print(f"\nSelf CPU time of `{name}` (3 steps): " + ", ".join(f"{k} {p} %" for k, p in ops))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
