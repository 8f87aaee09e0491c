"""The parquet pair record: one row per template / search pair, and its checks.

:data:`PAIR_SCHEMA` (its fields are described above it) holds a pair's ids and, per side, the stored crop
as JPEG bytes with the geometry that maps it back to the source image. :func:`build_table` (from row dicts)
and :class:`PairTableBuilder` (column by column) build a shard's table; :func:`validate_table` checks one.
The schema's metadata holds ``ocean.schema_version`` (:data:`SCHEMA_VERSION`); readers refuse other versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = b"ocean.schema_version"
ROLES = ("template", "search")


def _side_fields(role: str) -> list[pa.Field]:
    return [
        pa.field(f"{role}_jpeg", pa.binary(), nullable=False),
        pa.field(f"{role}_box", pa.list_(pa.float32(), 4), nullable=False),
        pa.field(f"{role}_side", pa.int32(), nullable=False),
        pa.field(f"{role}_offset", pa.int32(), nullable=False),
        pa.field(f"{role}_scale", pa.float64(), nullable=False),
        pa.field(f"{role}_center", pa.list_(pa.float64(), 2), nullable=False),
        pa.field(f"{role}_source_box", pa.list_(pa.float64(), 4), nullable=False),
        pa.field(f"{role}_image_size", pa.list_(pa.int32(), 2), nullable=False),
    ]


# Row fields of PAIR_SCHEMA:
#
# * ``pair_id`` (16 hex digits, :func:`data_prep.pairs.pair_id`), ``dataset``, ``video``, ``track``,
#   ``template_frame``, ``search_frame`` (the datasets' own ids), ``draw`` (the pair's draw number ``k``).
# * Per side ``{role}`` in ``template`` / ``search``:
#
#   - ``{role}_jpeg``: the stored crop (:func:`data_prep.crops.crop_region`), JPEG bytes, BGR.
#   - ``{role}_box``: 4 float32, the target box ``x1, y1, x2, y2`` in crop pixels (official ``_toBBox``
#     box, facts §7.5).
#   - ``{role}_side``: crop side in pixels (square).
#   - ``{role}_offset``: the crop's top-left corner in the 511 frame (x = y); the training augmentation adds it
#     to crop coordinates to get 511-frame coordinates.
#   - ``{role}_scale``: 511-frame pixels per source pixel, ``510 / s_x`` (facts §7.1).
#   - ``{role}_center``: 2 float64, the target centre in the source image (pixels); with ``scale`` and
#     ``offset`` it maps crop pixels back to source pixels (:class:`data_prep.crops.CropGeometry`).
#   - ``{role}_source_box``: 4 float64, the annotation in source pixels (xyxy).
#   - ``{role}_image_size``: 2 int32, source image ``(width, height)``.
PAIR_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("video", pa.string(), nullable=False),
        pa.field("track", pa.string(), nullable=False),
        pa.field("template_frame", pa.string(), nullable=False),
        pa.field("search_frame", pa.string(), nullable=False),
        pa.field("draw", pa.int64(), nullable=False),
        *_side_fields("template"),
        *_side_fields("search"),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


class RecordError(ValueError):
    """A pair table or record that does not match :data:`PAIR_SCHEMA`."""


def side_fields(role: str, jpeg: bytes, crop, source_box_xyxy, image_size: tuple[int, int]) -> dict[str, Any]:
    """The ``{role}_*`` fields of one side from a :class:`data_prep.crops.StoredCrop` and its JPEG bytes."""
    g = crop.geometry
    return {
        f"{role}_jpeg": jpeg,
        f"{role}_box": [float(v) for v in crop.box_xyxy],
        f"{role}_side": int(g.side),
        f"{role}_offset": int(g.offset),
        f"{role}_scale": float(g.scale),
        f"{role}_center": [float(g.center_xy[0]), float(g.center_xy[1])],
        f"{role}_source_box": [float(v) for v in source_box_xyxy],
        f"{role}_image_size": [int(image_size[0]), int(image_size[1])],
    }


def make_record(pair, template: dict[str, Any], search: dict[str, Any]) -> dict[str, Any]:
    """One row from a :class:`data_prep.pairs.Pair` and the two :func:`side_fields` dicts."""
    row = {
        "pair_id": pair.pair_id, "dataset": pair.dataset, "video": pair.video, "track": pair.track_id,
        "template_frame": pair.template_frame, "search_frame": pair.search_frame, "draw": int(pair.draw),
    }
    row.update(template)
    row.update(search)
    return row


def build_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """A :data:`PAIR_SCHEMA` table from row dicts; a missing or extra key or a bad value raises RecordError."""
    names = PAIR_SCHEMA.names  # a new list per access: fetched once
    known = frozenset(names)
    for i, row in enumerate(records):
        if row.keys() != known:
            missing = [n for n in names if n not in row]
            extra = [k for k in row if k not in known]
            raise RecordError(f"record {i} ({row.get('pair_id', '?')}): missing {missing}, unknown {extra}")
    try:
        table = pa.Table.from_pydict({n: [row[n] for row in records] for n in names}, schema=PAIR_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise RecordError(f"records do not fit the pair schema: {exc}") from None
    validate_table(table)
    return table


class PairTableBuilder:
    """One shard's :data:`PAIR_SCHEMA` table, built column by column (the job's path; :func:`build_table` takes
    row dicts).

    Each stored crop is added once (:meth:`add_crop` returns its index) and each pair names its two crops
    (:meth:`add_pair`); :meth:`table` gathers the ``{role}_*`` columns from the crop columns with one Arrow
    ``take`` per column. A crop serves several pairs of a shard, and this avoids per-pair Python dicts and
    nested lists (:func:`side_fields` + :func:`make_record` + ``from_pydict``); the table is the same value
    for value.
    """

    _PAIR_COLUMNS = ("pair_id", "dataset", "video", "track", "template_frame", "search_frame")

    def __init__(self) -> None:
        self._jpeg: list[bytes] = []
        self._floats: list[tuple[float, ...]] = []  # box (4), scale, center (2), source box (4) per crop
        self._ints: list[tuple[int, ...]] = []  # side, offset, image width, height per crop
        self._strings: dict[str, list[str]] = {c: [] for c in self._PAIR_COLUMNS}
        self._draw: list[int] = []
        self._crop_of: dict[str, list[int]] = {role: [] for role in ROLES}

    def add_crop(self, jpeg: bytes, crop, source_box_xyxy, image_size: tuple[int, int]) -> int:
        """Store one crop (a :class:`data_prep.crops.StoredCrop`, its JPEG bytes, the source annotation xyxy
        and the source image ``(width, height)``); return its index for :meth:`add_pair`."""
        g = crop.geometry
        b = crop.box_xyxy
        self._jpeg.append(jpeg)
        self._floats.append((b[0], b[1], b[2], b[3], g.scale, g.center_xy[0], g.center_xy[1], *source_box_xyxy))
        self._ints.append((g.side, g.offset, image_size[0], image_size[1]))
        return len(self._jpeg) - 1

    def add_pair(self, pair, template: int, search: int) -> None:
        """Add a :class:`data_prep.pairs.Pair` row whose sides are crops ``template`` and ``search``."""
        strings = self._strings
        strings["pair_id"].append(pair.pair_id)
        strings["dataset"].append(pair.dataset)
        strings["video"].append(pair.video)
        strings["track"].append(pair.track_id)
        strings["template_frame"].append(pair.template_frame)
        strings["search_frame"].append(pair.search_frame)
        self._draw.append(int(pair.draw))
        self._crop_of["template"].append(template)
        self._crop_of["search"].append(search)

    def __len__(self) -> int:
        return len(self._draw)

    def pair_ids(self) -> list[str]:
        return self._strings["pair_id"]

    def table(self) -> pa.Table:
        """The validated table (:func:`validate_table`), pairs in the order they were added."""
        if not self._draw:
            return PAIR_SCHEMA.empty_table()
        floats = np.asarray(self._floats, dtype=np.float64).reshape(-1, 11)
        ints = np.asarray(self._ints, dtype=np.int64).reshape(-1, 4)

        def fixed(values: np.ndarray, type_: pa.DataType) -> pa.Array:
            width = values.shape[1]
            return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), type=type_), width)

        crop_columns = {
            "jpeg": pa.array(self._jpeg, type=pa.binary()),
            "box": fixed(floats[:, 0:4].astype(np.float32), pa.float32()),
            "side": pa.array(ints[:, 0], type=pa.int32()),
            "offset": pa.array(ints[:, 1], type=pa.int32()),
            "scale": pa.array(floats[:, 4], type=pa.float64()),
            "center": fixed(floats[:, 5:7], pa.float64()),
            "source_box": fixed(floats[:, 7:11], pa.float64()),
            "image_size": fixed(ints[:, 2:4].astype(np.int32), pa.int32()),
        }
        columns = {c: pa.array(v, type=pa.string()) for c, v in self._strings.items()}
        columns["draw"] = pa.array(self._draw, type=pa.int64())
        for role in ROLES:
            idx = pa.array(self._crop_of[role], type=pa.int64())
            for name, col in crop_columns.items():
                columns[f"{role}_{name}"] = col.take(idx)
        table = pa.Table.from_arrays([columns[n] for n in PAIR_SCHEMA.names], schema=PAIR_SCHEMA)
        validate_table(table)
        return table


def validate_table(table: pa.Table) -> None:
    """Raise RecordError naming the first problem: schema version, columns and types, nulls, empty JPEGs,
    non-finite or inverted boxes, crop sides not positive, duplicate pair ids."""
    version = (table.schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    if version is None:
        raise RecordError(f"table has no {SCHEMA_VERSION_KEY.decode()} metadata (not a pair table?)")
    if version != str(SCHEMA_VERSION).encode():
        raise RecordError(f"pair schema version {version.decode()} != supported {SCHEMA_VERSION}")
    for fld in PAIR_SCHEMA:
        if fld.name not in table.column_names:
            raise RecordError(f"missing column {fld.name!r}")
        got = table.schema.field(fld.name).type
        if got != fld.type:
            raise RecordError(f"column {fld.name!r} has type {got}, expected {fld.type}")
        if table.column(fld.name).null_count:
            raise RecordError(f"column {fld.name!r} has {table.column(fld.name).null_count} nulls")
    extra = [n for n in table.column_names if n not in PAIR_SCHEMA.names]
    if extra:
        raise RecordError(f"unknown columns {extra}")
    if table.num_rows == 0:
        return
    if pc.count_distinct(table.column("pair_id")).as_py() != table.num_rows:  # Arrow's hash count: no Python strings
        raise RecordError("duplicate pair_id values")
    for role in ROLES:
        lengths = np.asarray(pc.binary_length(table.column(f"{role}_jpeg")))
        if (lengths == 0).any():
            raise RecordError(f"{int((lengths == 0).sum())} empty {role}_jpeg values")
        boxes = box_array(table.column(f"{role}_box"))
        bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise RecordError(f"{int(bad.sum())} bad {role}_box values (first: row {row}, {boxes[row].tolist()})")
        sides = np.asarray(table.column(f"{role}_side"))
        if (sides <= 0).any():
            raise RecordError(f"non-positive {role}_side values")


def box_array(column) -> np.ndarray:
    """``(N, 4)`` float32 from a ``list<float32, 4>`` column (ChunkedArray or Array)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.asarray(column.flatten(), dtype=np.float32).reshape(-1, 4)


def bytes_per_pair(table: pa.Table) -> dict[str, float]:
    """JPEG bytes per pair: ``count``, ``template_mean``, ``search_mean``, ``mean``, ``median``, ``p95``,
    ``max`` (template + search bytes per row) and ``total``."""
    if table.num_rows == 0:
        return {"count": 0, "template_mean": 0.0, "search_mean": 0.0, "mean": 0.0, "median": 0.0,
                "p95": 0.0, "max": 0.0, "total": 0.0}
    t = np.asarray(pc.binary_length(table.column("template_jpeg")), dtype=np.float64)
    s = np.asarray(pc.binary_length(table.column("search_jpeg")), dtype=np.float64)
    both = t + s
    return {
        "count": int(table.num_rows), "template_mean": float(t.mean()), "search_mean": float(s.mean()),
        "mean": float(both.mean()), "median": float(np.median(both)), "p95": float(np.percentile(both, 95)),
        "max": float(both.max()), "total": float(both.sum()),
    }
