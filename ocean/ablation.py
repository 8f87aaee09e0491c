"""The paper's ablation tables as data: rows, their config switches, training budgets and the markdown table.

No Ray and no training here: :mod:`pipelines.ablate` runs what :func:`plan_rows` plans. A row is a list of
config overrides on one base config (:func:`base_config`), so rows whose training is identical share one
training (:func:`group_rows`). The studies' rows: :data:`COMPONENT_ROWS` (paper Table 4) and
:data:`DATA_ROWS` (paper Table 5); each row's training budget: :func:`plan_rows`; ``ablation.md``, ours
beside the paper's VOT2018 EAO (facts §13.4): :func:`format_report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ocean.benchmarks.scoring import HEADLINE
from ocean.config import OceanConfig, TrackerConfig, apply_overrides, to_dict
from ocean.config import preset as config_preset
from ocean.epoch_range import EpochRange, parse_epoch_range

STUDIES = ("components", "data")
METRIC_NAMES = {"success_auc": "success AUC", "ao": "AO", "eao": "EAO"}
# The study switches: set explicitly on every component row (a --set on them would be silently overridden).
SWITCH_KEYS = ("labels.cls_rule", "model.head.combination", "model.head.align", "tracker.use_align",
               "tracker.online")
CIRCLED = "①②③④⑤⑥"
EPOCH_PLOT = "ablation-epochs.png"  # under OUT: each row's selection score per epoch (write_epoch_plot)


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


# Paper Table 4 (Sec. 5.3) with facts §13.4's numbers. Every row is the previous one plus one switch; the
# switches are config options (ocean.config) and every row sets all of them explicitly. The "+ online update"
# row exists only when TrackerConfig has `online` and ocean.online is importable (study_rows); it turns
# use_align off (the official online tracker never uses p_o, facts §4.3).
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
# Paper Table 5 (Sec. 5.3): SiamRPN++ under the same setting is a reference only (another tracker). The full
# model on YTB/VID/DET/COCO -> + GOT-10k -> + LaSOT; rows differ only in data.pairs_per_epoch, and a row whose
# added dataset is not in the prepared data is skipped (plan_rows).
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


def primary_benchmark(benchmarks: Mapping[str, str], validation: str | None) -> str:
    """The benchmark of the "ours" column: ``validation``, else vot2018 when given, else the first.
    AblationError for no benchmark, an unknown one, or a ``validation`` not among them."""
    if not benchmarks:
        raise AblationError("no benchmark given")
    unknown = sorted(set(benchmarks) - set(HEADLINE))
    if unknown:
        raise AblationError(f"unknown benchmarks {unknown}; one of {sorted(HEADLINE)}")
    if validation is not None and validation not in benchmarks:
        raise AblationError(f"validation benchmark {validation!r} is not one of {sorted(benchmarks)}")
    return validation or ("vot2018" if "vot2018" in benchmarks else next(iter(benchmarks)))


def base_config(preset: str, overrides: Sequence[str], epochs: int | None, study: str) -> OceanConfig:
    """The preset with ``overrides`` and ``optim.epochs=epochs``: the config every row starts from.
    AblationError when an override touches a component-study switch or does not apply."""
    touched = sorted({o.split("=", 1)[0].strip() for o in overrides if "=" in o} & set(SWITCH_KEYS))
    if touched and study in ("components", "both"):
        raise AblationError(f"{touched} are the component study's switches, set by each row; do not override them")
    try:
        return apply_overrides(config_preset(preset), [*overrides, *([f"optim.epochs={epochs}"] if epochs else [])])
    except (KeyError, ValueError) as exc:
        raise AblationError(f"config: {exc}") from None


def epoch_window(value: EpochRange | str | int | None) -> EpochRange | None:
    """``--epochs`` as an :class:`~ocean.epoch_range.EpochRange` (None stays None); AblationError if bad."""
    try:
        return value if value is None or isinstance(value, EpochRange) else parse_epoch_range(value)
    except ValueError as exc:
        raise AblationError(f"epochs {exc}") from None


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
              log=None) -> list[PlannedRow]:
    """The rows to run for ``study`` ("components", "data" or "both") on data holding ``present`` datasets.

    ``rows``: keep only these row keys (a leading "+" is ignored, e.g. ``["baseline", "+centralized"]``);
    the kept rows still carry the cumulative overrides of the full study. Raises AblationError for unknown
    names or when nothing can run.

    Budget: the TOTAL pairs of an epoch (``pairs_per_epoch``, default the preset's mix, 600,000 for
    ``paper``, facts §7.3) split over the row's datasets in proportion to the mix (largest remainders,
    :func:`split_budget`); a dataset the mix leaves at 0 (LaSOT) gets GOT-10k's weight (:func:`mix_weights`).
    """
    studies = list(STUDIES) if study == "both" else [study]
    for s in studies:
        if s not in STUDIES:
            raise AblationError(f"unknown study {study!r}; one of {list(STUDIES)} or 'both'")
    wanted = None if rows is None else {r.strip().lstrip("+") for r in rows if r.strip()}
    known = {r.key for s in studies for r in study_rows(s, include_online=True)}
    if wanted is not None and wanted - known:
        raise AblationError(f"unknown rows {sorted(wanted - known)} for study {study!r}; known: {sorted(known)}")
    present, log = sorted(set(present)), log or logging.getLogger(__name__).info
    base_mix = dict(base.data.pairs_per_epoch)
    total = int(pairs_per_epoch) if pairs_per_epoch else int(sum(base_mix.values()))
    if total < 1:
        raise AblationError(f"pairs per epoch must be >= 1, got {total}")
    planned: list[PlannedRow] = []
    for s in studies:
        specs = study_rows(s, include_online=include_online)
        if wanted is not None and "online" in wanted and s == "components" and not any(r.key == "online" for r in specs):
            log("row 'online' skipped: tracker.online / ocean.online is not available")
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
                    log(f"datasets {missing} of the mix are not in the data: the epoch budget is "
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
                    log(f"row {spec.key!r} skipped: {row.skipped}")
                    planned.append(row)
                    continue
                if missing:
                    log(f"row {spec.key!r}: datasets {missing} are not in the data; "
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


@dataclass(frozen=True)
class TrainingGroup:
    """One training shared by ``rows`` (row names, paper order): ``cfg`` is the first row's configuration,
    ``key`` its :func:`training_key`."""

    rows: list[str]
    cfg: OceanConfig
    key: str


def group_rows(rows: Sequence[PlannedRow], base: OceanConfig) -> dict[str, TrainingGroup]:
    """``{group name: TrainingGroup}``: rows whose training is identical share one group (one Tune trial,
    one training; e.g. component row 5 only changes the tracker); named by their first row."""
    groups: dict[str, TrainingGroup] = {}
    by_key: dict[str, str] = {}
    for row in rows:
        if row.skipped:
            continue
        cfg = apply_overrides(base, row.overrides)
        key = training_key(cfg)
        if key not in by_key:
            by_key[key] = row.name
            groups[row.name] = TrainingGroup([], cfg, key)
        groups[by_key[key]].rows.append(row.name)
    return groups


def group_of(groups: Mapping[str, TrainingGroup], row: str) -> str:
    """The name of the group that trains ``row``."""
    return next(g for g, group in groups.items() if row in group.rows)


def check_budget(groups: Mapping[str, TrainingGroup], total: int) -> None:
    """AblationError when ``total`` pairs per epoch are fewer than one global batch of a group."""
    for g, group in groups.items():
        if total < group.cfg.optim.batch_size:
            raise AblationError(f"{total} pairs per epoch is less than one global batch "
                                f"(optim.batch_size={group.cfg.optim.batch_size}) for {g}")


# ----------------------------------------------------------------------------------------------------------
# The table


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and value == value:
        return f"{value:.{digits}f}"
    return "—"


def _epoch_cell(row: Mapping[str, Any]) -> str:
    """``42`` (one epoch evaluated) or ``42 of 21`` (the best of 21 epochs evaluated); ``—`` without one."""
    best, scored = row.get("best_epoch"), row.get("epoch_scores") or {}
    if best is None:
        return "—"
    return str(best) + (f" of {len(scored)}" if len(scored) > 1 else "")


def _delta(value: Any, previous: Any) -> str:
    if isinstance(value, (int, float)) and isinstance(previous, (int, float)):
        return f"{value - previous:+.3f}"
    return ""


def format_table(study: str, rows: Sequence[Mapping[str, Any]], benchmarks: Sequence[str], primary: str) -> str:
    """A markdown table of one study: the paper's VOT2018 EAO beside ours.

    ``rows``: dicts with ``number``, ``label``, ``paper`` (float or None), ``status`` ("ok", "failed",
    "skipped", "reference"), ``scores`` ({benchmark: {metric: value}}), ``switches`` (list of ``k=v``) and
    optional ``note``, ``best_epoch`` and ``epoch_scores`` ({epoch: score on ``primary``}). Columns: #, row,
    paper VOT2018 EAO, paper delta to the previous row, ours on the ``primary`` benchmark's headline metric
    (at the best epoch), our delta, the best epoch (of how many evaluated), the other benchmarks' headline
    metrics at that epoch, switches.
    """
    others = [b for b in benchmarks if b != primary]
    head = ["#", "row", "paper VOT2018 EAO", "paper Δ", f"ours {primary} {METRIC_NAMES[HEADLINE[primary]]}", "ours Δ",
            "best epoch", *[f"ours {b} {METRIC_NAMES[HEADLINE[b]]}" for b in others], "status", "switches"]
    lines = [f"### {TITLES[study]}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---", "---:", "---:", "---:", "---:", "---:", *["---:"] * len(others), "---",
                             "---"]) + "|"]
    prev_paper = prev_ours = None
    for r in rows:
        number = CIRCLED[r["number"] - 1] if 0 < r["number"] <= len(CIRCLED) else str(r["number"])
        ours = r.get("scores", {}).get(primary, {}).get(HEADLINE[primary])
        status = r["status"] + (f" ({r['note']})" if r.get("note") else "")
        cells = [number, r["label"], _fmt(r.get("paper")), _delta(r.get("paper"), prev_paper) if r["status"] != "reference" else "",
                 _fmt(ours), _delta(ours, prev_ours), _epoch_cell(r),
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
    primary, window = report["primary"], str(b.get("epoch_range") or b["epochs"])
    others = [n for n in report["benchmarks"] if n != primary]
    if "-" in window:
        chosen = (f"the checkpoints of epochs {window} tracked on {primary}, the one with the best "
                  f"{METRIC_NAMES[HEADLINE[primary]]} kept (the official epoch choice, ocean_facts §11.3 / §11.4)"
                  + (f"; {', '.join(others)} tracked with that checkpoint only" if others else ""))
    else:
        chosen = f"the checkpoint of epoch {window}, evaluated on {', '.join(report['benchmarks'])}"
    parts = [
        "# Ocean ablations", "",
        f"Ours: each row trained {b['epochs']} epochs x {b['pairs_per_epoch']} pairs per epoch "
        f"(preset `{report['preset']}`); {chosen}"
        + (f" ({b['max_sequences']} sequences each)" if b.get("max_sequences") else "") + ". "
        "Paper: VOT2018 EAO (ocean_facts §13.4; Table 4: 50 epochs x 600k pairs; Table 5: 20 epochs x 600k). "
        "Our numbers are comparable with the paper's only at the paper's budget and on VOT2018.", "",
    ]
    if any(len(r.get("epoch_scores") or {}) >= 2 for s in report["studies"] for r in report["rows"][s]):
        parts += [f"The score of every epoch evaluated, per row: `{EPOCH_PLOT}`.", ""]
    for study in report["studies"]:
        parts.append(format_table(study, report["rows"][study], list(report["benchmarks"]), report["primary"]))
    return "\n".join(parts)


def slug(name: str) -> str:
    """A row or group name as a folder / run name part: ``components.baseline`` -> ``components-baseline``."""
    return name.replace(".", "-")


def table_rows(studies: Sequence[str], planned: Sequence[PlannedRow], results: Mapping[str, Mapping[str, Any]],
               run_ids: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    """``{study: [row dicts]}`` (every study of ``studies``) for :func:`format_table` and ``ablation.json``:
    every planned row with its status (ok / failed / skipped / reference), note, switches, budget,
    ``results[row name]`` (scores, training and evaluation run ids, checkpoint, epochs, final loss, the best
    epoch, the score of each epoch evaluated, the epochs evaluated and those missing) and
    ``run_ids[row name]`` (its MLflow run)."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in studies}
    for row in planned:
        r = results.get(row.name, {})
        status = "reference" if not row.spec.run else ("skipped" if row.skipped else r.get("status", "failed"))
        note = row.skipped if status == "skipped" else (r.get("error", "")[:200] if status == "failed" else "")
        switches = [o for o in row.overrides if not o.startswith("data.pairs_per_epoch")] \
            if row.spec.study == "components" else [f"{k}={v}" for k, v in row.pairs_per_epoch.items()]
        out[row.spec.study].append({
            "key": row.spec.key, "number": row.spec.number, "label": row.spec.label, "paper": row.spec.paper,
            "status": status, "note": note, "switches": switches, "overrides": row.overrides,
            "pairs_per_epoch": row.pairs_per_epoch, "scores": r.get("scores", {}),
            **{k: r.get(k) for k in ("training_run_id", "evaluation_run_id", "checkpoint", "epochs", "final_loss",
                                     "best_epoch", "epochs_evaluated", "missing_epochs")},
            "epoch_scores": r.get("epoch_scores") or {},
            "mlflow_run_id": run_ids.get(row.name)})
    return out


