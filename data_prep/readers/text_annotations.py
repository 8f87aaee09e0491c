"""Parsing of the plain-text annotation files (GOT-10k, LaSOT): box lines, flag files, ``meta_info.ini``."""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.readers import rejections as R

_SEP = re.compile(r"[,\s]+")


def read_lines(path: Path) -> list[str]:
    """Lines of a text file without line ends; trailing empty lines dropped (a final newline is common).

    Undecodable bytes are replaced (a malformed line is then rejected by the caller, not a crash).
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_groundtruth(seq_dir: Path, reject) -> list[str] | None:
    """The lines of ``seq_dir/groundtruth.txt`` (GOT-10k and LaSOT, formats.md §1.1 / §1.2), or None after calling
    ``reject(reason, source, detail)`` with ``missing_annotation`` (no file) or ``empty_sequence`` (no lines)."""
    gt_path = seq_dir / "groundtruth.txt"
    if not gt_path.is_file():
        reject(R.MISSING_ANNOTATION, gt_path, "no groundtruth.txt")
        return None
    lines = read_lines(gt_path)
    if not lines:
        reject(R.EMPTY_SEQUENCE, seq_dir, "groundtruth.txt is empty")
        return None
    return lines


def parse_box_xywh(line: str) -> tuple[float, float, float, float] | None:
    """``x,y,w,h`` (commas, tabs or spaces) as 4 floats, or None when the line is malformed.

    ``nan`` / ``inf`` parse (and are rejected later as non-finite boxes); anything else not a float, or a
    field count other than 4, is malformed.
    """
    fields = [f for f in _SEP.split(line.strip()) if f]
    if len(fields) != 4:
        return None
    try:
        x, y, w, h = (float(f) for f in fields)
    except ValueError:
        return None
    return x, y, w, h


def parse_flags(path: Path) -> list[int] | None:
    """0/1 flags from a LaSOT flag file (one comma-separated line) or a one-per-line label file.

    Returns None when any field is not an integer.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    fields = [f for f in _SEP.split(text.strip()) if f]
    try:
        return [int(float(f)) for f in fields]
    except ValueError:
        return None


def parse_meta_info(path: Path) -> dict[str, str]:
    """GOT-10k ``meta_info.ini``: ``[METAINFO]`` then ``key: value`` lines (formats.md §1.1) as a dict."""
    meta: dict[str, str] = {}
    for line in read_lines(path):
        if ":" in line and not line.startswith("["):
            key, value = line.split(":", 1)
            meta[key.strip()] = value.strip()
    return meta


def parse_resolution(value: str | None) -> tuple[int, int] | None:
    """GOT-10k ``resolution: (1280, 720)`` as ``(width, height)``, or None."""
    if not value:
        return None
    nums = re.findall(r"\d+", value)
    if len(nums) != 2:
        return None
    return int(nums[0]), int(nums[1])
