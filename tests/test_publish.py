"""`rotld publish-model` and the safe checkpoint loader, on checkpoints built here with plain torch."""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rotld_cli.checkpoints import load_checkpoint_file, sha256_file  # noqa: E402
from rotld_cli.cli import main  # noqa: E402
from rotld_cli.errors import RotldError  # noqa: E402
from rotld_cli.publish import convert_config, describes_distillation, publish_model  # noqa: E402

pytestmark = pytest.mark.engine

KD_CONFIG = (
    "angle_version = 'le90'\n"
    "model = dict(type='KnowledgeDistillationRotatedSingleStageDetector',\n"
    "    teacher_config='teacher.py', teacher_ckpt='teacher.pth')\n"
)
CLASSES = ("plane", "ship", "storage-tank")


def _modules() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.BatchNorm2d(32), torch.nn.Conv2d(32, 4, 1))
    return student, teacher


def _sgd_state(model: torch.nn.Module) -> dict:
    """An SGD optimizer with momentum buffers, as a trained checkpoint carries."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(2, 3, 9, 9)).sum().backward()
    opt.step()
    return opt.state_dict()


def write_kd_checkpoint(path: Path, config: str = KD_CONFIG, with_teacher: bool = True) -> dict:
    """A distillation checkpoint the way MMCV's runner saves one: student + teacher, optimizer, meta."""
    student, teacher = _modules()
    state_dict = OrderedDict(student.state_dict())
    if with_teacher:
        state_dict.update((f"teacher_model.{k}", v) for k, v in teacher.state_dict().items())
    meta = {
        "CLASSES": CLASSES,
        "epoch": np.int64(12),
        "iter": 3400,
        "seed": np.int32(7),
        "lr": np.float32(0.25),
        "sizes": np.array([1, 2, 3]),
        "config": config,
        "hook_msgs": {"last_ckpt": "work_dirs/x/epoch_12.pth", "best_score": np.float64(0.5)},
        "rng": {"torch": torch.get_rng_state(), "python": [3, [1, 2], None]},
    }
    checkpoint = {"state_dict": state_dict, "optimizer": _sgd_state(student), "meta": meta}
    torch.save(checkpoint, path)
    return checkpoint


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["publish-model", *map(str, args)])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def load_plain(path: Path) -> dict:
    """What any user does: plain weights_only=True, without rotld's numpy allowlist."""
    return torch.load(path, map_location="cpu", weights_only=True)


