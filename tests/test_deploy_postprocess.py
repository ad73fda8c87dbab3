"""The engine-free ONNX runner's numpy steps against hand-computed cases (no torch, no engine)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rotld_cli.deploy.metadata import AnchorSettings, CoderSettings, DetectionSettings, InputSettings, ModelMetadata
from rotld_cli.deploy.onnx_detector import OnnxDetector
from rotld_cli.deploy.parity import Tolerance, compare_detections
from rotld_cli.deploy.postprocess import (
    base_anchors,
    decode,
    grid_anchors,
    integral,
    integral_deltas,
    multiclass_nms,
    top_k,
)
from rotld_cli.deploy.preprocess import collate, padded_shape, prepare_image, rescale_size
from rotld_cli.dota.polygons import best_begin_point, detections_to_task1
from rotld_cli.errors import RotldError

BINS = np.linspace(-2, 2, 9, dtype=np.float32)
ANGLE_BINS = np.linspace(-5, 2, 9, dtype=np.float32)


def meta(**test) -> ModelMetadata:
    return ModelMetadata(classes=["a", "b"], angle_version="oc", reg_max=8, integral_project=BINS.tolist(),
                         integral_angle_project=ANGLE_BINS.tolist(), num_anchors=9,
                         test_cfg=DetectionSettings(**test))


def test_integral_hand_cases() -> None:
    uniform = np.zeros((1, 9), dtype=np.float32)
    assert integral(uniform, BINS)[0] == pytest.approx(0.0, abs=1e-7)
    assert integral(uniform, ANGLE_BINS)[0] == pytest.approx(-1.5, abs=1e-6)  # method.md §1.3
    two = np.full((1, 9), -1e4, dtype=np.float32)
    two[0, 5], two[0, 6] = 0.0, math.log(3.0)  # probabilities 1/4 on 0.5, 3/4 on 1.0
    assert integral(two, BINS)[0] == pytest.approx(0.25 * 0.5 + 0.75 * 1.0, abs=1e-6)


def test_integral_deltas_layout() -> None:
    """dx|dy|dw|dh|dθ blocks of 9 logits: a one-hot in block k lands in column k."""
    logits = np.full((1, 45), -1e4, dtype=np.float32)
    for block, peak in enumerate([8, 0, 4, 6, 1]):
        logits[0, block * 9 + peak] = 0.0
    got = integral_deltas(logits, meta())
    np.testing.assert_allclose(got[0], [2.0, -2.0, 0.0, 1.0, -4.125], atol=1e-6)


def test_decode_hand_case_and_clamps() -> None:
    coder = CoderSettings()
    anchors = np.array([[10, 20, 8, 4, 0], [10, 20, 8, 4, 0], [90, 5, 8, 4, 0]], dtype=np.float32)
    deltas = np.array([[0.5, -0.25, math.log(2), 0, 0.3], [0, 0, 10, -10, -5], [2, -2, 0, 0, 0]], dtype=np.float32)
    got = decode(anchors, deltas, (50, 100), coder)
    np.testing.assert_allclose(got[0], [14, 19, 16, 4, 0.3], rtol=1e-6)
    # dw/dh clamped to ±|log(16/1000)|: 1000/16 = 62.5
    np.testing.assert_allclose(got[1], [10, 20, 8 * 62.5, 4 / 62.5, -5], rtol=1e-5)
    # centre clamped to [0, W-1] x [0, H-1]: 90 + 16 -> 99, 5 - 8 -> 0
    np.testing.assert_allclose(got[2], [99, 0, 8, 4, 0], rtol=1e-6)
    le90 = decode(anchors[:1], np.array([[0, 0, 0, 0, 2.0]], dtype=np.float32), None,
                  CoderSettings(angle_range="le90"))
    assert le90[0, 4] == pytest.approx(2.0 - math.pi, abs=1e-6)


def test_anchors_hand_case() -> None:
    """Stride 8, octave base 4, 3 scales, ratios 1/0.5/2: ratio-major, then scale; location-major grid."""
    settings = AnchorSettings(strides=[8], ratios=[1.0, 0.5, 2.0], octave_base_scale=4, scales_per_octave=3)
    base = base_anchors(8, settings)
    assert base.shape == (9, 4)
    np.testing.assert_allclose(base[0], [-16, -16, 16, 16])
    s1 = 32 * 2 ** (1 / 3)
    np.testing.assert_allclose(base[1], [-s1 / 2, -s1 / 2, s1 / 2, s1 / 2], rtol=1e-6)
    w, h = 32 * math.sqrt(2), 32 / math.sqrt(2)  # ratio 0.5 = h/w
    np.testing.assert_allclose(base[3], [-w / 2, -h / 2, w / 2, h / 2], rtol=1e-6)
    grid = grid_anchors(2, 3, 8, settings)
    assert grid.shape == (2 * 3 * 9, 5)
    np.testing.assert_allclose(grid[0], [0, 0, 32, 32, 0], atol=1e-5)
    np.testing.assert_allclose(grid[9], [8, 0, 32, 32, 0], atol=1e-5)  # next x location, same base anchor
    np.testing.assert_allclose(grid[3 * 9 + 3], [0, 8, w, h, 0], rtol=1e-6)  # second row, ratio 0.5


def test_top_k_by_best_class() -> None:
    scores = np.array([[0.1, 0.2], [0.9, 0.0], [0.3, 0.5], [0.05, 0.6]], dtype=np.float32)
    assert top_k(scores, 2).tolist() == [1, 3]
    assert top_k(scores, 9).tolist() == [1, 3, 2, 0]


def test_multiclass_nms_hand_case() -> None:
    """Same-class overlap suppressed, other class kept, score_thr strict, cap over all classes by score."""
    boxes = np.array([
        [50, 50, 20, 10, 0],    # 0
        [52, 50, 20, 10, 0],    # 1: IoU with 0 = 18*10/(2*200-180) = 0.818
        [200, 50, 20, 10, 0.5],  # 2: far away
    ], dtype=np.float32)
    scores = np.array([[0.9, 0.3], [0.8, 0.7], [0.05, 0.6]], dtype=np.float32)
    out = multiclass_nms(boxes, scores, DetectionSettings(score_thr=0.05, iou_thr=0.1, max_per_img=100))
    # class a: box 0 keeps, box 1 suppressed, box 2 at exactly score_thr is dropped
    np.testing.assert_allclose(out[0], [[50, 50, 20, 10, 0, 0.9]], rtol=1e-6)
    # class b: box 1 (0.7) suppresses box 0 (0.3); box 2 kept; best first
    np.testing.assert_allclose(out[1][:, 5], [0.7, 0.6], rtol=1e-6)
    np.testing.assert_allclose(out[1][:, 0], [52, 200])
    capped = multiclass_nms(boxes, scores, DetectionSettings(score_thr=0.05, iou_thr=0.1, max_per_img=2))
    assert [len(c) for c in capped] == [1, 1] and capped[1][0, 5] == pytest.approx(0.7)
    loose = multiclass_nms(boxes, scores, DetectionSettings(score_thr=0.05, iou_thr=0.9, max_per_img=100))
    assert len(loose[0]) == 2  # IoU 0.818 <= 0.9: both kept


def test_preprocess_resize_normalise_pad() -> None:
    settings = InputSettings(img_scale=[128, 128])
    assert rescale_size(200, 150, [128, 128]) == (128, 96)
    assert rescale_size(64, 64, [1024, 1024]) == (1024, 1024)  # the test pipeline also enlarges
    image = np.zeros((150, 200, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    prepared = prepare_image(image, settings)
    assert prepared.img_shape == (96, 128)
    np.testing.assert_allclose(prepared.scale_factor, [0.64, 0.64, 0.64, 0.64], rtol=1e-6)
    expected = [(30 - 123.675) / 58.395, (20 - 116.28) / 57.12, (10 - 103.53) / 57.375]  # RGB order
    np.testing.assert_allclose(prepared.pixels[5, 7], expected, rtol=1e-6)
    assert padded_shape((96, 128), settings) == (96, 128)
    assert padded_shape((97, 100), settings) == (128, 128)
    batch = collate([prepared, prepare_image(np.zeros((128, 128, 3), np.uint8), settings)], settings)
    assert batch.shape == (2, 3, 128, 128) and not batch[0, :, 96:].any()
    with pytest.raises(RotldError, match="does not fit this model's fixed input 64x64"):
        padded_shape((96, 128), InputSettings(fixed_size=64))


def test_best_begin_point_and_task1() -> None:
    square = np.array([[10, 10, 0, 10, 0, 0, 10, 0]], dtype=np.float64)  # starts at the bottom-right corner
    np.testing.assert_allclose(best_begin_point(square[0].tolist()), [0, 0, 10, 0, 10, 10, 0, 10])
    dets = detections_to_task1([[np.array([[5, 5, 10, 10, 0, 0.75]], np.float32), np.zeros((0, 6), np.float32)]],
                    ["P0001__1024__0___0"], ["a", "b"])
    assert dets["a"].image_ids == ["P0001__1024__0___0"] and dets["a"].scores.tolist() == [0.75]
    np.testing.assert_allclose(dets["a"].polys, [[0, 0, 10, 0, 10, 10, 0, 10]])
    assert len(dets["b"]) == 0


def test_compare_detections_tolerances() -> None:
    ref = [[np.array([[10, 10, 5, 5, 0.1, 0.9], [40, 40, 5, 5, 0.2, 0.051]], np.float32), np.zeros((0, 6))]]
    near = [[ref[0][0] + np.array([0.01, 0, 0, 0, 0, 5e-5], np.float32), np.zeros((0, 6))]]
    report = compare_detections(ref, near, ["a", "b"], score_thr=0.05)
    assert report.ok and report.matched == 2 and report.max_box_diff == pytest.approx(0.01, abs=1e-5)
    far = [[ref[0][0] + np.array([0.5, 0, 0, 0, 0, 0], np.float32), np.zeros((0, 6))]]
    assert not compare_detections(ref, far, ["a", "b"], score_thr=0.05).ok
    assert compare_detections(ref, far, ["a", "b"], score_thr=0.05, tol=Tolerance(box=1.0)).ok
    at_threshold = [[ref[0][0][:1], np.zeros((0, 6))]]  # the 0.051 box dropped by a hair: tolerated
    report = compare_detections(ref, at_threshold, ["a", "b"], score_thr=0.05, tol=Tolerance(score=2e-3))
    assert report.ok and report.borderline == 1 and report.ties["score threshold"] == 1
    missing = compare_detections(ref, [[ref[0][0][1:], np.zeros((0, 6))]], ["a", "b"], score_thr=0.05)
    assert not missing.ok and "found by one backend only" in missing.problems[0]
    assert "e.g. engine [10.0, 10.0, 5.0, 5.0, 0.1, 0.9], nearest onnxruntime [40.0" in missing.problems[0]
    nothing = compare_detections([[np.zeros((0, 6))] * 2], [[np.zeros((0, 6))] * 2], ["a", "b"], score_thr=0.05)
    assert nothing.ok and not nothing.exercised and nothing.matched == 0


def _tied_scenes() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """NMS inputs with float-level ties (a barely trained model's scores), with the same scores as a second
    backend computes them (torch and onnxruntime differ by ~1e-7): (boxes, scores, other scores) per image."""
    # image 1: two boxes tied for the NMS (IoU 0.67); a third overlaps only the second (IoU 0.11), so it is
    # suppressed exactly when the second wins; a fourth a hair above the score threshold
    boxes = np.array([[100, 100, 40, 20, 0], [108, 100, 40, 20, 0], [140, 100, 40, 20, 0], [500, 500, 30, 30, 0]],
                     np.float32)  # fmt: skip
    scores = np.array([[0.6 + 1e-7, 0], [0.6, 0], [0.4, 0], [0.05 + 5e-8, 0]])
    other = scores.copy()
    other[0, 0], other[1, 0], other[3, 0] = 0.6, 0.6 + 1e-7, 0.05 - 5e-8
    first = (boxes, scores.astype(np.float32), other.astype(np.float32))
    # image 2: six boxes apart, tied at 0.3; the cap keeps four of them
    boxes = np.array([[300, 100 + 30 * i, 20, 10, 0.3] for i in range(6)], np.float32)
    scores = np.column_stack([np.zeros(6), 0.3 + 1e-8 * np.arange(6)])
    other = scores + np.random.default_rng(0).uniform(-2e-7, 2e-7, 6)[:, None] * (scores > 0)
    return [first, (boxes, scores.astype(np.float32), other.astype(np.float32))]


def test_parity_tolerates_float_ties_at_threshold_cap_and_nms_order_but_not_real_differences() -> None:
    """Two backends whose scores differ by ~1e-7 break ties differently: at the NMS order (and what the
    swapped box suppresses), at max_per_img, at score_thr. Those are explained; other differences fail."""
    settings = DetectionSettings(score_thr=0.05, iou_thr=0.1, max_per_img=4)
    engine, onnx = [], []
    for boxes, scores, other in _tied_scenes():
        engine.append(multiclass_nms(boxes, scores, settings))
        onnx.append(multiclass_nms(boxes, other, settings))
    assert [len(d) for d in engine[0]] == [3, 0] and [len(d) for d in onnx[0]] == [1, 0]
    assert engine[0][0][0, 0] == 100 and onnx[0][0][0, 0] == 108  # the NMS winner swapped
    assert sorted(engine[1][1][:, 1]) != sorted(onnx[1][1][:, 1])  # the cap kept other boxes
    kwargs = dict(iou_thr=settings.iou_thr, max_per_img=settings.max_per_img)
    report = compare_detections(engine, onnx, ["a", "b"], 0.05, **kwargs)
    assert report.ok, report.problems
    assert report.ties == {"score threshold": 1, "max_per_img": 2, "nms_pre": 0, "NMS order": 3}
    assert report.matched == 3 and report.exercised
    # the rules the check had before: these ties were failures
    assert not compare_detections(engine, onnx, ["a", "b"], 0.05).ok
    # a detection one backend misses without a tie still fails, however many ties surround it
    lost = [[onnx[0][0][:0], onnx[0][1]], onnx[1]]
    failed = compare_detections(engine, lost, ["a", "b"], 0.05, **kwargs)
    assert not failed.ok
    assert failed.problems[0].startswith("image 0, a: 2 detection(s) found by one backend only, e.g. engine [100.0")
    # a tie at a level's nms_pre cut explains what scores below it, only where the caller found such a tie
    low = [[np.zeros((0, 6)), np.array([[300, 300, 20, 10, 0.3, 0.0101]], np.float32)]]
    none = [[np.zeros((0, 6)), np.zeros((0, 6))]]
    assert not compare_detections(low, none, ["a", "b"], 0.0).ok
    assert compare_detections(low, none, ["a", "b"], 0.0, topk_ties=[0.0102]).ties["nms_pre"] == 1
    assert not compare_detections(low, none, ["a", "b"], 0.0, topk_ties=[0.0099]).ok


def test_metadata_round_trip_and_bad_files(tmp_path) -> None:
    original = meta(score_thr=0.3)
    again = ModelMetadata.from_props({"rotld": original.to_json()})
    assert again == original
    with pytest.raises(RotldError, match="not a rotld export"):
        ModelMetadata.from_props({}, "x.onnx")
    with pytest.raises(RotldError, match="malformed rotld metadata"):
        ModelMetadata.from_props({"rotld": "{"}, "x.onnx")
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RotldError, match=r"bad\.onnx: not a loadable ONNX model") as exc:
        OnnxDetector.from_file(bad)
    assert "\n" not in str(exc.value)


def test_runner_modules_import_no_engine(repo_root) -> None:
    """The whole engine-free layer (and the `rotld export --help` path) loads without torch/mmcv/mmdet/mmrotate."""
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "import rotld_cli.deploy.onnx_detector, rotld_cli.deploy.split_inference, rotld_cli.deploy.parity\n"
        "from rotld_cli.cli import main\n"
        "try:\n    main(['export', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'mmcv', 'mmdet', 'mmrotate'})))"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "rotld export" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
