"""pipelines.raysession helpers that run inside Ray workers (no Ray started here)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# In a fresh process, allocate a 20 MB array and report how much of it glibc served from mmap.
_PROBE = """
import ctypes, sys
import numpy as np
from pipelines.raysession import keep_large_buffers_in_heap
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
tuned = keep_large_buffers_in_heap() and keep_large_buffers_in_heap() if sys.argv[1] == "tune" else False
before = libc.mallinfo2().hblkhd
block = np.ones(20 << 20, np.uint8)
print(int(tuned), libc.mallinfo2().hblkhd - before)
"""


def _glibc_with_mallinfo2() -> bool:
    lib, version = platform.libc_ver()
    return lib == "glibc" and tuple(int(v) for v in version.split(".")[:2]) >= (2, 33)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_keep_large_buffers_in_heap_serves_a_20_mb_frame_from_the_heap():
    def probe(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], cwd=REPO, check=True, capture_output=True,
                             text=True).stdout.split()
        return int(out[0]), int(out[1])

    tuned, mapped = probe("tune")
    assert tuned == 1 and mapped == 0  # from the heap: reused after free, no page faults per frame
    plain, mapped_plain = probe("plain")
    assert plain == 0 and mapped_plain >= 20 << 20  # glibc's default: a fresh mmap for the block
