"""The paper's ablations as Ray Tune grids: component-wise (Table 4) and training data (Table 5), in MLflow.

One call trains and evaluates every row of a study and writes the paper's table with our numbers beside
the paper's (``OUT/ablation.md`` + ``OUT/ablation.json``, and the same table in MLflow).

Rows (paper Sec. 5.3; reference numbers ``ocean_facts §13.4``, VOT2018 EAO)
---------------------------------------------------------------------------

Component study (Table 4). Every row is the previous one plus one switch; the switches are config options
(:mod:`ocean.config`), never code forks, and every row sets all of them explicitly:

====  ===============  ====================================================================  =====
 #    key              switches added to the previous row                                    paper
====  ===============  ====================================================================  =====
 1    baseline         labels.cls_rule=in_box, model.head.combination=single,                0.358
                       model.head.align=false, tracker.use_align=false (, tracker.online=false)
 2    centralized      labels.cls_rule=l1_cells (the official centralized sampling, facts §5.2)  0.396
 3    combination      model.head.combination=dilated3 (Sec. 4.1 feature combination)        0.438
 4    object_aware     model.head.align=true, tracker.use_align=true (Sec. 3.2)              0.467
 5    online           tracker.online=true, tracker.use_align=false (Sec. 4.2)               0.489
====  ===============  ====================================================================  =====

Row 5 exists only when ``TrackerConfig`` has ``online`` and :mod:`ocean.online` is importable. It turns
``use_align`` off because the official tracker never combines p_o with the online branch (the "NOOA"
models, facts §4.3; :class:`ocean.tracker.OceanTracker` refuses the combination).

Data study (Table 5): the full model trained on ``YTB/VID/DET/COCO`` -> ``+ GOT-10k`` -> ``+ LaSOT``; the
rows differ only in ``data.pairs_per_epoch``. A row whose added dataset is not in the prepared data (its
``manifest.json``, else the pair records' ``dataset`` column) is skipped with a warning and listed as
skipped in the table. The paper's SiamRPN++ row (0.414) is shown for reference only (another tracker).

Budgets
-------
``epochs`` sets ``optim.epochs``; ``pairs_per_epoch`` is the TOTAL pairs of an epoch for every row (default:
the sum of the preset's mix, 600,000 for ``paper``, facts §7.3 -- the paper's "6 x 10^5 pairs per epoch",
Sec. 5.3), split over the row's datasets present in the data in proportion to the preset's mix (largest
remainders, so it sums exactly). A dataset the mix leaves at 0 (LaSOT, not in the official mix, facts §7.3)
gets GOT-10k's weight: the paper adds LaSOT "like" GOT-10k and gives no count. ``max_sequences`` limits
each benchmark. So the same call is a minutes-long smoke (``preset="smoke"``, 1 epoch, 16 pairs, 1
sequence) or the multi-day paper run.

Ray Tune under Train V2 (ray_stack.md §5)
-----------------------------------------
``Tuner(TorchTrainer(...))`` fails under Train V2, so each trial is a Tune FUNCTION trainable
(:func:`ablation_trial`, ``tune.with_resources(..., {"CPU": 0.1})``: the trial only drives) that calls
:func:`pipelines.train.train` -- which builds and fits its own ``TorchTrainer`` inside the trial -- and then
:func:`pipelines.evaluate.evaluate` on the final checkpoint. ``train()`` takes no Ray Train callbacks, so
``TuneReportCallback`` cannot be attached; per-epoch training metrics go to MLflow from rank 0 (as for
every ``ocean train`` run) and the trial reports once, at the end, with ``tune.report`` (the scores of
its rows). The grid is over *trainings*: rows whose training configuration is identical (row 5 only
changes the tracker) share one trial and one training, evaluated once per row.
``max_concurrent_trials`` defaults to 1 (small machines); raise it on a cluster.

MLflow (store of :func:`pipelines.tracking.tracking_uri`, created once on the driver before any trial)
------------------------------------------------------------------------------------------------------
One parent run (``ocean.kind=ablation``; params: study, preset, budgets; the table as ``ablation.md`` and
``ablation.json`` artifacts; metrics ``<row>.<benchmark>.<metric>``) and one child run per row, created on
the driver before the trials start (``mlflow.parentRunId``; params: every switch as ``switch.<key>`` and
the budget; metrics ``<benchmark>.<metric>``; tags ``ocean.training_run_id``, ``ocean.evaluation_run_id``,
``ocean.checkpoint_uri``). The training and evaluation runs themselves are nested under the row's child.

Output layout (``OUT`` a folder or ``s3://bucket/prefix``)::

    OUT/ablation.md, OUT/ablation.json        the table(s) and every number behind them
    OUT/train/<group>/...                     each training (pipelines.train layout; re-runs resume)
    OUT/eval/<row>/...                        each evaluation (pipelines.evaluate layout)
    OUT/tune/...                              Ray Tune's experiment folder
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocean import storage
from ocean.benchmarks.scoring import HEADLINE
from ocean.config import OceanConfig, TrackerConfig, apply_overrides, from_dict, to_dict
from ocean.config import preset as config_preset

STUDIES = ("components", "data")
METRIC_NAMES = {"success_auc": "success AUC", "ao": "AO", "eao": "EAO"}
# The study switches: set explicitly on every component row (a --set on them would be silently overridden).
SWITCH_KEYS = ("labels.cls_rule", "model.head.combination", "model.head.align", "tracker.use_align",
               "tracker.online")
CIRCLED = "①②③④⑤⑥"


class AblationError(ValueError):
    """Bad input to an ablation (unknown study / row / benchmark, a switch overridden, no usable row)."""


@dataclass(frozen=True)
class RowSpec:
    """One row of a paper table.

    ``delta``: the ``key=value`` overrides this row adds to the previous row of its study (component
    study) -- the first row's delta sets every switch. ``datasets``: the training datasets (data study).
    ``paper``: the paper's VOT2018 EAO (facts §13.4). ``run``: False for the paper-only reference row.
    """

    study: str
    key: str
    number: int
    label: str
    paper: float | None
    delta: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    run: bool = True


# Paper Table 4 (Sec. 5.3) with facts §13.4's numbers.
COMPONENT_ROWS: tuple[RowSpec, ...] = (
    RowSpec("components", "baseline", 1, "baseline", 0.358,
            ("labels.cls_rule=in_box", "model.head.combination=single", "model.head.align=false",
             "tracker.use_align=false", "tracker.online=false")),
    RowSpec("components", "centralized", 2, "+ centralized sampling", 0.396, ("labels.cls_rule=l1_cells",)),
    RowSpec("components", "combination", 3, "+ feature combination", 0.438, ("model.head.combination=dilated3",)),
    RowSpec("components", "object_aware", 4, "+ object-aware classification", 0.467,
            ("model.head.align=true", "tracker.use_align=true")),
    RowSpec("components", "online", 5, "+ online update", 0.489, ("tracker.online=true", "tracker.use_align=false")),
)
# Paper Table 5 (Sec. 5.3): SiamRPN++ under the same setting is a reference only (another tracker).
DATA_ROWS: tuple[RowSpec, ...] = (
    RowSpec("data", "siamrpnpp", 1, "SiamRPN++ [21] (reference, not run)", 0.414, run=False),
    RowSpec("data", "ytb_vid_det_coco", 2, "Ocean tracker (YTB/VID/DET/COCO)", 0.455,
            datasets=("ytbb", "vid", "det", "coco")),
    RowSpec("data", "got10k", 3, "+ GOT-10k in training", 0.467, datasets=("ytbb", "vid", "det", "coco", "got10k")),
    RowSpec("data", "lasot", 4, "+ LaSOT in training", 0.462,
            datasets=("ytbb", "vid", "det", "coco", "got10k", "lasot")),
)
TITLES = {"components": "Component-wise analysis (paper Table 4)",
          "data": "Analysis of training settings (paper Table 5)"}


def has_online_switch() -> bool:
    """``TrackerConfig`` has the ``online`` switch."""
    return any(f.name == "online" for f in dataclasses.fields(TrackerConfig))


def online_available() -> bool:
    """The "+ online update" row can run: ``tracker.online`` exists and :mod:`ocean.online` is importable."""
    return has_online_switch() and importlib.util.find_spec("ocean.online") is not None


def study_rows(study: str, *, include_online: bool | None = None) -> list[RowSpec]:
    """The rows of a study in paper order (component rows without "online" when it is not available)."""
    if study == "components":
        online = online_available() if include_online is None else include_online
        return [r for r in COMPONENT_ROWS if online or r.key != "online"]
    if study == "data":
        return list(DATA_ROWS)
    raise AblationError(f"unknown study {study!r}; one of {list(STUDIES)} or 'both'")


def cumulative_overrides(rows: Sequence[RowSpec]) -> dict[str, list[str]]:
    """``{row key: overrides}``: each row's delta applied on top of the previous rows' (paper order; a later
    value of a key replaces the earlier one, keys keep their first position)."""
    current: dict[str, str] = {}
    out = {}
    for row in rows:
        for item in row.delta:
            key, value = item.split("=", 1)
            current[key] = value
        out[row.key] = [f"{k}={v}" for k, v in current.items()]
    return out


def split_budget(weights: Mapping[str, float], total: int) -> dict[str, int]:
    """``total`` pairs split in proportion to ``weights`` (largest remainders: the parts sum to ``total``;
    ties go to the name that sorts first)."""
    names = sorted(k for k, w in weights.items() if w > 0)
    if not names:
        return {}
    wsum = float(sum(weights[k] for k in names))
    exact = {k: total * weights[k] / wsum for k in names}
    parts = {k: int(exact[k]) for k in names}
    left = total - sum(parts.values())
    for k in sorted(names, key=lambda k: (-(exact[k] - parts[k]), k))[:left]:
        parts[k] += 1
    return parts


def mix_weights(base_mix: Mapping[str, int], datasets: Sequence[str]) -> dict[str, float]:
    """The preset's per-dataset pairs as weights for ``datasets``; a dataset at 0 gets GOT-10k's weight
    (LaSOT is not in the official mix, facts §7.3; paper Table 5 gives no count), else the mean weight."""
    positive = [v for v in base_mix.values() if v > 0]
    fallback = base_mix.get("got10k", 0) or (sum(positive) / len(positive) if positive else 1.0)
    return {d: float(base_mix.get(d, 0) or fallback) for d in datasets}


def pairs_override(mix: Mapping[str, int]) -> str:
    return "data.pairs_per_epoch=" + json.dumps(dict(sorted(mix.items())), separators=(",", ":"))


@dataclass
class PlannedRow:
    """A row ready to run (or skipped / reference-only, with ``skipped`` saying why)."""

    spec: RowSpec
    overrides: list[str] = field(default_factory=list)  # applied to the base config
    tracker_overrides: list[str] = field(default_factory=list)  # the tracker.* part (evaluation)
    pairs_per_epoch: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def name(self) -> str:
        return f"{self.spec.study}.{self.spec.key}"


def plan_rows(study: str, base: OceanConfig, present: Sequence[str], *, pairs_per_epoch: int | None = None,
              rows: Sequence[str] | None = None, include_online: bool | None = None,
              log=print) -> list[PlannedRow]:
    """The rows to run for ``study`` ("components", "data" or "both") on data holding ``present`` datasets.

    ``rows``: keep only these row keys (a leading "+" is ignored, e.g. ``["baseline", "+centralized"]``);
    the kept rows still carry the cumulative overrides of the full study. Raises AblationError for unknown
    names or when nothing can run.
    """
    studies = list(STUDIES) if study == "both" else [study]
    for s in studies:
        if s not in STUDIES:
            raise AblationError(f"unknown study {study!r}; one of {list(STUDIES)} or 'both'")
    wanted = None if rows is None else {r.strip().lstrip("+") for r in rows if r.strip()}
    known = {r.key for s in studies for r in study_rows(s, include_online=True)}
    if wanted is not None and wanted - known:
        raise AblationError(f"unknown rows {sorted(wanted - known)} for study {study!r}; known: {sorted(known)}")
    present = sorted(set(present))
    base_mix = dict(base.data.pairs_per_epoch)
    total = int(pairs_per_epoch) if pairs_per_epoch else int(sum(base_mix.values()))
    if total < 1:
        raise AblationError(f"pairs per epoch must be >= 1, got {total}")
    planned: list[PlannedRow] = []
    for s in studies:
        specs = study_rows(s, include_online=include_online)
        if wanted is not None and "online" in wanted and s == "components" and not any(r.key == "online" for r in specs):
            log("[ocean ablate] row 'online' skipped: tracker.online / ocean.online is not available")
        cumulative = cumulative_overrides(specs)
        if not has_online_switch():  # a TrackerConfig without the switch: nothing to set
            cumulative = {k: [o for o in v if not o.startswith("tracker.online=")] for k, v in cumulative.items()}
        for spec in specs:
            if wanted is not None and spec.key not in wanted:
                continue
            row = PlannedRow(spec)
            if not spec.run:
                row.skipped = "reference only (not this tracker)"
                planned.append(row)
                continue
            if s == "components":
                datasets = [d for d in present if base_mix.get(d, 0) > 0]
                missing = sorted(d for d, v in base_mix.items() if v > 0 and d not in present)
                if missing and spec is specs[0]:
                    log(f"[ocean ablate] datasets {missing} of the mix are not in the data: the epoch budget is "
                        f"spread over {datasets}")
            else:
                datasets = [d for d in spec.datasets if d in present]
                missing = sorted(set(spec.datasets) - set(present))
                index = specs.index(spec)
                previous = next((p for p in reversed(specs[:index]) if p.run), None)
                added = set(spec.datasets) - set(previous.datasets if previous else ())
                first = next(p for p in specs if p.run)
                if not set(first.datasets) & set(present):  # no YTB/VID/DET/COCO at all: no row compares
                    row.skipped = f"none of the base datasets {list(first.datasets)} is in the prepared data"
                elif previous is not None and added and not added & set(present):
                    row.skipped = f"datasets {sorted(added - set(present))} are not in the prepared data"
                if row.skipped:
                    log(f"[ocean ablate] row {spec.key!r} skipped: {row.skipped}")
                    planned.append(row)
                    continue
                if missing:
                    log(f"[ocean ablate] row {spec.key!r}: datasets {missing} are not in the data; "
                        f"training on {datasets}")
            if not datasets:
                raise AblationError(f"none of the mix's datasets {sorted(base_mix)} is in the data ({present})")
            row.pairs_per_epoch = split_budget(mix_weights(base_mix, datasets), total)
            mix = {d: row.pairs_per_epoch.get(d, 0) for d in base_mix}
            row.overrides = [*cumulative.get(spec.key, []), pairs_override(mix)]
            row.tracker_overrides = [o for o in row.overrides if o.startswith("tracker.")]
            planned.append(row)
    if not any(r.skipped is None for r in planned):
        raise AblationError("no row of the study can run on this data: " + "; ".join(
            f"{r.name}: {r.skipped}" for r in planned))
    return planned


def training_key(cfg: OceanConfig) -> str:
    """Digest of everything that changes training (the config without the tracker section)."""
    d = to_dict(cfg)
    d.pop("tracker", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def group_rows(rows: Sequence[PlannedRow], base: OceanConfig) -> dict[str, dict[str, Any]]:
    """``{group name: {"rows": [row names], "cfg": config dict, "key": training key}}``: rows whose
    training is identical share one group (one Tune trial, one training); named by their first row."""
    groups: dict[str, dict[str, Any]] = {}
    by_key: dict[str, str] = {}
    for row in rows:
        if row.skipped:
            continue
        cfg = apply_overrides(base, row.overrides)
        key = training_key(cfg)
        if key not in by_key:
            by_key[key] = row.name
            groups[row.name] = {"rows": [], "cfg": to_dict(cfg), "key": key}
        groups[by_key[key]]["rows"].append(row.name)
    return groups


# ----------------------------------------------------------------------------------------------------------
# The table


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and value == value:
        return f"{value:.{digits}f}"
    return "—"


def _delta(value: Any, previous: Any) -> str:
    if isinstance(value, (int, float)) and isinstance(previous, (int, float)):
        return f"{value - previous:+.3f}"
    return ""


def format_table(study: str, rows: Sequence[Mapping[str, Any]], benchmarks: Sequence[str], primary: str) -> str:
    """A markdown table of one study: the paper's VOT2018 EAO beside ours.

    ``rows``: dicts with ``number``, ``label``, ``paper`` (float or None), ``status`` ("ok", "failed",
    "skipped", "reference"), ``scores`` ({benchmark: {metric: value}}), ``switches`` (list of ``k=v``) and
    optional ``note``. Columns: #, row, paper VOT2018 EAO, paper delta to the previous row, ours on the
    ``primary`` benchmark's headline metric, our delta, the other benchmarks' headline metrics, switches.
    """
    others = [b for b in benchmarks if b != primary]
    head = ["#", "row", "paper VOT2018 EAO", "paper Δ", f"ours {primary} {METRIC_NAMES[HEADLINE[primary]]}", "ours Δ",
            *[f"ours {b} {METRIC_NAMES[HEADLINE[b]]}" for b in others], "status", "switches"]
    lines = [f"### {TITLES[study]}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---", "---:", "---:", "---:", "---:", *["---:"] * len(others), "---", "---"]) + "|"]
    prev_paper = prev_ours = None
    for r in rows:
        number = CIRCLED[r["number"] - 1] if 0 < r["number"] <= len(CIRCLED) else str(r["number"])
        ours = r.get("scores", {}).get(primary, {}).get(HEADLINE[primary])
        status = r["status"] + (f" ({r['note']})" if r.get("note") else "")
        cells = [number, r["label"], _fmt(r.get("paper")), _delta(r.get("paper"), prev_paper) if r["status"] != "reference" else "",
                 _fmt(ours), _delta(ours, prev_ours),
                 *[_fmt(r.get("scores", {}).get(b, {}).get(HEADLINE[b])) for b in others],
                 status.replace("|", "/"), ", ".join(f"`{s}`" for s in r.get("switches", []))]
        lines.append("| " + " | ".join(cells) + " |")
        if r["status"] != "reference":
            prev_paper = r.get("paper")
            if r["status"] == "ok":
                prev_ours = ours
    return "\n".join(lines) + "\n"


def format_report(report: Mapping[str, Any]) -> str:
    """The whole ``ablation.md``: a header with the budget, then one table per study."""
    b = report["budget"]
    parts = [
        "# Ocean ablations", "",
        f"Ours: the final checkpoint of each row, {b['epochs']} epochs x {b['pairs_per_epoch']} pairs per epoch "
        f"(preset `{report['preset']}`), evaluated on {', '.join(report['benchmarks'])}"
        + (f" ({b['max_sequences']} sequences each)" if b.get("max_sequences") else "") + ". "
        "Paper: VOT2018 EAO (ocean_facts §13.4; Table 4: 50 epochs x 600k pairs; Table 5: 20 epochs x 600k). "
        "Our numbers are comparable with the paper's only at the paper's budget and on VOT2018.", "",
    ]
    for study in report["studies"]:
        parts.append(format_table(study, report["rows"][study], list(report["benchmarks"]), report["primary"]))
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------
# The Tune trial (runs in a Ray worker)


def _slug(name: str) -> str:
    return name.replace(".", "-")


def ablation_trial(config: dict[str, Any], *, plan: dict[str, Any]) -> None:
    """Tune function trainable: one training (``pipelines.train.train``, its own TorchTrainer) and one
    evaluation per row of the group ``config["group"]``; reports the rows' scores once at the end."""
    from mlflow.tracking import MlflowClient
    from ray import tune

    from pipelines.evaluate import EvaluateSettings, evaluate
    from pipelines.train import TrainSettings, train

    t0 = time.time()
    name = config["group"]
    group = plan["groups"][name]
    uri, exp = plan["mlflow_uri"], plan["experiment"]
    client = MlflowClient(uri)
    children = plan["children"]
    rows_out: dict[str, dict[str, Any]] = {}
    current = list(group["rows"])
    try:
        for row in current:
            client.set_tag(children[row], "ocean.ablate.status", "training")
        cfg = from_dict(group["cfg"])
        res = train(TrainSettings(plan["data"], storage.join(plan["out"], "train", _slug(name)), cfg,
                                  workers=plan["workers"], use_gpu=plan["use_gpu"], seed=plan["seed"],
                                  mlflow_uri=uri, experiment=exp, run_name=f"ablate-{_slug(name)}-train",
                                  verbose=plan["verbose"]))
        client.set_tag(res["mlflow_run_id"], "mlflow.parentRunId", children[current[0]])
        checkpoint = res["checkpoints"][-1]
        for row in current:
            spec = plan["rows"][row]
            client.set_tag(children[row], "ocean.ablate.status", "evaluating")
            ev = evaluate(EvaluateSettings(
                [checkpoint], plan["benchmarks"], storage.join(plan["out"], "eval", _slug(row)),
                tracker_overrides=spec["tracker_overrides"], workers=plan["workers"], use_gpu=plan["use_gpu"],
                mlflow_uri=uri, max_sequences=plan["max_sequences"], experiment=exp,
                run_name=f"ablate-{_slug(row)}-eval", training_run_id=res["mlflow_run_id"],
                progress=plan["verbose"]))
            scores = {b: {k: float(v) for k, v in s.items() if k in plan["metric_keys"]
                          and isinstance(v, (int, float)) and v == v}
                      for b, s in ev["scores"][checkpoint].items()}
            eval_run = (ev.get("mlflow") or {}).get("parent_run_id")
            if eval_run:
                client.set_tag(eval_run, "mlflow.parentRunId", children[row])
            _finish_child(client, children[row], scores, {
                "ocean.training_run_id": res["mlflow_run_id"], "ocean.evaluation_run_id": eval_run or "",
                "ocean.checkpoint_uri": checkpoint.split("?", 1)[0], "ocean.ablate.status": "ok"},
                final_loss=res.get("final_loss"))
            rows_out[row] = {"scores": scores, "training_run_id": res["mlflow_run_id"], "evaluation_run_id": eval_run,
                             "checkpoint": checkpoint.split("?", 1)[0], "epochs": res["epochs"],
                             "final_loss": res.get("final_loss"), "failed_sequences": len(ev.get("failed", []))}
    except BaseException as exc:
        for row in current:
            if row not in rows_out:
                try:
                    client.set_tag(children[row], "ocean.error", f"{type(exc).__name__}: {exc}"[:5000])
                    client.set_tag(children[row], "ocean.ablate.status", "failed")
                    client.set_terminated(children[row], "FAILED")
                except Exception:  # pragma: no cover - MLflow unreachable: the Tune error still says why
                    pass
        raise
    primary = plan["primary"]
    first = rows_out[current[0]]["scores"].get(primary, {}).get(HEADLINE[primary])
    tune.report({"score": float(first) if first is not None else float("nan"), "rows": rows_out,
                 "trial_wall_s": time.time() - t0})