def headline_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """``{"<row>.<benchmark>.<metric>": value, "<row>.best_epoch": epoch}``: every row's headline score and
    the epoch it comes from (the parent run's metrics)."""
    rows = [r for s in report["studies"] for r in report["rows"][s]]
    return {**{f"{r['key']}.{b}.{k}": v for r in rows for b, sc in r["scores"].items() for k, v in sc.items()
               if k == HEADLINE[b]},
            **{f"{r['key']}.best_epoch": float(r["best_epoch"]) for r in rows if r.get("best_epoch") is not None}}


def write_epoch_plot(report: Mapping[str, Any], out_path) -> str | None:
    """The selection benchmark's headline score per epoch, one line per row that evaluated >= 2 epochs, to
    ``out_path`` (a local path); None (nothing written) when no row did."""
    from pathlib import Path

    from ocean.epoch_range import plot_epoch_curves

    curves, best = {}, {}
    for s in report["studies"]:
        for r in report["rows"][s]:
            points = {int(e): v for e, v in (r.get("epoch_scores") or {}).items()}
            if len(points) >= 2:
                name = f"{CIRCLED[r['number'] - 1]} {r['label']}" + (" (Table 5)" if s == "data" else "")
                curves[name], best[name] = points, r.get("best_epoch")
    if not curves:
        return None
    primary = report["primary"]
    label = f"{primary} {METRIC_NAMES[HEADLINE[primary]]}"
    return str(plot_epoch_curves(curves, best, label, f"Ablation rows: {label} per epoch", Path(out_path)))
