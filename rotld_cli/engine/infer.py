"""Patch inference: run a trained detector on every `images/*.png` of a split folder.

The output is patch-level DOTA Task1 detections (image id = patch id, e.g. `P0003__1024__0___824`),
which the merge step turns into full-image detections (method.md §7.1). Polygons come from the
rotated boxes exactly as MMRotate writes them: `obb2poly_np(..., 'oc')`, which already applies
`get_best_begin_point`. Every patch is processed, also those without objects (method.md §7.1
notes the seed skipped them; the merged evaluation does not depend on that choice for true
positives). An unreadable patch is reported and skipped, never fatal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.errors import LiveError
from rich.progress import TextColumn

from rotld_cli import ui
from rotld_cli.dota.formats import Task1Detections, write_task1_files
from rotld_cli.engine import checkpoints as ckpt
from rotld_cli.engine import load_engine
from rotld_cli.errors import RotldError

IMAGE_SUFFIXES = (".png",)


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


class _PatchImages(torch.utils.data.Dataset):
    """Patch files through the test pipeline; a failure becomes an error record instead of an exception."""

    def __init__(self, paths: Sequence[Path], pipeline) -> None:
        self.paths = list(paths)
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            return self.pipeline({"img_info": {"filename": path.name}, "img_prefix": str(path.parent)})
        except Exception as exc:  # cv2 gives None for a corrupt file; the pipeline then fails anywhere
            reason = "cannot decode the image" if "NoneType" in str(exc) else f"{type(exc).__name__}: {exc}"
            return {"_error": reason, "_path": str(path)}


def _collate(batch: list[dict[str, Any]]) -> tuple[Any, list[tuple[str, str]]]:
    from mmcv.parallel import collate

    errors = [(item["_path"], item["_error"]) for item in batch if "_error" in item]
    good = [item for item in batch if "_error" not in item]
    return (collate(good, samples_per_gpu=len(good)) if good else None), errors


def run_model(model, loader, description: str = "inference", skipped: list[tuple[str, str]] | None = None,
              show_progress: bool = True) -> list[Any]:
    """Model outputs (one per image, in loader order) for a test-mode loader, with Rich progress.

    `loader` yields mmdet batches, or `(batch, errors)` pairs from our patch loader; errors go
    to `skipped`.
    """
    model.eval()
    results: list[Any] = []
    total = len(loader.dataset)
    started = time.perf_counter()
    bar = ui.progress(TextColumn("{task.fields[rate]}"), transient=True) if show_progress else None
    task = None
    if bar is not None:
        try:
            bar.start()
        except LiveError:  # rich < 14 cannot nest it in the training display: run without a bar
            bar = None
        else:
            task = bar.add_task(description, total=total, rate="")
    try:
        done = 0
        for item in loader:
            batch, errors = item if isinstance(item, tuple) else (item, [])
            if skipped is not None:
                skipped.extend(errors)
            done += len(errors)
            if batch is not None:
                with torch.no_grad():
                    outputs = model(return_loss=False, rescale=True, **batch)
                results.extend(outputs)
                done += len(outputs)
            if bar is not None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                bar.update(task, completed=done, rate=f"{rate:.1f} patches/s")
    finally:
        if bar is not None:
            bar.stop()
    return results


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
                workers: int = 0, recipe_ref: str | None = None, show_progress: bool = True) -> InferResult:
    """Detect on every patch in `split_dir/images`; write `Task1_<class>.txt` files to `out_dir` if given."""
    from mmdet.datasets.pipelines import Compose

    split_dir = Path(split_dir)
    image_dir = split_dir / "images" if (split_dir / "images").is_dir() else split_dir
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if image_dir.is_dir() else []
    if not paths:
        raise RotldError(
            f"{image_dir}: no patch images (*.png); point at a split folder written by `rotld prepare-dota`"
        )
    model, recipe, _, cfg = load_detector(checkpoint, device=device, recipe_ref=recipe_ref)
    dataset = _PatchImages(paths, Compose(cfg.data.test.pipeline))
    loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False,
                                         num_workers=workers, collate_fn=_collate)
    skipped: list[tuple[str, str]] = []
    started = time.perf_counter()
    outputs = run_model(model, loader, description=f"detect {split_dir.name}", skipped=skipped,
                        show_progress=show_progress)
    seconds = time.perf_counter() - started
    bad = {path for path, _ in skipped}
    image_ids = [p.stem for p in paths if str(p) not in bad]
    for path, reason in skipped:
        ui.warn(f"{path}: skipped ({reason})")
    classes = tuple(recipe.classes)
    detections = results_to_task1(outputs, image_ids, classes, recipe.get("model.angle_version"))
    result = InferResult(detections=detections, classes=classes, images=len(image_ids), skipped=skipped,
                         seconds=seconds)
    if out_dir is not None:
        result.written = write_task1_files(out_dir, detections, classes)
    return result