def _finish_child(client, run_id: str, scores: Mapping[str, Mapping[str, float]], tags: Mapping[str, str],
                  final_loss: float | None) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric(f"{b}.{k}", v, now, 0) for b, s in scores.items() for k, v in s.items()]
    if isinstance(final_loss, (int, float)) and final_loss == final_loss:
        metrics.append(Metric("train.final_loss", float(final_loss), now, 0))
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    client.set_terminated(run_id, "FINISHED")


# ----------------------------------------------------------------------------------------------------------
# The driver


def present_datasets(data: str) -> dict[str, int]:
    """``{dataset: pairs}`` in the prepared data: ``DATA/manifest.json``'s ``pairs_written`` per dataset,
    else (no or an older manifest) counted from the pair records' ``dataset`` column."""
    try:
        manifest = json.loads(storage.read_bytes(storage.join(data, "manifest.json")))
    except (FileNotFoundError, OSError, ValueError):
        manifest = {}
    per = manifest.get("datasets") if isinstance(manifest, dict) else None
    if isinstance(per, dict) and per:
        return {k: int(v.get("pairs_written", 0)) for k, v in per.items() if int(v.get("pairs_written", 0)) > 0}
    from data_prep.pair_index import list_pair_files, read_pair_index

    fs, files = list_pair_files(data)
    _, names = read_pair_index(fs, files)
    found: dict[str, int] = {}
    for n in names.tolist():
        found[n] = found.get(n, 0) + 1
    return found


