"""The CrossKD/BCKD recipe keys: compiled head arguments, and one-line errors for what cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotld_cli.engine.config import compile_recipe
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.recipes import load_recipe

NO_DOWNLOAD = ["model.backbone.pretrained=null"]


def head(name: str, overrides=()):
    return compile_recipe(load_recipe(name, [*NO_DOWNLOAD, *overrides]))["model"]["bbox_head"]


def test_crosskd_recipes_compile_to_the_crosskd_head():
    pure = head("dota1/student-r18-gwd-crosskd-1x")
    assert pure["type"] == "CrossKDRotatedRetinaHead" and pure["cross_convs"] == 3
    assert pure["loss_cross_cls"] == dict(type="BinaryKDLoss", beta=1.0, loss_weight=1.0)
    assert pure["loss_cross_ld"] == dict(type="KnowledgeDistillationKLDivLoss", loss_weight=10.0, T=5.0)
    assert pure["loss_ld"]["loss_weight"] == pure["loss_kd"]["loss_weight"] == 0.0
    both = head("dota1/student-r18-gwd-ld-crosskd-1x")
    assert both["type"] == "CrossKDRotatedRetinaHead" and both["loss_ld"]["loss_weight"] == 10.0
    assert both["loss_kd"]["loss_weight"] == 0.0
    assert head("synthetic/student-r18-gwd-crosskd")["cross_convs"] == 1  # 2-conv towers


def test_bckd_recipe_compiles_to_the_bckd_head():
    overrides = ["distill.bckd.loss_iou.weight=2.5", "distill.bckd.loss_iou.weight_thr=0.01"]
    bckd = head("dota1/student-r18-gwd-bckd-1x", overrides)
    assert bckd["type"] == "BCKDRotatedRetinaHead"
    assert bckd["loss_bckd_cls"] == dict(type="BinaryKDLoss", beta=1.0, loss_weight=1.0)
    assert bckd["loss_bckd_iou"] == dict(type="RotatedIoUKDLoss", mode="giou", loss_weight=2.5)  # the authors' GIoU
    assert bckd["iou_weight_thr"] == 0.01


def test_ld_recipes_keep_the_ld_head():
    assert head("dota1/student-r18-gwd-ld-kd-1x")["type"] == "LDRotatedRetinaHead"


def test_method_without_its_section_is_one_line(tmp_path: Path):
    recipe = tmp_path / "s.yaml"
    recipe.write_text("base: dota1/student-r18-gwd-ld-kd-1x\ndistill:\n  method: bckd\n", encoding="utf-8")
    with pytest.raises(RotldError, match=r"s\.yaml: distill\.bckd: missing section \(distill\.method is bckd\)"):
        load_recipe(str(recipe))
    with pytest.raises(UsageError, match=r"distill\.method: 'crossKD' is not one of 'ld', 'crosskd', 'bckd'"):
        load_recipe("dota1/student-r18-gwd-ld-kd-1x", ["distill.method=crossKD"])


def test_cross_convs_beyond_the_towers_is_refused():
    with pytest.raises(RotldError, match=r"distill\.crosskd\.cross_convs: 5 exceeds model\.head\.stacked_convs \(4\)"):
        load_recipe("dota1/student-r18-gwd-crosskd-1x", ["distill.crosskd.cross_convs=5"])


def test_crosskd_teacher_with_another_head_width_is_refused(tmp_path: Path):
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text("base: dota1/teacher-r34-gwd-2x\nmodel:\n  head: {feat_channels: 128}\n", encoding="utf-8")
    recipe = load_recipe("dota1/student-r18-gwd-crosskd-1x", [*NO_DOWNLOAD, f"teacher.recipe={teacher}"])
    with pytest.raises(RotldError, match=r"model\.head\.feat_channels differs \(student 256, teacher 128"):
        compile_recipe(recipe)
