"""The index of prepared pair records: where every pair lives, and reads of the row groups that hold them.

:func:`list_pair_files` finds the parquet files of ``ocean prepare``; :func:`load_pair_index` builds a
:class:`PairIndex` (pair key, dataset, file, row group, row) from two small columns and the footers, no JPEG
bytes; :func:`read_pair_rows` reads the augmentation columns of given pairs, only the row groups named, in
the order asked, checking each file once per process against the sha256 that ``DATA/manifest.json`` records
(:func:`manifest_digests`). Pairs are known by a uint64 key (:func:`pair_keys`). Bad or missing pair data
raises :class:`TrainingDataError` naming the file and the reason. No torch, no Ray.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocean import storage

INDEX_COLUMNS = ("pair_id", "dataset")
# Pair-record columns the decode + augment step reads (data_prep.records schema; the others stay on disk).
AUGMENT_COLUMNS = ("pair_id", "dataset", "video", "template_jpeg", "search_jpeg", "template_box", "search_box",
                   "template_offset", "search_offset", "template_side", "search_side")


class TrainingDataError(ValueError):
    """The pair records cannot feed this training run (missing, wrong schema, too few pairs)."""


def list_pair_files(data: str) -> tuple[Any, list[str]]:
    """``(pyarrow filesystem, sorted parquet paths)`` under ``data`` (recursively, ``rejects/`` excluded)."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(data)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except FileNotFoundError:
        raise TrainingDataError(f"no pair records at {data}: run `ocean prepare` first") from None
    except OSError as exc:
        raise TrainingDataError(f"cannot list the pair records at {storage.public_uri(data)}: "
                                f"{storage.describe_failure(exc)}") from None
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                   and "/rejects/" not in i.path[len(root):] and not Path(i.path).name.startswith("."))
    if not files:
        raise TrainingDataError(f"no .parquet pair records under {data}: run `ocean prepare` first")
    return fs, files


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


@dataclass(frozen=True)
class PairIndex:
    """Where every prepared pair lives: built from two small columns and the parquet footers (no JPEG bytes).

    Attributes:
        files: parquet paths (on the filesystem :func:`list_pair_files` returned).
        keys: ``(N,)`` uint64 pair keys (:func:`pair_keys`); datasets: ``(N,)`` str dataset names.
        file: ``(N,)`` int64 index into ``files``; row_group: ``(N,)`` int64 row group inside that file;
        row: ``(N,)`` int64 row inside that row group; unit: ``(N,)`` int64 id of the (file, row group), the
        smallest piece a reader fetches.
        sha256: per file, the manifest's sha256 of it (None: not in the manifest, not checked); empty when
            there is no manifest (:func:`manifest_digests`).
    """

    files: tuple[str, ...]
    keys: np.ndarray
    datasets: np.ndarray
    file: np.ndarray
    row_group: np.ndarray
    row: np.ndarray
    unit: np.ndarray
    sha256: tuple[str | None, ...] = ()

    @functools.cached_property
    def _key_order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.keys, kind="stable")
        return order, self.keys[order]

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """``(M,)`` int64 positions in the index of ``keys`` (all present; a duplicated key maps to its first
        occurrence)."""
        order, sorted_keys = self._key_order
        at = np.searchsorted(sorted_keys, np.asarray(keys, dtype=np.uint64))
        pos = order[np.minimum(at, len(order) - 1)]
        if len(pos) and not np.array_equal(self.keys[pos], np.asarray(keys, dtype=np.uint64)):
            raise TrainingDataError("epoch selection names pairs the index does not have")
        return pos.astype(np.int64)


