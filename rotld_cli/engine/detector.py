"""`EngineDetector`: a rotld checkpoint behind the engine-free `Detector` contract.

Images arrive as arrays (windows of a huge image, patches read by the caller), so the test
pipeline starts from `LoadImageFromWebcam` instead of a file: the caller owns reading, skipping
and reporting bad files, and the model code is the same for every command.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rotld_cli.detector import DetectionsPerClass


class EngineDetector:
    """A loaded MMRotate detector (wrapped for its device) that detects on in-memory BGR images."""

    def __init__(self, model: Any, test_pipeline: Sequence[Any], classes: Sequence[str], angle_version: str,
                 device: str, batch_size: int = 1) -> None:
        """`test_pipeline`: the recipe's test pipeline (config dicts or built transforms, as mmdet's
        `Compose` takes them); its first step, the file loader, is replaced by the array loader."""
        from mmdet.datasets.pipelines import Compose

        pipeline = [{"type": "LoadImageFromWebcam"}, *copy.deepcopy(list(test_pipeline)[1:])]
        self.model = model
        self.classes = tuple(classes)
        self.angle_version = angle_version
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.recipe: Any = None
        self.meta: dict[str, Any] = {}
        self._pipeline = Compose(pipeline)

    @classmethod
    def from_checkpoint(cls, checkpoint: os.PathLike[str] | str, *, device: str | None = None,
                        batch_size: int | None = None, recipe_ref: str | None = None) -> EngineDetector:
        """Build the model of a rotld checkpoint on `device` (default: the GPU when there is one)."""
        from rotld_cli.engine.infer import load_detector

        model, recipe, meta, cfg = load_detector(checkpoint, device=device, recipe_ref=recipe_ref)
        device = "cuda" if next(model.module.parameters()).is_cuda else "cpu"
        if batch_size is None:
            batch_size = 4 if device == "cuda" else 1
        detector = cls(model, cfg.data.test.pipeline, recipe.classes, recipe.get("model.angle_version"), device,
                       batch_size)
        detector.recipe, detector.meta = recipe, meta  # what it was built from (labels, the trained classes)
        return detector

    @property
    def test_cfg(self) -> Any:
        """The head's test settings (score_thr, nms.iou_thr, max_per_img), editable before `detect`."""
        module = self.model.module if hasattr(self.model, "module") else self.model
        head = getattr(module, "roi_head", None) or module.bbox_head  # two-stage: the RoI head's (rcnn) settings
        return head.test_cfg

    def test_settings(self) -> dict[str, float | int]:
        cfg = self.test_cfg
        return {"score_thr": float(cfg.score_thr), "iou_thr": float(cfg.nms.iou_thr),
                "max_per_img": int(cfg.max_per_img), "nms_pre": int(cfg.get("nms_pre", -1))}

    def set_score_thr(self, value: float) -> None:
        self.test_cfg.score_thr = float(value)

    def detect(self, images: Sequence[np.ndarray]) -> list[DetectionsPerClass]:
        import torch
        from mmcv.parallel import collate

        results: list[DetectionsPerClass] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = collate([self._pipeline({"img": image}) for image in chunk], samples_per_gpu=len(chunk))
            with torch.no_grad():
                outputs = self.model(return_loss=False, rescale=True, **batch)
            results.extend([np.asarray(boxes, dtype=np.float32).reshape(-1, 6) for boxes in per_class]
                           for per_class in outputs)
        return results
