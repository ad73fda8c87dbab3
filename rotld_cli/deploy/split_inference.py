"""Engine-free patch inference: an exported model over a split folder, written as Task1 files.

`detect_split_onnx` is to an `.onnx` file what `engine.infer.infer_split` is to a checkpoint: the
same patch loop (`engine/patches.py`, which imports no engine) with another `Detector`, so the
patch-level `Task1_<class>.txt` files match the engine's line for line (polygons by
`dota/polygons.py`, as MMRotate's `obb2poly_np` writes them).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from rotld_cli.deploy.onnx_detector import OnnxDetector
from rotld_cli.engine.patches import SplitDetections, detect_split


def detect_split_onnx(model: os.PathLike[str] | str, split_dir: os.PathLike[str] | str,
                      out_dir: os.PathLike[str] | str | None = None, *, threads: int | None = None,
                      on_progress: Callable[[int, int], None] | None = None) -> SplitDetections:
    """`rotld export`'s model over a split's patches -> patch-level Task1 files in `out_dir` (engine-free)."""
    return detect_split(OnnxDetector.from_file(model, threads=threads), split_dir, out_dir, on_progress=on_progress)
