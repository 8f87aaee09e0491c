"""Training on Ray Train: pair records streamed by Ray Data into DDP workers (issue 5, facts §7.4-§8).

Data path, per epoch and per rank::

    OUT pair parquet --read_parquet--> select this rank's pairs of the epoch --decode+augment (CPU tasks)-->
    iter_torch_batches(prefetch) --> engine.train_step (labels from the boxes) --> DDP all-reduce

* **Epoch composition** (:func:`epoch_selection`, facts §7.4): every epoch draws
  ``DataConfig.pairs_per_epoch[dataset]`` pairs per dataset, without replacement, from the prepared pool
  (``pool_factor`` x that many pairs), with a generator seeded by ``(seed, epoch, dataset)``: a fresh subset
  every epoch, the same one on every rank and on every re-run. The selection is cut to whole global
  batches and split into equal contiguous parts, one per rank (:func:`rank_rows`), so every rank runs the
  same number of steps (DDP lockstep). Each rank reads the parquet files itself, keeps its rows and
  decodes / augments only those (``data_prep.augment.augment_pairs`` in Ray Data tasks, seed
  ``(seed, epoch)`` per pair); order is shuffled by file order and a local buffer (ray_stack.md §2).
* **Batch**: ``optim.batch_size`` is the *global* batch whatever the number of workers (facts §8:
  32 x 8 GPUs = 256). Per worker ``batch / workers`` pairs per step, split into ``accumulate``
  micro-batches when that exceeds ``max_worker_batch`` (:func:`batch_plan`; logged and recorded as params).
* **Schedule**: ``ocean.engine`` (warm-up, log decay, unfreeze with a rebuilt optimizer and a re-wrapped
  DDP -- DDP only registers parameters that require grad when it is built).
* **Bad steps**: a non-finite / exploding loss skips the step on every rank (``agree`` = all-reduce MAX);
  ``optim.max_bad_steps`` consecutive ones stop the run with :class:`ocean.engine.TrainingDiverged`
  naming the step (not retried: every rank stops cleanly and the driver raises).
* **Checkpoints**: after every epoch rank 0 writes ``OUT/checkpoints/epoch-NNNN.pt`` (NNNN = completed
  epochs, an :mod:`ocean.checkpoint` file: model, optimizer, schedule state, epoch, RNG, config, history)
  *before* the epoch's ``ray.train.report``, which every rank enters, so no rank starts epoch e + 1 before
  file e exists. These files are the source of truth for resuming: a restarted worker group
  (``FailureConfig(max_failures)``) and a re-run of the same command both start from the newest file, so
  at most the epoch in progress is lost (Ray's own "latest registered" checkpoint can lag one epoch
  behind, ray_stack.md §4). Ray checkpoints are small pointers to those files (they carry the metrics into
  ``Result.metrics``); unregistered orphan ``checkpoint_*`` folders are deleted after the run.
* **MLflow** (:mod:`pipelines.tracking`): the driver creates or re-opens the run (tag ``ocean.run_key``, so a
  re-run continues the same run) with the flattened config, batch plan, data manifest sha256 and code
  version; rank 0 logs per-step losses, per-epoch losses, lr per group, pairs/s and the fraction of step
  time spent waiting for data; the driver logs checkpoint URIs and the final model file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocean import storage
from ocean.config import AugmentConfig, OceanConfig, from_dict, to_dict

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = "epoch-{:04d}.pt"
DIVERGED_FILE = "DIVERGED.json"
KILLED_MARKER = "killed-once.json"
INDEX_COLUMNS = ("pair_id", "dataset")
# Input rows per Ray Data map batch before the per-rank selection (small: most rows are dropped).
READ_BATCH_ROWS = 64
LOG_EVERY_STEPS = 20  # rank 0 flushes per-step metrics to MLflow this often


class TrainingDataError(ValueError):
    """The pair records cannot feed this training run (missing, wrong schema, too few pairs)."""


# --------------------------------------------------------------------------------------------------------
# Plain functions (no Ray): batch plan, epoch composition, pair keys, checkpoint files


@dataclass(frozen=True)
class BatchPlan:
    """How the fixed global batch is spread: ``global_batch = workers x micro_batch x accumulate``."""

    global_batch: int
    workers: int
    per_worker: int
    micro_batch: int
    accumulate: int

    def describe(self) -> str:
        acc = f" in {self.accumulate} micro-batches of {self.micro_batch}" if self.accumulate > 1 else ""
        return (f"global batch {self.global_batch} = {self.workers} workers x {self.per_worker} pairs{acc} "
                f"(fixed by optim.batch_size whatever the number of workers)")


def batch_plan(global_batch: int, workers: int, max_worker_batch: int | None = None) -> BatchPlan:
    """Per-worker batch ``global / workers`` and the smallest gradient accumulation that keeps each
    micro-batch at or below ``max_worker_batch`` (an exact divisor, so the global batch is exact)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if global_batch % workers:
        raise ValueError(f"optim.batch_size {global_batch} is not divisible by {workers} workers: the global "
                         f"batch is fixed, pick a worker count that divides it")
    per_worker = global_batch // workers
    cap = per_worker if not max_worker_batch else int(max_worker_batch)
    if cap < 1:
        raise ValueError(f"max_worker_batch must be >= 1, got {max_worker_batch}")
    accumulate = next(a for a in range(1, per_worker + 1) if per_worker % a == 0 and per_worker // a <= cap)
    return BatchPlan(global_batch, workers, per_worker, per_worker // accumulate, accumulate)


def pair_keys(pair_ids) -> np.ndarray:
    """``(N,)`` uint64 keys of pair ids: the 16 hex digits themselves (data_prep.pairs.pair_id), else the
    first 8 bytes of their sha1."""
    out = np.empty(len(pair_ids), dtype=np.uint64)
    for i, pid in enumerate(pair_ids):
        text = pid.decode() if isinstance(pid, bytes) else str(pid)
        try:
            out[i] = int(text, 16) if len(text) == 16 else int(hashlib.sha1(text.encode()).hexdigest()[:16], 16)
        except ValueError:
            out[i] = int(hashlib.sha1(text.encode()).hexdigest()[:16], 16)
    return out


def epoch_selection(keys: np.ndarray, datasets: np.ndarray, pairs_per_epoch: dict[str, int], seed: int,
                    epoch: int) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """The pairs of one epoch (facts §7.4: per-dataset counts, fresh every epoch).

    Args:
        keys: ``(N,)`` uint64 pair keys of the prepared pool; datasets: ``(N,)`` their dataset names.
        pairs_per_epoch: wanted pairs per dataset (``DataConfig.pairs_per_epoch``); datasets absent from it
            contribute nothing.

    Returns:
        ``(selection (M,) uint64 in a random order, {dataset: {"wanted", "available", "taken"}})``. A
        dataset with fewer pairs than wanted gives all it has. Each dataset draws from its own generator
        ``(seed, epoch, crc32(name))`` over its keys in sorted order, so the result depends neither on the
        file order nor on the other datasets.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    datasets = np.asarray(datasets).astype(str)
    parts, counts = [], {}
    for name in sorted(set(pairs_per_epoch) | set(np.unique(datasets).tolist())):
        wanted = int(pairs_per_epoch.get(name, 0))
        pool = np.sort(keys[datasets == name])
        take = min(wanted, len(pool))
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), zlib.crc32(name.encode())]))
        parts.append(pool[np.sort(rng.choice(len(pool), take, replace=False))] if take else pool[:0])
        counts[name] = {"wanted": wanted, "available": int(len(pool)), "taken": int(take)}
    selection = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)])).permutation(len(selection))
    return selection[order], counts


def rank_rows(selection: np.ndarray, rank: int, plan: BatchPlan) -> tuple[np.ndarray, int]:
    """This rank's keys of the epoch and the number of optimizer steps (whole global batches only)."""
    steps = len(selection) // plan.global_batch
    if steps == 0:
        raise TrainingDataError(f"an epoch has {len(selection)} pairs, fewer than one global batch of "
                                f"{plan.global_batch}: prepare more pairs or lower optim.batch_size")
    n = steps * plan.per_worker
    return selection[rank * n:(rank + 1) * n], steps


def epoch_seed(seed: int, epoch: int) -> int:
    """The augmentation seed of an epoch (every pair gets new crop jitter every epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0] >> 1)


def select_and_augment(batch: dict[str, Any], *, keep: np.ndarray, augment: dict[str, Any], seed: int,
                       exemplar_size: int, search_size: int) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: keep the rows whose key is in ``keep`` (sorted uint64), decode and
    augment them (``data_prep.augment.augment_pairs``) and return numeric columns only (string columns break
    ``iter_torch_batches``, ray_stack.md §2).

    Returns ``template`` ``(B, 127, 127, 3)`` uint8 BGR, ``search`` ``(B, 255, 255, 3)`` uint8 BGR,
    ``search_box`` ``(B, 4)`` float32 xyxy in search pixels, ``search_shift`` ``(B, 2)`` float32 (facts §5.2),
    ``valid`` ``(B,)`` bool (False where a JPEG did not decode).
    """
    from data_prep.augment import augment_pairs

    mask = np.isin(pair_keys(batch["pair_id"]), keep, assume_unique=False)
    rows = np.flatnonzero(mask)
    sub = {k: (v[rows] if isinstance(v, np.ndarray) else [v[i] for i in rows]) for k, v in batch.items()}
    out = augment_pairs(sub, AugmentConfig(**augment), seed, exemplar_size=exemplar_size, search_size=search_size)
    return {"template": out["template"], "search": out["search"], "search_box": out["search_box"],
            "search_shift": out["shift"], "valid": out["valid"]}


def checkpoint_uri(out: str, completed_epochs: int) -> str:
    return storage.join(out, CHECKPOINT_DIR, CHECKPOINT_PATTERN.format(completed_epochs))


def list_checkpoints(out: str) -> list[tuple[int, str]]:
    """``[(completed_epochs, uri)]`` of the epoch files under ``OUT/checkpoints``, oldest first."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(storage.join(out, CHECKPOINT_DIR))
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []
    found = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.File and name.startswith("epoch-") and name.endswith(".pt"):
            try:
                found.append((int(name[len("epoch-"):-len(".pt")]), checkpoint_uri(out, int(name[6:-3]))))
            except ValueError:
                continue
    return sorted(found)


def remove_stale_temporaries(out: str) -> int:
    """Delete ``*.tmp-PID`` files a killed local write left under ``OUT/checkpoints``; returns how many."""
    if storage.is_uri(out) and not out.startswith("file://"):
        return 0  # S3 objects appear only when complete: nothing half-written is visible
    _, root = storage.resolve(storage.join(out, CHECKPOINT_DIR))
    n = 0
    for p in Path(root).glob("*.tmp-*") if Path(root).exists() else []:
        p.unlink(missing_ok=True)
        n += 1
    return n


def list_pair_files(data: str) -> tuple[Any, list[str]]:
    """``(pyarrow filesystem, sorted parquet paths)`` under ``data`` (recursively, ``rejects/`` excluded)."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(data)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except FileNotFoundError:
        raise TrainingDataError(f"no pair records at {data}: run `ocean prepare` first") from None
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                   and "/rejects/" not in i.path[len(root):] and not Path(i.path).name.startswith("."))
    if not files:
        raise TrainingDataError(f"no .parquet pair records under {data}: run `ocean prepare` first")
    return fs, files


def read_pair_index(fs, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(keys (N,) uint64, datasets (N,) str)`` from the small columns only (no JPEG bytes are read)."""
    import pyarrow.parquet as pq

    from data_prep.records import SCHEMA_VERSION, SCHEMA_VERSION_KEY

    keys, names = [], []
    for path in files:
        schema = pq.read_schema(path, filesystem=fs)
        version = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
        if version != str(SCHEMA_VERSION).encode() or any(c not in schema.names for c in INDEX_COLUMNS):
            raise TrainingDataError(f"{path} is not a pair-record file of schema version {SCHEMA_VERSION} "
                                    f"(metadata {version!r}, columns {schema.names[:6]}...)")
        table = pq.read_table(path, columns=list(INDEX_COLUMNS), filesystem=fs)
        keys.append(pair_keys(table.column("pair_id").to_pylist()))
        names.append(np.asarray(table.column("dataset").to_pylist(), dtype=str))
    return np.concatenate(keys), np.concatenate(names)


def manifest_sha256(data: str) -> str | None:
    """sha256 of ``DATA/manifest.json`` (the data version a run trained on), None if there is none."""
    try:
        return hashlib.sha256(storage.read_bytes(storage.join(data, "manifest.json"))).hexdigest()
    except FileNotFoundError:
        return None


def parameter_digest(model) -> str:
    """sha1 of every parameter's bytes (ranks with identical weights give identical digests)."""
    h = hashlib.sha1()
    net = getattr(model, "module", model)
    for name, p in sorted(net.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def optimizer_state_by_name(optimizer, model) -> dict[str, dict]:
    """Optimizer per-parameter state keyed by parameter name (survives a change of the trainable set)."""
    net = getattr(model, "module", model)
    names = {id(p): n for n, p in net.named_parameters()}
    return {names[id(p)]: dict(s) for p, s in optimizer.state.items() if id(p) in names}


def load_optimizer_state_by_name(optimizer, model, state: dict[str, dict]) -> int:
    """Put :func:`optimizer_state_by_name` entries back on the same-named parameters; returns how many."""
    net = getattr(model, "module", model)
    in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    n = 0
    for name, p in net.named_parameters():
        if name in state and id(p) in in_opt:
            optimizer.state[p] = {k: (v.to(p.device) if hasattr(v, "to") else v) for k, v in state[name].items()}
            n += 1
    return n


# --------------------------------------------------------------------------------------------------------
# The per-worker function


def _epoch_batches(files: list[str], fs, keep: np.ndarray, cfg: OceanConfig, seed: int, epoch: int, rank: int,
                   micro_batch: int, prefetch: int):
    """This rank's augmented micro-batches of one epoch (a Ray Data pipeline run from the worker)."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.read_parquet(files, filesystem=fs,
                               shuffle=ray.data.FileShuffleConfig(seed=epoch_seed(seed, epoch) % (2**31)))
    ds = ds.map_batches(
        select_and_augment, batch_size=READ_BATCH_ROWS, batch_format="numpy",
        fn_kwargs={"keep": np.sort(keep), "augment": dataclasses.asdict(cfg.augment),
                   "seed": epoch_seed(seed, epoch), "exemplar_size": cfg.model.exemplar_size,
                   "search_size": cfg.model.search_size})
    return ds.iter_torch_batches(batch_size=micro_batch, drop_last=False, prefetch_batches=prefetch,
                                 local_shuffle_buffer_size=max(4 * micro_batch, 64),
                                 local_shuffle_seed=(epoch_seed(seed, epoch) + rank) % (2**31))


def _repair_invalid(batch: dict) -> tuple[dict, int, bool]:
    """Rows whose JPEG did not decode are replaced by copies of valid rows (counted); an all-invalid batch
    keeps a dummy box and must be skipped on every rank. Returns ``(batch, n_invalid, all_invalid)``."""
    import torch

    valid = batch.pop("valid")
    n_bad = int((~valid).sum())
    if n_bad == 0:
        return batch, 0, False
    good = torch.nonzero(valid).flatten()
    if len(good) == 0:
        batch["search_box"] = torch.tensor([[100.0, 100.0, 150.0, 150.0]]).expand_as(batch["search_box"]).clone()
        return batch, n_bad, True
    src = good[torch.arange(len(valid)) % len(good)]
    idx = torch.where(valid, torch.arange(len(valid)), src)
    return {k: v[idx] for k, v in batch.items()}, n_bad, False


def _train_loop(config: dict) -> None:
    """Ray Train worker: read this rank's pairs, prepare the model, loop ``engine.train_step``, report."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from ocean.checkpoint import load_checkpoint, save_checkpoint
    from ocean.engine import (
        BadStepGuard,
        TrainingDiverged,
        apply_bn_policy,
        backbone_trainable_layers,
        build_optimizer,
        needs_new_optimizer,
        set_epoch_lr,
        set_trainable,
        train_step,
    )
    from ocean.model import build_model

    cfg: OceanConfig = from_dict(config["cfg"])
    run = config["run"]
    out, seed = run["out"], int(run["seed"])
    plan = BatchPlan(**run["plan"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    amp_dtype = torch.bfloat16 if device.type == "cuda" else None  # AMP on GPU only

    torch.manual_seed(seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    net = build_model(cfg.model).to(device)
    start, history, opt_state = 0, [], None
    found = list_checkpoints(out)
    if found:  # the newest epoch file: a restarted worker group and a re-run both continue from it
        ckpt = load_checkpoint(found[-1][1], map_location=device)
        net.load_state_dict(ckpt["model"])
        start, history = int(ckpt["epoch"]), list(ckpt.get("history", []))
        opt_state = (ckpt.get("optimizer") or {}).get("state_by_name")
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"]["torch"])
        if rank == 0:
            print(f"[ocean train] resuming at epoch {start} from {found[-1][1]}", flush=True)
    fs, files = list_pair_files(run["data"])
    keys, datasets = read_pair_index(fs, files)

    def agree(skip: bool) -> bool:
        if not distributed:
            return skip
        flag = torch.tensor([1.0 if skip else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def wrap(module):
        if not distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    mlflow_client = None

    def log_metrics(values: dict[str, float], step: int) -> None:
        nonlocal mlflow_client
        if rank != 0 or not run.get("mlflow_run_id"):
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        mlflow_client = mlflow_client or MlflowClient(run["mlflow_uri"])
        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, int(step)) for k, v in values.items() if math.isfinite(float(v))]
        for i in range(0, len(metrics), 900):  # MLflow log_batch takes at most 1000 metrics
            mlflow_client.log_batch(run["mlflow_run_id"], metrics=metrics[i:i + 900])

    model = optimizer = None
    guard = BadStepGuard(cfg.optim.max_bad_steps)
    kill = run.get("kill_worker_at")
    for epoch in range(start, cfg.optim.epochs):
        if optimizer is None or needs_new_optimizer(cfg.optim, epoch):
            if optimizer is None:  # start or resume: the saved state, unless this is the rebuild epoch
                rebuild = needs_new_optimizer(cfg.optim, epoch) and cfg.optim.rebuild_optimizer_at_unfreeze
                carried = None if rebuild else opt_state
            else:  # the unfreeze epoch: official rebuild resets momentum (facts §8), else carry it over
                carried = None if cfg.optim.rebuild_optimizer_at_unfreeze else optimizer_state_by_name(optimizer, net)
            model = None  # drop the old DDP wrapper (and its hooks) before wrapping again
            set_trainable(net, cfg.optim, epoch)
            model = wrap(net)  # DDP registers only the parameters that require grad now
            optimizer = build_optimizer(model, cfg.optim, epoch)
            if carried:
                load_optimizer_state_by_name(optimizer, model, carried)
        lr = set_epoch_lr(optimizer, cfg.optim, epoch)
        model.train()
        apply_bn_policy(model, cfg.optim, epoch)

        selection, composition = epoch_selection(keys, datasets, cfg.data.pairs_per_epoch, seed, epoch)
        mine, steps = rank_rows(selection, rank, plan)
        batches = iter(_epoch_batches(files, fs, mine, cfg, seed, epoch, rank, plan.micro_batch,
                                      int(run["prefetch_batches"])))
        sums = {"total": 0.0, "reg": 0.0, "cls": 0.0, "align": 0.0}
        counted = skipped = invalid = 0
        wait_s = 0.0
        t_epoch = time.perf_counter()
        for step in range(steps):
            global_step = epoch * steps + step
            if kill and rank == kill[2] and epoch == kill[0] and step == kill[1]:
                marker = storage.join(out, KILLED_MARKER)
                if not storage.exists(marker):  # once per output folder: the restart must get through
                    storage.write_bytes(marker, json.dumps({"epoch": epoch, "step": step, "rank": rank}).encode())
                    os.kill(os.getpid(), signal.SIGKILL)
            result = None
            for micro in range(plan.accumulate):
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    raise TrainingDataError(f"rank {rank} ran out of pairs at epoch {epoch} step {step} of "
                                            f"{steps}: the pair records changed during the run?") from None
                wait_s += time.perf_counter() - t0
                batch, n_bad, all_bad = _repair_invalid(batch)
                invalid += n_bad
                last = micro == plan.accumulate - 1
                sync = model.no_sync() if (distributed and not last) else _null()
                with sync:
                    result = train_step(model, batch, cfg, optimizer, device=device, amp_dtype=amp_dtype,
                                        accumulate=plan.accumulate, do_step=last,
                                        agree=(lambda s: agree(True)) if all_bad else agree)
                if result.skipped:
                    break
            try:
                guard.update(result, global_step)
            except TrainingDiverged as exc:
                if rank == 0:  # every rank took the same decisions (agree): all stop here, cleanly
                    storage.write_bytes(storage.join(out, DIVERGED_FILE),
                                        json.dumps({"error": str(exc), "epoch": epoch, "step": global_step}).encode())
                return
            if result.skipped:
                skipped += 1
                continue
            counted += 1
            for k in sums:
                sums[k] += result.losses.get(k, 0.0)
            if rank == 0 and (step % max(1, steps // LOG_EVERY_STEPS) == 0 or step == steps - 1):
                log_metrics({f"step/loss_{k}": v for k, v in result.losses.items()}, global_step)
        epoch_s = time.perf_counter() - t_epoch
        del batches

        totals = torch.tensor([sums["total"], sums["reg"], sums["cls"], sums["align"], counted, skipped,
                               invalid, wait_s, epoch_s], dtype=torch.float64, device=device)
        if distributed:
            dist.all_reduce(totals)
        t = totals.tolist()
        n_ok = max(t[4], 1.0)
        digests = [parameter_digest(net)]
        if distributed:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, digests[0])
            digests = gathered
        metrics = {
            "epoch": epoch + 1, "loss": t[0] / n_ok, "loss_reg": t[1] / n_ok, "loss_cls": t[2] / n_ok,
            "loss_align": t[3] / n_ok, "steps": steps, "skipped_steps": int(t[5] / world),
            "skipped_total": guard.total, "invalid_pairs": int(t[6]), "lr": lr,
            "pairs_per_s": steps * plan.global_batch / max(epoch_s, 1e-9),
            "data_wait_fraction": t[7] / max(t[8], 1e-9),
            "params_identical": float(len(set(digests)) == 1),
        }
        record = {**metrics, "composition": composition, "param_digests": digests}
        history.append(record)
        pointer = None
        if rank == 0:
            uri = checkpoint_uri(out, epoch + 1)
            save_checkpoint(uri, net, cfg, epoch=epoch + 1, optimizer={
                                "state_by_name": optimizer_state_by_name(optimizer, net),
                                "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                                 for g in optimizer.param_groups]},
                            trainable_layers=list(backbone_trainable_layers(cfg.optim, epoch)),
                            scheduler={"epoch": epoch + 1, "lr": lr}, rng={"torch": torch.get_rng_state()},
                            history=history, metrics=metrics, seed=seed)
            log_metrics({**{k: v for k, v in metrics.items() if k != "epoch"},
                         **{f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups}}, epoch + 1)
            pointer = tempfile.mkdtemp(prefix="ocean-ckpt-")
            Path(pointer, "pointer.json").write_text(json.dumps({"epoch": epoch + 1, "uri": uri}))
            print(f"[ocean train] epoch {epoch + 1}/{cfg.optim.epochs} loss {metrics['loss']:.4f} "
                  f"lr {lr:.3g} {metrics['pairs_per_s']:.1f} pairs/s data wait "
                  f"{100 * metrics['data_wait_fraction']:.0f}% skipped {metrics['skipped_steps']} -> {uri}",
                  flush=True)
        ray.train.report({**metrics, "checkpoint_uri": checkpoint_uri(out, epoch + 1)},
                         checkpoint=ray.train.Checkpoint.from_directory(pointer) if pointer else None)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------------------------------------
# The driver


def _ray_storage(out: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray Train under ``OUT/ray``."""
    fs, path = storage.resolve(storage.join(out, "ray"))
    if not storage.is_uri(out):
        Path(path).mkdir(parents=True, exist_ok=True)
        return path, None
    return path, fs


def clean_ray_orphans(out: str, name: str, keep: set[str]) -> list[str]:
    """Delete ``OUT/ray/NAME/checkpoint_*`` folders not in ``keep`` (uploaded, never registered, or
    superseded); returns the deleted paths."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(storage.join(out, "ray", name))
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return []
    keep_names = {Path(k.rstrip("/")).name for k in keep}
    removed = []
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_") \
                and info.base_name not in keep_names:
            fs.delete_dir(info.path)
            removed.append(info.path)
    return removed


def train(data: str, out: str, cfg: OceanConfig, *, workers: int = 2, use_gpu: bool = False,
          max_worker_batch: int | None = None, cpus_per_worker: float | None = None, seed: int = 0,
          ray_address: str | None = None, mlflow_uri: str | None = None, experiment: str = "ocean-train",
          run_name: str | None = None, max_failures: int = 2, prefetch_batches: int = 2,
          kill_worker_at: tuple[int, int, int] | None = None, verbose: bool = True) -> dict[str, Any]:
    """Train ``cfg`` on the pair records at ``data`` with Ray Train; checkpoints and Ray state under ``out``.

    Args:
        data: folder or ``s3://`` URI of pair-record parquet files (``ocean prepare`` output).
        out: folder or ``s3://`` URI for ``checkpoints/epoch-NNNN.pt``, Ray's run state (``ray/``) and, for
            a local folder, the default MLflow store ``mlflow.db``. Re-running with the same ``out`` and
            ``run_name`` resumes at the first unfinished epoch.
        workers: DDP workers (gloo on CPU, NCCL on GPU); ``optim.batch_size`` stays the global batch.
        max_worker_batch: largest micro-batch per worker; above it gradients are accumulated.
        cpus_per_worker: CPUs reserved per training worker (default 0.5 on CPU so Ray Data's decode tasks
            get CPUs on small machines, ray_stack.md §4; 1 with a GPU).
        seed: model init, epoch composition and augmentation seed.
        kill_worker_at: ``(epoch, step, rank)``: that rank SIGKILLs itself once (a marker under ``out``
            remembers it) -- for fault-tolerance tests and drills.

    Returns:
        ``{"epochs", "final_loss", "metrics" (last epoch), "losses" (per epoch), "history",
        "checkpoints" (URIs, oldest first), "mlflow_run_id", "mlflow_uri", "batch_plan", "resumed_from",
        "orphans_removed"}``.

    Raises:
        TrainingDiverged: ``optim.max_bad_steps`` consecutive skipped steps (message names the step).
        TrainingDataError: no or unusable pair records.
    """
    from mlflow.tracking import MlflowClient
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ocean.engine import TrainingDiverged
    from pipelines import tracking

    log = print if verbose else (lambda *a, **k: None)
    plan = batch_plan(cfg.optim.batch_size, workers, max_worker_batch)
    log(f"[ocean train] {plan.describe()}")
    fs, files = list_pair_files(data)  # fail fast on missing data, before Ray starts
    manifest = manifest_sha256(data)
    keys, datasets = read_pair_index(fs, files)
    selection, composition = epoch_selection(keys, datasets, cfg.data.pairs_per_epoch, seed, 0)
    rank_rows(selection, 0, plan)  # fails fast when an epoch is shorter than one global batch
    log(f"[ocean train] {len(keys)} prepared pairs in {len(files)} files; epoch 1 draws "
        + ", ".join(f"{n} {c['taken']}/{c['available']}" for n, c in composition.items() if c["wanted"]))
    short = {n: c for n, c in composition.items() if c["taken"] < c["wanted"]}
    if short:
        log(f"[ocean train] warning: fewer prepared pairs than data.pairs_per_epoch asks for: {short}")
    name = run_name or "ocean-train"
    done_before = list_checkpoints(out)
    remove_stale_temporaries(out)
    if storage.exists(storage.join(out, DIVERGED_FILE)):  # a re-run tries again from the last good epoch
        fs_out, p = storage.resolve(storage.join(out, DIVERGED_FILE))
        fs_out.delete_file(p)

    uri = tracking.tracking_uri(mlflow_uri, out)
    exp_id = tracking.ensure_experiment(uri, experiment)
    client = MlflowClient(uri)
    run_key = hashlib.sha1(f"{tracking.public_uri(out)}|{name}".encode()).hexdigest()[:16]
    run_id = tracking.find_run(uri, exp_id, "ocean.run_key", run_key)
    if run_id is None:
        tags = tracking.run_tags(**{"ocean.run_key": run_key, "ocean.data": tracking.public_uri(data),
                                    "ocean.out": tracking.public_uri(out), "mlflow.runName": name,
                                    "ocean.manifest_sha256": manifest or "none"})
        run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
        params = tracking.config_params(cfg, {
            "run.workers": workers, "run.use_gpu": use_gpu, "run.seed": seed, "run.per_worker_batch": plan.per_worker,
            "run.micro_batch": plan.micro_batch, "run.accumulate": plan.accumulate,
            "run.max_worker_batch": max_worker_batch, "run.data": tracking.public_uri(data),
            "run.out": tracking.public_uri(out), "run.manifest_sha256": manifest or "none",
            "run.pair_files": len(files)})
        items = list(params.items())
        from mlflow.entities import Param

        for i in range(0, len(items), 90):
            client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + 90]])
    else:
        client.update_run(run_id, status="RUNNING")
        log(f"[ocean train] continuing MLflow run {run_id}")
    log(f"[ocean train] MLflow {tracking.public_uri(uri)} experiment {experiment!r} run {run_id}")

    from pipelines.raysession import ensure_ray

    ensure_ray(ray_address)
    storage_path, storage_fs = _ray_storage(out)
    cpus = cpus_per_worker if cpus_per_worker is not None else (1.0 if use_gpu else 0.5)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": to_dict(cfg), "run": {
            "data": data, "out": out, "seed": seed, "plan": dataclasses.asdict(plan),
            "mlflow_uri": uri, "mlflow_run_id": run_id, "prefetch_batches": prefetch_batches,
            "kill_worker_at": list(kill_worker_at) if kill_worker_at else None}},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    try:
        result = trainer.fit()
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    diverged = storage.join(out, DIVERGED_FILE)
    if storage.exists(diverged):
        info = json.loads(storage.read_bytes(diverged))
        client.set_tag(run_id, "ocean.error", info["error"][:5000])
        client.set_terminated(run_id, "FAILED")
        raise TrainingDiverged(info["error"])
    keep = {result.checkpoint.path} if result.checkpoint is not None else set()
    orphans = clean_ray_orphans(out, name, keep)
    found = list_checkpoints(out)
    if not found:
        client.set_terminated(run_id, "FAILED")
        raise RuntimeError(f"training finished without writing a checkpoint under {out}")
    from ocean.checkpoint import load_checkpoint

    last = load_checkpoint(found[-1][1])
    history = list(last.get("history", []))
    uris = [u for _, u in found]
    client.set_tag(run_id, "ocean.final_checkpoint", tracking.public_uri(uris[-1]))
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "checkpoints.json").write_text(json.dumps([tracking.public_uri(u) for u in uris], indent=1))
        client.log_artifact(run_id, str(Path(tmp, "checkpoints.json")))
        final = Path(tmp, "model.pt")
        final.write_bytes(storage.read_bytes(uris[-1]))
        client.log_artifact(run_id, str(final), artifact_path="model")
    client.set_terminated(run_id, "FINISHED")
    metrics = dict(last.get("metrics", {}))
    return {
        "epochs": int(last["epoch"]), "final_loss": metrics.get("loss"), "metrics": metrics,
        "losses": [h["loss"] for h in history], "history": history, "checkpoints": uris,
        "mlflow_run_id": run_id, "mlflow_uri": uri, "batch_plan": dataclasses.asdict(plan),
        "resumed_from": done_before[-1][0] if done_before else 0, "orphans_removed": orphans,
    }
