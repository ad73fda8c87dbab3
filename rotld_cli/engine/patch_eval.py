"""In-training evaluation: patch-level AP50, the signal `DOTADataset.evaluate` gives (method.md §7.3).

Same computation as mmrotate's `eval_rbbox_map` (rotated IoU >= 0.5, VOC07 11-point), run in
this process: mmrotate spawns a 4-process pool per call, which re-imports torch/mmcv in each
child and costs more than the evaluation itself. It is a progress signal, not the paper's
metric: `rotld evaluate` merges patches to full images and applies the DOTA devkit's rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def patch_ap50(results: Sequence[Sequence[np.ndarray]], annotations: Sequence[dict],
               classes: Sequence[str]) -> dict[str, float]:
    """mAP (AP50, VOC07 11-point) over patches plus per-class AP50 for classes with ground truth."""
    from mmrotate.core.evaluation.eval_map import average_precision, get_cls_results, tpfp_default

    eps = np.finfo(np.float32).eps
    per_class: dict[str, float] = {}
    for index, name in enumerate(classes):
        dets, gts, ignores = get_cls_results(results, annotations, index)
        num_gts = sum(len(g) for g in gts)
        if num_gts == 0:
            continue
        tpfp = [tpfp_default(d, g, i, 0.5, None) for d, g, i in zip(dets, gts, ignores)]
        order = np.argsort(-np.vstack(dets)[:, -1])
        tp = np.cumsum(np.hstack([t for t, _ in tpfp])[0, order])
        fp = np.cumsum(np.hstack([f for _, f in tpfp])[0, order])
        recalls = tp / max(num_gts, eps)
        precisions = tp / np.maximum(tp + fp, eps)
        per_class[name] = float(average_precision(recalls, precisions, "11points"))
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"mAP": mean, **{f"AP50_{name}": ap for name, ap in per_class.items()}}


def patch_evaluator(dataset: Any, loader: Any = None) -> Callable[[Any], dict[str, float]]:
    """`evaluate(model)` for the EvalHook: the val patches through the one patch loop
    (`engine/patches.py`, the model behind an `EngineDetector` on the val pipeline), then `patch_ap50`.

    `loader` is unused (kept for the caller's signature): the loop reads the dataset's files itself.
    An unreadable patch counts as one without detections, so results stay aligned with the annotations.
    """
    from rotld_cli.detector import empty_detections
    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.engine.patches import detect_patches

    paths = [Path(dataset.img_prefix) / info["filename"] for info in dataset.data_infos]
    classes = tuple(dataset.CLASSES)
    batch_size = getattr(loader, "batch_size", None) or 1

    def evaluate(model) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device.type
        detector = EngineDetector(model, dataset.pipeline.transforms, classes, dataset.version, device, batch_size)
        by_patch: dict[str, list[np.ndarray]] = {}
        detect_patches(detector, paths, lambda ids, dets: by_patch.update(zip(ids, dets)), batch_size=batch_size)
        results = [by_patch.get(p.stem) or empty_detections(len(classes)) for p in paths]
        annotations = [dataset.get_ann_info(i) for i in range(len(dataset))]
        return patch_ap50(results, annotations, classes)

    return evaluate
