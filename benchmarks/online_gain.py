"""Success AUC of the offline tracker vs the tracker with the online module (paper Sec. 4.2, facts §10).

Runs a trained checkpoint one-pass (OTB protocol, facts §9.4) over the sequences of one or more synthetic
sets written by ``ocean synth`` (``DIR/benchmarks/{otb,vot2018,got10k,lasot}``; VOT sequences are run
one-pass on their axis-aligned extents, LaSOT absence flags are honoured as in pysot, facts §12.2), once
offline and once per online variant, and prints per-sequence and mean success AUC and how many sequences
got better / worse (by more than ``--tie``).

Tune on one seed's sets and report on another's: ``ocean synth --out DIR --seed N --size small``.

    python benchmarks/online_gain.py --checkpoint runs/smoke/last.pt --data /tmp/synth22 [--data ...]
        [--variant NAME:tracker.online_weight=0.5,tracker.online_params.mapping=resize ...]
        [--benchmarks otb,vot2018,got10k,lasot] [--json out.json] [--frames-json frames.json]

A variant is ``NAME:`` followed by comma-separated ``tracker.*`` overrides (``ocean.config`` keys) applied
on top of the checkpoint's tracker section with ``tracker.online=true``; without ``--variant`` one variant
``online`` with the defaults is run. ``--frames-json`` also writes per-frame IoUs, the Siamese (pre-fusion)
peak and the online module's flag of every frame for diagnosis.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

BENCHMARKS = ("otb", "vot2018", "got10k", "lasot")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"NAME:k=v,k=v"`` -> ``(NAME, ["k=v", "k=v"])``; ``"NAME"`` -> no overrides."""
    name, _, rest = text.partition(":")
    items = [s.strip() for s in rest.split(",") if s.strip()]
    for item in items:
        if not item.startswith("tracker."):
            raise SystemExit(f"--variant {text!r}: only tracker.* keys ({item!r})")
    return name.strip(), items


def load_sequences(roots: list[str], benchmarks: list[str]) -> list:
    from ocean.benchmarks.readers import read_benchmark

    seqs = []
    for root in roots:
        for bench in benchmarks:
            folder = Path(root) / "benchmarks" / bench
            if bench.startswith("vot"):
                folder = folder / "sequences"
            elif bench == "got10k":
                folder = folder / "val"
            if not folder.exists():
                continue
            for s in read_benchmark(bench, folder):
                s.name = f"{Path(root).name}/{bench}/{s.name}"
                seqs.append(s)
    if not seqs:
        raise SystemExit(f"no sequences under {roots} ({benchmarks})")
    return seqs


class Recorder:
    """Wraps an :class:`ocean.tracker.OceanTracker`: keeps the per-frame online flag."""

    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.flags: list[str] = []

    def init(self, image, box_xywh) -> None:
        self.flags = ["init"]
        self.tracker.init(image, box_xywh)

    def track(self, image):
        out = self.tracker.track(image)
        online = self.tracker.online
        self.flags.append(getattr(online, "last_flag", "-") if online is not None else "-")
        return out


