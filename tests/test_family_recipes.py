"""The detector families in recipes (engine-free): base lists, `null` removing a section, each family's
sections required and the others refused, and what each family's recipes compile to."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotld_cli.engine.config import compile_recipe
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.recipes import load_recipe

NO_DOWNLOAD = ["model.backbone.pretrained=null"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_base_list_merges_in_order_and_null_removes_a_section(tmp_path):
    write(tmp_path / "a.yaml", "base: dota1/baseline-r18-gwd-1x\nschedule: {lr: 0.01, epochs: 7}\n")
    write(tmp_path / "b.yaml", "schedule: {lr: 0.02}\nmodel: {anchors: null, assigner: null, family: fcos,"
          " angle_version: le90, fcos: {strides: [8, 16, 32, 64, 128], regress_ranges: [64, 128, 256, 512],"
          " center_sampling: true, center_sample_radius: 1.5, centerness_on_reg: true, centerness_weight: 1.0}}\n")
    recipe = load_recipe(write(tmp_path / "c.yaml", "base: [a.yaml, b.yaml]\nschedule: {epochs: 9}\n"))
    assert recipe.get("schedule.lr") == 0.02  # the later base wins
    assert recipe.get("schedule.epochs") == 9 and recipe.get("schedule.lr_steps") == [8, 11]
    assert recipe.family == "fcos" and "anchors" not in recipe.data["model"] and "assigner" not in recipe.data["model"]
    assert recipe.files == [*load_recipe("dota1/baseline-r18-gwd-1x").files, tmp_path / "a.yaml",
                            tmp_path / "b.yaml", tmp_path / "c.yaml"]
    # the resolved recipe loads back the same (no null left in it)
    again = load_recipe(write(tmp_path / "resolved.yaml", recipe.to_yaml()))
    assert again.data == recipe.data
    # --set removes a section too, and a required one cannot be removed
    with pytest.raises(RotldError, match=r"model\.anchors: missing section \(the retinanet family needs it\)"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["model.anchors=null"])
    with pytest.raises(UsageError, match=r"model\.neck: is a section; expected a mapping"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["model.neck=null"])


@pytest.mark.parametrize(("name", "overrides", "message"), [
    ("dota1-fcos/baseline-r18-1x", ["model.anchors={octave_base_scale: 4, scales_per_octave: 1, ratios: [1.0], "
                                    "strides: [8, 16, 32, 64, 128]}"],
     r"model\.anchors: not used by the fcos family; remove it \(`anchors: null` removes"),
    ("dota1-atss/baseline-r18-1x", ["model.atss=null"], r"model\.atss: missing section \(the atss family needs it\)"),
    ("dota1-orcnn/baseline-r18-1x", ["model.family=fcos"], r"model\.head: missing section \(the fcos family needs"),
    ("dota1-atss/baseline-r18-1x", ["model.angle_version=le90"],
     r"model\.angle_version: le90 is not supported by the atss family \(use oc\)"),
    ("dota1-orcnn/student-r18-ld-kd-1x", ["distill.method=bckd"],
     r"distill\.method: bckd is not available for the orcnn family \(use ld\)"),
    ("dota1-orcnn/student-r18-ld-kd-1x", ["distill.loss_kd.type=binary"],
     r"distill\.loss_kd\.type: the orcnn family's KD is the softmax KL of the C \+ 1 RoI class logits"),
    ("dota1-orcnn/student-r18-ld-kd-1x", ["distill.loss_kd.region=all"],
     r"distill\.loss_kd\.region: the orcnn family's KD is the softmax KL"),
    ("dota1-fcos/student-r18-ld-kd-1x", ["distill.ld_region_box=hbb"],
     r"distill\.ld_region_box: only the retinanet family uses it"),
    ("dota1-fcos/baseline-r18-1x", ["model.fcos.regress_ranges=[64, 32, 256, 512]"],
     r"model\.fcos\.regress_ranges: expected 4 increasing bounds"),
])
def test_family_mismatches_are_one_line_naming_the_key(name, overrides, message):
    with pytest.raises((RotldError, UsageError), match=message) as exc:
        load_recipe(name, overrides)
    assert "\n" not in str(exc.value)


def model(name: str) -> dict:
    return compile_recipe(load_recipe(name, NO_DOWNLOAD))["model"]


def test_fcos_recipes_compile_to_mmrotates_fcos_with_the_distribution_head():
    teacher = model("dota1-fcos/teacher-r34-2x")
    assert teacher["type"] == "RotatedFCOS" and teacher["train_cfg"] is None
    head = teacher["bbox_head"]
    assert head["type"] == "RotatedFCOSHeadDistribution" and head["reg_max"] == 16
    assert head["regress_ranges"] == [[-1, 64], [64, 128], [128, 256], [256, 512], [512, 1e8]]
    assert head["norm_cfg"] == dict(type="GN", num_groups=32, requires_grad=True)  # 256-wide towers: mmrotate's 32
    assert head["bbox_coder"] == dict(type="DistanceAnglePointCoder", angle_version="le90")
    assert head["loss_bbox"] == dict(type="GDLoss_v1", loss_type="kld", fun="log1p", tau=1.0, loss_weight=1.0)
    assert (head["center_sampling"], head["center_sample_radius"], head["centerness_on_reg"]) == (True, 1.5, True)
    assert teacher["neck"]["add_extra_convs"] == "on_output" and teacher["neck"]["relu_before_extra_convs"]
    students = {m: model(f"dota1-fcos/student-r18-{m}-1x") for m in ("ld-kd", "bckd", "crosskd")}
    assert {m: s["bbox_head"]["type"] for m, s in students.items()} == {
        "ld-kd": "LDRotatedFCOSHead", "bckd": "BCKDRotatedFCOSHead", "crosskd": "CrossKDRotatedFCOSHead"}
    assert all(s["type"] == "KnowledgeDistillationRotatedSingleStageDetector" for s in students.values())
    assert "loss_im" not in students["ld-kd"]["bbox_head"] and students["crosskd"]["bbox_head"]["cross_convs"] == 3
    assert students["ld-kd"]["teacher_config"]["model"]["bbox_head"]["type"] == "RotatedFCOSHeadDistribution"
    assert model("synthetic-fcos/baseline-r18")["bbox_head"]["norm_cfg"]["num_groups"] == 32  # 64-wide: 2 per group


def test_atss_recipes_compile_to_one_anchor_and_the_atss_assigner():
    baseline = model("dota1-atss/baseline-r18-1x")
    head = baseline["bbox_head"]
    assert baseline["type"] == "RotatedRetinaNet" and head["type"] == "RotatedATSSHeadDistribution"
    assert head["anchor_generator"]["scales_per_octave"] == 1 and head["anchor_generator"]["ratios"] == [1.0]
    assert head["anchor_generator"]["octave_base_scale"] == 4 and head["assign_by_circumhbbox"] == "oc"
    assert baseline["train_cfg"]["assigner"] == dict(type="RotatedATSSAssigner", topk=9,
                                                     iou_calculator=dict(type="SparseRBboxOverlaps2D"))
    assert model("synthetic-atss/baseline-r18")["bbox_head"]["anchor_generator"]["octave_base_scale"] == 2
    assert {m: model(f"dota1-atss/student-r18-{m}-1x")["bbox_head"]["type"] for m in ("ld-kd", "bckd", "crosskd")} == {
        "ld-kd": "LDRotatedATSSHead", "bckd": "BCKDRotatedATSSHead", "crosskd": "CrossKDRotatedATSSHead"}


@pytest.mark.parametrize("name", ["dota1-fcos/student-r18-ld-kd-binary-1x", "dota1-atss/student-r18-ld-kd-binary-1x",
                                  "synthetic-fcos/student-r18-ld-kd-binary", "synthetic-atss/student-r18-ld-kd-binary"])
def test_binary_kd_students_compile_to_the_ld_head_with_binary_kd_on_every_point_or_anchor(name):
    head = model(name)["bbox_head"]
    plain = model(name.replace("-binary", ""))["bbox_head"]
    assert head["type"] == plain["type"] in ("LDRotatedFCOSHead", "LDRotatedATSSHead")
    assert head["loss_kd"] == dict(type="BinaryKDLoss", beta=1.0, loss_weight=1.0) and head["kd_region"] == "all"
    assert plain["loss_kd"]["type"] == "KnowledgeDistillationKLDivLoss" and "kd_region" not in plain
    assert head["loss_ld"] == plain["loss_ld"]  # only the KD differs


def test_orcnn_recipes_compile_to_oriented_rcnn_with_the_distribution_roi_head():
    teacher = model("dota1-orcnn/teacher-r34-2x")
    assert teacher["type"] == "OrientedRCNN" and "bbox_head" not in teacher
    box = teacher["roi_head"]["bbox_head"]
    assert box["type"] == "RotatedShared2FCBBoxHeadDistribution" and box["reg_max"] == 16
    assert box["bins"] == [-4.0, 4.0, -8.0, 8.0] and box["reg_class_agnostic"]
    assert box["bbox_coder"]["target_stds"] == (0.1, 0.1, 0.2, 0.2, 0.1) and box["bbox_coder"]["edge_swap"]
    assert teacher["rpn_head"]["type"] == "OrientedRPNHead" and teacher["test_cfg"]["rpn"]["max_per_img"] == 2000
    assert teacher["train_cfg"]["rcnn"]["sampler"]["num"] == 512
    student = model("dota1-orcnn/student-r18-ld-kd-1x")
    assert student["type"] == "KnowledgeDistillationOrientedRCNN"
    assert student["roi_head"]["type"] == "KDOrientedStandardRoIHead"
    assert student["roi_head"]["bbox_head"]["type"] == "LDRotatedShared2FCBBoxHead"
    assert student["roi_head"]["bbox_head"]["loss_ld"] == dict(type="KnowledgeDistillationKLDivLoss",
                                                              loss_weight=1.0, T=5.0)
    assert load_recipe("dota1-orcnn/teacher-r34-2x").get("schedule.lr") == 0.005  # mmrotate's Oriented R-CNN lr


def test_family_recipes_keep_the_data_and_schedules_of_their_base():
    """The synthetic families train on exactly the RetinaNet demo's data settings and schedules."""
    for family in ("fcos", "atss", "orcnn"):
        for ours, theirs in ((f"synthetic-{family}/baseline-r18", "synthetic/baseline-r18-gwd"),
                             (f"synthetic-{family}/teacher-r34", "synthetic/teacher-r34-gwd")):
            a, b = load_recipe(ours), load_recipe(theirs)
            assert a.data["data"] == b.data["data"] and a.data["runtime"] == b.data["runtime"]
            assert a.data["schedule"] == b.data["schedule"]
    dota = load_recipe("dota1-fcos/baseline-r18-1x").data
    assert dota["data"] == load_recipe("dota1/baseline-r18-gwd-1x").data["data"]


def test_a_teacher_recipe_of_another_family_is_refused_before_compiling(tmp_path):
    recipe = load_recipe("dota1-atss/student-r18-ld-kd-1x", [*NO_DOWNLOAD, "teacher.recipe=dota1-fcos/teacher-r34-2x"])
    message = r"a rotated FCOS teacher cannot teach a rotated ATSS student .*\(model\.family\)"
    with pytest.raises(RotldError, match=message):
        compile_recipe(recipe)
