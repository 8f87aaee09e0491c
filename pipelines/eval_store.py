"""Each sequence's results on the output store as soon as it is tracked, and the rule for reusing them.

Layout (``OUT`` an :class:`ocean.storage.OutputStore`: a folder or ``s3://bucket/prefix``)::

    OUT/<checkpoint>/<benchmark>/results/...             the sequence's file(s) in the toolkit's format
    OUT/<checkpoint>/<benchmark>/sequences/<seq>.json    its record: key, key inputs, files + sha256, times

Every file is written atomically (:meth:`OutputStore.write`), the record last: a record means complete result
files. A stored sequence is **reused** (not tracked again) when its record's ``key`` equals the key of the
item to run and every file the record lists is there with the recorded sha256. The key is the sha256 of
canonical JSON of: ``RECORD_SCHEMA``; the checkpoint's content digest (sha256 of its bytes: the same
weights under another URI match, new weights at the same URI do not); every field of the layered tracker
config; the benchmark; the device (``cpu`` / ``cuda``); and the sequence's identity -- name, frame count,
a sha256 of the frame file names (not their folders: the same benchmark under another root matches),
first frame number, and a sha256 of its ground truth, polygons and presence flags. Frame pixels are not
hashed. A failed sequence gets no record and loses any stale files, so a re-run tracks it again. Remote
output is mirrored in a local staging folder, where the driver scores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ocean import storage
from ocean.benchmarks.readers import BENCHMARK_FAMILY
from ocean.benchmarks.results import ope_result_path, vot_result_path, write_track
from ocean.benchmarks.sequence import Sequence
from ocean.checkpoint import CheckpointInfo
from pipelines.eval_workers import SequenceResult, WorkItem

RECORD_SCHEMA = 1  # bump when the record or the tracking it stands for changes meaning
ItemId = tuple[str, str, str]  # (checkpoint uri, benchmark, sequence name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sequence_identity(seq: Sequence) -> dict[str, Any]:
    """What identifies a benchmark sequence in a key (module docstring); frame pixels are not read."""
    names = "\n".join(str(f).replace("\\", "/").rsplit("/", 1)[-1] for f in seq.frames)
    gt = hashlib.sha256(np.ascontiguousarray(seq.gt_xywh, dtype=np.float64).tobytes())
    if seq.gt_poly is not None:
        gt.update(np.ascontiguousarray(seq.gt_poly, dtype=np.float64).tobytes())
    gt.update(np.ascontiguousarray(seq.present, dtype=bool).tobytes())
    return {"name": seq.name, "frames": len(seq), "frame_names_sha256": _sha256(names.encode()),
            "start_frame": int(seq.start_frame), "gt_sha256": gt.hexdigest()}


def key_inputs(checkpoint_sha256: str, item: WorkItem, device: str) -> dict[str, Any]:
    return {"schema": RECORD_SCHEMA, "checkpoint_sha256": checkpoint_sha256,
            "tracker": dataclasses.asdict(item.tracker), "benchmark": item.benchmark,
            "device": "cuda" if device.startswith("cuda") else "cpu", "sequence": sequence_identity(item.sequence)}


def item_key(inputs: Mapping[str, Any]) -> str:
    return _sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode())


def track_paths(benchmark: str, seq_name: str) -> list[str]:
    """The result files :func:`write_track` writes for one sequence, relative to the ``results`` folder."""
    family = BENCHMARK_FAMILY[benchmark]
    if family == "vot":
        return [vot_result_path(Path(""), seq_name).as_posix()]
    box = ope_result_path(Path(""), family, seq_name)
    return [box.as_posix()] + ([(box.parent / f"{seq_name}_time.txt").as_posix()] if family == "got10k" else [])


def open_output(out: str) -> tuple[Path, Path | None, storage.OutputStore]:
    """``(folder the driver writes and scores in, staging folder or None, the output store)``; remote output
    is mirrored in a local staging folder. StorageError when the store cannot be written."""
    store = storage.OutputStore.from_uri(out)
    store.check_writable()
    staging = Path(tempfile.mkdtemp(prefix="ocean-eval-")) if store.kind != "local" else None
    out_dir = staging if staging is not None else Path(store.root)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, staging, store


class ResultStore:
    """The per-sequence results of one evaluation on ``store`` (mirrored in ``out_dir`` when remote).

    ``names``: checkpoint uri -> folder name under OUT; ``inputs``: item -> its key inputs
    (:func:`item_inputs`). ``written``: the paths (relative to OUT) already on the store.
    """

    def __init__(self, store: storage.OutputStore, out_dir: Path, names: Mapping[str, str],
                 inputs: Mapping[ItemId, dict[str, Any]]) -> None:
        self.store, self.out_dir, self.names, self.inputs = store, out_dir, dict(names), dict(inputs)
        self.keys = {i: item_key(v) for i, v in self.inputs.items()}
        self.fs = store.filesystem()
        self.mirror = Path(store.root) != out_dir if store.kind == "local" else True
        self.written: set[str] = set()

    def _base(self, checkpoint: str, benchmark: str) -> str:
        return f"{self.names[checkpoint]}/{benchmark}"

    def _put(self, rel: str, data: bytes) -> None:
        self.store.write(rel, data, self.fs)
        if self.mirror:
            (self.out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.out_dir / rel).write_bytes(data)
        self.written.add(rel)

    def _drop(self, rel: str) -> None:
        self.store.delete(rel, self.fs)
        if self.mirror:
            (self.out_dir / rel).unlink(missing_ok=True)
        self.written.discard(rel)

    def save(self, r: SequenceResult) -> None:
        """Store one result: its toolkit files, then its record; a failed one loses any stale files."""
        base, ident = self._base(r.checkpoint, r.benchmark), (r.checkpoint, r.benchmark, r.sequence)
        if r.error is not None:
            for rel in [f"sequences/{r.sequence}.json", *(f"results/{p}" for p in track_paths(r.benchmark, r.sequence))]:
                self._drop(f"{base}/{rel}")
            return
        files: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="ocean-seq-") as tmp:
            write_track(Path(tmp), r.benchmark, r.sequence, r.track)
            for p in sorted(q for q in Path(tmp).rglob("*") if q.is_file()):
                rel, data = f"results/{p.relative_to(tmp).as_posix()}", p.read_bytes()
                self._put(f"{base}/{rel}", data)
                files[rel] = _sha256(data)
        record = {
            "key": self.keys[ident], "key_inputs": self.inputs[ident], "checkpoint": storage.public_uri(r.checkpoint),
            "benchmark": r.benchmark, "sequence": r.sequence, "files": files, "worker": r.worker, "node": r.node,
            "wall_s": r.wall_s, "cpu_s": r.cpu_s,
            "track": {k: np.asarray(v).tolist() if k == "times_s" else v for k, v in r.track.items()
                      if k in ("times_s", "nonfinite_frames", "num_failures")},
        }
        self._put(f"{base}/sequences/{r.sequence}.json", json.dumps(record, indent=1).encode())

    def reuse(self, items: Iterable[WorkItem]) -> tuple[dict[ItemId, SequenceResult], list[WorkItem]]:
        """Split ``items`` into the stored results that can be reused (module docstring) and those to run."""
        from pyarrow import fs as pafs

        present: dict[str, set[str]] = {}
        reused: dict[ItemId, SequenceResult] = {}
        todo: list[WorkItem] = []
        for it in items:
            base = self._base(it.checkpoint, it.benchmark)
            if base not in present:
                sel = pafs.FileSelector(self.store.path(f"{base}/sequences"), allow_not_found=True)
                present[base] = {Path(f.path).name for f in self.fs.get_file_info(sel)}
            r = self._load(it, base) if f"{it.sequence.name}.json" in present[base] else None
            if r is None:
                todo.append(it)
            else:
                reused[(it.checkpoint, it.benchmark, it.sequence.name)] = r
        return reused, todo

    def _load(self, it: WorkItem, base: str) -> SequenceResult | None:
        rel = f"{base}/sequences/{it.sequence.name}.json"
        try:
            record = json.loads(self.store.read(rel, self.fs) or b"")
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("key") != self.keys[(it.checkpoint, it.benchmark, it.sequence.name)]:
            return None
        blobs = {}
        for f, digest in dict(record.get("files") or {}).items():
            data = self.store.read(f"{base}/{f}", self.fs)
            if data is None or _sha256(data) != digest:
                return None
            blobs[f"{base}/{f}"] = data
        for path, data in blobs.items():
            if self.mirror:
                (self.out_dir / path).parent.mkdir(parents=True, exist_ok=True)
                (self.out_dir / path).write_bytes(data)
            self.written.add(path)
        self.written.add(rel)
        track = dict(record.get("track") or {})
        track["times_s"] = np.asarray(track.get("times_s", []), dtype=np.float64)
        return SequenceResult(it.checkpoint, it.benchmark, it.sequence.name, record.get("worker") or "?",
                              record.get("node"), wall_s=record.get("wall_s", 0.0), cpu_s=record.get("cpu_s", 0.0),
                              track=track)


def item_inputs(infos: Iterable[CheckpointInfo], items: Iterable[WorkItem], device: str) -> dict[ItemId, dict]:
    """The key inputs of every item; each checkpoint is read once more, for its content digest."""
    digests = {i.uri: _sha256(storage.read_bytes(i.uri)) for i in infos}
    return {(it.checkpoint, it.benchmark, it.sequence.name): key_inputs(digests[it.checkpoint], it, device)
            for it in items}


def upload_staged(report: dict, results: ResultStore, staging: Path, out: str) -> None:
    """Copy what the store lacks from the staging folder to it, then point the report's paths there."""
    for f in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = f.relative_to(staging).as_posix()
        if rel not in results.written:
            results.store.write(rel, f.read_bytes(), results.fs)
    shutil.rmtree(staging, ignore_errors=True)
    report["plots"] = [p.replace(str(staging), str(out)) for p in report["plots"]]
    for entry in report["checkpoints"].values():
        entry["dir"] = entry["dir"].replace(str(staging), str(out))
