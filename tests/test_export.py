"""`rotld export`: the demo --quick student as ONNX, run without the engine, same detections as torch.

The student is trained exactly as `rotld demo --quick` trains it (its recipe keeps every
detection down to score 0, at most 50 per patch), so the export's own parity check and the
comparisons here cover thousands of boxes, not an empty list.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")
ort = pytest.importorskip("onnxruntime")

import cv2  # noqa: E402

from rotld_cli.checkpoints import sha256_file  # noqa: E402
from rotld_cli.cli import main  # noqa: E402
from rotld_cli.deploy.metadata import ModelMetadata  # noqa: E402
from rotld_cli.deploy.parity import compare_detections  # noqa: E402
from rotld_cli.dota.formats import read_task1_file  # noqa: E402

ENGINE = ("torch", "mmcv", "mmdet", "mmrotate")

# Runs the exported model in a fresh interpreter where importing any engine module fails.
NO_ENGINE_RUN = """
import importlib.abc, json, sys
import numpy as np

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {engine}:
            raise ImportError(f"{{name}} is blocked: this run must not need the engine")
        return None

sys.meta_path.insert(0, Blocker())
try:
    import mmcv  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the blocker did not block mmcv")

import cv2
from rotld_cli.deploy.onnx_detector import OnnxDetector
from rotld_cli.deploy.split_inference import detect_split_onnx

model, images, out, split, task1, predicted = sys.argv[1:7]
detector = OnnxDetector.from_file(model)
arrays = {{}}
for i, path in enumerate(json.loads(images)):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    for c, boxes in enumerate(detector.detect([image])[0]):
        arrays[f"{{i}}_{{c}}"] = boxes
np.savez(out, **arrays)
detect_split_onnx(model, split, task1)
from rotld_cli.cli import main  # `rotld predict MODEL.onnx`: the whole command, engine-free
try:
    main(["predict", model, split, "--out", predicted, "--sizes", "128", "--gaps", "0", "--json"])
