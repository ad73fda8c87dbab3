"""`rotld demo --quick` end to end: data, split, three runs, merged evaluation, report; a rerun reuses it all."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from rotld_cli.cli import main  # noqa: E402
from rotld_cli.demo import MODELS, QUICK, demo_table  # noqa: E402
from rotld_cli.engine import checkpoints as ckpt  # noqa: E402


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_quick_demo_end_to_end_and_reuse(tmp_path, capsys):
    work = tmp_path / "demo"
    code, out, err = run_cli(["demo", "--quick", "--work-dir", str(work), "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out[out.index("{\n"):])
    assert set(payload["models"]) == {"teacher", "baseline", "student"}

    assert sorted(p.name for p in (work / "data" / "train" / "images").iterdir()) == [f"S000{i}.png" for i in range(4)]
    assert len(list((work / "split" / "val" / "images").iterdir())) == QUICK.num_val  # one patch per image
    teacher_ckpt = work / "runs" / "teacher" / "epoch_1.pth"
    for model in MODELS:
        run = work / "runs" / model.key
        done = json.loads((run / "done.json").read_text())
        assert done["checkpoint"] == "epoch_1.pth" and done["sha256"] == ckpt.sha256_file(run / "epoch_1.pth")
        loaded = torch.load(run / "epoch_1.pth", map_location="cpu", weights_only=True)
        assert not [k for k in loaded["state_dict"] if k.startswith("teacher")]
        assert (run / "log.jsonl").stat().st_size > 0 and (run / "metrics.csv").is_file()
        metrics = json.loads((run / "results" / "metrics.json").read_text())
        assert metrics["metrics"] == pytest.approx(payload["models"][model.key])
        report = metrics["report"]
        assert report["merged"] is True and report["num_images"] == QUICK.num_val
        assert sorted(p.name for p in (run / "results" / "merged").glob("Task1_*")) == sorted(
            f"Task1_{c}.txt" for c in report["per_class"]
        )
        # The table's AP is the mean over the recipe's classes of the per-class means over AP50..AP95.
        classes = loaded["meta"]["classes"]
        expected_ap = sum(report["per_class"][c]["AP"] for c in classes) / len(classes)
        assert payload["models"][model.key]["AP"] == pytest.approx(expected_ap)
    student_meta = torch.load(work / "runs" / "student" / "epoch_1.pth", weights_only=True)["meta"]
    assert student_meta["teacher"]["sha256"] == ckpt.sha256_file(teacher_ckpt)
    report_md = (work / "report.md").read_text()
    for model in MODELS:
        assert f"| {model.label} |" in report_md
    assert "| Model | AP | AP50 | AP70 | AP90 |" in report_md
    # the pictures: one val image (GT | baseline | student) and the three runs' loss curves, linked
    for figure in ("figures/val_S0004.png", "figures/loss_curves.png"):
        assert f"]({figure})" in report_md and (work / figure).stat().st_size > 0
    assert set(payload["steps"]) == {"data", "split", *(f"train {m.key}" for m in MODELS),
                                     *(f"evaluate {m.key}" for m in MODELS), "report"}

    # The demo's table is `rotld evaluate CKPT` on the same checkpoints, number for number and cell for cell.
    for model in MODELS:
        code, out, err = run_cli(["evaluate", str(work / "runs" / model.key / "epoch_1.pth"),
                                  "--split-dir", str(work / "split" / "val"),
                                  "--ann-dir", str(work / "data" / "val" / "labelTxt"),
                                  "--out", str(tmp_path / f"eval-{model.key}"), "--json"], capsys)
        assert code == 0, err
        evaluated = json.loads(out)
        assert {k: evaluated[k] for k in payload["models"][model.key]} == payload["models"][model.key]
        row = next(r for r in demo_table(payload["models"]).rows if r[0] == model.label)
        assert f"| {' | '.join(row)} |" in report_md
        assert list(row[1:]) == [f"{100 * evaluated[c]:.2f}" for c in ("AP", "AP50", "AP70", "AP90")]

    before = {p: p.stat().st_mtime_ns for p in work.rglob("*.pth")}
    code, out, _ = run_cli(["demo", "--quick", "--work-dir", str(work), "--device", "cpu"], capsys)
    assert code == 0 and "reused teacher, baseline, student" in " ".join(out.split())
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.pth")} == before

    # --methods adds a CrossKD row: only its student trains, the finished runs are reused as they are.
    code, out, err = run_cli(["demo", "--quick", "--work-dir", str(work), "--device", "cpu", "--methods",
                              "ld,crosskd", "--json"], capsys)
    assert code == 0, err
    assert "reused teacher, baseline, student" in " ".join(out.split())
    assert set(json.loads(out[out.index("{\n"):])["models"]) == {"teacher", "baseline", "student", "crosskd"}
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (work / "runs" / "crosskd" / "done.json").is_file()
    assert "| Student R-18 (GWD, CrossKD) |" in (work / "report.md").read_text()


def test_demo_refuses_an_unknown_method_before_writing(tmp_path, capsys):
    code, _, err = run_cli(["demo", "--quick", "--work-dir", str(tmp_path / "d"), "--methods", "ld,fitnet"], capsys)
    assert code == 2 and "--methods ld,fitnet: unknown distiller 'fitnet'" in err
    assert not (tmp_path / "d").exists()


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    code, _, err = run_cli(["demo", "--quick", "--work-dir", str(tmp_path)], capsys)
    assert code == 2 and "is not a rotld demo folder" in err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_demo_refuses_cuda_without_a_gpu_before_writing_anything(tmp_path, capsys):
    code, _, err = run_cli(["demo", "--quick", "--work-dir", str(tmp_path / "demo"), "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda: no usable GPU" in err
    assert not (tmp_path / "demo").exists()
