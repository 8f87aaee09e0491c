"""The preparation job's records in ``OUT``: the job document (``OUT/job.json``), the per-shard sidecars it
finds there, the reader rejects, the manifest (``OUT/manifest.json``) and the summary printed at the end.

Resuming: a shard is done when its sidecar exists and names this job's fingerprint (:func:`done_shards`); a
finished job re-run leaves every file as it was (:func:`write_if_changed`). Re-using ``OUT`` with a different
plan (other seed, pairs, config or data) is refused (:class:`JobMismatch`). The manifest is written last,
rebuilt from the sidecars; its per-dataset accounting: :func:`build_manifest`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Iterable

from data_prep.listing import DatasetState, cap_message
from data_prep.shards import CropSettings, ShardStore, plan_digest, shard_name, shard_paths
from ocean.storage import public_uri

MANIFEST_SCHEMA_VERSION = 1


# The AugmentConfig keys that decide the stored crop sides (data_prep.crops.stored_sides).
STORED_WINDOW_KEYS = ("template_shift", "template_scale", "search_shift", "search_scale")


class JobMismatch(RuntimeError):
    """``OUT`` already holds the output of a different job (other seed, pairs, config or data)."""


def job_document(states: dict[str, DatasetState], roots: dict[str, str], cfg, settings: CropSettings, seed: int,
                 shard_pairs: int, reader_options: dict[str, dict] | None) -> dict:
    """The job's identity, kept in ``OUT/job.json``: its config and a fingerprint of config, seed and plans."""
    from data_prep.records import SCHEMA_VERSION as PAIR_SCHEMA_VERSION
    from ocean.config import to_dict

    job_config = {
        "seed": int(seed), "preset": cfg.preset, "shard_pairs": int(shard_pairs),
        "pairs_requested": {n: st.requested for n, st in states.items()},
        "crop": dataclasses.asdict(settings), "data": to_dict(cfg.data),
        # only the crop window the stored sides must allow: the rest of the augmentation (colour, blur, negative
        # pairs, ...) happens at training time and must not make existing pair records "another job"
        "augment": {k: v for k, v in to_dict(cfg.augment).items() if k in STORED_WINDOW_KEYS},
        "reader_options": {n: {k: (list(v) if isinstance(v, tuple) else v) for k, v in o.items()}
                           for n, o in sorted((reader_options or {}).items()) if n in roots},
    }
    digest = hashlib.sha256(json.dumps(
        {"manifest_schema": MANIFEST_SCHEMA_VERSION, "pair_schema": PAIR_SCHEMA_VERSION, "config": job_config,
         "plans": {n: (plan_digest(st.plan) if st.plan else None) for n, st in states.items()}},
        sort_keys=True).encode()).hexdigest()
    return {"fingerprint": digest, "config": job_config, "datasets": sorted(roots)}


def claim_output(store: ShardStore, job_doc: dict, fs) -> None:
    """Write ``OUT/job.json``, or check that the one there is this job's (else :class:`JobMismatch`)."""
    previous = store.read("job.json", fs)
    if previous is None:
        store.write("job.json", json_bytes(job_doc), fs)
        return
    old = json.loads(previous).get("fingerprint", "?")
    if old != job_doc["fingerprint"]:
        raise JobMismatch(
            f"{store.uri} already holds pairs prepared with a different plan (job {old[:12]}, "
            f"this one {job_doc['fingerprint'][:12]}): other datasets, seed, pair counts, config or input data. "
            "Use a new --out, or delete the old output first.")


def done_shards(store: ShardStore, states: dict[str, DatasetState], digest: str, fs) -> dict[str, dict]:
    """The sidecars of shards already done by this job (sidecar present, same job, parquet present)."""
    done: dict[str, dict] = {}
    for name, st in states.items():
        for i in range(len(st.shards)):
            sname = shard_name(name, i)
            raw = store.read(shard_paths(sname)["stats"], fs)
            if raw is None:
                continue
            side = json.loads(raw)
            if side.get("job") == digest and store.exists(side["path"], fs):
                done[sname] = side
    return done


def write_reader_rejects(store: ShardStore, states: dict[str, DatasetState], fs) -> None:
    """``OUT/rejects/reader-<dataset>.jsonl`` for each dataset whose reader refused items."""
    for name, st in states.items():
        rel = f"rejects/reader-{name}.jsonl"
        if st.reader_log.items:
            lines = "".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n" for r in st.reader_log.items)
            write_if_changed(store, rel, lines.encode("utf-8"), fs)


