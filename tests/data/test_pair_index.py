"""The index of prepared pair records: pair keys, row locations, refusal of files that are not pair records."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from pair_records import write_pairs

from data_prep.pair_index import (
    TrainingDataError,
    list_pair_files,
    load_pair_index,
    pair_keys,
    read_pair_index,
)


def test_pair_keys():
    assert pair_keys(["00000000000000ff", "ffffffffffffffff"]).tolist() == [255, 2**64 - 1]
    odd = pair_keys(["x", "x", "y"])
    assert odd[0] == odd[1] != odd[2]


def test_pair_index_locates_every_row(tmp_path):
    write_pairs(tmp_path, {"got10k": 10}, per_file=6)  # 2 files: 6 + 4 rows
    table = pq.read_table(tmp_path / "shard-00000.parquet")
    pq.write_table(table, tmp_path / "shard-00000.parquet", row_group_size=4)  # row groups of 4 + 2
    fs, files = list_pair_files(str(tmp_path))
    index = load_pair_index(fs, files)
    assert index.file.tolist() == [0] * 6 + [1] * 4
    assert index.row_group.tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert index.row.tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2, 3]
    assert index.unit.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]  # one unit per (file, row group)
    assert index.positions(index.keys[[7, 2, 5]]).tolist() == [7, 2, 5]


def test_not_pair_records(tmp_path):
    with pytest.raises(TrainingDataError, match="no .parquet"):
        list_pair_files(str(tmp_path))
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    fs, files = list_pair_files(str(tmp_path))
    with pytest.raises(TrainingDataError, match="not a pair-record file"):
        read_pair_index(fs, files)
