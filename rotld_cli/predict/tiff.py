"""A streaming writer of uncompressed, striped RGB TIFF: huge synthetic images without holding them.

The bench and the tests make 20,000 x 20,000 px inputs with it; `reader.StripTiffImage` reads such
files window by window. Baseline TIFF 6.0, little-endian, one IFD.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

_SHORT, _LONG = 3, 4


def write_striped_tiff(
    path: Path, width: int, height: int, rows: Callable[[int, int], np.ndarray], rows_per_strip: int = 64
) -> None:
    """Write `rows(y0, y1)` -> (y1-y0, width, 3) uint8 RGB strips to `path`, one strip at a time."""
    strips = list(range(0, height, rows_per_strip))
    row_bytes = width * 3
    counts = [(min(y + rows_per_strip, height) - y) * row_bytes for y in strips]
    data_start = 8  # after the header
    offsets = np.cumsum([data_start, *counts[:-1]]).tolist()
    ifd_at = data_start + sum(counts)
    n_strips = len(strips)
    arrays_at = ifd_at + 2 + 11 * 12 + 4
    bits_at = arrays_at
    offsets_at = bits_at + 6
    counts_at = offsets_at + 4 * n_strips
    entries = [
        (256, _LONG, 1, width),
        (257, _LONG, 1, height),
        (258, _SHORT, 3, bits_at),  # BitsPerSample 8,8,8
        (259, _SHORT, 1, 1),  # no compression
        (262, _SHORT, 1, 2),  # RGB
        (273, _LONG, n_strips, offsets_at if n_strips > 1 else offsets[0]),
        (277, _SHORT, 1, 3),
        (278, _LONG, 1, rows_per_strip),
        (279, _LONG, n_strips, counts_at if n_strips > 1 else counts[0]),
        (284, _SHORT, 1, 1),  # chunky
        (296, _SHORT, 1, 1),  # ResolutionUnit: none
    ]
    with open(path, "wb") as fh:
        fh.write(b"II*\x00" + struct.pack("<I", ifd_at))
        for y, count in zip(strips, counts):
            block = np.ascontiguousarray(rows(y, min(y + rows_per_strip, height)), dtype=np.uint8)
            if block.nbytes != count:
                raise ValueError(f"rows({y}, ...) gave {block.shape}, expected {count // row_bytes} x {width} x 3")
            fh.write(block.tobytes())
        entries.sort()
        fh.write(struct.pack("<H", len(entries)))
        for tag, kind, count, value in entries:
            packed = struct.pack("<HH", value, 0) if kind == _SHORT and count == 1 else struct.pack("<I", value)
            fh.write(struct.pack("<HHI", tag, kind, count) + packed)
        fh.write(struct.pack("<I", 0))
        fh.write(struct.pack("<3H", 8, 8, 8))
        if n_strips > 1:
            fh.write(struct.pack(f"<{n_strips}I", *offsets))
            fh.write(struct.pack(f"<{n_strips}I", *counts))