def test_publish_strips_teacher_and_optimizer_and_names_file_by_sha256(tmp_path, capsys):
    src = tmp_path / "epoch_12.pth"
    original = write_kd_checkpoint(src)
    out_dir = tmp_path / "release"
    code, out, err = run_cli(capsys, src, out_dir / "student.pth")
    assert code == 0, err

    files = sorted(p.name for p in out_dir.iterdir())
    assert len(files) == 1, f"temp files left behind: {files}"
    written = out_dir / files[0]
    digest = hashlib.sha256(written.read_bytes()).hexdigest()
    assert written.name == f"student-{digest[:8]}.pth"
    assert f"published {written} sha256 {digest}" in out

    published = load_plain(written)
    assert set(published) == {"state_dict", "meta"}
    student_keys = [k for k in original["state_dict"] if not k.startswith("teacher_model.")]
    assert list(published["state_dict"]) == student_keys
    for key in student_keys:
        assert torch.equal(published["state_dict"][key], original["state_dict"][key])

    meta = published["meta"]
    assert meta["CLASSES"] == CLASSES
    assert meta["epoch"] == 12 and type(meta["epoch"]) is int
    assert meta["seed"] == 7 and type(meta["seed"]) is int
    assert meta["lr"] == pytest.approx(0.25) and type(meta["lr"]) is float
    assert meta["sizes"] == [1, 2, 3]
    assert meta["iter"] == 3400
    assert meta["config"] == KD_CONFIG
    assert "hook_msgs" not in meta and "rng" not in meta
    assert meta["rotld"]["published_from_distill"] is True
    assert meta["rotld"]["angle_version"] == "le90"
    assert meta["rotld"]["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert written.stat().st_size < src.stat().st_size


def test_publish_result_reports_what_was_removed(tmp_path):
    src = tmp_path / "kd.pth"
    original = write_kd_checkpoint(src)
    result = publish_model(src, tmp_path / "student.pth")
    n_teacher = sum(k.startswith("teacher_model.") for k in original["state_dict"])
    assert n_teacher == 9  # conv weight+bias, batch norm weight/bias/mean/var/count, conv weight+bias
    assert result.teacher_keys_removed == n_teacher
    assert result.state_dict_keys == len(original["state_dict"]) - n_teacher
    assert result.removed == [
        f"state_dict teacher_model.* ({n_teacher} keys)",
        "meta.hook_msgs",
        "meta.rng",
        "optimizer",
    ]
    assert result.size_before == src.stat().st_size
    assert result.size_after == result.output.stat().st_size
    assert result.sha256 == sha256_file(result.output)
    assert "meta.epoch (numpy.int64 -> int)" in result.converted
    assert "meta.sizes (numpy.ndarray -> list)" in result.converted


def test_publish_json_output_matches_the_written_file(tmp_path, capsys):
    src = tmp_path / "kd.pth"
    write_kd_checkpoint(src)
    code, out, _ = run_cli(capsys, src, tmp_path / "out" / "model.pth", "--json")
    assert code == 0
    report = json.loads(out)
    written = Path(report["output"])
    assert written.exists()
    assert report["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert report["size_after"] == written.stat().st_size < report["size_before"] == src.stat().st_size
    assert report["published_from_distill"] is True


def test_keep_optimizer_keeps_the_momentum_buffers(tmp_path, capsys):
    src = tmp_path / "kd.pth"
    original = write_kd_checkpoint(src)
    code, _, err = run_cli(capsys, src, tmp_path / "resume.pth", "--keep-optimizer")
    assert code == 0, err
    (written,) = tmp_path.glob("resume-*.pth")
    published = load_plain(written)
    assert published["optimizer"]["param_groups"] == original["optimizer"]["param_groups"]
    for idx, state in original["optimizer"]["state"].items():
        assert torch.equal(published["optimizer"]["state"][idx]["momentum_buffer"], state["momentum_buffer"])
    assert not any(k.startswith("teacher") for k in published["state_dict"])
    assert torch.equal(published["meta"]["rng"]["torch"], original["meta"]["rng"]["torch"])


def test_directory_output_uses_the_input_stem_and_is_reproducible(tmp_path, capsys):
    src = tmp_path / "epoch_12.pth"
    write_kd_checkpoint(src)
    out_dir = tmp_path / "release"
    out_dir.mkdir()
    assert run_cli(capsys, src, out_dir)[0] == 0
    first = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert run_cli(capsys, src, out_dir)[0] == 0
    second = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert first == second and len(first) == 1
    (name,) = first
    assert name == f"epoch_12-{hashlib.sha256(first[name]).hexdigest()[:8]}.pth"


def test_trailing_slash_names_a_new_directory(tmp_path, capsys):
    src = tmp_path / "epoch_3.pth"
    write_kd_checkpoint(src)
    code, _, err = run_cli(capsys, src, f"{tmp_path / 'new_dir'}/")
    assert code == 0, err
    (written,) = (tmp_path / "new_dir").iterdir()
    assert written.name == f"epoch_3-{sha256_file(written)[:8]}.pth"


def test_plain_checkpoint_is_not_marked_as_distilled(tmp_path):
    src = tmp_path / "teacher.pth"
    write_kd_checkpoint(src, config="model = dict(type='RotatedRetinaNet')\nangle_version = 'oc'\n", with_teacher=False)
    result = publish_model(src, tmp_path / "teacher_release.pth")
    meta = load_plain(result.output)["meta"]
    assert result.published_from_distill is False
    assert "published_from_distill" not in meta["rotld"]
    assert meta["rotld"]["angle_version"] == "oc"
    assert result.removed == ["meta.hook_msgs", "meta.rng", "optimizer"]


def test_distillation_is_recognised_in_config_text_and_recipes():
    student_recipe = "description: 'student'\nteacher:\n  recipe: t.yaml\ndistill:\n  loss_ld: {weight: 10.0}\n"
    baseline_recipe = "description: >-\n  a baseline,\n  teacher: none\nmodel:\n  backbone: {depth: 18}\n"
    assert describes_distillation({"config": KD_CONFIG})
    assert describes_distillation({"recipe": student_recipe})
    assert describes_distillation({"rotld": {"recipe": {"model": {"head": "ld"}, "distill": {"loss_ld": {}}}}})
    assert describes_distillation({"teacher": {"path": "t.pth", "sha256": "ab" * 32}, "recipe": baseline_recipe})
    assert not describes_distillation({"teacher": None, "recipe": baseline_recipe})
    assert not describes_distillation({"config": "model = dict(type='RotatedRetinaNet')"})
    assert not describes_distillation({"rotld": {"recipe": {"model": {"type": "RotatedRetinaNet"}}}})
    meta = {"config": KD_CONFIG}
    assert convert_config(meta) is meta


def test_bundled_recipes_are_recognised_as_they_are_recorded_in_meta(repo_root):
    from rotld_cli.recipes import load_recipe

    paths = sorted((repo_root / "recipes").glob("*/*.yaml"))
    recipes = [load_recipe(str(p)) for p in paths if not p.parent.name.startswith("_")]
    assert any(r.is_student for r in recipes) and any(not r.is_student for r in recipes)
    for recipe in recipes:
        assert describes_distillation({"recipe": recipe.to_yaml()}) == recipe.is_student, recipe.label


def test_unsafe_pickle_is_refused_unless_trusted(tmp_path, capsys):
    src = tmp_path / "unsafe.pth"
    student, _ = _modules()
    meta = {"work_dir": pathlib.PurePosixPath("runs/a"), "shape": torch.Size([2, 3]), "tags": {"b", "a"}}
    torch.save({"state_dict": student.state_dict(), "meta": meta}, src)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, src, out_dir / "m.pth")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "pathlib.PurePosixPath" in err and "--trust-checkpoint" in err and str(src) in err
    assert not out_dir.exists()

    code, _, err = run_cli(capsys, src, out_dir / "m.pth", "--trust-checkpoint")
    assert code == 0
    assert "warning" in err and "--trust-checkpoint" in err
    (written,) = out_dir.iterdir()
    published_meta = load_plain(written)["meta"]
    assert published_meta["work_dir"] == "runs/a"
    assert published_meta["shape"] == (2, 3) and type(published_meta["shape"]) is tuple
    assert published_meta["tags"] == ["a", "b"]


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    student, teacher = _modules()
    good = tmp_path / "good.pth"
    torch.save({"state_dict": student.state_dict(), "meta": {}}, good)
    data = good.read_bytes()
    cases = {
        "missing": (tmp_path / "nope.pth", "no such file"),
        "directory": (tmp_path, "not a file"),
        "empty": (tmp_path / "empty.pth", "not a PyTorch checkpoint (the file is empty or truncated)"),
        "text": (tmp_path / "notes.pth", "not a PyTorch checkpoint"),
        "truncated": (tmp_path / "truncated.pth", "not a PyTorch checkpoint (truncated or corrupt zip archive)"),
        "other zip": (tmp_path / "other.pth", "a zip archive that torch.save did not write"),
        "no state_dict": (tmp_path / "nosd.pth", "no 'state_dict' in the checkpoint (top-level keys: meta, epoch)"),
        "bare state_dict": (tmp_path / "bare.pth", "no 'state_dict' in the checkpoint"),
        "teacher only": (tmp_path / "teacher_only.pth", "holds no student weights"),
        "not a dict": (tmp_path / "tensor.pth", "holds a Tensor, expected a dict"),
    }
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "notes.pth").write_text("this is not a checkpoint\n")
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(tmp_path / "other.pth", "w") as zf:
        zf.writestr("readme.txt", "hello")
    torch.save({"meta": {}, "epoch": 3}, tmp_path / "nosd.pth")
    torch.save(student.state_dict(), tmp_path / "bare.pth")
    torch.save(
        {"state_dict": {f"teacher_model.{k}": v for k, v in teacher.state_dict().items()}},
        tmp_path / "teacher_only.pth",
    )
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    return cases