def run_variant(net, cfg, seqs, label: str = "", presets: bool = False) -> list[dict]:
    """One-pass runs of every sequence; with ``presets`` the benchmark's tracker preset (facts §9.3,
    ``ocean.config.TRACKER_PRESETS``, as the evaluation job applies it) replaces the tracker
    hyper-parameters, with ``use_align`` off (the online branch is never combined with p_o, facts §4.3)."""
    from ocean.benchmarks.metrics import ope_ious, ope_sequence
    from ocean.benchmarks.protocols import run_one_pass
    from ocean.config import TRACKER_PRESETS
    from ocean.tracker import OceanTracker

    rows = []
    for seq in seqs:
        seq_cfg = cfg
        if presets:
            key = {"vot": "vot2018"}.get(seq.benchmark, seq.benchmark)
            seq_cfg = dataclasses.replace(cfg, **{**TRACKER_PRESETS[key], "use_align": False})
        rec = Recorder(OceanTracker(net, seq_cfg))
        run = run_one_pass(rec, seq)
        boxes, scores = run.boxes_xywh, run.scores
        res = ope_sequence(seq.gt_xywh, boxes, seq.present, origin=1.0)
        rows.append({"sequence": seq.name, "auc": res.success_auc,
                     "iou": ope_ious(seq.gt_xywh, boxes, seq.present).round(3).tolist(),
                     "score": np.round(scores, 3).tolist(), "flags": rec.flags,
                     "online_updates": getattr(rec.tracker.online, "updates", 0),
                     "online_optimisations": getattr(rec.tracker.online, "optimisations", 0),
                     "online_skipped": dict(getattr(rec.tracker.online, "skipped", {}))})
        print(f"  {label} {seq.name}: AUC {res.success_auc:.3f}", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="trained ocean-ray checkpoint (ocean.checkpoint)")
    ap.add_argument("--data", action="append", required=True,
                    help="an `ocean synth` output folder (repeat for several seeds)")
    ap.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:tracker.k=v,... online variant (repeatable); default one variant 'online'")
    ap.add_argument("--tie", type=float, default=0.005, help="|AUC difference| counted as unchanged (0.005)")
    ap.add_argument("--presets", action="store_true",
                    help="run each sequence with its benchmark's tracker preset (facts §9.3), use_align off")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--offline-json", help="take the offline AUCs from this earlier --json summary (same "
                    "checkpoint, data and tracker section) instead of running the offline tracker again")
    ap.add_argument("--json", help="write the summary (per-sequence AUCs) here")
    ap.add_argument("--frames-json", help="write per-frame IoU / score / online flag here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # Subnormal activations make the smoke-width nets much slower on x86 CPUs (BENCHMARKS.md, online update);
    # flushing them changes no result beyond float rounding and applies to every variant.
    torch.set_flush_denormal(True)

    from ocean.checkpoint import load_model
    from ocean.config import OceanConfig, apply_overrides

    net, ocean_cfg = load_model(args.checkpoint)
    base = ocean_cfg.tracker
    seqs = load_sequences(args.data, args.benchmarks.split(","))
    variants = [parse_variant(v) for v in args.variant] or [("online", [])]
    configs = {"offline": apply_overrides(OceanConfig(tracker=base), ["tracker.online=false"]).tracker}
    for name, items in variants:
        configs[name] = apply_overrides(OceanConfig(tracker=base), ["tracker.online=true"] + items).tracker

    t0 = time.perf_counter()
    results = {}
    if args.offline_json:
        earlier = json.loads(Path(args.offline_json).read_text())
        if earlier["sequences"] != [s.name for s in seqs]:
            raise SystemExit(f"--offline-json {args.offline_json}: other sequences than --data gives")
        results["offline"] = [{"sequence": n, "auc": a} for n, a in
                              zip(earlier["sequences"], earlier["variants"]["offline"]["auc"], strict=True)]
        del configs["offline"]
    results.update({name: run_variant(net, cfg, seqs, name, args.presets) for name, cfg in configs.items()})
    names = list(results)
    elapsed = time.perf_counter() - t0

    print(f"Online gain, {args.checkpoint}, {len(seqs)} sequences from {', '.join(args.data)}; "
          f"{time.strftime('%Y-%m-%d %H:%M')} {platform.node()}, {elapsed:.0f} s\n")
    print("| sequence | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for i, seq in enumerate(seqs):
        print(f"| {seq.name} | " + " | ".join(f"{results[n][i]['auc']:.3f}" for n in names) + " |")
    off = np.array([r["auc"] for r in results["offline"]])
    summary = {"checkpoint": args.checkpoint, "data": args.data, "sequences": [s.name for s in seqs],
               "variants": {}}
    print("| **mean** | " + " | ".join(f"**{np.mean([r['auc'] for r in results[n]]):.3f}**" for n in names)
          + " |")
    print()
    for name, items in [("offline", [])] + variants:
        auc = np.array([r["auc"] for r in results[name]])
        d = auc - off
        better, worse = int((d > args.tie).sum()), int((d < -args.tie).sum())
        summary["variants"][name] = {"overrides": items, "mean_auc": float(auc.mean()),
                                     "auc": auc.round(4).tolist(), "better": better, "worse": worse}
        if name != "offline":
            print(f"{name}: mean AUC {auc.mean():.3f} vs offline {off.mean():.3f} ({d.mean():+.3f}); "
                  f"better {better}, worse {worse}, unchanged {len(d) - better - worse} (tie {args.tie}); "
                  f"{' '.join(items) or 'defaults'}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.frames_json:
        Path(args.frames_json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
