"""Patch inference: load a trained detector, and run it on every patch image of a split folder.

The output is patch-level DOTA Task1 detections (image id = patch id, e.g. `P0003__1024__0___824`),
which the merge step turns into full-image detections (method.md §7.1). Polygons come from the
rotated boxes exactly as MMRotate writes them: `obb2poly_np(..., 'oc')`, which already applies
`get_best_begin_point`. Every patch is processed, also those without objects (method.md §7.1
notes the seed skipped them; the merged evaluation does not depend on that choice for true
positives). An unreadable patch is reported and skipped, never fatal.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rotld_cli.dota.formats import IMAGE_SUFFIXES, Task1Detections, is_image_file, write_task1_files
from rotld_cli.engine import checkpoints as ckpt
from rotld_cli.engine import load_engine
from rotld_cli.engine.patches import PatchProgress, detect_patches
from rotld_cli.errors import RotldError


@dataclass
class InferResult:
    """Per-class patch detections, plus what was skipped and how fast it ran."""

    detections: dict[str, Task1Detections]
    classes: tuple[str, ...]
    images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)

    @property
    def patches_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def results_to_task1(results: Sequence[Sequence[np.ndarray]], image_ids: Sequence[str],
                     classes: Sequence[str], angle_version: str = "oc") -> dict[str, Task1Detections]:
    """Per-image, per-class (n, 6) [cx, cy, w, h, θ, score] arrays → Task1 detections per class."""
    from mmrotate.core import obb2poly_np

    ids: dict[str, list[str]] = {c: [] for c in classes}
    scores: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    polys: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    for image_id, per_class in zip(image_ids, results):
        for name, boxes in zip(classes, per_class):
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
            if not len(boxes):
                continue
            converted = obb2poly_np(boxes, angle_version).reshape(-1, 9)
            ids[name].extend([image_id] * len(converted))
            polys[name].append(converted[:, :8])
            scores[name].append(converted[:, 8])
    out = {}
    for name in classes:
        poly = np.concatenate(polys[name]) if polys[name] else np.zeros((0, 8))
        score = np.concatenate(scores[name]) if scores[name] else np.zeros((0,))
        out[name] = Task1Detections(ids[name], score, poly)
    return out


def load_detector(checkpoint: os.PathLike[str] | str, device: str | None = None, recipe_ref: str | None = None):
    """(wrapped model in eval mode, recipe, meta, config) for inference from a rotld checkpoint.

    The model is built from the recipe stored in the checkpoint (or `recipe_ref`). A student is
    built as its plain detector: the teacher is needed only for training and its weights are not
    in the checkpoint.
    """
    load_engine()
    from mmrotate.models import build_detector

    from rotld_cli.engine.config import build_config
    from rotld_cli.engine.devices import pick_device, wrap_model
    from rotld_cli.engine.teacher import without_teacher
    from rotld_cli.recipes import load_recipe

    checkpoint = Path(checkpoint)
    state = ckpt.load_checkpoint(checkpoint)
    meta = state.get("meta") or {}
    recipe = load_recipe(recipe_ref) if recipe_ref is not None else ckpt.stored_recipe(meta, checkpoint)
    if recipe is None:
        raise RotldError(f"{checkpoint}: no recipe in the checkpoint's metadata; pass the recipe it was trained with")
    recipe = without_teacher(recipe)
    cfg = build_config(recipe)
    cfg.model.backbone.init_cfg = None
    model = build_detector(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    weights = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        key = (list(result.missing_keys) + list(result.unexpected_keys))[0]
        raise RotldError(f"{checkpoint}: weights do not fit the model of its recipe (first mismatched key {key!r})")
    model.CLASSES = tuple(recipe.classes)
    model.cfg = cfg
    model.eval()
    return wrap_model(model, pick_device(device)), recipe, meta, cfg


def infer_split(checkpoint: os.PathLike[str] | str, split_dir: os.PathLike[str] | str, *,
                out_dir: os.PathLike[str] | str | None = None, device: str | None = None, batch_size: int = 4,
                workers: int = 0, recipe_ref: str | None = None,
                on_progress: PatchProgress | None = None) -> InferResult:
    """Detect on every patch in `split_dir/images`; write `Task1_<class>.txt` files to `out_dir` if given."""
    from rotld_cli.engine.detector import EngineDetector

    split_dir = Path(split_dir)
    image_dir = split_dir / "images" if (split_dir / "images").is_dir() else split_dir
    paths = sorted(p for p in image_dir.iterdir() if is_image_file(p)) if image_dir.is_dir() else []
    if not paths:
        raise RotldError(
            f"{image_dir}: no patch images ({', '.join(IMAGE_SUFFIXES)}); point at a split folder written by "
            "`rotld prepare-dota`"
        )
    detector = EngineDetector.from_checkpoint(checkpoint, device=device, batch_size=batch_size, recipe_ref=recipe_ref)
    outputs: list = []
    stats = detect_patches(detector, paths, lambda ids, dets: outputs.extend(dets), batch_size=detector.batch_size,
                           workers=workers, on_progress=on_progress)
    detections = results_to_task1(outputs, stats.ran, detector.classes, detector.angle_version)
    result = InferResult(detections=detections, classes=detector.classes, images=len(stats.ran),
                         skipped=stats.unreadable, seconds=stats.seconds)
    if out_dir is not None:
        result.written = write_task1_files(out_dir, detections, detector.classes)
    return result