except SystemExit as exc:
    if exc.code:
        raise
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {engine})))
"""


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def demo_student(tmp_path_factory) -> dict:
    """The `rotld demo --quick` data, split, teacher and distilled student (1 iteration each)."""
    from rotld_cli.demo import MODELS, QUICK, make_data, split_data, train_model

    work = tmp_path_factory.mktemp("export-demo")
    make_data(work, QUICK)
    split_data(work, QUICK)
    models = {m.key: m for m in MODELS}
    teacher, _ = train_model(work, QUICK, models["teacher"], "cpu")
    student, _ = train_model(work, QUICK, models["student"], "cpu", teacher=teacher)
    val = work / "split" / "val" / "images"
    return {"work": work, "student": student, "val": val, "patches": sorted(val.glob("*.png"))}


@pytest.fixture(scope="module")
def exported(demo_student, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx") / "student.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exc:
        main(["export", str(demo_student["student"]), str(out), "--check-images", str(demo_student["val"]), "--json"])
    assert exc.value.code == 0
    return out, json.loads(stdout.getvalue())


def test_export_writes_a_self_describing_model(demo_student, exported) -> None:
    out, payload = exported
    parity = payload["parity"]
    assert parity["engine_detections"] > 50  # the demo student keeps boxes down to score 0
    assert parity["matched"] == parity["engine_detections"] == parity["onnx_detections"]
    assert parity["max_box_diff"] <= 0.05 and parity["max_score_diff"] <= 1e-4
    assert payload["sha256"] == sha256_file(out) and payload["opset"] == 17 and payload["input"] == "dynamic"

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    state = torch.load(demo_student["student"], map_location="cpu", weights_only=True)
    assert meta.source_sha256 == sha256_file(demo_student["student"])
    assert meta.classes == list(state["meta"]["classes"]) and meta.angle_version == "oc"
    assert meta.integral_project == state["state_dict"]["bbox_head.integral.project"].tolist()
    assert meta.integral_angle_project == state["state_dict"]["bbox_head.integral_angle.project"].tolist()
    assert (meta.test_cfg.score_thr, meta.test_cfg.max_per_img) == (0.0, 50)  # the demo --quick overrides
    assert meta.input.mean == [123.675, 116.28, 103.53] and meta.input.size_divisor == 32
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]


def test_onnx_model_runs_without_the_engine_and_matches_torch(demo_student, exported, tmp_path, repo_root) -> None:
    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.engine.infer import infer_split

    out, _ = exported
    patches = [str(p) for p in demo_student["patches"]]
    # Not the patch size: exercises the resize and rescale. 256x192 resizes to 128x96, which needs no padding:
    # over zero padding a 1-iteration model gives many anchors bit-equal scores, and torch's topk/sort and
    # numpy break such ties differently (real, trained models on real images do not tie).
    odd = tmp_path / "odd.png"
    cv2.imwrite(str(odd), cv2.resize(cv2.imread(patches[0]), (256, 192)))
    images = [*patches, str(odd)]
    script = NO_ENGINE_RUN.format(engine=set(ENGINE))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out), json.dumps(images), str(tmp_path / "onnx.npz"),
         str(demo_student["val"]), str(tmp_path / "onnx_task1"), str(tmp_path / "onnx_predict")],
        cwd=repo_root, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []

    engine = EngineDetector.from_checkpoint(demo_student["student"], device="cpu")
    ours = engine.detect([cv2.imread(p, cv2.IMREAD_COLOR) for p in images])
    saved = np.load(tmp_path / "onnx.npz")
    theirs = [[saved[f"{i}_{c}"] for c in range(len(engine.classes))] for i in range(len(images))]
    report = compare_detections(ours, theirs, engine.classes, engine.test_cfg.score_thr)
    assert report.ok, report.problems
    assert report.matched == report.reference_total == sum(len(b) for per in ours for b in per) > 100
    assert sum(len(b) for b in ours[-1]) > 0  # the resized image has detections too

    # Task1 files of the engine-free split inference equal the engine's (polygons as mmrotate writes them)
    infer_split(demo_student["student"], demo_student["val"], out_dir=tmp_path / "engine_task1", device="cpu")
    assert_same_task1(tmp_path / "engine_task1", tmp_path / "onnx_task1", engine.classes)
    # and `rotld predict` gives the same detections from the .onnx file as from the checkpoint
    code = subprocess.run([sys.executable, "-m", "rotld_cli", "predict", str(demo_student["student"]),
                           str(demo_student["val"]), "--out", str(tmp_path / "pth_predict"), "--sizes", "128",
                           "--gaps", "0", "--device", "cpu"], cwd=repo_root, capture_output=True, text=True,
                          timeout=600).returncode  # fmt: skip
    assert code == 0
    assert_same_task1(tmp_path / "pth_predict", tmp_path / "onnx_predict", engine.classes)


def assert_same_task1(dir_a: Path, dir_b: Path, classes) -> None:
    """Every Task1 line has a partner within %.2f rounding of the ~1e-4 px backend differences, both ways."""
    for cls in classes:
        a = read_task1_file(dir_a / f"Task1_{cls}.txt")
        b = read_task1_file(dir_b / f"Task1_{cls}.txt")
        assert sorted(a.image_ids) == sorted(b.image_ids)
        for image_id in set(a.image_ids):
            rows_a = np.column_stack([a.scores, a.polys])[np.array(a.image_ids) == image_id]
            rows_b = np.column_stack([b.scores, b.polys])[np.array(b.image_ids) == image_id]
            gap = np.abs(rows_a[:, None, :] - rows_b[None, :, :]).max(axis=2)
            assert gap.min(axis=1).max() <= 0.02 and gap.min(axis=0).max() <= 0.02


def test_numpy_postprocess_equals_mmrotate_on_random_maps() -> None:
    """`detections_single` vs the head's own `get_bboxes` (top-k, integral, decode, clamp, rescale, NMS, cap)."""
    from rotld_cli.deploy.metadata import AnchorSettings, DetectionSettings
    from rotld_cli.deploy.postprocess import detections_single
    from rotld_cli.engine import load_engine

    load_engine()
    from mmcv import ConfigDict
    from mmrotate.models import build_head

    head = build_head(dict(
        type="RotatedRetinaHeadDistribution", num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
        reg_max=8, anchor_generator=dict(type="RotatedAnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                         ratios=[1.0, 0.5, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type="DeltaXYWHAOBBoxCoder", angle_range="oc", norm_factor=None, edge_swap=False,
                        proj_xy=False, target_means=(0.0,) * 5, target_stds=(1.0,) * 5),
    ))  # fmt: skip
    cfg = ConfigDict(nms_pre=60, score_thr=0.3, nms=dict(iou_thr=0.1), max_per_img=40)
    generator = torch.Generator().manual_seed(0)
    sizes = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]  # a 96x128 padded input
    cls_maps = [torch.randn(1, 27, h, w, generator=generator) * 2 for h, w in sizes]
    reg_maps = [torch.randn(1, 405, h, w, generator=generator) * 3 for h, w in sizes]
    img_shape, scale = (90, 120, 3), np.array([0.5, 0.25, 0.5, 0.25], dtype=np.float32)
    (boxes, labels), = head.get_bboxes(cls_maps, reg_maps, [{"img_shape": img_shape, "scale_factor": scale}],
                                       cfg=cfg, rescale=True)
    theirs = [boxes[labels == c].numpy() for c in range(3)]
    meta = ModelMetadata(
        classes=["a", "b", "c"], angle_version="oc", reg_max=8, integral_project=head.integral.project.tolist(),
        integral_angle_project=head.integral_angle.project.tolist(), num_anchors=9,
        test_cfg=DetectionSettings(nms_pre=60, score_thr=0.3, iou_thr=0.1, max_per_img=40), anchors=AnchorSettings(),
    )  # fmt: skip
    ours = detections_single([c[0].sigmoid().permute(1, 2, 0).numpy() for c in cls_maps],
                             [r[0].permute(1, 2, 0).numpy() for r in reg_maps], img_shape[:2], scale, meta)
    assert sum(len(t) for t in theirs) == 40  # the cap is reached: ordering across classes matters
    report = compare_detections([theirs], [ours], meta.classes, 0.3)
    assert report.ok, report.problems
    assert report.max_box_diff < 1e-3 and report.max_score_diff == 0.0


