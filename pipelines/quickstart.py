"""The whole system on one machine: synthetic data -> Ray pair preparation -> Ray Train -> Ray evaluation -> MLflow.

:func:`run_quickstart` runs five stages over one :class:`QuickstartSettings`: synth -> prepare -> train (the
smoke preset) -> evaluate (the final checkpoint beside an untrained model of the same config, on the synthetic
benchmarks and the held-out scenes of :mod:`data_prep.heldout_scenes`, these also with online tracking) ->
summary (a table on the terminal and ``WORKDIR/summary.json``). Each stage is skipped when its output already
exists, so a second run reuses what is done. Defaults: a local Ray instance, ``WORKDIR`` for storage, a sqlite MLflow
store at ``WORKDIR/mlflow.db``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocean import storage
from ocean.benchmarks.report import format_score
from ocean.benchmarks.scoring import HEADLINE, SCORE_KEYS
from ocean.config import OceanConfig, apply_overrides, smoke

log = logging.getLogger(__name__)

BENCHMARKS = ("otb", "vot2018", "got10k", "lasot")
# the summary's rows: the synthetic benchmarks, then the held-out scenes (data_prep.heldout_scenes, scored as OTB),
# offline and with the online module of paper Sec. 4.2 (facts §10.2's settings: `--set tracker.online=true`)
SUMMARY_ROWS = BENCHMARKS + ("heldout", "heldout_online")
# the plots' titles name the data, which is synthetic, not the benchmark whose layout and protocol it follows
SYNTHETIC_TITLES = {"otb": "synthetic OTB", "vot2018": "synthetic VOT2018", "got10k": "synthetic GOT-10k val",
                    "lasot": "synthetic LaSOT"}
ONLINE = ("tracker.online=true",)


def _stage(name: str, message: str) -> float:
    log.info(f"==> [{name}] {message}")
    return time.time()


def sibling_uri(uri: str, name: str) -> str:
    """``s3://bucket/a/pairs?q`` -> ``s3://bucket/a/runs?q``: the run folder beside the pair records."""
    import urllib.parse

    parsed = urllib.parse.urlparse(uri)
    parent = parsed.path.rstrip("/").rsplit("/", 1)[0] if parsed.path.strip("/") else ""
    return urllib.parse.urlunparse(parsed._replace(path=f"{parent}/{name}"))


def benchmark_roots(synthetic_dir: Path) -> dict[str, str]:
    roots = {
        "otb": synthetic_dir / "benchmarks" / "otb",
        "vot2018": synthetic_dir / "benchmarks" / "vot2018" / "sequences",
        "got10k": synthetic_dir / "benchmarks" / "got10k" / "val",
        "lasot": synthetic_dir / "benchmarks" / "lasot",
    }
    return {k: str(v) for k, v in roots.items()}


def quickstart_config(epochs: int | None, overrides: list[str]) -> OceanConfig:
    cfg = smoke()
    if epochs is not None:
        cfg = apply_overrides(cfg, [f"optim.epochs={epochs}"])
    return apply_overrides(cfg, overrides)


@dataclass(frozen=True)
class QuickstartSettings:
    """One quickstart run: everything under ``workdir``; pair records at ``storage_uri`` (default
    ``WORKDIR/pairs``; an ``s3://`` URI puts the runs beside them), MLflow at ``mlflow_uri`` (default
    ``$MLFLOW_TRACKING_URI``, else ``WORKDIR/mlflow.db``); ``size``, ``scenes`` and ``busy`` of the synthetic
    data (:func:`data_prep.synthetic.generate`), ``epochs`` and ``overrides`` on top of the smoke preset;
    ``max_sequences`` per benchmark in the evaluation."""

    workdir: str
    storage_uri: str | None = None
    mlflow_uri: str | None = None
    ray_address: str | None = None
    seed: int = 0
    size: str = "small"
    # 4x the training scenes, half of them on busy backgrounds: the held-out scenes' score over three seeds
    # and in the quickstart itself, at the same pairs per epoch (BENCHMARKS.md "Generalisation")
    scenes: int = 4
    busy: float = 0.5
    epochs: int | None = None
    overrides: Sequence[str] | None = None
    workers: int = 2
    use_gpu: bool = False
    max_sequences: int | None = None


@dataclass(frozen=True)
class _Places:
    work: Path
    pairs: str
    runs: str
    mlflow: str


