"""`bench.accuracy --readme`: the README's accuracy block is the benchmark's output, written in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.accuracy import (
    README_BEGIN,
    README_END,
    markers,
    readme_block,
    readme_span,
    verdict,
    write_readme,
)
from rotld_cli.errors import UsageError


@pytest.mark.parametrize("bench", ["accuracy", "ld_ablation"])
def test_the_readme_has_the_block(repo_root: Path, bench: str) -> None:
    begin, end = markers(bench)
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    assert text.count(begin) == 1 and text.count(end) == 1
    assert text.index(begin) < text.index(end)
    assert (README_BEGIN, README_END) == markers()


def test_two_blocks_are_written_independently(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    (a_begin, a_end), (b_begin, b_end) = markers("accuracy"), markers("ld_ablation")
    readme.write_text(f"{a_begin}\nA\n{a_end}\nmiddle\n{b_begin}\nB\n{b_end}\n", encoding="utf-8")
    write_readme(readme, "new B", "ld_ablation")
    assert readme.read_text(encoding="utf-8") == f"{a_begin}\nA\n{a_end}\nmiddle\n{b_begin}\nnew B\n{b_end}\n"


def test_write_replaces_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{README_BEGIN}\nold table\n{README_END}\nafter\n", encoding="utf-8")
    rows = [["baseline", "10.00", "11.00", "10.50 ± 0.71", "+0.00", "–"],
            ["LD+KD", "12.00", "12.50", "12.25 ± 0.35", "+1.75", "+0.00"]]
    columns = ["model", "seed 0", "seed 1", "mean ± std", "Δ baseline", "Δ LD+KD"]
    verdicts = [verdict("LD+KD", "baseline", [0.02, 0.015])]
    block = readme_block("AP50:95 (full settings)", columns, rows, verdicts, "made by the test")
    write_readme(readme, block)
    assert readme.read_text(encoding="utf-8") == (
        f"# Title\n\nbefore\n{README_BEGIN}\n"
        "AP50:95 (full settings):\n\n"
        "| model | seed 0 | seed 1 | mean ± std | Δ baseline | Δ LD+KD |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| baseline | 10.00 | 11.00 | 10.50 ± 0.71 | +0.00 | – |\n"
        "| LD+KD | 12.00 | 12.50 | 12.25 ± 0.35 | +1.75 | +0.00 |\n\n"
        "- LD+KD vs baseline: +1.75 AP (spread 0.35) — beats it on this data\n\n"
        f"made by the test\n{README_END}\nafter\n"
    )
    write_readme(readme, "second run")  # rerunning replaces, never appends
    assert readme.read_text(encoding="utf-8").count("second run") == 1
    assert "old table" not in readme.read_text(encoding="utf-8")


@pytest.mark.parametrize("text", [
    f"no block here\n{README_END}\n{README_BEGIN}\n",  # wrong order
    f"only a start\n{README_BEGIN}\n",
    f"{README_BEGIN}\na\n{README_END}\n{README_BEGIN}\nb\n{README_END}\n",  # two blocks
    "nothing\n",
])
def test_a_file_without_one_block_is_refused_untouched(tmp_path: Path, text: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=r"needs one .* block"):
        write_readme(readme, "table")
    assert readme.read_text(encoding="utf-8") == text


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--readme .*: No such file"):
        readme_span(tmp_path / "absent.md")


def test_verdict_needs_every_seed_and_more_than_the_spread() -> None:
    assert "beats it" in verdict("X", "baseline", [0.02, 0.03, 0.025])
    assert "does NOT beat it" in verdict("X", "baseline", [0.05, -0.01, 0.02])  # one seed loses
    assert "does NOT beat it" in verdict("X", "baseline", [0.001, 0.02, 0.0])  # not above its spread
    assert "does NOT beat it" in verdict("X", "baseline", [0.03])  # one seed: no spread to compare


def test_each_family_benchmarks_its_own_synthetic_recipes() -> None:
    from bench.accuracy import FAMILY_MODELS
    from rotld_cli.recipes import load_recipe

    keys = {"ld": "student", "ld-seed": "ld-seed", "crosskd": "crosskd", "bckd": "bckd", "ld-crosskd": "ld-crosskd",
            "ld-binary": "ld-binary"}
    heads = {"ld": "ld", "ld-seed": "ld", "crosskd": "crosskd", "bckd": "bckd", "ld-crosskd": "crosskd",
             "ld-binary": "ld"}
    for family, (teacher, baseline, distillers) in FAMILY_MODELS.items():
        assert (teacher.key, baseline.key) == ("teacher", "baseline")
        for model in (teacher, baseline):
            recipe = load_recipe(model.recipe)
            assert recipe.family == family and not recipe.is_student and not model.distilled
        for method, model in distillers.items():
            recipe = load_recipe(model.recipe)
            assert recipe.family == family and recipe.is_student and model.distilled
            assert recipe.get("distill.method", "ld") == heads[method] and model.key == keys[method]
            # the student's teacher is its family's synthetic teacher
            assert recipe.get("teacher.recipe") == str(load_recipe(teacher.recipe).source)
    assert set(FAMILY_MODELS["orcnn"][2]) == {"ld"}
    assert set(FAMILY_MODELS["fcos"][2]) == set(FAMILY_MODELS["atss"][2]) == {"ld", "ld-binary", "crosskd", "bckd"}
    for family in ("fcos", "atss"):  # the RetinaNet table's LD+KD: binary KD on every anchor/point
        kd = load_recipe(FAMILY_MODELS[family][2]["ld-binary"].recipe).get("distill.loss_kd")
        assert (kd["type"], kd["region"]) == ("binary", "all")


def test_a_familys_default_methods_pass_the_option_check(monkeypatch, tmp_path) -> None:
    """`--family fcos` without --methods gets past the parsing (to the first training step, stubbed here)."""
    import sys

    import bench.accuracy as accuracy

    reached = []

    def stop(work, settings):  # the first step after the option checks
        reached.append(work)
        raise SystemExit(0)

    monkeypatch.setattr(accuracy, "claim_work_dir", stop)
    for family in ("fcos", "atss", "orcnn"):
        monkeypatch.setattr(sys, "argv", ["accuracy", "--family", family, "--work-dir", str(tmp_path / family)])
        with pytest.raises(SystemExit) as exc:
            accuracy.main()
        assert exc.value.code == 0
    assert reached == [tmp_path / f for f in ("fcos", "atss", "orcnn")]


def test_a_method_the_family_lacks_is_refused_before_training(monkeypatch, capsys) -> None:
    import sys

    from bench.accuracy import main

    for method in ("bckd", "ld-binary"):  # a RetinaNet distiller, another family's own
        monkeypatch.setattr(sys, "argv", ["accuracy", "--family", "orcnn", "--methods", method, "--quick"])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 2
        assert f"--methods: {method} is not available for the orcnn family (use ld)" in capsys.readouterr().err


def test_families_have_their_own_readme_blocks(repo_root: Path, tmp_path: Path) -> None:
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    blocks = [("accuracy", f) for f in ("retinanet", "fcos", "atss", "orcnn")]
    blocks += [("ld_ablation", f) for f in ("retinanet", "fcos", "atss")]
    for bench, family in blocks:
        begin, end = markers(bench, family)
        assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)
    readme = tmp_path / "README.md"
    begin, end = markers(family="fcos")
    readme.write_text(f"{README_BEGIN}\nretina\n{README_END}\n{begin}\nold\n{end}\n", encoding="utf-8")
    write_readme(readme, "fcos table", family="fcos")
    assert readme.read_text(encoding="utf-8") == f"{README_BEGIN}\nretina\n{README_END}\n{begin}\nfcos table\n{end}\n"


def test_a_family_ablation_reuses_its_accuracy_runs_and_ablates_its_ld_kd_student() -> None:
    from bench.accuracy import FAMILY_MODELS
    from bench.ld_ablation import FAMILY_VARIANTS
    from rotld_cli.recipes import load_recipe

    keys = [key for _, key, _ in FAMILY_VARIANTS]
    assert len(set(keys)) == len(keys)
    for family in ("fcos", "atss"):
        distillers = FAMILY_MODELS[family][2]
        reused = {model.key for model in distillers.values()} & set(keys)
        assert reused == {"student", "ld-binary"}  # its LD+KD and LD+binary-KD runs, trained by bench.accuracy
        for _, key, overrides in FAMILY_VARIANTS:  # the others: the LD+KD recipe with valid overrides
            if key not in reused:
                recipe = load_recipe(distillers["ld"].recipe, list(overrides))
                assert recipe.family == family and recipe.get("distill.method", "ld") == "ld"
