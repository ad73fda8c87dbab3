"""YAML recipes: inheritance, --set overrides, validation errors, path resolution, the CLI.

Pure Python (no torch/mmcv): recipes must work for `rotld recipes` on a machine without the engine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from rotld_cli.cli import main
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.recipes import (
    RECIPES_DIR,
    bundled_recipes,
    deep_merge,
    describe_schema,
    load_recipe,
    save_resolved,
    scaled_lr,
)

BUNDLED = [
    "dior/baseline-r18-gwd-1x",
    "dior/student-r18-gwd-ld-kd-1x",
    "dior/teacher-r34-gwd-2x",
    "dota1/baseline-r18-gwd-1x",
    "dota1/student-r18-gwd-bckd-1x",
    "dota1/student-r18-gwd-crosskd-1x",
    "dota1/student-r18-gwd-ld-crosskd-1x",
    "dota1/student-r18-gwd-ld-kd-1x",
    "dota1/student-r18-kld-ld-kd-1x",
    "dota1/teacher-r34-gwd-2x",
    "dota1/teacher-r34-kld-2x",
    "dota1-atss/baseline-r18-1x",
    "dota1-atss/student-r18-bckd-1x",
    "dota1-atss/student-r18-crosskd-1x",
    "dota1-atss/student-r18-ld-kd-1x",
    "dota1-atss/student-r18-ld-kd-binary-1x",
    "dota1-atss/teacher-r34-2x",
    "dota1-fcos/baseline-r18-1x",
    "dota1-fcos/student-r18-bckd-1x",
    "dota1-fcos/student-r18-crosskd-1x",
    "dota1-fcos/student-r18-ld-kd-1x",
    "dota1-fcos/student-r18-ld-kd-binary-1x",
    "dota1-fcos/teacher-r34-2x",
    "dota1-orcnn/baseline-r18-1x",
    "dota1-orcnn/student-r18-ld-kd-1x",
    "dota1-orcnn/teacher-r34-2x",
    "dota15/baseline-r18-gwd-1x",
    "dota15/student-r18-gwd-bckd-1x",
    "dota15/student-r18-gwd-crosskd-1x",
    "dota15/student-r18-gwd-ld-kd-1x",
    "dota15/teacher-r34-gwd-2x",
    "dota2/baseline-r18-gwd-1x",
    "dota2/student-r18-gwd-bckd-1x",
    "dota2/student-r18-gwd-crosskd-1x",
    "dota2/student-r18-gwd-ld-kd-1x",
    "dota2/teacher-r34-gwd-2x",
    "hrsc/baseline-r18-gwd-6x",
    "hrsc/student-r18-gwd-ld-kd-6x",
    "hrsc/teacher-r34-gwd-6x",
    "synthetic/baseline-r18-gwd",
    "synthetic/student-r18-gwd-bckd",
    "synthetic/student-r18-gwd-crosskd",
    "synthetic/student-r18-gwd-ld-crosskd",
    "synthetic/student-r18-gwd-ld-kd-seed",
    "synthetic/student-r18-gwd-ld-kd",
    "synthetic/teacher-r34-gwd",
    "synthetic-atss/baseline-r18",
    "synthetic-atss/student-r18-bckd",
    "synthetic-atss/student-r18-crosskd",
    "synthetic-atss/student-r18-ld-kd-binary",
    "synthetic-atss/student-r18-ld-kd",
    "synthetic-atss/teacher-r34",
    "synthetic-fcos/baseline-r18",
    "synthetic-fcos/student-r18-bckd",
    "synthetic-fcos/student-r18-crosskd",
    "synthetic-fcos/student-r18-ld-kd-binary",
    "synthetic-fcos/student-r18-ld-kd",
    "synthetic-fcos/teacher-r34",
    "synthetic-orcnn/baseline-r18",
    "synthetic-orcnn/student-r18-ld-kd",
    "synthetic-orcnn/teacher-r34",
]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle`, computed from the text the test wrote."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


# ------------------------------------------------------------------------------------------
# Inheritance


def test_multi_level_inheritance_merges_dicts_and_replaces_lists(tmp_path):
    write(tmp_path / "a.yaml", "base: dota1/baseline-r18-gwd-1x\nschedule:\n  lr: 0.01\n  lr_steps: [4, 6, 7]\n")
    write(
        tmp_path / "b.yaml",
        "base: a.yaml\nschedule:\n  lr_steps: [5]\nmodel:\n  head:\n    loss_bbox:\n      weight: 2.5\n",
    )
    write(tmp_path / "c.yaml", "base: b.yaml\nschedule:\n  epochs: 7\n")
    recipe = load_recipe(tmp_path / "c.yaml")
    assert recipe.get("schedule.epochs") == 7  # from c
    assert recipe.get("schedule.lr_steps") == [5]  # b's list replaces a's, no element merge
    assert recipe.get("schedule.lr") == 0.01  # from a
    assert recipe.get("schedule.momentum") == 0.9  # from the bundled base
    # a deep merge: b changed the weight, the type comes from the bundled base
    assert recipe.get("model.head.loss_bbox") == {"type": "gwd", "weight": 2.5}
    assert [p.name for p in recipe.files][-3:] == ["a.yaml", "b.yaml", "c.yaml"]
    assert recipe.files[-4] == (RECIPES_DIR / "dota1" / "baseline-r18-gwd-1x.yaml").resolve()
    assert recipe.source == (tmp_path / "c.yaml").resolve()


def test_deep_merge_does_not_mutate_its_inputs():
    base = {"a": {"b": 1, "l": [1, 2]}, "x": 1}
    over = {"a": {"l": [3]}, "y": 2}
    assert deep_merge(base, over) == {"a": {"b": 1, "l": [3]}, "x": 1, "y": 2}
    assert base == {"a": {"b": 1, "l": [1, 2]}, "x": 1}


def test_relative_base_path_is_relative_to_the_recipe_not_the_cwd(tmp_path, monkeypatch):
    write(tmp_path / "common" / "base.yaml", "base: dota1/baseline-r18-gwd-1x\nschedule:\n  epochs: 3\n")
    write(tmp_path / "runs" / "mine.yaml", "base: ../common/base.yaml\nschedule:\n  lr: 0.02\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(tmp_path / "runs" / "mine.yaml")
    assert (recipe.get("schedule.epochs"), recipe.get("schedule.lr")) == (3, 0.02)


def test_bundled_name_as_base_equals_the_bundled_recipe_plus_the_change(tmp_path):
    write(tmp_path / "t.yaml", "base: dota1/teacher-r34-gwd-2x\nruntime:\n  seed: 7\n")
    mine = load_recipe(tmp_path / "t.yaml").data
    bundled = load_recipe("dota1/teacher-r34-gwd-2x").data
    assert mine["runtime"]["seed"] == 7
    mine["runtime"]["seed"] = bundled["runtime"]["seed"]
    assert mine == bundled


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(RotldError, match=r"inheritance cycle .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_recipe(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(RotldError, match=r"inheritance cycle .*self\.yaml -> .*self\.yaml"):
        load_recipe(tmp_path / "self.yaml")


def test_missing_base_names_file_line_and_suggests_a_bundled_name(tmp_path):
    text = "description: x\nbase: dota1/teacher-r34-gwd\n"
    write(tmp_path / "x.yaml", text)
    with pytest.raises(RotldError) as exc:
        load_recipe(tmp_path / "x.yaml")
    assert str(exc.value).endswith(
        "x.yaml:2: base: dota1/teacher-r34-gwd: no such file or bundled recipe"
        " (did you mean 'dota1/teacher-r34-gwd-2x'?)"
    )


# ------------------------------------------------------------------------------------------
# Overrides


def test_override_int_is_accepted_for_float_and_stored_as_float():
    recipe = load_recipe("dota1/baseline-r18-gwd-1x", ["schedule.lr=1"])
    assert recipe.get("schedule.lr") == 1.0
    assert isinstance(recipe.get("schedule.lr"), float)


def test_override_str_into_int_names_key_and_expected_type():
    with pytest.raises(UsageError) as exc:
        load_recipe("dota1/baseline-r18-gwd-1x", ["schedule.epochs=abc"])
    assert str(exc.value) == "--set schedule.epochs=abc: schedule.epochs: expected int, got str 'abc'"


def test_override_float_into_int_is_an_error():
    with pytest.raises(UsageError, match=r"schedule\.epochs: expected int, got float 1\.5"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["schedule.epochs=1.5"])


@pytest.mark.parametrize(("text", "value"), [("false", False), ("true", True), ("no", False), ("True", True)])
def test_override_bool_parsing(text, value):
    recipe = load_recipe("dota1/baseline-r18-gwd-1x", [f"model.backbone.norm_eval={text}"])
    assert recipe.get("model.backbone.norm_eval") is value


def test_override_int_into_bool_is_an_error():
    with pytest.raises(UsageError, match=r"model\.backbone\.norm_eval: expected bool, got int 1"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["model.backbone.norm_eval=1"])


def test_override_unknown_nested_key_suggests_the_close_one():
    with pytest.raises(UsageError) as exc:
        load_recipe("dota1/baseline-r18-gwd-1x", ["model.head.reg_mx=3"])
    assert str(exc.value) == "--set model.head.reg_mx=3: model.head.reg_mx: unknown key (did you mean 'reg_max'?)"


def test_override_key_in_the_wrong_section_suggests_its_full_path():
    with pytest.raises(UsageError, match=r"model\.reg_max: unknown key \(did you mean 'model\.head\.reg_max'\?\)"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["model.reg_max=3"])


def test_override_list_values_are_checked_element_by_element():
    recipe = load_recipe("dota1/baseline-r18-gwd-1x", ["schedule.lr_steps=[5, 7]", "model.anchors.ratios=[1, 0.5]"])
    assert recipe.get("schedule.lr_steps") == [5, 7]
    assert recipe.get("model.anchors.ratios") == [1.0, 0.5]
    with pytest.raises(UsageError, match=r"schedule\.lr_steps: expected list of int, got list \[5, 'x'\]"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["schedule.lr_steps=[5, x]"])
    with pytest.raises(UsageError, match=r"schedule\.lr_steps: expected list of int, got int 5"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["schedule.lr_steps=5"])


def test_override_null_only_where_allowed():
    recipe = load_recipe("dota1/baseline-r18-gwd-1x", ["schedule.grad_clip=null", "model.backbone.pretrained=null"])
    assert recipe.get("schedule.grad_clip") is None
    assert recipe.get("model.backbone.pretrained") is None
    with pytest.raises(UsageError, match=r"schedule\.lr: expected float, got null"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["schedule.lr=null"])


def test_override_choices_and_minimum_are_enforced():
    with pytest.raises(UsageError, match=r"model\.backbone\.depth: 19 is not one of 18, 34, 50, 101"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["model.backbone.depth=19"])
    with pytest.raises(UsageError, match=r"data\.samples_per_gpu: must be >= 1, got 0"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["data.samples_per_gpu=0"])


def test_override_later_wins_and_a_section_value_deep_merges():
    recipe = load_recipe(
        "dota1/student-r18-gwd-ld-kd-1x",
        ["schedule.lr=0.1", "schedule.lr=0.2", "distill.loss_ld={weight: 3}"],
    )
    assert recipe.get("schedule.lr") == 0.2
    assert recipe.get("distill.loss_ld") == {"weight": 3.0, "T": 5.0}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("schedule.lr", "--set schedule.lr: expected KEY=VALUE"),
        ("=3", "--set =3: expected KEY=VALUE"),
        ("base=dota1/teacher-r34-gwd-2x", "`base` cannot be overridden"),
        ("schedule.lr.x=1", "schedule.lr is a value, not a section"),
        ("nosuch.key=1", "nosuch.key: unknown key"),
        ("schedule=3", "schedule: is a section"),
        ("schedule.lr=[1", "invalid YAML value"),
    ],
)
def test_malformed_overrides_are_usage_errors(item, message):
    with pytest.raises(UsageError) as exc:
        load_recipe("dota1/baseline-r18-gwd-1x", [item])
    assert message in str(exc.value)


def test_override_str_key_keeps_the_typed_text():
    recipe = load_recipe("dota1/baseline-r18-gwd-1x", ["data.train=2017"])
    assert recipe.get("data.train") == "2017"


# ------------------------------------------------------------------------------------------
# Validation of recipe files


def test_unknown_key_in_a_file_names_file_line_and_suggestion(tmp_path, monkeypatch):
    text = "base: dota1/baseline-r18-gwd-1x\nmodel:\n  head:\n    stacked_convs: 2\n    reg_mx: 3\n"
    write(tmp_path / "recipes" / "x.yaml", text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RotldError) as exc:
        load_recipe("recipes/x.yaml")
    line = line_of(text, "reg_mx")
    assert str(exc.value) == f"recipes/x.yaml:{line}: model.head.reg_mx: unknown key (did you mean 'reg_max'?)"


def test_unknown_key_in_a_base_names_the_base_file(tmp_path):
    write(tmp_path / "base.yaml", "base: dota1/baseline-r18-gwd-1x\nschedual:\n  lr: 1\n")
    write(tmp_path / "top.yaml", "base: base.yaml\n")
    with pytest.raises(RotldError, match=r"base\.yaml:2: schedual: unknown key \(did you mean 'schedule'\?\)"):
        load_recipe(tmp_path / "top.yaml")


def test_wrong_type_in_a_file_names_file_and_line(tmp_path):
    text = "base: dota1/baseline-r18-gwd-1x\nschedule:\n  epochs: twelve\n"
    write(tmp_path / "x.yaml", text)
    with pytest.raises(RotldError, match=r"x\.yaml:3: schedule\.epochs: expected int, got str 'twelve'$"):
        load_recipe(tmp_path / "x.yaml")
    write(tmp_path / "y.yaml", "base: dota1/baseline-r18-gwd-1x\nschedule: 3\n")
    with pytest.raises(RotldError, match=r"y\.yaml:2: schedule: expected a section \(mapping\), got int"):
        load_recipe(tmp_path / "y.yaml")


def test_python_tags_are_rejected_and_nothing_runs(tmp_path):
    marker = tmp_path / "PWNED"
    text = f"base: dota1/baseline-r18-gwd-1x\ndescription: !!python/object/apply:os.system ['touch {marker}']\n"
    write(tmp_path / "evil.yaml", text)
    with pytest.raises(RotldError) as exc:
        load_recipe(tmp_path / "evil.yaml")
    message = str(exc.value)
    assert "evil.yaml:2: invalid recipe YAML" in message
    assert "python/object/apply:os.system" in message
    assert not marker.exists()
    with pytest.raises(UsageError, match="invalid YAML value"):
        load_recipe("dota1/baseline-r18-gwd-1x", [f"description=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


def test_yaml_syntax_error_and_duplicate_keys_name_the_line(tmp_path):
    write(tmp_path / "bad.yaml", "schedule:\n  lr: [1, 2\nruntime: {}\n")
    with pytest.raises(RotldError, match=r"bad\.yaml:\d+: invalid recipe YAML"):
        load_recipe(tmp_path / "bad.yaml")
    text = "base: dota1/baseline-r18-gwd-1x\nschedule:\n  lr: 0.1\n  lr: 0.2\n"
    write(tmp_path / "dup.yaml", text)
    with pytest.raises(RotldError, match=r"dup\.yaml:4: invalid recipe YAML: duplicate key 'lr'"):
        load_recipe(tmp_path / "dup.yaml")
    write(tmp_path / "key.yaml", "base: dota1/baseline-r18-gwd-1x\n? [a, b]\n: 1\n")
    with pytest.raises(RotldError, match=r"key\.yaml:2: invalid recipe YAML: found unhashable key"):
        load_recipe(tmp_path / "key.yaml")


@pytest.mark.parametrize(("text", "kind"), [("", "null"), ("- a\n- b\n", "list"), ("3\n", "int")])
def test_recipe_must_be_a_mapping(tmp_path, text, kind):
    write(tmp_path / "r.yaml", text)
    with pytest.raises(RotldError, match=rf"r\.yaml: a recipe must be a YAML mapping of sections, got {kind}"):
        load_recipe(tmp_path / "r.yaml")


def test_missing_key_without_base_is_an_error(tmp_path):
    data = load_recipe("dota1/baseline-r18-gwd-1x").data
    del data["schedule"]["warmup_iters"]
    write(tmp_path / "full.yaml", yaml.safe_dump(data))
    with pytest.raises(RotldError, match=r"full\.yaml: schedule\.warmup_iters: missing key"):
        load_recipe(tmp_path / "full.yaml")


def test_student_needs_both_teacher_and_distill():
    with pytest.raises(RotldError, match=r"distill: missing section \(a recipe with teacher is a student"):
        load_recipe("dota1/baseline-r18-gwd-1x", ["teacher.recipe=dota1/teacher-r34-gwd-2x"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("data.flip_ratio=[0.5, 0.5]", "2 ratios for 3 flip_direction entries"),
        ("data.flip_ratio=[0.5, 0.5, 0.5]", "the ratios sum to 1.5 > 1"),
        ("data.flip_direction=[horizontal, vertical, diagonl]", "unknown direction 'diagonl'"),
        ("schedule.lr_steps=[11, 8]", "must be strictly increasing"),
        ("data.classes=v3.0", "use one of v1.0, v1.5, v2.0, hrsc2016, dior-r, fair1m or a list"),
        ("data.classes=[big car]", "class names are label-line tokens: no whitespace"),
        ("data.img_scale=[512, 800]", "expected N or [long, short] with long >= short, got [512, 800]"),
        ("data.classes=[ship, ship]", "distinct class names"),
        ("model.anchors.strides=[8, 16]", "the FPN has 5 levels"),
    ],
)
def test_cross_key_constraints(item, message):
    with pytest.raises(RotldError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_recipe("dota1/baseline-r18-gwd-1x", [item])


# ------------------------------------------------------------------------------------------
# Paths


def test_paths_in_a_file_resolve_against_the_file_paths_from_set_against_the_cwd(tmp_path, monkeypatch):
    text = (
        "base: dota1/student-r18-gwd-ld-kd-1x\n"
        "data:\n  root: ../patches\n"
        "model:\n  backbone:\n    pretrained: weights/r18.pth\n"
        "teacher:\n  recipe: dota1/teacher-r34-gwd-2x\n  checkpoint: ../ckpt/teacher.pth\n"
    )
    write(tmp_path / "proj" / "recipes" / "mine.yaml", text)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    recipe = load_recipe(tmp_path / "proj" / "recipes" / "mine.yaml")
    assert recipe.get("data.root") == str(tmp_path / "proj" / "patches")
    assert recipe.get("model.backbone.pretrained") == str(tmp_path / "proj" / "recipes" / "weights" / "r18.pth")
    assert recipe.get("teacher.checkpoint") == str(tmp_path / "proj" / "ckpt" / "teacher.pth")
    assert recipe.get("teacher.recipe") == str((RECIPES_DIR / "dota1" / "teacher-r34-gwd-2x.yaml").resolve())

    recipe = load_recipe(
        tmp_path / "proj" / "recipes" / "mine.yaml",
        ["data.root=data/split", "teacher.checkpoint=t.pth", "model.backbone.pretrained=torchvision://resnet18"],
    )
    assert recipe.get("data.root") == str(cwd / "data" / "split")
    assert recipe.get("teacher.checkpoint") == str(cwd / "t.pth")
    assert recipe.get("model.backbone.pretrained") == "torchvision://resnet18"


def test_bundled_data_root_is_data_split_ss_dota1_0_at_the_checkout_top():
    repo = RECIPES_DIR.parent.parent  # the checkout top (recipes are package data in rotld_cli/)
    assert load_recipe("dota1/teacher-r34-gwd-2x").get("data.root") == str(repo / "data" / "split_ss_dota1_0")
    student = load_recipe("dota1/student-r18-gwd-ld-kd-1x")
    assert student.get("teacher.recipe") == str(RECIPES_DIR / "dota1" / "teacher-r34-gwd-2x.yaml")
    assert student.get("teacher.checkpoint") is None


# ------------------------------------------------------------------------------------------
# Bundled recipes, saving, lr scaling


def test_bundled_recipes_are_listed_with_descriptions_and_all_load():
    found = bundled_recipes()
    assert [name for name, _, _ in found] == BUNDLED
    for name, path, description in found:
        assert path == RECIPES_DIR / f"{name}.yaml"
        assert description
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe.get("description") == description
        assert recipe.is_student == ("student" in name)


def test_teacher_and_student_recipes_share_what_distillation_needs():
    for student, teacher in [
        ("dota1/student-r18-gwd-ld-kd-1x", "dota1/teacher-r34-gwd-2x"),
        ("dota1/student-r18-kld-ld-kd-1x", "dota1/teacher-r34-kld-2x"),
        ("synthetic/student-r18-gwd-ld-kd", "synthetic/teacher-r34-gwd"),
    ]:
        s, t = load_recipe(student), load_recipe(teacher)
        assert s.get("teacher.recipe") == str(t.source)
        for key in ("model.anchors", "model.neck.out_channels", "model.head.reg_max", "data.classes", "data.img_scale"):
            assert s.get(key) == t.get(key), (student, key)


def test_save_resolved_writes_atomically_and_loads_back(tmp_path):
    recipe = load_recipe("dota1/student-r18-kld-ld-kd-1x", ["schedule.lr=0.005"])
    work = tmp_path / "work"
    write(work / "recipe.yaml", "stale")
    out = save_resolved(recipe, work)
    assert out == work / "recipe.yaml"
    assert sorted(p.name for p in work.iterdir()) == ["recipe.yaml"]  # no temp file left behind
    text = out.read_text()
    assert "# --set schedule.lr=0.005" in text
    again = load_recipe(out)
    assert again.data == recipe.data
    assert again.get("schedule.lr") == 0.005


def test_scaled_lr_is_linear_in_the_total_batch():
    recipe = load_recipe("dota1/student-r18-gwd-ld-kd-1x")
    assert scaled_lr(recipe, 2) == pytest.approx(0.0025)
    assert scaled_lr(recipe, 8) == pytest.approx(0.0025 * 8 / 2)
    synthetic = load_recipe("synthetic/baseline-r18-gwd")
    lr, base = synthetic.get("schedule.lr"), synthetic.get("schedule.base_batch")
    assert scaled_lr(synthetic, 2) == pytest.approx(lr * 2 / base)
    assert scaled_lr(synthetic, base) == pytest.approx(lr)
    with pytest.raises(UsageError):
        scaled_lr(recipe, 0)


def test_describe_schema_covers_every_key_of_a_student_recipe():
    described = {key for key, _, _ in describe_schema()}

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            yield f"{prefix}{key}"
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")

    students = ("dota1/student-r18-gwd-ld-kd-1x", "dota1/student-r18-gwd-crosskd-1x", "dota1/student-r18-gwd-bckd-1x",
                "synthetic/student-r18-gwd-ld-kd",  # the optional keys (norm_groups, binary KD) are set there
                "dior/student-r18-gwd-ld-kd-1x", "dota1-fcos/student-r18-ld-kd-1x",
                "dota1-atss/student-r18-ld-kd-1x", "dota1-orcnn/student-r18-ld-kd-1x")
    assert set().union(*(set(leaves(load_recipe(name).data)) for name in students)) == described


def test_unknown_recipe_name_suggests_a_bundled_one():
    with pytest.raises(
        RotldError, match=r"recipe not found: dota1/teacher-r34-gwd \(did you mean 'dota1/teacher-r34-gwd-2x'\?\)"
    ):
        load_recipe("dota1/teacher-r34-gwd")


# ------------------------------------------------------------------------------------------
# CLI


def test_cli_recipes_list(capsys):
    code, out, _ = run_main(["recipes", "list", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert sorted(row["name"] for row in rows) == sorted(BUNDLED)
    assert all(row["description"] for row in rows)
    # grouped by the resolved family (retinanet, fcos, atss, orcnn), not by folder; by name within a family
    families = [row["family"] for row in rows]
    assert families == sorted(families, key=["retinanet", "fcos", "atss", "orcnn"].index)
    assert {row["name"]: row["family"] for row in rows}["synthetic-fcos/teacher-r34"] == "fcos"
    assert [row["name"] for row in rows if row["family"] == "orcnn"] == [n for n in BUNDLED if "orcnn" in n]
    assert all(row["family"] == "retinanet" for row in rows if row["name"].split("/")[0] in ("dota1", "synthetic"))
    code, out, _ = run_main(["recipes", "list"], capsys)
    assert code == 0
    for name in BUNDLED:
        assert name.split("/")[1][:12] in out


def test_cli_recipes_show_prints_the_resolved_yaml(capsys, tmp_path):
    code, out, _ = run_main(["recipes", "show", "dota1/student-r18-gwd-ld-kd-1x", "--set", "schedule.epochs=6"], capsys)
    assert code == 0
    assert out.startswith("# dota1/student-r18-gwd-ld-kd-1x: resolved from ")
    assert "# --set schedule.epochs=6\n" in out
    shown = yaml.safe_load(out)
    expected = load_recipe("dota1/student-r18-gwd-ld-kd-1x", ["schedule.epochs=6"]).data
    assert shown == expected
    # the printed YAML is itself a recipe
    write(tmp_path / "shown.yaml", out)
    assert load_recipe(tmp_path / "shown.yaml").data == expected


def test_cli_recipes_show_errors_are_one_line(capsys):
    code, out, err = run_main(["recipes", "show", "dota1/baseline-r18-gwd-1x", "--set", "model.head.reg_mx=3"], capsys)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert "model.head.reg_mx: unknown key (did you mean 'reg_max'?)" in " ".join(err.split())
    code, _, err = run_main(["recipes", "show", "no/such"], capsys)
    assert code == 1
    assert "recipe not found: no/such" in err


def test_cli_recipes_show_accepts_a_file_path(capsys, tmp_path):
    path = write(tmp_path / "r.yaml", "base: dota1/baseline-r18-gwd-1x\ndescription: mine\n")
    code, out, _ = run_main(["recipes", "show", os.fspath(path)], capsys)
    assert code == 0
    assert yaml.safe_load(out)["description"] == "mine"