def build_manifest(states: dict[str, DatasetState], done: dict[str, dict], job_doc: dict,
                   roots: dict[str, str]) -> dict:
    """The manifest from the listing and the shard sidecars (deterministic: no times, hosts or credentials).

    Accounting (per dataset): ``frames_read`` = source frame decodes attempted (a frame needed by one shard
    is decoded once; a frame needed by two shards -- only when a huge video is split -- counts twice) =
    ``frames_used`` + ``sum(rejected.values())``; ``rejected`` holds the decode-stage reasons
    (:mod:`data_prep.shards`), ``reader_rejected`` the reader-stage ones (:mod:`data_prep.readers.rejections`);
    ``pairs_planned`` = ``pairs_written`` + ``sum(pairs_dropped.values())``. Both equations are checked
    (AssertionError otherwise). ``pairs_requested`` (``pairs_explicit``: given per dataset, else the default
    ``pairs_per_epoch x pool_factor``), ``pairs_bound`` (the distinct pairs the data can supply, facts §7.6)
    and ``pairs_planned = min(pairs_requested, pairs_bound)``.
    """
    from data_prep.records import SCHEMA_VERSION as PAIR_SCHEMA_VERSION

    shards: list[dict] = []
    per_dataset: dict[str, dict] = {}
    for name, st in states.items():
        sides = [done[shard_name(name, i)] for i in range(len(st.shards))]
        rejected = _sum_counters(s["rejected"] for s in sides)
        dropped = _sum_counters(s["pairs_dropped"] for s in sides)
        entry = {
            "root": public_uri(roots[name]), "tracks": st.tracks, "annotated_frames": st.annotated_frames,
            "reader_rejected": st.reader_log.by_reason(),
            "videos": st.plan.num_videos if st.plan else 0,
            "frames_read": sum(s["frames_read"] for s in sides),
            "frames_used": sum(s["frames_used"] for s in sides),
            "rejected": rejected,
            "crops": sum(s["crops"] for s in sides), "crops_failed": sum(s["crops_failed"] for s in sides),
            "pairs_requested": st.requested, "pairs_explicit": st.explicit, "pairs_bound": st.bound,
            "pairs_planned": st.planned,
            "pairs_written": sum(s["rows"] for s in sides), "pairs_dropped": dropped,
            "shards": len(sides), "bytes": sum(s["bytes"] for s in sides),
        }
        if any("decoded_at" in s for s in sides):  # data.reduced_decode: frames used per decode factor
            entry["decoded_at"] = _sum_counters(s.get("decoded_at", {}) for s in sides)
        if entry["frames_read"] != entry["frames_used"] + sum(rejected.values()):
            raise AssertionError(f"{name}: frames do not reconcile: {entry}")
        if entry["pairs_planned"] != entry["pairs_written"] + sum(dropped.values()):
            raise AssertionError(f"{name}: pairs do not reconcile: {entry}")
        per_dataset[name] = entry
        for s in sides:
            shards.append({"path": s["path"], "dataset": name, "rows": s["rows"], "bytes": s["bytes"],
                           "sha256": s["sha256"], "pair_ids_sha256": s["pair_ids_sha256"],
                           "rejects": s["rejects_path"]})
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION, "pair_schema_version": PAIR_SCHEMA_VERSION,
        "job": job_doc["fingerprint"], "config": {**job_doc["config"], "datasets": {n: public_uri(r) for n, r in roots.items()}},
        "datasets": per_dataset, "shards": shards,
        "reader_rejects": [f"rejects/reader-{n}.jsonl" for n, st in states.items() if st.reader_log.items],
        "totals": {
            "pairs_written": sum(d["pairs_written"] for d in per_dataset.values()),
            "bytes": sum(d["bytes"] for d in per_dataset.values()), "shards": len(shards),
        },
    }


def summary_table(manifest: dict) -> str:
    """A markdown table of the manifest's per-dataset counts (pairs: requested, the bound the data can supply,
    planned = the smaller of the two, written, dropped)."""
    head = ("| dataset | tracks | frames read | used | rejected | pairs requested | bound | planned | written "
            "| dropped | shards | MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for name, d in manifest["datasets"].items():
        lines.append(
            f"| {name} | {d['tracks']} | {d['frames_read']} | {d['frames_used']} | {sum(d['rejected'].values())} "
            f"| {d['pairs_requested']} | {d.get('pairs_bound', '')} | {d['pairs_planned']} | {d['pairs_written']} "
            f"| {sum(d['pairs_dropped'].values())} | {d['shards']} | {d['bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


def cap_lines(manifest: dict, flag: str = "--pairs") -> list[str]:
    """One line per dataset whose pair count was capped at its bound (:func:`data_prep.listing.cap_message`):
    ``warning: ...`` for an explicit count (``flag``), a note for the default one."""
    out = []
    for name, d in manifest["datasets"].items():
        line = cap_message(name, d["pairs_requested"], d.get("pairs_bound", 0), d["pairs_planned"],
                           d.get("pairs_explicit", False), flag)
        if line:
            out.append(line)
    return out


def rejection_lines(manifest: dict) -> list[str]:
    """One line per dataset with rejections: ``name: reader {reason: n} decode {reason: n} dropped {...}``."""
    out = []
    for name, d in manifest["datasets"].items():
        if d["reader_rejected"] or d["rejected"] or d["pairs_dropped"]:
            out.append(f"{name}: reader {d['reader_rejected']}, decode {d['rejected']}, "
                       f"pairs dropped {d['pairs_dropped']}")
    return out


def write_manifest(store: ShardStore, states: dict[str, DatasetState], done: dict[str, dict], job_doc: dict,
                   roots: dict[str, str], fs) -> dict:
    """The job's last step: the reader rejects, then ``OUT/manifest.json`` (:func:`build_manifest`); returns the
    manifest. Files already holding the same bytes are not rewritten."""
    write_reader_rejects(store, states, fs)
    manifest = build_manifest(states, done, job_doc, roots)
    write_if_changed(store, "manifest.json", json_bytes(manifest), fs)
    return manifest


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_if_changed(store: ShardStore, rel: str, data: bytes, fs) -> None:
    if store.read(rel, fs) != data:
        store.write(rel, data, fs)


def _sum_counters(dicts: Iterable[dict]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))
