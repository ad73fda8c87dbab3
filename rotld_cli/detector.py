"""What every detector backend offers: images in, per-class rotated boxes out (engine-free).

`rotld evaluate CKPT`, `rotld predict` and the exported ONNX model all run through this one
contract, so the code around the model (windows, merge, Task1 files, AP) never knows which
backend produced the boxes. The engine's implementation is `engine.detector.EngineDetector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

DetectionsPerClass = list[np.ndarray]
"""One (n, 6) float32 array [cx, cy, w, h, angle, score] per class, in the image's pixel coordinates."""


@runtime_checkable
class Detector(Protocol):
    """A model that turns BGR images into per-class rotated boxes after its own test settings."""

    classes: tuple[str, ...]
    angle_version: str

    def detect(self, images: Sequence[np.ndarray]) -> list[DetectionsPerClass]:
        """BGR uint8 (H, W, 3) images → per image, per class, (n, 6) [cx, cy, w, h, angle, score]."""
        ...


@runtime_checkable
class TunableDetector(Detector, Protocol):
    """A detector whose own test settings can be read, and whose score threshold can be lowered.

    `rotld predict --score-thr` filters the merged boxes itself; a threshold below the model's own
    would filter nothing unless the model keeps those boxes first. Both backends (the engine's
    `EngineDetector`, the exported `OnnxDetector`) implement this.
    """

    def test_settings(self) -> dict[str, float | int]:
        """score_thr, iou_thr (NMS), max_per_img (per image the model sees: one window), nms_pre."""
        ...

    def set_score_thr(self, value: float) -> None: ...


def empty_detections(num_classes: int) -> DetectionsPerClass:
    """No box for any class (an image whose every window was blank, or an unreadable one)."""
    return [np.zeros((0, 6), dtype=np.float32) for _ in range(num_classes)]
