"""Patch inference: load a trained detector, and run it on every patch image of a split folder.

The output is patch-level DOTA Task1 detections (image id = patch id, e.g. `P0003__1024__0___824`),
which the merge step turns into full-image detections (method.md §7.1). Polygons come from the
rotated boxes exactly as MMRotate's `obb2poly_np` writes them (`dota/polygons.py`, which also
applies `get_best_begin_point`). Every patch is processed, also those without objects (method.md §7.1
notes the seed skipped them; the merged evaluation does not depend on that choice for true
positives). An unreadable patch is reported and skipped, never fatal.
"""

from __future__ import annotations

import os
from pathlib import Path

from rotld_cli.engine import checkpoints as ckpt
from rotld_cli.engine import load_engine
from rotld_cli.engine.patches import PatchProgress, SplitDetections, detect_split, split_patch_paths
from rotld_cli.errors import RotldError


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
        raise RotldError(f"{checkpoint}: no recipe in the checkpoint's metadata (a plain state dict?); pass "
                         "--recipe RECIPE, the recipe it was trained with (a bundled name or a YAML file)")
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
                on_progress: PatchProgress | None = None) -> SplitDetections:
    """Detect on every patch in `split_dir/images`; write `Task1_<class>.txt` files to `out_dir` if given."""
    from rotld_cli.engine.detector import EngineDetector

    paths = split_patch_paths(split_dir)  # before the model loads: a wrong folder fails in a second
    detector = EngineDetector.from_checkpoint(checkpoint, device=device, batch_size=batch_size, recipe_ref=recipe_ref)
    return detect_split(detector, paths[0].parent, out_dir, workers=workers, on_progress=on_progress)
