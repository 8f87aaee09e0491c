"""Train the quickstart's model in one process on prepared pair records, then score it on the held-out scenes.

A quick loop for generalisation experiments (issue 14 item 5; BENCHMARKS.md "Generalisation"): the same
data, epochs, batch plan, seeded epoch draws and augmentation as the quickstart's Ray Train run
(``data_prep.epochs`` + ``ocean.engine.train_step``, one rank), without Ray, then success AUC on the held-out
scenes (:mod:`data_prep.heldout_scenes`), the quickstart's synthetic OTB and, when present, the real OTB
clips in ``../shared/data/real_sequences/otb`` (``benchmarks/heldout_scores.py``'s scoring, ``otb``
tracker preset)::

    python benchmarks/train_heldout.py --pairs WORK/pairs --heldout WORK/heldout \\
        --otb WORK/synthetic/benchmarks/otb --out /tmp/run1 [--set augment.negative_prob=0.2 ...] [--threads 1]

``WORK`` is a quickstart working folder (``ocean quickstart --workdir WORK``), or pair records from
``ocean prepare --preset smoke``. ``--set`` overrides the smoke preset. Writes ``OUT/model.pt`` and
``OUT/result.json`` (per-epoch losses, per-sequence AUCs). Two runs side by side on 2 cores: ``--threads 1``
each (two 2-thread processes slow each other down several times over).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REAL_OTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_sequences" / "otb"


def batches(index, fs, cfg, plan, seed: int, epoch: int):
    """The epoch's micro-batches in stream order, as torch tensors (``read_and_augment`` per work item)."""
    import torch

    from data_prep.epochs import epoch_share, items_batch, read_and_augment, work_item
    from pipelines.train_input import cut_micro_batches

    share = epoch_share(index, cfg.data.pairs_per_epoch, seed, epoch, 0, plan)
    blocks = (read_and_augment(items_batch([work_item(index, share, i)]),
                               files=tuple(index.files), filesystem=fs, augment=dataclasses.asdict(cfg.augment),
                               seed=seed, exemplar_size=cfg.model.exemplar_size, search_size=cfg.model.search_size)
              for i in range(len(share.items)))
    for batch in cut_micro_batches(blocks, plan.micro_batch):
        if len(batch["valid"]) == plan.micro_batch:  # whole micro-batches, as the stream's feed checks
            yield {k: torch.from_numpy(v) for k, v in batch.items() if k not in ("epoch", "pair_key")}


def train(pairs: str, overrides: list[str], seed: int):
    import torch

    from data_prep.epochs import batch_plan, repair_invalid
    from data_prep.pair_index import open_pair_index
    from ocean.config import apply_overrides, smoke
    from ocean.engine import build_optimizer, needs_new_optimizer, set_epoch_lr, set_trainable, train_step
    from ocean.model import build_model

    cfg = apply_overrides(smoke(), overrides)
    fs, index = open_pair_index(pairs)
    plan = batch_plan(cfg.optim.batch_size, 1)
    torch.manual_seed(seed)  # the quickstart's initial weights (pipelines/train_loop.py)
    net, opt, losses = build_model(cfg.model), None, []
    for epoch in range(cfg.optim.epochs):
        if opt is None or needs_new_optimizer(cfg.optim, epoch):
            set_trainable(net, cfg.optim, epoch)
            opt = build_optimizer(net, cfg.optim, epoch)
        set_epoch_lr(opt, cfg.optim, epoch)
        net.train()
        total, steps, negatives, t0 = 0.0, 0, 0, time.time()
        for batch in batches(index, fs, cfg, plan, seed, epoch):
            batch, _, all_bad = repair_invalid(batch)
            if all_bad:
                continue
            negatives += int(batch["negative"].sum())
            result = train_step(net, batch, cfg, opt)
            if not result.skipped:
                total, steps = total + result.losses["total"], steps + 1
        losses.append(total / max(steps, 1))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.3f}, {steps} steps, {negatives} negative pairs, "
              f"{time.time() - t0:.0f} s", flush=True)
    return net, cfg, losses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True, help="prepared pair records (a quickstart's WORK/pairs)")
    p.add_argument("--heldout", required=True, help="held-out OTB root (written when missing)")
    p.add_argument("--otb", action="append", default=[], help="more OTB roots to score (e.g. the synthetic OTB)")
    p.add_argument("--out", required=True, help="folder for model.pt and result.json")
    p.add_argument("--set", action="append", default=[], dest="overrides", help="KEY=VALUE on the smoke preset")
    p.add_argument("--track-set", action="append", default=[], help="tracker.KEY=VALUE for scoring")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OCEAN_THREADS", "2")))
    a = p.parse_args(argv)
    import torch
    from heldout_scores import _track_ocean, score

    from ocean.benchmarks.readers import read_otb
    from ocean.checkpoint import save_checkpoint

    torch.set_num_threads(a.threads)
    if not (Path(a.heldout) / "attributes.json").exists():
        from data_prep.heldout_scenes import write_heldout_otb

        write_heldout_otb(a.heldout)
    t0, load = time.time(), os.getloadavg()
    net, cfg, losses = train(a.pairs, a.overrides, a.seed)
    result: dict = {"set": a.overrides, "track_set": a.track_set, "losses": losses,
                    "train_s": round(time.time() - t0, 1), "load_before": load}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    checkpoint = str(Path(a.out) / "model.pt")
    save_checkpoint(checkpoint, net, cfg)
    track = _track_ocean(checkpoint, a.track_set)
    roots = {"heldout": a.heldout, **{f"otb{i}" if i else "otb": r for i, r in enumerate(a.otb)}}
    if REAL_OTB.is_dir():
        roots["real_otb"] = str(REAL_OTB)
    for name, root in roots.items():
        result[name] = score(track, read_otb(Path(root)))
        print(f"{name}: success AUC {result[name]['success_auc']:.3f}, precision {result[name]['precision']:.3f}",
              flush=True)
    result["load_after"] = os.getloadavg()
    (Path(a.out) / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