def load_pair_index(fs, files: list[str], digests: tuple[str | None, ...] = ()) -> PairIndex:
    """Read the :class:`PairIndex` of pair-record files (``pair_id``, ``dataset`` and the footers only);
    ``digests``: the manifest's sha256 per file (:func:`manifest_digests`), kept for the readers to check.
    TrainingDataError naming the file when one cannot be read (damaged footer, storage error)."""
    from data_prep.records import SCHEMA_VERSION, SCHEMA_VERSION_KEY

    keys, names, file_ix, groups, rows, units = [], [], [], [], [], []
    unit = 0
    for f, path in enumerate(files):
        with _reading(fs, path):
            with fs.open_input_file(path) as handle:
                pf = _parquet(handle)
                schema = pf.schema_arrow
                version = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
                if version != str(SCHEMA_VERSION).encode() or any(c not in schema.names for c in INDEX_COLUMNS):
                    raise TrainingDataError(f"{path} is not a pair-record file of schema version {SCHEMA_VERSION} "
                                            f"(metadata {version!r}, columns {schema.names[:6]}...)")
                table = pf.read(columns=list(INDEX_COLUMNS))
                for g in range(pf.metadata.num_row_groups):
                    n = pf.metadata.row_group(g).num_rows
                    groups.append(np.full(n, g, np.int64))
                    rows.append(np.arange(n, dtype=np.int64))
                    units.append(np.full(n, unit, np.int64))
                    unit += 1
        keys.append(pair_keys(table.column("pair_id").to_pylist()))
        names.append(np.asarray(table.column("dataset").to_pylist(), dtype=str))
        file_ix.append(np.full(table.num_rows, f, np.int64))

    def cat(parts: list, dtype) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    return PairIndex(tuple(files), cat(keys, np.uint64), cat(names, str), cat(file_ix, np.int64),
                     cat(groups, np.int64), cat(rows, np.int64), cat(units, np.int64), tuple(digests))


def open_pair_index(data: str) -> tuple[Any, PairIndex]:
    """``(filesystem, PairIndex)`` of the pair records under ``data``, with the manifest's sha256 of each file."""
    fs, files = list_pair_files(data)
    return fs, load_pair_index(fs, files, manifest_digests(data, files))


def manifest_digests(data: str, files: list[str]) -> tuple[str | None, ...]:
    """The sha256 that ``DATA/manifest.json`` records for each of ``files`` (paths as :func:`list_pair_files`
    gives them), None for a file it does not list; ``()`` without a manifest or one without shard entries
    (nothing to check). TrainingDataError for a manifest that is not JSON."""
    import json

    try:
        raw = storage.read_bytes(storage.join(data, "manifest.json"))
    except FileNotFoundError:
        return ()
    try:
        shards = json.loads(raw).get("shards") or []
        by_rel = {str(s["path"]).strip("/"): str(s["sha256"]) for s in shards if s.get("sha256")}
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise TrainingDataError(f"{storage.join(data, 'manifest.json')}: not a manifest of `ocean prepare` "
                                f"({exc})") from None
    if not by_rel:
        return ()
    _, root = storage.resolve(data)
    return tuple(by_rel.get(f[len(root):].strip("/")) for f in files)


# (file path, sha256) pairs this process has read whole and found to match (each shard is hashed once per
# process: a Ray Data task process reads many items of the same files)
_VERIFIED: set[tuple[str, str]] = set()


def _display(fs, path: str) -> str:
    return f"s3://{path}" if getattr(fs, "type_name", "") == "s3" else path


@contextlib.contextmanager
def _reading(fs, path: str):
    """Turn a failed read of pair-record file ``path`` into a TrainingDataError naming it and the reason."""
    import pyarrow as pa

    try:
        yield
    except TrainingDataError:
        raise
    except FileNotFoundError:
        raise TrainingDataError(f"pair-record file {_display(fs, path)}: missing (deleted after the run "
                                "listed it?)") from None
    except (pa.ArrowException, OSError) as exc:
        reason = storage.describe_failure(exc) if isinstance(exc, OSError) and not isinstance(
            exc, pa.ArrowInvalid) else f"damaged parquet: {_first(exc)}"
        raise TrainingDataError(f"pair-record file {_display(fs, path)}: cannot read it ({reason}); "
                                f"{REPAIR}") from None


REPAIR = "delete it and re-run `ocean prepare` with the same arguments to write it again"


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _parquet(handle):
    import pyarrow.parquet as pq

    return pq.ParquetFile(handle)


