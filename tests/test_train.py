"""`rotld train-teacher`: checkpoints, logs, the lr schedule, exact resume, the NaN guard, option errors.

Runs a ResNet-18 with a 16-channel FPN/head on 128 px synthetic patches: 4 training patches,
2 per step, so an epoch is 2 iterations.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from train_helpers import make_split, write_recipe  # noqa: E402

from rotld_cli.cli import main  # noqa: E402
from rotld_cli.engine import checkpoints as ckpt  # noqa: E402
from rotld_cli.engine import hooks  # noqa: E402
from rotld_cli.engine.patch_eval import patch_ap50  # noqa: E402
from rotld_cli.engine.reporting import TrainReporter  # noqa: E402
from rotld_cli.engine.train import TrainOptions, check_pretrained, train_teacher  # noqa: E402
from rotld_cli.errors import RotldError  # noqa: E402

BASE_LR = 0.01
WARMUP_RATIO = 1 / 3


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return make_split(tmp_path_factory.mktemp("train-data"))


@pytest.fixture(scope="module")
def recipe(split, tmp_path_factory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("recipes") / "tiny.yaml", split)


class RecordingReporter(TrainReporter):
    """What the hooks hand to a (non-live) display: lines and tables, in order."""

    def __init__(self):
        self.events = []

    def start(self, total, completed):
        self.events.append(("start", total, completed))

    def line(self, text):
        self.events.append(("line", text))

    def table(self, title, rows):
        self.events.append(("table", title, [name for name, _ in rows]))

    def stop(self):
        self.events.append(("stop",))


@pytest.fixture(scope="module")
def full_run(recipe, tmp_path_factory):
    """An uninterrupted 2-epoch run with the patch evaluation after epoch 2."""
    work = tmp_path_factory.mktemp("runs") / "full"
    reporter = RecordingReporter()
    result = train_teacher(str(recipe), TrainOptions(work_dir=work, device="cpu", reporter=reporter))
    result.reported = reporter.events
    return work, result


def test_progress_goes_through_the_reporter(full_run):
    """The engine draws nothing: every progress line and the validation table reach the reporter."""
    _, result = full_run
    events = result.reported
    assert events[0] == ("start", 4, 0) and events[-1] == ("stop",)
    lines = [e[1] for e in events if e[0] == "line"]
    step = re.compile(r"^epoch (\d)/2 it (\d)/2 loss \S+ \(.+\) lr \S+ \d+\.\d\d (it/s|s/it) ETA \d+:\d\d$")
    steps = [step.match(line) for line in lines if " it " in line]
    assert [(m.group(1), m.group(2)) for m in steps] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")], lines
    done = [line for line in lines if " done in " in line]
    assert [line.split(" done in ")[0] for line in done] == ["epoch 1/2", "epoch 2/2"]
    tables = [e for e in events if e[0] == "table"]
    assert tables == [("table", "Validation after epoch 2", list(result.evaluations[-1])[1:])]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_checkpoints_are_real_files_loadable_weights_only(full_run, recipe):
    work, result = full_run
    assert result.epochs == 2 and result.iters == 4 and result.checkpoint == work / "epoch_2.pth"
    latest = work / "latest.pth"
    assert latest.is_file() and not latest.is_symlink()
    assert latest.read_bytes() == (work / "epoch_2.pth").read_bytes()
    assert not [p for p in work.iterdir() if p.name.startswith(".")], "temporary files left behind"
    for name, epoch, iters in (("epoch_1.pth", 1, 2), ("latest.pth", 2, 4)):
        loaded = torch.load(work / name, map_location="cpu", weights_only=True)
        meta = loaded["meta"]
        assert meta["epoch"] == epoch and meta["iter"] == iters
        assert set(loaded) == {"state_dict", "optimizer", "meta"}
        ckpt.check_plain(meta)
    meta = torch.load(latest, weights_only=True)["meta"]
    resolved = (work / "recipe.yaml").read_text()
    assert meta["recipe"] in resolved and "img_scale: 128" in meta["recipe"]
    from rotld_cli.recipes import load_recipe

    assert meta["classes"] == list(load_recipe(str(recipe)).classes) and meta["angle_version"] == "oc"
    assert meta["rotld_version"] and meta["teacher"] is None and meta["seed"] == 0
    assert set(meta["rng"]) >= {"python", "numpy", "torch"}
    assert meta["lr"] == pytest.approx([BASE_LR * 0.1]) and meta["base_lr"] == pytest.approx([BASE_LR])
    done = json.loads((work / "done.json").read_text())
    assert done["checkpoint"] == "epoch_2.pth" and done["sha256"] == ckpt.sha256_file(work / "epoch_2.pth")


def test_log_jsonl_and_metrics_csv_follow_the_lr_schedule(full_run):
    work, _ = full_run
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("mode") == "train"]
    assert [r["iter"] for r in train] == [1, 2, 3, 4] and [r["epoch"] for r in train] == [1, 1, 2, 2]
    # mmcv linear warmup over 2 iterations from lr/3, then the step at epoch 1 (x0.1).
    expected = [BASE_LR * (1 - (1 - i / 2) * (1 - WARMUP_RATIO)) for i in (0, 1)] + [BASE_LR * 0.1] * 2
    assert [r["lr"] for r in train] == pytest.approx(expected)
    for r in train:
        assert math.isclose(r["loss"], r["loss_cls"] + r["loss_bbox"], rel_tol=1e-5)
    val = [r for r in records if r.get("mode") == "val"]
    assert len(val) == 1 and val[0]["epoch"] == 2 and 0.0 <= val[0]["mAP"] <= 1.0
    assert [r["path"] for r in records if r.get("event") == "checkpoint"] == ["epoch_1.pth", "epoch_2.pth"]
    with open(work / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["iter"]) for r in rows] == [2, 4]
    epoch1 = [r["loss_cls"] for r in train[:2]]
    assert float(rows[0]["loss_cls"]) == pytest.approx(sum(epoch1) / 2, rel=1e-4)
    assert rows[0]["val_mAP"] == "" and float(rows[1]["val_mAP"]) == pytest.approx(val[0]["mAP"], abs=1e-6)


def test_resume_after_a_kill_matches_the_uninterrupted_run(full_run, recipe, tmp_path, monkeypatch):
    work_full, _ = full_run
    work = tmp_path / "killed"
    original = hooks.ProgressHook.after_train_iter

    def killed_after_iteration_3(self, runner):
        original(self, runner)
        if runner.iter + 1 == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(hooks.ProgressHook, "after_train_iter", killed_after_iteration_3)
    with pytest.raises(Exception, match="interrupted at epoch 2"):
        train_teacher(str(recipe), TrainOptions(work_dir=work, device="cpu"))
    assert torch.load(work / "latest.pth", weights_only=True)["meta"]["epoch"] == 1
    assert not (work / "done.json").exists()
    monkeypatch.setattr(hooks.ProgressHook, "after_train_iter", original)
    # Disturb every RNG: the resumed run must restore them from the checkpoint.
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    result = train_teacher(str(recipe), TrainOptions(work_dir=work, device="cpu", resume=True))
    assert result.resumed_from == 1 and result.iters == 4
    full = torch.load(work_full / "latest.pth", weights_only=True)
    resumed = torch.load(work / "latest.pth", weights_only=True)
    assert full["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for index, state in full["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][index]["momentum_buffer"])
    for key in ("python", "torch"):
        assert str(full["meta"]["rng"][key]) == str(resumed["meta"]["rng"][key])
    iters = [json.loads(line)["iter"] for line in (work / "log.jsonl").read_text().splitlines()
             if json.loads(line).get("mode") == "train"]
    assert iters == [1, 2, 3, 4], "the killed run's record of iteration 3 must be dropped on resume"


def test_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(recipe, tmp_path, monkeypatch, capsys):
    from mmdet.models.detectors.base import BaseDetector

    original = BaseDetector.train_step
    calls = {"n": 0}

    def nan_on_third_step(self, data, optimizer):
        outputs = original(self, data, optimizer)
        calls["n"] += 1
        if calls["n"] == 3:
            outputs["loss"] = outputs["loss"] * float("nan")
            outputs["log_vars"]["loss_bbox"] = float("nan")
        return outputs

    monkeypatch.setattr(BaseDetector, "train_step", nan_on_third_step)
    work = tmp_path / "nan"
    args = ["train-teacher", str(recipe), "--work-dir", str(work), "--device", "cpu", "--auto-scale-lr"]
    code, _, err = run_cli(args, capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "non-finite loss at epoch 2, iteration 1" in lines[0] and "loss_bbox=nan" in lines[0]
    assert "latest.pth (epoch 1)" in " ".join(err.split())
    latest = torch.load(work / "latest.pth", weights_only=True)
    assert latest["meta"]["epoch"] == 1
    # --auto-scale-lr: lr x total batch / base_batch = 0.01 x 2 / 4 (the test recipe's base_batch).
    assert latest["meta"]["base_lr"] == pytest.approx([BASE_LR * 2 / 4])
    assert (work / "latest.pth").read_bytes() == (work / "epoch_1.pth").read_bytes()
    assert all(torch.isfinite(v).all() for v in latest["state_dict"].values() if v.is_floating_point())
    assert not (work / "done.json").exists()
    events = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "diverged" and events[-1]["iter"] == 3


def test_checkpoint_hook_refuses_non_finite_weights(tmp_path):
    class FakeRunner:
        epoch, iter, max_epochs = 0, 2, 2
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    runner = FakeRunner()
    with torch.no_grad():
        runner.model.weight[0, 0] = float("inf")
    hook = hooks.AtomicCheckpointHook(tmp_path, meta_fn=lambda r: {"epoch": 1})
    with pytest.raises(hooks.TrainingDiverged, match="parameter weight became non-finite"):
        hook.after_train_epoch(runner)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    ckpt.save_checkpoint(path, {"w": torch.ones(3)}, {"epoch": 1})
    before = path.read_bytes()

    def torn_write(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(RotldError, match=r"latest\.pth: .*disk full"):  # the user's file, not the temp one
        ckpt.save_checkpoint(path, {"w": torch.zeros(3)}, {"epoch": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["latest.pth"]
    assert torch.load(path, weights_only=True)["meta"]["epoch"] == 1


def test_meta_must_be_plain_and_rng_states_round_trip(tmp_path):
    with pytest.raises(TypeError, match=r"meta.bad is a numpy.ndarray"):
        ckpt.check_plain({"ok": [1, "a", None, 2.0], "bad": np.zeros(2)})
    with pytest.raises(TypeError, match="TorchVersion"):
        ckpt.check_plain({"version": torch.__version__})
    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    path = ckpt.save_checkpoint(tmp_path / "rng.pth", {}, {"rng": state})
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    ckpt.restore_rng_state(torch.load(path, weights_only=True)["meta"]["rng"])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected


def test_patch_ap50_on_a_hand_computed_case():
    # One patch, class 0: two GTs; three detections: a perfect match (0.9), a duplicate of it (0.8)
    # and a hit on the second GT (0.7). TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    gts = np.array([[50, 50, 20, 10, 0.0], [150, 150, 30, 10, 0.5]], dtype=np.float32)
    dets = np.array([[50, 50, 20, 10, 0.0, 0.9], [50, 50, 20, 10, 0.0, 0.8], [150, 150, 30, 10, 0.5, 0.7]],
                    dtype=np.float32)
    annotations = [{"bboxes": gts, "labels": np.array([0, 0]), "bboxes_ignore": np.zeros((0, 5), np.float32),
                    "labels_ignore": np.zeros(0, np.int64)}]
    result = patch_ap50([[dets, np.zeros((0, 6), np.float32)]], annotations, ("a", "b"))
    # VOC07 11-point: max precision at recall >= t; t in 0..0.5 -> 1 (6 points), t in 0.6..1 -> 2/3 (5 points).
    assert result["AP50_a"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert "AP50_b" not in result and result["mAP"] == pytest.approx(result["AP50_a"])


def test_pretrained_download_is_a_clear_error_offline(recipe, tmp_path, monkeypatch):
    from rotld_cli.engine.config import build_config
    from rotld_cli.recipes import load_recipe

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr("socket.create_connection", unreachable)
    cfg = build_config(load_recipe(str(recipe), ["model.backbone.pretrained=torchvision://resnet18"]))
    with pytest.raises(Exception, match=r"--pretrained PATH .* or --no-pretrained") as info:
        check_pretrained(cfg)
    assert "download.pytorch.org is unreachable" in str(info.value)
    local = tmp_path / "r18.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, local)
    check_pretrained(build_config(load_recipe(str(recipe), [f"model.backbone.pretrained={local}"])))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amp", "--device", "cpu"], "--amp: mixed precision (fp16) needs a CUDA GPU"),
        (["--resume"], "--resume: no latest.pth in"),
        (["--gpus", "4096"], "--gpus 4096: only "),
        (["--pretrained", "missing.pth"], "--pretrained missing.pth: no such file"),
        (["--set", "schedule.lrr=1"], "--set schedule.lrr=1: schedule.lrr: unknown key"),
    ],
)
def test_option_errors_are_one_line(recipe, tmp_path, capsys, args, message):
    code, _, err = run_cli(["train-teacher", str(recipe), "--work-dir", str(tmp_path / "w"), *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_an_existing_run_needs_resume(recipe, tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "latest.pth").write_bytes(b"x")
    code, _, err = run_cli(["train-teacher", str(recipe), "--work-dir", str(tmp_path / "w")], capsys)
    assert code == 2 and "already holds a run (latest.pth); pass --resume" in err
    assert (tmp_path / "w" / "latest.pth").read_bytes() == b"x"


def test_a_student_recipe_is_refused(split, tmp_path, capsys, recipe):
    from train_helpers import write_student_recipe

    student = write_student_recipe(tmp_path / "student.yaml", split, recipe)
    code, _, err = run_cli(["train-teacher", str(student), "--work-dir", str(tmp_path / "w")], capsys)
    assert code == 2 and "is a student recipe" in err and "rotld distill" in err
    assert not os.path.exists(tmp_path / "w")


def test_training_time_ap50_is_the_patch_loop_on_the_saved_checkpoint(full_run, recipe):
    """The val mAP logged during training == the one patch loop run on the epoch's saved checkpoint."""
    from mmrotate.datasets import build_dataset

    from rotld_cli.engine.config import build_config
    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.engine.patch_eval import patch_evaluator
    from rotld_cli.recipes import load_recipe

    work, _ = full_run
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    logged = next(r for r in records if r.get("mode") == "val")
    detector = EngineDetector.from_checkpoint(work / "epoch_2.pth", device="cpu")
    dataset = build_dataset(build_config(load_recipe(str(recipe))).data.val)
    metrics = patch_evaluator(dataset)(detector.model)
    assert set(metrics) == {k for k in logged if k == "mAP" or k.startswith("AP50_")}
    assert metrics == pytest.approx({k: logged[k] for k in metrics}, abs=1e-9)
