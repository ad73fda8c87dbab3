"""`OnnxDetector`: an exported rotld model behind the `Detector` contract, on onnxruntime.

Imports onnxruntime, numpy and OpenCV only, so `rotld predict`/`evaluate` can run an exported
student on a machine without torch, mmcv-full, mmdet or mmrotate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rotld_cli.deploy.metadata import ModelMetadata
from rotld_cli.deploy.postprocess import detections_single, point_detections_single
from rotld_cli.deploy.preprocess import collate, prepare_image
from rotld_cli.detector import DetectionsPerClass
from rotld_cli.errors import RotldError

INPUT_NAME = "image"
SCORE_OUTPUT = "scores_{}"
LOGIT_OUTPUT = "box_logits_{}"
CENTERNESS_OUTPUT = "centerness_{}"
POINT_FAMILIES = ("fcos",)
"""Families whose heads predict per point with a centerness (a third output per level)."""


def output_names(levels: int, family: str = "retinanet") -> list[str]:
    """The graph's outputs: every level's scores, then every level's distribution logits (then, for a
    point head, every level's centerness)."""
    groups = [SCORE_OUTPUT, LOGIT_OUTPUT, *([CENTERNESS_OUTPUT] if family in POINT_FAMILIES else [])]
    return [name.format(i) for name in groups for i in range(levels)]


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RotldError(
            f"onnxruntime is not installed ({exc}); `pip install onnxruntime` (the bootstrap installs it)"
        ) from None
    return onnxruntime


def open_session(path: os.PathLike[str] | str, threads: int | None = None, providers: Sequence[str] | None = None):
    """(onnxruntime session, metadata) of an exported model; a bad file is a one-line error naming it."""
    ort = _onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise RotldError(f"{path}: no such file")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings are not the user's business
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own exception types for every unreadable model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RotldError(f"{path}: not a loadable ONNX model ({first[:200]})") from None
    meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, str(path))
    return session, meta


class OnnxDetector:
    """An exported model: numpy pre-processing, the onnxruntime graph, numpy post-processing."""

    def __init__(self, session, meta: ModelMetadata, batch_size: int = 1) -> None:
        self.session = session
        self.meta = meta
        self.classes = tuple(meta.classes)
        self.angle_version = meta.angle_version
        self.batch_size = max(1, int(batch_size))
        self._outputs = output_names(len(meta.strides), meta.family)

    @classmethod
    def from_file(cls, path: os.PathLike[str] | str, *, batch_size: int = 1, threads: int | None = None,
                  providers: Sequence[str] | None = None) -> OnnxDetector:
        """Load `rotld export`'s .onnx file; its metadata block says how to feed and decode it."""
        session, meta = open_session(path, threads=threads, providers=providers)
        return cls(session, meta, batch_size)

    @property
    def test_cfg(self):
        """score_thr, iou_thr, max_per_img, nms_pre: editable before `detect`, like EngineDetector's."""
        return self.meta.test_cfg

    def test_settings(self) -> dict[str, float | int]:
        cfg = self.meta.test_cfg
        return {"score_thr": cfg.score_thr, "iou_thr": cfg.iou_thr, "max_per_img": cfg.max_per_img,
                "nms_pre": cfg.nms_pre}

    def set_score_thr(self, value: float) -> None:
        self.meta.test_cfg.score_thr = float(value)

    def detect(self, images: Sequence[np.ndarray]) -> list[DetectionsPerClass]:
        results: list[DetectionsPerClass] = []
        levels = len(self.meta.strides)
        for start in range(0, len(images), self.batch_size):
            prepared = [prepare_image(image, self.meta.input) for image in images[start:start + self.batch_size]]
            outputs = self.session.run(self._outputs, {INPUT_NAME: collate(prepared, self.meta.input)})
            for i, image in enumerate(prepared):
                maps = [[out[i] for out in outputs[g * levels:(g + 1) * levels]]
                        for g in range(len(outputs) // levels)]
                if self.meta.family in POINT_FAMILIES:
                    results.append(point_detections_single(*maps, image.img_shape, image.scale_factor, self.meta))
                else:
                    results.append(detections_single(*maps, image.img_shape, image.scale_factor, self.meta))
        return results