def test_bad_inputs_give_one_clear_line_and_write_nothing(tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    out_dir = tmp_path / "out"
    for label, (path, expected) in cases.items():
        code, out, err = run_cli(capsys, path, out_dir / "model.pth")
        assert code == 1, label
        lines = err.strip().splitlines()
        assert len(lines) == 1, (label, err)
        assert lines[0].startswith(f"error: {path}: ") and expected in lines[0], (label, lines[0])
        assert "Traceback" not in err and out == ""
    assert not out_dir.exists()


def test_cli_subprocess_reports_missing_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rotld_cli", "publish-model", str(tmp_path / "gone.pth"), str(tmp_path / "x.pth")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path / 'gone.pth'}: no such file"


def test_failed_hash_check_removes_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    src = tmp_path / "kd.pth"
    write_kd_checkpoint(src)
    out_dir = tmp_path / "out"
    monkeypatch.setattr("rotld_cli.publish.sha256_file", lambda path: "0" * 64)
    with pytest.raises(RotldError, match="does not match its hash"):
        publish_model(src, out_dir / "m.pth")
    assert list(out_dir.iterdir()) == []


def test_loader_accepts_numpy_metadata_without_trust(tmp_path):
    src = tmp_path / "np.pth"
    torch.save({"meta": {"best": np.float64(0.75), "ids": np.arange(3)}}, src)
    loaded = load_checkpoint_file(src)
    assert loaded["meta"]["best"] == 0.75 and isinstance(loaded["meta"]["best"], np.float64)
    assert loaded["meta"]["ids"].tolist() == [0, 1, 2]


def test_loader_and_publish_import_neither_torch_nor_mmcv_at_import_time():
    code = (
        "import sys, rotld_cli.checkpoints, rotld_cli.publish, rotld_cli.cli.publish\n"
        "bad = [m for m in ('torch', 'mmcv', 'mmdet', 'mmrotate') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _table_rows(out: str) -> dict[str, str]:
    """`│ from distillation │ yes (...) │` -> {"from distillation": "yes (...)"} (first line of each cell)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    return rows


def test_a_file_that_grew_is_reported_larger_not_negative_smaller(tmp_path, capsys, monkeypatch):
    from rotld_cli import ui

    monkeypatch.setattr(ui.console, "_width", 400)  # one table line per row, whatever the temp path
    src = tmp_path / "tiny.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"CLASSES": ["plane"]}}, src)
    code, out, err = run_cli(capsys, src, tmp_path / "tiny.pth")
    assert code == 0, err
    (written,) = tmp_path.glob("tiny-*.pth")
    before, after = src.stat().st_size, written.stat().st_size
    assert after > before  # rotld's provenance (source sha256, version) outweighs a 2-float model
    assert _table_rows(out)["output"].endswith(f", {100 * (after - before) / before:.1f}% larger)")
    assert "smaller" not in out


def test_size_change_wording():
    from rotld_cli.cli.publish import size_change

    assert size_change(800, 700) == "12.5% smaller"
    assert size_change(800, 900) == "12.5% larger"
    assert size_change(800, 800) == "same size" and size_change(0, 10) == "same size"


def test_distillation_is_reported_after_the_teacher_weights_are_gone(tmp_path, capsys, monkeypatch):
    """Publishing a distilled model removes the teacher; publishing that file again (or any file
    whose metadata records the distillation) still says where the weights come from."""
    from rotld_cli import ui

    monkeypatch.setattr(ui.console, "_width", 400)
    src = tmp_path / "kd.pth"
    # A config that does not name the KD detector: only the teacher weights tell it was distilled.
    write_kd_checkpoint(src, config="model = dict(type='RotatedRetinaNet')\nangle_version = 'le90'\n")
    code, out, err = run_cli(capsys, src, tmp_path / "first" / "student.pth")
    assert code == 0, err
    assert _table_rows(out)["from distillation"] == "yes (9 teacher weights removed)"
    (first,) = (tmp_path / "first").iterdir()
    code, out, err = run_cli(capsys, first, tmp_path / "second" / "student.pth")
    assert code == 0, err
    assert _table_rows(out)["from distillation"] == "yes (no teacher weights in the input: removed before)"
    (second,) = (tmp_path / "second").iterdir()
    assert load_plain(second)["meta"]["rotld"]["published_from_distill"] is True
    code, out, _ = run_cli(capsys, first, tmp_path / "third" / "student.pth", "--json")
    assert json.loads(out)["published_from_distill"] is True and json.loads(out)["teacher_keys_removed"] == 0