def run_quickstart(settings: QuickstartSettings) -> dict[str, Any]:
    """Run (or resume) the quickstart; returns the summary also written to ``WORKDIR/summary.json``."""
    from pipelines.raysession import ensure_ray, require_gpus

    s = settings
    t_start = time.time()
    where = _places(s)
    cfg = quickstart_config(s.epochs, list(s.overrides or []))
    ensure_ray(s.ray_address)
    require_gpus(s.workers if s.use_gpu else 0)  # before any stage, not when training starts waiting
    synth = _synth(where.work / "synthetic", s)
    manifest = _prepare(where, cfg, s)
    trained = _train(where, cfg, s)
    final_ckpt = trained["checkpoints"][-1]
    evaluation, untrained = _evaluate(where, cfg, final_ckpt, s)
    _stage("5/5 summary", "")
    summary = build_summary(where.work, where.pairs, manifest, trained, evaluation, final_ckpt, untrained,
                            where.mlflow, synth)
    summary["seconds"] = round(time.time() - t_start, 1)
    (where.work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    return summary


def _work(s: QuickstartSettings) -> Path:
    return Path(s.workdir).expanduser().resolve()


def _places(s: QuickstartSettings) -> _Places:
    work = _work(s)
    work.mkdir(parents=True, exist_ok=True)
    pairs = s.storage_uri or str(work / "pairs")
    runs = sibling_uri(pairs, "runs") if storage.is_uri(pairs) else str(work / "runs")
    mlflow = s.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{work / 'mlflow.db'}"
    return _Places(work, pairs, runs, mlflow)


def synthetic_mismatch(s: QuickstartSettings) -> str | None:
    """One line saying why the synthetic data already in ``WORKDIR/synthetic`` is not what ``s`` asks for
    (another seed, size, scenes or busy share: reusing it would train on other data without a word), or None."""
    synthetic_dir = _work(s) / "synthetic"
    path = synthetic_dir / "synth_manifest.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    have = {"seed": m.get("seed"), "size": m.get("size"), "scenes": m.get("scenes", 1), "busy": m.get("busy", 0.0)}
    want = {"seed": s.seed, "size": s.size, "scenes": s.scenes, "busy": float(s.busy)}
    diff = [f"{k} {have[k]} (asked {want[k]})" for k in want if have[k] != want[k]]
    if not diff:
        return None
    return (f"{synthetic_dir} holds synthetic data of another {', '.join(diff)}: use another --workdir, or "
            "the same settings to reuse it")


def _synth(synthetic_dir: Path, s: QuickstartSettings) -> dict:
    """Stage 1: the synthetic datasets in the six real training layouts and four benchmark layouts
    (``data_prep.synthetic``) under ``WORKDIR/synthetic`` (reused when their manifest exists)."""
    from data_prep.heldout_scenes import write_heldout_otb
    from data_prep.synthetic import generate

    t = _stage("1/5 synth", f"synthetic datasets ({s.size}, scenes x{s.scenes}, busy {s.busy:g}) in {synthetic_dir}, "
               "held-out scenes beside them")
    mismatch = synthetic_mismatch(s)
    if mismatch:
        raise ValueError(mismatch)
    if (synthetic_dir / "synth_manifest.json").exists():
        synth = json.loads((synthetic_dir / "synth_manifest.json").read_text())
        log.info("reusing the existing synthetic data")
    else:
        synth = generate(synthetic_dir, seed=s.seed, size=s.size, scenes=s.scenes, busy=s.busy)
    write_heldout_otb(synthetic_dir.parent / "heldout")  # never trained on; reused when complete
    log.info(f"done in {time.time() - t:.1f} s")
    return synth


def _prepare(where: _Places, cfg: OceanConfig, s: QuickstartSettings) -> dict:
    """Stage 2: the Ray preparation job (one task per shard; it reuses finished shards itself) writes parquet
    pair records + ``manifest.json`` to ``--storage`` (default ``WORKDIR/pairs``; an ``s3://`` URI works the
    same)."""
    from pipelines.prepare import PrepareSettings, prepare

    t = _stage("2/5 prepare", f"Ray pair records -> {where.pairs}")
    synthetic_dir = where.work / "synthetic"
    datasets = {name: str(synthetic_dir / name) for name in ("got10k", "lasot", "vid", "det", "coco", "ytbb")}
    manifest = prepare(PrepareSettings(datasets, where.pairs, cfg, seed=s.seed, mlflow_uri=where.mlflow,
                                       experiment="ocean-quickstart"))
    log.info(f"done in {time.time() - t:.1f} s")
    return manifest


def _train(where: _Places, cfg: OceanConfig, s: QuickstartSettings) -> dict:
    """Stage 3: Ray Train on the smoke preset (``workers`` DDP workers, gloo on CPU), a checkpoint per epoch,
    metrics to MLflow (reused while train.json's last checkpoint exists)."""
    from pipelines.train import TrainSettings, train

    t = _stage("3/5 train", f"Ray Train, smoke preset, {s.workers} workers, {cfg.optim.epochs} epochs -> {where.runs}")
    trained = _reuse(where.work / "train.json", lambda r: r.get("epochs") == cfg.optim.epochs
                     and all(storage.exists(u) for u in r.get("checkpoints", [])[-1:]))
    if trained is None:
        trained = train(TrainSettings(where.pairs, where.runs, cfg, workers=s.workers, use_gpu=s.use_gpu,
                                      mlflow_uri=where.mlflow, experiment="ocean-quickstart",
                                      run_name="quickstart-smoke", seed=s.seed))
        (where.work / "train.json").write_text(json.dumps(trained, indent=1, default=str))
    log.info(f"done in {time.time() - t:.1f} s; final checkpoint {trained['checkpoints'][-1]}")
    return trained


def _untrained_checkpoint(work: Path, cfg: OceanConfig, seed: int) -> str:
    """The untrained baseline: the smoke model built with ``torch.manual_seed(seed)`` (kept once written)."""
    untrained = str(work / "untrained.pt")
    if not Path(untrained).exists():
        import torch

        from ocean.checkpoint import save_checkpoint
        from ocean.model import build_model

        torch.manual_seed(seed)
        save_checkpoint(untrained, build_model(cfg.model), cfg, epoch=0, note="untrained baseline")
    return untrained


def _evaluate(where: _Places, cfg: OceanConfig, final_ckpt: str, s: QuickstartSettings) -> tuple[dict, str]:
    """Stage 4: the final and an untrained checkpoint on the synthetic OTB, VOT2018, GOT-10k and LaSOT
    benchmarks and on the held-out scenes (:mod:`data_prep.heldout_scenes`, scored as OTB), there also with
    the online module (``tracker.online=true``), Ray-parallel, scored with the project's toolkit (each reused
    while its JSON matches); returns the evaluation (the held-out scores under ``scores[ckpt]["heldout"]`` and
    ``["heldout_online"]``) and the untrained checkpoint."""
    t = _stage("4/5 evaluate", "trained and untrained models on the synthetic and held-out benchmarks")
    untrained = _untrained_checkpoint(where.work, cfg, s.seed)
    evaluation = _evaluate_suite(where, "evaluation", benchmark_roots(where.work / "synthetic"), final_ckpt,
                                 untrained, s, titles=SYNTHETIC_TITLES)
    for row, name, overrides in (("heldout", "evaluation-heldout", ()),
                                 ("heldout_online", "evaluation-heldout-online", ONLINE)):
        title = "the held-out scenes" + (", online" if overrides else "") + " (OTB protocol)"
        heldout = _evaluate_suite(where, name, {"otb": str(where.work / "heldout")}, final_ckpt, untrained, s,
                                  overrides, titles={"otb": title})
        for ckpt, by_benchmark in heldout["scores"].items():
            evaluation["scores"].setdefault(ckpt, {})[row] = by_benchmark.get("otb", {})
        evaluation["plots"] = list(evaluation.get("plots", [])) + list(heldout.get("plots", []))
    log.info(f"done in {time.time() - t:.1f} s")
    return evaluation, untrained


def _evaluate_suite(where: _Places, name: str, roots: dict[str, str], final_ckpt: str, untrained: str,
                    s: QuickstartSettings, overrides: Sequence[str] = (), titles: dict[str, str] | None = None) -> dict:
    from pipelines.evaluate import EvaluateSettings, evaluate

    evaluation = _reuse(where.work / f"{name}.json", lambda r: sorted(r.get("scores", {})) == sorted(
        [final_ckpt, untrained]) and r.get("max_sequences") == s.max_sequences
        and r.get("tracker_overrides", []) == list(overrides))
    if evaluation is None:
        evaluation = evaluate(EvaluateSettings([final_ckpt, untrained], roots, str(where.work / name),
                                               tracker_overrides=list(overrides) or None, workers=s.workers,
                                               use_gpu=s.use_gpu, mlflow_uri=where.mlflow,
                                               max_sequences=s.max_sequences, titles=titles))
        evaluation["max_sequences"] = s.max_sequences
        evaluation["tracker_overrides"] = list(overrides)
        (where.work / f"{name}.json").write_text(json.dumps(evaluation, indent=1, default=str))
    return evaluation


def _reuse(path: Path, still_valid) -> dict | None:
    """A finished stage's saved result, if it exists and still matches what this run would do."""
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if still_valid(result):
        log.info(f"reusing {path.name}")
        return result
    return None


def build_summary(work: Path, pairs_uri: str, manifest: dict, trained: dict, evaluation: dict,
                  final_ckpt: str, untrained: str, mlflow_uri: str, synth: dict) -> dict[str, Any]:
    scores = evaluation["scores"]  # {checkpoint: {benchmark: metrics}}
    benchmarks = {}
    for name in SUMMARY_ROWS:
        benchmarks[name] = {
            "trained": _metrics(scores.get(final_ckpt, {}).get(name, {})),
            "untrained": _metrics(scores.get(untrained, {}).get(name, {})),
        }
    data = {name: {k: v for k, v in entry.items() if k in ("tracks", "frames_read", "frames_used",
                                                           "pairs_written", "rejected")}
            for name, entry in manifest.get("datasets", {}).items()}
    return {
        "workdir": str(work),
        "checkpoint": final_ckpt,
        "untrained_checkpoint": untrained,
        "pairs": pairs_uri,
        "data": data,
        "training": {k: trained.get(k) for k in ("final_loss", "epochs", "mlflow_run_id", "losses")},
        "benchmarks": benchmarks,
        "plots": list(trained.get("plots") or []) + list(evaluation.get("plots", [])),
        "mlflow_uri": mlflow_uri,
        "mlflow_ui": _mlflow_ui_command(mlflow_uri),
        "synthetic": {"seed": synth.get("seed"), "size": synth.get("size"), "scenes": synth.get("scenes", 1),
                      "busy": synth.get("busy", 0.0)},
    }


def _metrics(scored: dict) -> dict[str, float]:
    return {k: scored[k] for k in SCORE_KEYS if isinstance(scored.get(k), (int, float))}


def _mlflow_ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def format_summary(summary: dict) -> str:
    lines = ["", "Data (pair records at " + summary["pairs"] + ")", "",
             "| dataset | tracks | frames read | frames used | pairs | rejected |", "|---|---|---|---|---|---|"]
    for name, d in summary["data"].items():
        rejected = sum((d.get("rejected") or {}).values())
        lines.append(f"| {name} | {d.get('tracks', '')} | {d.get('frames_read', '')} | {d.get('frames_used', '')} "
                     f"| {d.get('pairs_written', '')} | {rejected} |")
    tr = summary["training"]
    lines += ["", f"Training: final loss {tr.get('final_loss')} after {tr.get('epochs')} epochs "
              f"(MLflow run {tr.get('mlflow_run_id')})", "",
              "| benchmark | metric | untrained | trained |", "|---|---|---|---|"]
    for name, entry in summary["benchmarks"].items():
        for metric in sorted(set(entry["trained"]) | set(entry["untrained"])):
            u, t = entry["untrained"].get(metric), entry["trained"].get(metric)
            mark = " *" if metric == HEADLINE.get(name, HEADLINE["otb"]) else ""
            lines.append(f"| {name} | {metric}{mark} | {_num(u)} | {_num(t)} |")
    lines += ["", "Plots:"] + [f"  {p}" for p in summary.get("plots", [])]
    lines += ["", f"Checkpoint: {summary['checkpoint']}", f"Summary:    {summary['workdir']}/summary.json",
              f"MLflow UI:  {summary['mlflow_ui']}", f"Took {summary.get('seconds', '?')} s", ""]
    return "\n".join(lines)


def _num(v) -> str:
    return "" if v is None else format_score(v)  # as the plot legends show it