def _open_checked(fs, path: str, digest: str | None):
    """An input file for ``path``; the first time this process opens it with a manifest ``digest``, the whole
    file is read and its sha256 compared (TrainingDataError on a mismatch), and the read bytes are used."""
    import pyarrow as pa

    if not digest or (path, digest) in _VERIFIED:
        return fs.open_input_file(path)
    with fs.open_input_stream(path) as stream:
        data = stream.read()
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise TrainingDataError(f"pair-record file {_display(fs, path)}: damaged or changed since `ocean prepare` "
                                f"wrote it (sha256 {got[:16]}... of {len(data)} bytes, the manifest says "
                                f"{digest[:16]}...); {REPAIR}")
    _VERIFIED.add((path, digest))
    return pa.BufferReader(data)


def read_pair_index(fs, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(keys (N,) uint64, datasets (N,) str)`` from the small columns only (no JPEG bytes are read)."""
    index = load_pair_index(fs, files)
    return index.keys, index.datasets


def read_pair_rows(fs, files: list[str] | tuple[str, ...], locations: np.ndarray,
                   digests: tuple[str | None, ...] = ()) -> dict[str, Any]:
    """The :data:`AUGMENT_COLUMNS` of the pairs at ``locations`` (``(n, 4)`` uint64 file, row group, row,
    key), in that order; only the row groups named are read, except the first time this process reads a file
    that ``digests`` (the manifest's sha256 per file) names: then the whole file is read once and checked.

    Raises:
        TrainingDataError: naming the file: its sha256 is not the manifest's, it cannot be read (damaged,
            storage error), or a row's ``pair_id`` is not the expected key (the files changed during the run).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    loc = np.asarray(locations, dtype=np.uint64).reshape(-1, 4)
    pieces, order = [], []
    for f in np.unique(loc[:, 0]):
        at = np.flatnonzero(loc[:, 0] == f)
        groups = np.unique(loc[at, 1])
        path = files[int(f)]
        with _reading(fs, path), _open_checked(fs, path, digests[int(f)] if digests else None) as handle:
            pf = pq.ParquetFile(handle)
            names = [c for c in AUGMENT_COLUMNS if c in pf.schema_arrow.names]
            table = pf.read_row_groups([int(g) for g in groups], columns=names)
            sizes = [pf.metadata.row_group(int(g)).num_rows for g in groups]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        take = starts[np.searchsorted(groups, loc[at, 1])] + loc[at, 2].astype(np.int64)
        pieces.append(table.take(pa.array(take)).to_pydict())
        order.append(at)
    back = np.argsort(np.concatenate(order), kind="stable").tolist()  # files may differ in nullability: no concat
    batch = {}
    for name in pieces[0]:
        values = [v for piece in pieces for v in piece[name]]
        batch[name] = [values[i] for i in back]
    got = pair_keys(batch["pair_id"])
    if not np.array_equal(got, loc[:, 3]):
        raise TrainingDataError(f"pair records changed during the run: expected pair keys "
                                f"{loc[got != loc[:, 3], 3][:3].tolist()}..., read others")
    return {k: (v if k.endswith("_jpeg") else np.asarray(v)) for k, v in batch.items()}


def manifest_sha256(data: str) -> str | None:
    """sha256 of ``DATA/manifest.json`` (the data version a run trained on), None if there is none."""
    try:
        return hashlib.sha256(storage.read_bytes(storage.join(data, "manifest.json"))).hexdigest()
    except FileNotFoundError:
        return None


def datasets_present(data: str) -> dict[str, int]:
    """``{dataset: pairs}`` in the prepared data: ``DATA/manifest.json``'s ``pairs_written`` per dataset,
    else (no or an older manifest) counted from the pair records' ``dataset`` column."""
    try:
        manifest = json.loads(storage.read_bytes(storage.join(data, "manifest.json")))
    except (FileNotFoundError, OSError, ValueError):
        manifest = {}
    per = manifest.get("datasets") if isinstance(manifest, dict) else None
    if isinstance(per, dict) and per:
        return {k: int(v.get("pairs_written", 0)) for k, v in per.items() if int(v.get("pairs_written", 0)) > 0}
    fs, files = list_pair_files(data)
    _, names = read_pair_index(fs, files)
    found: dict[str, int] = {}
    for n in names.tolist():
        found[n] = found.get(n, 0) + 1
    return found
