"""The per-worker Ray Train loop of ``ocean train``: one DDP rank, from its resume point to the last epoch.

:func:`train_loop` resumes from the newest epoch file, opens the rank's input stream once
(:mod:`pipelines.train_input`), then per epoch: begin (trainable set, optimizer, lr) -> steps -> reduce ->
checkpoint -> report. Every rank takes the same skip / stop decisions. Rank 0 writes the epoch files and logs
losses, lr per group, pairs/s and the data wait fraction to the driver's MLflow run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.epochs import BatchPlan, repair_invalid
from data_prep.pair_index import open_pair_index
from ocean import storage
from ocean.config import OceanConfig
from pipelines.console import flush_worker_logs, worker_logging
from pipelines.mlflow_models import system_metrics
from pipelines.progress import TrainProgress
from pipelines.raysession import IDLE_SCHEDULING_SLEEP_S
from pipelines.tracking import RunLogger
from pipelines.train_input import EpochFeed, pair_stream

log = logging.getLogger(__name__)

DIVERGED_FILE = "DIVERGED.json"
KILLED_MARKER = "killed-once.json"
LOG_EVERY_STEPS = 20  # rank 0 flushes per-step metrics to MLflow this often


@dataclass(frozen=True)
class LoopSettings:
    """What every worker of one training needs, sent as ``train_loop_config["settings"]`` (fields as in
    ``pipelines.train.TrainSettings``; ``plan``: the batch plan; ``run``: the driver's MLflow run, which rank
    0 logs to, None for no logging)."""

    cfg: OceanConfig
    data: str
    out: str
    seed: int
    plan: BatchPlan
    run: RunLogger | None
    prefetch_batches: int = 2
    data_cpus: float | None = None  # TrainSettings.data_cpus
    data_idle_sleep_s: float = IDLE_SCHEDULING_SLEEP_S  # TrainSettings.data_idle_sleep_s
    data_head_start: bool = True  # TrainSettings.data_head_start
    kill_worker_at: tuple[int, int, int] | None = None
    system_metrics_interval: float | None = None  # seconds between rank 0's system metrics; None: off


@dataclass
class _EpochTotals:
    """Per-rank sums of one epoch (all-reduced at its end)."""

    losses: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"total": 0.0, "reg": 0.0, "cls": 0.0, "align": 0.0})
    counted: int = 0
    skipped: int = 0
    invalid: int = 0
    wait_s: float = 0.0
    epoch_s: float = 0.0


class _Worker:
    """One Ray Train worker's state: config, rank, device, the network, the resume point and helpers."""

    def __init__(self, settings: LoopSettings):
        import ray.train
        import ray.train.torch
        import torch
        import torch.distributed as dist

        from ocean.engine import BadStepGuard
        from ocean.model import build_model

        self.settings = settings
        self.cfg: OceanConfig = settings.cfg
        self.out, self.seed = settings.out, int(settings.seed)
        self.plan = settings.plan
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.distributed = self.world > 1 and dist.is_available() and dist.is_initialized()
        self.amp_dtype = torch.bfloat16 if self.device.type == "cuda" else None  # AMP on GPU only
        self.kill = settings.kill_worker_at
        self.guard = BadStepGuard(self.cfg.optim.max_bad_steps)
        torch.manual_seed(self.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        self.net = build_model(self.cfg.model).to(self.device)
        self.model = self.optimizer = None
        self.start, self.history, self.opt_state = self._resume()
        self.progress = TrainProgress(self.start, self.cfg.optim.epochs)  # rank 0's console lines

    def _resume(self) -> tuple[int, list, dict | None]:
        """The newest readable epoch file, if any: a restarted worker group and a re-run both continue from
        it; newer unreadable ones are skipped with a warning naming them (``ocean.checkpoint.newest_readable``)."""
        from ocean.checkpoint import resume_training

        point, history, opt_state = resume_training(self.out, self.net, map_location=self.device)
        if self.rank == 0:
            for line in point.messages():
                log.warning(line.removeprefix("warning: ")) if line.startswith("warning: ") else log.info(line)
        return point.epoch, history, opt_state

    def agree(self, skip: bool) -> bool:
        """True on every rank when any rank wants to skip the step (all-reduce MAX)."""
        if not self.distributed:
            return skip
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if skip else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Rank 0 logs the finite ``values`` to the run's MLflow run, in one batch (no-op elsewhere)."""
        if self.rank != 0 or self.settings.run is None:
            return
        self.settings.run.log_metrics({k: float(v) for k, v in values.items() if math.isfinite(float(v))}, int(step))

    def begin_epoch(self, epoch: int) -> float:
        """Trainable set, optimizer (built at the start, rebuilt at the unfreeze epoch) and lr of ``epoch``
        (``ocean.engine``); DDP is re-wrapped then, as it only registers parameters that require grad."""
        from ocean.checkpoint import load_optimizer_state_by_name, optimizer_state_by_name
        from ocean.engine import (
            apply_bn_policy,
            build_optimizer,
            needs_new_optimizer,
            set_epoch_lr,
            set_trainable,
        )

        cfg = self.cfg.optim
        if self.optimizer is None or needs_new_optimizer(cfg, epoch):
            if self.optimizer is None:  # start or resume: the saved state, unless this is the rebuild epoch
                carried = None if (needs_new_optimizer(cfg, epoch) and cfg.rebuild_optimizer_at_unfreeze) \
                    else self.opt_state
            else:  # the unfreeze epoch: official rebuild resets momentum (facts §8), else carry it over
                carried = None if cfg.rebuild_optimizer_at_unfreeze else optimizer_state_by_name(self.optimizer,
                                                                                                 self.net)
            self.model = None  # drop the old DDP wrapper (and its hooks) before wrapping again
            set_trainable(self.net, cfg, epoch)
            self.model = self._wrap(self.net)  # DDP registers only the parameters that require grad now
            self.optimizer = build_optimizer(self.model, cfg, epoch)
            if carried:
                load_optimizer_state_by_name(self.optimizer, self.model, carried)
        lr = set_epoch_lr(self.optimizer, cfg, epoch)
        self.model.train()
        apply_bn_policy(self.model, cfg, epoch)
        return lr

    def _wrap(self, module):
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def maybe_kill(self, epoch: int, step: int) -> None:
        """Fault drill: the ``kill_worker_at`` rank SIGKILLs itself once per output folder."""
        if not self.kill or self.rank != self.kill[2] or epoch != self.kill[0] or step != self.kill[1]:
            return
        marker = storage.join(self.out, KILLED_MARKER)
        if not storage.exists(marker):  # once per output folder: the restart must get through
            storage.write_bytes(marker, json.dumps({"epoch": epoch, "step": step, "rank": self.rank}).encode())
            os.kill(os.getpid(), signal.SIGKILL)


def _train_step(w: _Worker, feed: EpochFeed, epoch: int, step: int, totals: _EpochTotals):
    """One optimizer step over ``accumulate`` micro-batches; returns the last ``StepResult``."""
    from ocean.engine import train_step

    result = None
    for micro in range(w.plan.accumulate):
        t0 = time.perf_counter()
        batch = feed.next(epoch, step)
        totals.wait_s += time.perf_counter() - t0
        batch, n_bad, all_bad = repair_invalid(batch)
        totals.invalid += n_bad
        last = micro == w.plan.accumulate - 1
        with (w.model.no_sync() if (w.distributed and not last) else contextlib.nullcontext()):
            result = train_step(w.model, batch, w.cfg, w.optimizer, device=w.device, amp_dtype=w.amp_dtype,
                                accumulate=w.plan.accumulate, do_step=last,
                                agree=(lambda s: w.agree(True)) if all_bad else w.agree)
        if result.skipped:
            break
    return result


def _run_epoch(w: _Worker, feed: EpochFeed, epoch: int) -> _EpochTotals | None:
    """Every step of ``epoch`` on this rank; None when the bad-step guard stopped the run (every rank stops
    at the same step, and rank 0 has written ``DIVERGED.json``). A bad step is skipped on every rank
    (``agree`` = all-reduce MAX); ``optim.max_bad_steps`` in a row stop the run."""
    from ocean.engine import TrainingDiverged

    steps = feed.share(epoch).steps
    totals = _EpochTotals()
    t_epoch = time.perf_counter()
    w.progress.begin_epoch(epoch, steps)
    for step in range(steps):
        global_step = epoch * steps + step
        w.maybe_kill(epoch, step)
        result = _train_step(w, feed, epoch, step, totals)
        try:
            w.guard.update(result, global_step)
        except TrainingDiverged as exc:
            if w.rank == 0:  # every rank took the same decisions (agree): all stop here, cleanly
                storage.write_bytes(storage.join(w.out, DIVERGED_FILE), json.dumps(
                    {"error": str(exc), "epoch": epoch, "step": global_step}).encode())
            return None
        if w.rank == 0 and (line := w.progress.step(step)):
            log.info(line)
        if result.skipped:
            totals.skipped += 1
            continue
        totals.counted += 1
        for k in totals.losses:
            totals.losses[k] += result.losses.get(k, 0.0)
        if w.rank == 0 and (step % max(1, steps // LOG_EVERY_STEPS) == 0 or step == steps - 1):
            w.log_metrics({f"step/loss_{k}": v for k, v in result.losses.items()}, global_step)
    totals.epoch_s = time.perf_counter() - t_epoch
    return totals


def _epoch_metrics(w: _Worker, epoch: int, lr: float, totals: _EpochTotals, steps: int) -> dict[str, Any]:
    """All-reduce the ranks' totals and gather their parameter digests into the epoch's metrics."""
    import torch
    import torch.distributed as dist

    from ocean.checkpoint import parameter_digest

    t = torch.tensor([totals.losses["total"], totals.losses["reg"], totals.losses["cls"], totals.losses["align"],
                      totals.counted, totals.skipped, totals.invalid, totals.wait_s, totals.epoch_s],
                     dtype=torch.float64, device=w.device)
    if w.distributed:
        dist.all_reduce(t)
    t = t.tolist()
    n_ok = max(t[4], 1.0)
    digests = [parameter_digest(w.net)]
    if w.distributed:
        gathered: list[Any] = [None] * w.world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    return {
        "epoch": epoch + 1, "loss": t[0] / n_ok, "loss_reg": t[1] / n_ok, "loss_cls": t[2] / n_ok,
        "loss_align": t[3] / n_ok, "steps": steps, "skipped_steps": int(t[5] / w.world),
        "skipped_total": w.guard.total, "invalid_pairs": int(t[6]), "lr": lr,
        "pairs_per_s": steps * w.plan.global_batch / max(totals.epoch_s, 1e-9),
        "data_wait_fraction": t[7] / max(t[8], 1e-9),
        "params_identical": float(len(set(digests)) == 1),
        "param_digests": digests,
    }


def _finish_epoch(w: _Worker, epoch: int, metrics: dict[str, Any], composition: dict) -> None:
    """Rank 0 writes ``OUT/checkpoints/epoch-NNNN.pt`` and logs; then every rank enters ``ray.train.report`` (so no
    rank starts the next epoch before the file exists). Those files are the resume point of a restarted worker
    group and of a re-run (Ray's own "latest registered" checkpoint can lag one epoch behind, ray_stack.md §4);
    Ray checkpoints are small pointers to them."""
    import ray.train

    from ocean.checkpoint import checkpoint_uri, save_training_checkpoint
    from ocean.engine import backbone_trainable_layers

    digests = metrics.pop("param_digests")
    w.history.append({**metrics, "composition": composition, "param_digests": digests})
    uri = checkpoint_uri(w.out, epoch + 1)
    pointer = None
    if w.rank == 0:
        save_training_checkpoint(uri, w.net, w.cfg, w.optimizer, epoch=epoch + 1,
                                 trainable_layers=backbone_trainable_layers(w.cfg.optim, epoch), lr=metrics["lr"],
                                 history=w.history, metrics=metrics, seed=w.seed)
        w.log_metrics({**{k: v for k, v in metrics.items() if k != "epoch"},
                       **{f"lr/{g['name']}": g["lr"] for g in w.optimizer.param_groups}}, epoch + 1)
        pointer = tempfile.TemporaryDirectory(prefix="ocean-ckpt-")  # Ray copies it on report; then removed
        Path(pointer.name, "pointer.json").write_text(json.dumps({"epoch": epoch + 1, "uri": uri}))
        log.info(f"epoch {epoch + 1}/{w.cfg.optim.epochs} loss {metrics['loss']:.4f} "
                 f"lr {metrics['lr']:.3g} {metrics['pairs_per_s']:.1f} pairs/s data wait "
                 f"{100 * metrics['data_wait_fraction']:.0f}% skipped {metrics['skipped_steps']}, "
                 f"{w.progress.end_epoch()} -> {uri}")
    try:
        ray.train.report({**metrics, "checkpoint_uri": uri},
                         checkpoint=ray.train.Checkpoint.from_directory(pointer.name) if pointer else None)
    finally:
        if pointer is not None:
            pointer.cleanup()


def train_loop(config: dict[str, LoopSettings]) -> None:
    """Ray Train worker (``train_loop_config={"settings": LoopSettings}``): set up (resume), open this rank's
    input stream once, then per epoch train and finish (reduce, checkpoint, report)."""
    settings = config["settings"]
    worker_logging()  # the project's records to the driver's console, at its level
    w = _Worker(settings)
    fs, index = open_pair_index(settings.data)  # with the manifest's sha256 of each file, checked as read
    feed = pair_stream(index, fs, w.cfg, w.plan, seed=w.seed, rank=w.rank, start=w.start,
                       prefetch=int(settings.prefetch_batches), data_cpus=settings.data_cpus,
                       idle_sleep_s=float(settings.data_idle_sleep_s),
                       head_start=bool(settings.data_head_start))
    metrics = system_metrics(settings.run, w.rank == 0 and settings.system_metrics_interval is not None,
                             settings.system_metrics_interval or 0.0)
    metrics.__enter__()  # rank 0: system/... metrics of its node until the loop ends
    try:
        for epoch in range(w.start, w.cfg.optim.epochs):
            lr = w.begin_epoch(epoch)
            totals = _run_epoch(w, feed, epoch)
            if totals is None:  # diverged: every rank stops here
                return
            share = feed.share(epoch)
            _finish_epoch(w, epoch, _epoch_metrics(w, epoch, lr, totals, share.steps), share.composition)
    finally:
        metrics.__exit__(None, None, None)
        feed.close()  # shut the Ray Data execution down while Ray is still up
        flush_worker_logs()