def test_fixed_size_export_and_too_small_size(demo_student, tmp_path, capsys) -> None:
    """--size 160 > the test scale 128: the graph takes 160², images are padded to it (the engine too, for
    the parity check, which must pass on the demo student's dense detections)."""
    out = tmp_path / "fixed.onnx"
    code, stdout, err = run(["export", demo_student["student"], out, "--size", "160", "--check-images",
                             demo_student["val"], "--json"], capsys)  # fmt: skip
    assert code == 0, err
    payload = json.loads(stdout)
    assert payload["input"] == 160 and payload["parity"]["matched"] == payload["parity"]["engine_detections"] > 50
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 160, 160]
    code, _, err = run(["export", demo_student["student"], tmp_path / "small.onnx", "--size", "64"], capsys)
    assert code == 2 and "--size 64 is smaller than the model's test scale 128" in err
    assert not (tmp_path / "small.onnx").exists()


def test_parity_failure_writes_nothing(demo_student, tmp_path, capsys) -> None:
    out = tmp_path / "strict.onnx"
    out.write_bytes(b"the user's file")
    code, _, err = run(["export", demo_student["student"], out, "--check-count", "1"], capsys)
    assert code == 2 and "exists; pass --overwrite to replace it" in err  # never replaced silently
    code, _, err = run(["export", demo_student["student"], out, "--score-tol", "0", "--check-count", "1",
                        "--overwrite"], capsys)  # fmt: skip
    assert code == 1
    assert "not written, onnxruntime disagrees with torch beyond the tolerance" in err
    assert "--check-images DIR" in err  # what to do
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out.read_bytes() == b"the user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["strict.onnx"]  # no temporary file left behind


def test_a_parity_check_that_matched_nothing_says_so(demo_student, tmp_path, capsys) -> None:
    """A model that detects nothing on the check images (score_thr 0.999 here; a 1-epoch student at 0.05)
    exports, but the check compared only the raw head outputs, and the user is told so."""
    import yaml

    stored = torch.load(demo_student["student"], map_location="cpu", weights_only=True)["meta"]["recipe"]
    recipe = yaml.safe_load(stored)
    recipe["model"]["test"]["score_thr"] = 0.999
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(recipe))
    code, stdout, err = run(["export", demo_student["student"], tmp_path / "m.onnx", "--recipe",
                             tmp_path / "strict.yaml", "--check-count", "1", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["parity"]["exercised"] is False and json.loads(stdout)["parity"]["matched"] == 0
    assert "the parity check matched no detection: only the raw head outputs were compared" in err


def test_corrupt_and_foreign_checkpoints_are_one_line_errors(tmp_path, capsys) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(os.urandom(2048))
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, foreign)
    cases = {corrupt: "not a PyTorch checkpoint", foreign: "no recipe in the checkpoint's metadata"}
    for checkpoint, message in cases.items():
        out = tmp_path / f"{checkpoint.stem}.onnx"
        code, _, err = run(["export", checkpoint, out], capsys)
        assert code == 1 and message in err and str(checkpoint) in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()
    code, _, err = run(["export", foreign, tmp_path / "model.pt"], capsys)
    assert code == 2 and "must end in .onnx" in err


def test_bench_runs_and_both_backends_agree(demo_student, capsys) -> None:
    """`bench/export.py --quick` end to end: both parts run; the AP part on the demo --quick student."""
    from bench.export import main as bench_main

    bench_main(["--quick", "--patches", "2", "--threads", "1", "--demo-dir", str(demo_student["work"])])
    out = capsys.readouterr().out
    assert "onnxruntime / torch:" in out and "2 patches of 128x128 px" in out
    assert "(must be <= 0.1: met)" in out
    merged = [line for line in out.splitlines() if "merged detections" in line]
    assert len(merged) == 2 and merged[0].split("(")[-1] == merged[1].split("(")[-1]  # same detection count


def test_bench_predict_backends_run_and_both_nms_agree(demo_student, tmp_path, capsys, dota_samples) -> None:
    """`bench/predict_backends.py` end to end: the NMS table and .pth/.onnx with either NMS (identical Task1)."""
    from bench.predict_backends import backend_speed, nms_speed
    from rotld_cli.dota.split import SplitParams

    nms_speed(dota_samples, repeats=1)
    paths = demo_student["patches"][:2]
    backend_speed(tmp_path, paths, demo_student["student"], SplitParams(sizes=(96,), gaps=(32,)), 1, 1)
    out = capsys.readouterr().out
    assert "P0706 x50 (536 objects), per class" in out and " NO" not in out
    assert out.count("Task1 files identical: yes") == 2
    for backend in (".pth (torch engine)", ".onnx (onnxruntime)"):
        assert f"{backend}: NMS" in out
