"""Image size from a JPEG / PNG file header, without decoding pixels (readers never decode images)."""

from __future__ import annotations

import struct
from pathlib import Path

from ocean.datapath import DataPath, open_binary

# JPEG start-of-frame markers that carry the frame size (ITU T.81 table B.1): SOF0..SOF15 except
# DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(path: str | Path | DataPath) -> tuple[int, int] | None:
    """``(width, height)`` in pixels read from the header of a JPEG or PNG file, or None if unreadable."""
    try:
        with open_binary(Path(path) if isinstance(path, str) else path) as f:
            head = f.read(24)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return int(w), int(h)
            if head[:2] != b"\xff\xd8":
                return None
            f.seek(2)
            while True:
                byte = f.read(1)
                while byte and byte != b"\xff":
                    byte = f.read(1)
                while byte == b"\xff":
                    byte = f.read(1)
                if not byte:
                    return None
                marker = byte[0]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                    continue  # markers without a length field
                length_bytes = f.read(2)
                if len(length_bytes) != 2:
                    return None
                (length,) = struct.unpack(">H", length_bytes)
                if marker in _SOF_MARKERS:
                    data = f.read(5)
                    if len(data) != 5:
                        return None
                    h, w = struct.unpack(">HH", data[1:5])
                    return (int(w), int(h)) if w > 0 and h > 0 else None
                f.seek(length - 2, 1)
    except OSError:
        return None