def ablate(data: str, benchmarks: Mapping[str, str], out: str, *, study: str = "components",
           preset: str = "paper", epochs: int | None = None, pairs_per_epoch: int | None = None,
           workers: int = 2, use_gpu: bool = False, max_sequences: int | None = None,
           mlflow_uri: str | None = None, validation: str | None = None,
           overrides: Sequence[str] = (), ray_address: str | None = None, rows: Sequence[str] | None = None,
           max_concurrent_trials: int = 1, seed: int = 0, experiment: str = "ocean-ablate",
           verbose: bool = True) -> dict[str, Any]:
    """Run the paper's ablation ``study`` ("components", "data" or "both"); see the module docstring.

    Args:
        data: prepared pair records (``ocean prepare --out``), folder or ``s3://``.
        benchmarks: ``{name: root}`` to evaluate on (otb, vot2018, vot2019, got10k, lasot).
        out: folder or ``s3://`` URI for every training, evaluation and the tables.
        preset: "paper" or "smoke"; ``overrides``: ``key=value`` config
            overrides applied before the row switches (a study switch may not be overridden).
        epochs / pairs_per_epoch / max_sequences: the budget (module docstring).
        workers / use_gpu: training DDP workers and evaluation actors; one GPU each with ``use_gpu``.
        validation: the benchmark of the "ours" column (default vot2018 when given, else the first).
        rows: run only these row keys (e.g. ``["baseline", "+centralized"]``).
        max_concurrent_trials: Tune trials at once (1: one training at a time, for small machines).

    Returns the report written to ``OUT/ablation.json``: ``rows`` {study: [row dicts]}, ``markdown``,
    ``mlflow`` {tracking_uri, experiment_id, parent_run_id, child_run_ids}, ``trials``, ``budget``.
    Raises AblationError on bad input (before any run); a failed trial is recorded, not raised, unless
    every trial failed.
    """
    log = print if verbose else (lambda *a, **k: None)
    benchmarks = dict(benchmarks)
    if not benchmarks:
        raise AblationError("no benchmark given")
    unknown = sorted(set(benchmarks) - set(HEADLINE))
    if unknown:
        raise AblationError(f"unknown benchmarks {unknown}; one of {sorted(HEADLINE)}")
    if validation is not None and validation not in benchmarks:
        raise AblationError(f"validation benchmark {validation!r} is not one of {sorted(benchmarks)}")
    primary = validation or ("vot2018" if "vot2018" in benchmarks else next(iter(benchmarks)))
    if max_concurrent_trials < 1 or workers < 1:
        raise AblationError("max_concurrent_trials and workers must be >= 1")
    touched = sorted({o.split("=", 1)[0].strip() for o in overrides if "=" in o} & set(SWITCH_KEYS))
    if touched and study in ("components", "both"):
        raise AblationError(f"{touched} are the component study's switches, set by each row; do not override them")
    try:
        base = apply_overrides(config_preset(preset), [*overrides, *([f"optim.epochs={epochs}"] if epochs else [])])
    except (KeyError, ValueError) as exc:
        raise AblationError(f"config: {exc}") from None
    present = present_datasets(data)
    log(f"[ocean ablate] prepared data: {present}")
    planned = plan_rows(study, base, list(present), pairs_per_epoch=pairs_per_epoch, rows=rows, log=log)
    groups = group_rows(planned, base)
    total = int(pairs_per_epoch) if pairs_per_epoch else int(sum(base.data.pairs_per_epoch.values()))
    for g, spec in groups.items():
        if total < spec["cfg"]["optim"]["batch_size"]:
            raise AblationError(f"{total} pairs per epoch is less than one global batch "
                                f"(optim.batch_size={spec['cfg']['optim']['batch_size']}) for {g}")
    studies = list(STUDIES) if study == "both" else [study]
    budget = {"epochs": base.optim.epochs, "pairs_per_epoch": total, "max_sequences": max_sequences}

    # ---- MLflow: the store, the parent and one child per row, once, on the driver (ray_stack.md §5)
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from ocean.benchmarks.report import METRIC_KEYS
    from pipelines import tracking

    uri = tracking.tracking_uri(mlflow_uri, out)
    exp_id = tracking.ensure_experiment(uri, experiment)
    client = MlflowClient(uri)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent = client.create_run(exp_id, run_name=f"ablate-{study}-{stamp}", tags=tracking.run_tags(**{
        "ocean.kind": "ablation", "ocean.study": study, "ocean.data": tracking.public_uri(data),
        "ocean.out": tracking.public_uri(out)})).info.run_id
    runnable = [r for r in planned if not r.skipped]
    parent_params = tracking.scrub({
        "study": study, "preset": preset, "epochs": base.optim.epochs, "pairs_per_epoch": total,
        "max_sequences": max_sequences, "workers": workers, "use_gpu": use_gpu, "primary": primary,
        "benchmarks": json.dumps(sorted(benchmarks)), "rows": ",".join(r.name for r in runnable),
        "skipped": ",".join(r.name for r in planned if r.skipped), "overrides": json.dumps(list(overrides)),
        "max_concurrent_trials": max_concurrent_trials, "seed": seed, "data": tracking.public_uri(data)})
    client.log_batch(parent, params=[Param(k, str(v)[:6000]) for k, v in parent_params.items()])
    children: dict[str, str] = {}
    try:
        for row in runnable:
            cid = client.create_run(exp_id, run_name=f"ablate-{_slug(row.name)}", tags=tracking.run_tags(**{
                "mlflow.parentRunId": parent, "ocean.kind": "ablation-row", "ocean.study": row.spec.study,
                "ocean.row": row.spec.key, "ocean.ablate.status": "queued"})).info.run_id
            children[row.name] = cid
            params = {"row": row.spec.key, "study": row.spec.study, "number": row.spec.number,
                      "label": row.spec.label, "paper.vot2018_eao": row.spec.paper,
                      **{f"switch.{o.split('=', 1)[0]}": o.split("=", 1)[1] for o in row.overrides},
                      "optim.epochs": base.optim.epochs, "budget.pairs_per_epoch": total,
                      "max_sequences": max_sequences,
                      "group": next(g for g, s in groups.items() if row.name in s["rows"])}
            client.log_batch(cid, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

        # ---- Ray Tune: a grid over the trainings
        from ray import tune

        from pipelines.raysession import ensure_ray

        ensure_ray(ray_address)
        plan = {
            "groups": groups, "data": data, "out": out, "benchmarks": benchmarks, "workers": workers,
            "use_gpu": use_gpu, "seed": seed, "max_sequences": max_sequences, "mlflow_uri": uri,
            "experiment": experiment, "children": children, "primary": primary, "verbose": verbose,
            "metric_keys": list(METRIC_KEYS),
            "rows": {r.name: {"tracker_overrides": r.tracker_overrides} for r in runnable},
        }
        trainable = tune.with_resources(tune.with_parameters(ablation_trial, plan=plan), {"CPU": 0.1})
        tune_fs, tune_path = storage.resolve(storage.join(out, "tune"))
        if not storage.is_uri(out):
            Path(tune_path).mkdir(parents=True, exist_ok=True)
            tune_fs = None
        tuner = tune.Tuner(
            trainable,
            param_space={"group": tune.grid_search(list(groups))},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent_trials,
                                        reuse_actors=True),  # one trial process: torch imported once
            run_config=tune.RunConfig(name=f"ablate-{study}-{stamp}", storage_path=tune_path,
                                      storage_filesystem=tune_fs, verbose=1 if verbose else 0),
        )
        t0 = time.time()
        grid = tuner.fit()
        wall = time.time() - t0
    except BaseException:
        for cid in [*children.values(), parent]:
            try:
                if client.get_run(cid).info.status == "RUNNING":
                    client.set_terminated(cid, "FAILED")
            except Exception:  # pragma: no cover
                pass
        raise

    # ---- collect
    results: dict[str, dict[str, Any]] = {}
    trials = []
    for res in grid:
        group = (res.config or {}).get("group")
        metrics = res.metrics or {}
        err = None if res.error is None else f"{type(res.error).__name__}: {res.error}"
        trials.append({"group": group, "rows": groups.get(group, {}).get("rows", []), "error": err,
                       "wall_s": metrics.get("trial_wall_s")})
        for row in groups.get(group, {}).get("rows", []):
            if row in (metrics.get("rows") or {}):
                results[row] = {**metrics["rows"][row], "status": "ok"}
            else:
                results[row] = {"status": "failed", "error": err or "the trial reported nothing"}
                if client.get_run(children[row]).info.status == "RUNNING":
                    client.set_tag(children[row], "ocean.error", (err or "no report")[:5000])
                    client.set_terminated(children[row], "FAILED")
    table_rows: dict[str, list[dict]] = {s: [] for s in studies}
    for row in planned:
        r = results.get(row.name, {})
        status = "reference" if not row.spec.run else ("skipped" if row.skipped else r.get("status", "failed"))
        note = row.skipped if status == "skipped" else (r.get("error", "")[:200] if status == "failed" else "")
        switches = [o for o in row.overrides if not o.startswith("data.pairs_per_epoch")] \
            if row.spec.study == "components" else [f"{k}={v}" for k, v in row.pairs_per_epoch.items()]
        table_rows[row.spec.study].append({
            "key": row.spec.key, "number": row.spec.number, "label": row.spec.label, "paper": row.spec.paper,
            "status": status, "note": note, "switches": switches, "overrides": row.overrides,
            "pairs_per_epoch": row.pairs_per_epoch, "scores": r.get("scores", {}),
            **{k: r.get(k) for k in ("training_run_id", "evaluation_run_id", "checkpoint", "epochs", "final_loss")},
            "mlflow_run_id": children.get(row.name)})
    report: dict[str, Any] = {
        "study": study, "studies": studies, "preset": preset, "benchmarks": benchmarks, "primary": primary,
        "budget": budget, "rows": table_rows, "trials": trials, "wall_s": round(wall, 1),
        "data_datasets": present, "overrides": list(overrides),
    }
    report["markdown"] = format_report(report)
    report["mlflow"] = {"tracking_uri": tracking.public_uri(uri), "experiment_id": exp_id,
                        "parent_run_id": parent, "child_run_ids": children}
    storage.write_bytes(storage.join(out, "ablation.md"), report["markdown"].encode())
    storage.write_bytes(storage.join(out, "ablation.json"), json.dumps(report, indent=1, default=str).encode())
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"{r['key']}.{b}.{k}", v, now, 0) for s in studies for r in table_rows[s]
               for b, sc in r["scores"].items() for k, v in sc.items() if k == HEADLINE[b]]
    client.log_batch(parent, metrics=metrics)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "ablation.md").write_text(report["markdown"])
        Path(tmp, "ablation.json").write_text(json.dumps(report, indent=1, default=str))
        client.log_artifact(parent, str(Path(tmp, "ablation.md")))
        client.log_artifact(parent, str(Path(tmp, "ablation.json")))
    ok = any(r["status"] == "ok" for s in studies for r in table_rows[s])
    client.set_terminated(parent, "FINISHED" if ok else "FAILED")
    if not ok:
        raise RuntimeError("ocean ablate: every trial failed: " + "; ".join(
            f"{t['group']}: {t['error']}" for t in trials if t["error"]))
    log(report["markdown"])
    return report
