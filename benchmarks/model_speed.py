"""CPU (and, when present, GPU + AMP) speed of the Ocean network: template, track, training step.

Measures, for the paper and smoke presets:
  * ``template``: one 127x127 template, batch 1, eval mode;
  * ``track``: one search crop (255 and 287), batch 1, eval mode, with the alignment head;
  * ``train_step``: forward + loss + backward + SGD step at batch 8 (255), train mode;
and the peak resident memory growth of the training step (``ru_maxrss`` delta, measured in a fresh
subprocess per preset so the presets do not mask each other).

Timings are medians of ``--repeats`` runs after a warm-up, with ``torch.set_num_threads(--threads)``. The
official model's forward times on this kind of machine (ocean_facts §16: template 55 ms, track 323 ms at 255,
387 ms at 287; 2 threads, median of 5) are printed beside ours as ratios. Those were measured on another
day: compare ratios measured in the same run where possible (the paper vs smoke rows here are).

    python benchmarks/model_speed.py [--repeats 5] [--threads 2] [--json out.json] [--device cuda]

``--runtimes eager,fast,onnx`` instead compares the inference runtimes of ``tracker.runtime`` (ocean/fast.py,
ocean/export.py) on the paper network (random init): one process, the runtimes interleaved repeat by repeat
(their order rotating), template and track at 255 and 287; it prints each median and the median of the
per-repeat ratios to eager, with the load average before and after. It also prints how close the eager
network is to the machine's arithmetic limit: the convolutions' floating-point operations per operation
(counted on the eager network's ``nn.Conv2d`` modules), the rate the eager median achieves, and a large
float32 matrix product's rate in the same process and thread count (``torch.mm`` of 2048 x 2048, the best
rate the machine's BLAS reaches); a runtime that computes the same arithmetic cannot beat that ratio.

    python benchmarks/model_speed.py --runtimes eager,fast,onnx [--repeats 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

OFFICIAL_MS = {"template": 55.0, "track_255": 323.0, "track_287": 387.0}  # ocean_facts §16


def _time(fn, repeats: int, sync) -> float:
    fn()
    sync()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def measure(preset_name: str, repeats: int, device: str, amp: bool, batch: int) -> dict:
    from ocean.config import preset
    from ocean.losses import make_targets, ocean_loss
    from ocean.model import build_model

    cfg = preset(preset_name)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)

    gen = torch.Generator().manual_seed(0)
    net = build_model(cfg.model).to(dev).eval()
    z = (torch.rand(1, 3, 127, 127, generator=gen) * 255).to(dev)
    row = {"preset": preset_name, "device": device, "amp": amp}
    with torch.inference_mode(), autocast():
        row["template_ms"] = _time(lambda: net.template(z), repeats, sync)
        net.template(z)
        for s in (255, 287):
            x = (torch.rand(1, 3, s, s, generator=gen) * 255).to(dev)
            row[f"track_{s}_ms"] = _time(lambda x=x: net.track(x), repeats, sync)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    zb = (torch.rand(batch, 3, 127, 127, generator=gen) * 255).to(dev)
    xb = (torch.rand(batch, 3, 255, 255, generator=gen) * 255).to(dev)
    box = torch.tensor([[90.0, 100.0, 170.0, 160.0]], device=dev).repeat(batch, 1)
    targets = make_targets(cfg.labels, box, torch.zeros(batch, 2, device=dev), 25, 255)

    def step():
        with autocast():
            out = net(zb, xb)
        out = {k: (v.float() if v is not None else None) for k, v in out.items()}
        loss = ocean_loss(out, targets, cfg.loss, cfg.labels)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row[f"train_step_b{batch}_ms"] = _time(step, max(2, repeats // 2), sync)
    row["train_step_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["train_step_rss_growth_mb"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1)
    if dev.type == "cuda":
        row["train_step_peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return row


def conv_gflop(net: torch.nn.Module, fn) -> float:
    """GFLOP of the ``nn.Conv2d`` modules that ``fn(net)`` runs (2 x multiply-adds, groups counted)."""
    total = [0]

    def hook(m, _inputs, out):
        total[0] += 2 * out.numel() * m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            fn(net)
    finally:
        for h in handles:
            h.remove()
    return total[0] / 1e9


def sgemm_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The rate of a large float32 matrix product at the current thread count (median of ``repeats``)."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    for _ in range(3):
        a @ b
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        samples.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(samples) / 1e9


def network_inputs() -> tuple[torch.Tensor, dict]:
    """The seeded template crop and the search crops at 255 and 287 every interleaved comparison uses."""
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(1, 3, 127, 127, generator=gen) * 255
    return z, {s: torch.rand(1, 3, s, s, generator=gen) * 255 for s in (255, 287)}


def network_ops() -> dict:
    """``{"template", "track_255", "track_287"}`` -> a function of a network on :func:`network_inputs` (the
    track operations need the template's kernels: run ``template`` first)."""
    z, xs = network_inputs()
    return {"template": lambda n: n.template(z), **{f"track_{s}": (lambda n, x=x: n.track(x)) for s, x in xs.items()}}


def time_interleaved(nets: dict, repeats: int) -> dict:
    """``nets`` (name -> network, ``"eager"`` among them) timed interleaved repeat by repeat, their order
    rotating: ``{"ms": {"op/name": median}, "ratio_to_eager": {"op/name": median per-repeat ratio}}`` for the
    operations of :func:`network_ops`."""
    ops = network_ops()
    names = list(nets)
    samples: dict[tuple[str, str], list[float]] = {(o, r): [] for o in ops for r in names}
    with torch.inference_mode():
        for net in nets.values():  # warm-up (first oneDNN / onnxruntime calls allocate and pick kernels)
            for fn in ops.values():
                ops["template"](net)
                fn(net)
        for rep in range(repeats):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for op, fn in ops.items():
                for r in order:
                    t0 = time.perf_counter()
                    fn(nets[r])
                    samples[(op, r)].append((time.perf_counter() - t0) * 1000)
    out: dict = {"ms": {}, "ratio_to_eager": {}}
    for op in ops:
        for r in names:
            out["ms"][f"{op}/{r}"] = statistics.median(samples[(op, r)])
            if r != "eager" and "eager" in names:
                ratios = [a / b for a, b in zip(samples[(op, r)], samples[(op, "eager")], strict=True)]
                out["ratio_to_eager"][f"{op}/{r}"] = statistics.median(ratios)
    return out


def compare_runtimes(runtimes: list[str], repeats: int, preset_name: str = "paper") -> dict:
    """Median ms per (operation, runtime) and the median per-repeat ratio to ``eager`` (interleaved), with the
    convolutions' GFLOP per operation and the matrix product's rate before and after."""
    from ocean.config import preset
    from ocean.fast import runtime_network
    from ocean.model import build_model

    cfg = preset(preset_name)
    eager = build_model(cfg.model).eval()
    nets = {r: runtime_network(eager, r) for r in runtimes}
    gflop = {op: conv_gflop(eager, fn) for op, fn in network_ops().items()}  # template first: track needs its kernels
    blas = [sgemm_gflops()]
    timed = time_interleaved(nets, repeats)
    blas.append(sgemm_gflops())
    return {"preset": preset_name, "repeats": repeats, **timed, "conv_gflop": gflop, "sgemm_gflops": blas}


def _print_runtimes(res: dict, runtimes: list[str], threads: int, load: tuple) -> None:
    from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {threads}, "
          f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average before / after: "
          f"{load[0]:.2f} / {load[1]:.2f}, {res['repeats']} interleaved repeats, {res['preset']} preset")
    print("| operation | " + " | ".join(f"{r} (ms)" for r in runtimes)
          + "".join(f" | {r} / eager" for r in runtimes if r != "eager") + " |")
    print("|---" * (1 + len(runtimes) + len(runtimes) - 1) + "|")
    for op in ("template", "track_255", "track_287"):
        cells = [f"{res['ms'][f'{op}/{r}']:.1f}" for r in runtimes]
        cells += [f"{res['ratio_to_eager'][f'{op}/{r}']:.2f}x" for r in runtimes if r != "eager"]
        print(f"| {op} | " + " | ".join(cells) + " |")
    if "eager" in runtimes:
        blas = res["sgemm_gflops"]
        print(f"float32 matrix product (2048 x 2048) before / after: {blas[0]:.0f} / {blas[1]:.0f} GFLOP/s")
        for op in ("template", "track_255", "track_287"):
            rate = res["conv_gflop"][op] / res["ms"][f"{op}/eager"] * 1000
            print(f"  {op}: convolutions {res['conv_gflop'][op]:.2f} GFLOP, eager {rate:.0f} GFLOP/s "
                  f"= {rate / max(blas):.2f} of the matrix product's rate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--runtimes", help="compare these inference runtimes instead (e.g. eager,fast,onnx)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one preset in this process
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    amp = args.device.startswith("cuda")
    if args.runtimes:
        runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
        load0 = os.getloadavg()[0]
        res = compare_runtimes(runtimes, args.repeats)
        _print_runtimes(res, runtimes, args.threads, (load0, os.getloadavg()[0]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        return
    if args.one:
        print(json.dumps(measure(args.one, args.repeats, args.device, amp, args.batch)))
        return
    rows = []
    for name in ("paper", "smoke"):
        cmd = [sys.executable, __file__, "--one", name, "--repeats", str(args.repeats), "--threads",
               str(args.threads), "--device", args.device, "--batch", str(args.batch)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"threads {args.threads}, date {time.strftime('%Y-%m-%d')}")
    keys = [k for k in rows[0] if k.endswith("_ms") or k.endswith("_mb")]
    print("| preset | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in rows:
        print(f"| {r['preset']} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    paper_row = rows[0]
    if args.device == "cpu":
        print("\nratio to the official model's forward (ocean_facts §16, same machine kind, other day):")
        for k, ref in OFFICIAL_MS.items():
            print(f"  {k}: {paper_row[k + '_ms']:.1f} ms / {ref:.0f} ms = {paper_row[k + '_ms'] / ref:.2f}x")
    print(f"smoke / paper track_255 in this run: {rows[1]['track_255_ms'] / paper_row['track_255_ms']:.3f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
