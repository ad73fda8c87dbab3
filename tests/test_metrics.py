"""DOTA Task1 AP: hand-computed cases for each devkit rule, and equality with the devkit port."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from devkit_reference import evaluate_all
from devkit_reference import iou_poly as reference_iou
from devkit_reference import voc_ap as reference_voc_ap

from rotld_cli.dota.classes import DOTA_V1_0
from rotld_cli.dota.formats import format_task1_line, read_label_file
from rotld_cli.evaluation import EvaluateOptions, evaluate_results
from rotld_cli.evaluation.metrics import (
    SEED_THRESHOLDS,
    THRESHOLDS,
    ClassGroundTruth,
    evaluate_class,
    seed_compat_means,
    voc_ap,
)


def square(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def gt_of(*images: list[tuple[list[float], int]]) -> ClassGroundTruth:
    """One (polys, difficulty flags) entry per image from [(quad, difficult), ...] lists."""
    return ClassGroundTruth.from_images(
        [
            (np.array([q for q, _ in objs], dtype=float).reshape(-1, 8), np.array([d for _, d in objs]))
            for objs in images
        ]
    )


def run(gt: ClassGroundTruth, dets: list[tuple[int, float, list[float]]], thresholds=THRESHOLDS, voc07=True):
    image = np.array([d[0] for d in dets], dtype=np.int64)
    scores = np.array([d[1] for d in dets], dtype=float)
    polys = np.array([d[2] for d in dets], dtype=float).reshape(-1, 8)
    return evaluate_class(scores, image, polys, gt, thresholds, voc07)


# --- voc_ap ---------------------------------------------------------------------------------


def test_voc07_eleven_points_by_hand():
    # recall reaches 0.5 at precision 1, then 1.0 at precision 0.5: 6 points of 1 and 5 of 0.5
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(8.5 / 11, abs=1e-15)


def test_voc07_recall_point_float_quirk():
    # 3 of 10 found: recall 3/10 == 0.3 misses the devkit's point 0.30000000000000004
    rec = np.cumsum([1.0, 1.0, 1.0]) / 10.0
    assert rec[-1] == 0.3
    assert voc_ap(rec, np.ones(3)) == pytest.approx(3 / 11, abs=1e-15)
    assert reference_voc_ap(rec, np.ones(3), True) == voc_ap(rec, np.ones(3))


def test_area_metric_by_hand():
    # envelope: precision 1 up to recall 0.5, then 2/3 up to 1.0 -> 0.5 + 0.5 * 2/3
    rec, prec = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(0.5 + 1 / 3, abs=1e-15)


def test_voc_ap_equals_the_devkit_on_random_curves():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, npos = int(rng.integers(0, 40)), int(rng.integers(1, 30))
        tp = (rng.uniform(size=n) < 0.5).astype(float)
        tp[np.cumsum(tp) > npos] = 0
        cum_tp, cum_fp = np.cumsum(tp), np.cumsum(1 - tp)
        rec = cum_tp / float(npos)
        prec = cum_tp / np.maximum(cum_tp + cum_fp, np.finfo(np.float64).eps)
        assert voc_ap(rec, prec, False) == reference_voc_ap(rec, prec, False)
        # the same sum, clipped to 1 where eleven 1/11 round to 1 + 2^-52
        assert voc_ap(rec, prec, True) == min(reference_voc_ap(rec, prec, True), 1.0)


# --- matching rules -------------------------------------------------------------------------


def test_perfect_detector_scores_one_at_every_threshold():
    gt = gt_of([(square(0, 0, 10), 0), (square(50, 50, 20), 0)], [(square(5, 5, 30), 0)])
    dets = [(0, 0.9, square(0, 0, 10)), (0, 0.8, square(50, 50, 20)), (1, 0.7, square(5, 5, 30))]
    assert run(gt, dets) == [1.0] * 10


def test_known_pr_curve_gives_its_eleven_point_ap():
    # 4 GTs; by score: TP, FP (background), TP, FP, TP -> rec .25 .25 .5 .5 .75, prec 1 .5 .667 .5 .6
    gt = gt_of([(square(100 * k, 0, 10), 0) for k in range(4)])
    dets = [
        (0, 0.9, square(0, 0, 10)),
        (0, 0.8, square(0, 500, 10)),
        (0, 0.7, square(100, 0, 10)),
        (0, 0.6, square(0, 700, 10)),
        (0, 0.5, square(200, 0, 10)),
    ]
    # points 0..0.2: 1; 0.3..0.5: 2/3; 0.6, 0.7: 0.6; 0.8..1.0: 0
    expected = (3 * 1.0 + 3 * (2 / 3) + 2 * 0.6) / 11
    assert run(gt, dets)[0] == pytest.approx(expected, abs=1e-12)


def test_duplicate_detection_is_a_false_positive():
    # 2 GTs; TP, duplicate (FP), TP -> rec .5 .5 1, prec 1 .5 .667
    gt = gt_of([(square(0, 0, 10), 0), (square(100, 0, 10), 0)])
    dets = [(0, 0.9, square(0, 0, 10)), (0, 0.8, square(0, 0, 10)), (0, 0.7, square(100, 0, 10))]
    assert run(gt, dets)[0] == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)


@pytest.mark.parametrize("flag", [1, 2])
def test_match_to_a_difficult_gt_is_neither_tp_nor_fp(flag):
    # the difficult GT is not counted in npos, and its match does not lower precision
    gt = gt_of([(square(0, 0, 10), flag), (square(100, 0, 10), 0)])
    dets = [(0, 0.9, square(0, 0, 10)), (0, 0.8, square(0, 0, 10)), (0, 0.7, square(100, 0, 10))]
    assert run(gt, dets) == [1.0] * 10


def test_best_gt_taken_means_false_positive_even_if_another_gt_overlaps():
    # A (IoU 1 with G1), then B (IoU 0.81 with G1, 0.11 with G2): B's best GT is taken -> FP;
    # the devkit does not fall back to G2. 2 GTs, tp 1 0 -> rec .5 .5, prec 1 .5
    g1, g2 = square(0, 0, 10), square(9, 0, 10)
    gt = gt_of([(g1, 0), (g2, 0)])
    dets = [(0, 0.9, g1), (0, 0.8, [0, 0, 9, 0, 9, 9, 0, 9])]
    assert run(gt, dets)[0] == pytest.approx(6 / 11, abs=1e-12)


def test_best_match_to_a_difficult_gt_is_ignored_even_if_a_normal_gt_overlaps():
    difficult, normal = square(0, 0, 10), square(8, 0, 10)
    gt = gt_of([(difficult, 1), (normal, 0)])
    # IoU 0.85 with the difficult GT, 0.08 with the normal one: ignored, so recall stays 0
    dets = [(0, 0.9, [0, 0, 10, 0, 10, 8.5, 0, 8.5])]
    assert run(gt, dets) == [0.0] * 10


def test_iou_must_be_strictly_greater_than_the_threshold():
    # squares of side 3 shifted by 1: IoU (3-1)/(3+1) = 0.5 exactly -> FP at 0.5
    gt = gt_of([(square(0, 0, 3), 0)])
    iou = reference_iou(square(0, 0, 3), square(1, 0, 3))
    assert iou == 0.5
    assert run(gt, [(0, 0.9, square(1, 0, 3))])[0] == 0.0
    assert run(gt, [(0, 0.9, square(1, 0, 3))], thresholds=(0.49,)) == [1.0]


def test_nan_iou_of_two_degenerate_quads_is_a_false_positive():
    point = [5.0, 5.0] * 4
    gt = gt_of([(point, 0), (square(100, 100, 10), 0)])
    assert math.isnan(reference_iou(point, point))
    aps = run(gt, [(0, 0.9, point), (0, 0.8, square(100, 100, 10))])
    # FP then TP -> rec 0 .5, prec 0 .5: 6 points of 0.5
    assert aps[0] == pytest.approx(6 * 0.5 / 11, abs=1e-12)


def test_equal_scores_keep_file_order():
    # A (IoU 0.6) before B (IoU 0.9), same score, one GT: at 0.7 A is FP then B TP
    g = square(0, 0, 10)
    a, b = [0, 0, 10, 0, 10, 6, 0, 6], [0, 0, 10, 0, 10, 9, 0, 9]
    gt = gt_of([(g, 0)])
    assert run(gt, [(0, 0.5, a), (0, 0.5, b)], thresholds=(0.5, 0.7)) == pytest.approx([1.0, 0.5], abs=1e-15)
    assert run(gt, [(0, 0.5, b), (0, 0.5, a)], thresholds=(0.5, 0.7)) == [1.0, 1.0]


def test_images_without_detections_still_count_their_gts():
    gt = gt_of([(square(0, 0, 10), 0)], [(square(0, 0, 10), 0)])
    assert run(gt, [(0, 0.9, square(0, 0, 10))])[0] == pytest.approx(6 / 11, abs=1e-12)


def test_class_without_gt_has_ap_zero():
    assert run(gt_of([]), [(0, 0.9, square(0, 0, 10))]) == [0.0] * 10
    assert run(gt_of([(square(0, 0, 10), 1)]), [(0, 0.9, square(0, 0, 10))]) == [0.0] * 10


def test_seed_compat_accumulator():
    per_threshold = [[0.6, 0.3], [0.5, 0.2], [0.1, 0.1]]
    m = [0.45, 0.35, 0.1]
    reported = seed_compat_means(per_threshold)
    assert reported[0] == pytest.approx(m[0])
    assert reported[1] == pytest.approx(m[1] + reported[0] / 2)
    assert reported[2] == pytest.approx(m[2] + reported[1] / 2)
    assert SEED_THRESHOLDS[7] == 0.8500000000000001 and THRESHOLDS[7] == 0.85


# --- equality with the devkit port ------------------------------------------------------------


def _cached_reference_iou():
    cache: dict = {}

    def iou(g, d):
        key = (tuple(g), tuple(d))
        if key not in cache:
            cache[key] = reference_iou(g, d)
        return cache[key]

    return iou


def _write_case(
    root: Path, labels: dict[str, list[str]], dets: dict[str, list[tuple[str, float, np.ndarray]]]
) -> EvaluateOptions:
    (root / "labelTxt").mkdir(parents=True)
    (root / "results").mkdir()
    for name, lines in labels.items():
        (root / "labelTxt" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "imageset.txt").write_text("\n".join(labels) + "\n")
    for cls in DOTA_V1_0:
        rows = dets.get(cls, [])
        (root / "results" / f"Task1_{cls}.txt").write_text(
            "".join(format_task1_line(i, s, p) + "\n" for i, s, p in rows)
        )
    return EvaluateOptions(results=root / "results", ann_dir=root / "labelTxt", imageset=root / "imageset.txt")


def _compare_with_reference(root: Path, options: EvaluateOptions, voc07: bool = True) -> None:
    options.metric = "voc07" if voc07 else "area"
    report = evaluate_results(options)
    ref = evaluate_all(
        str(root / "results" / "Task1_{:s}.txt"),
        str(root / "labelTxt" / "{:s}.txt"),
        str(root / "imageset.txt"),
        DOTA_V1_0,
        THRESHOLDS,
        voc07,
        _cached_reference_iou(),
    )
    for k, thr in enumerate(THRESHOLDS):
        for c, cls in enumerate(DOTA_V1_0):
            ours = report["per_class"][cls][f"AP{round(thr * 100)}"]
            assert abs(ours - ref[k][c]) <= 1e-12, (cls, thr, ours, ref[k][c])
        assert report[f"AP{round(thr * 100)}"] == pytest.approx(sum(ref[k]) / 15, abs=1e-12)


def test_real_labels_with_jittered_detections_match_the_devkit(dota_samples: Path, tmp_path: Path):
    rng = np.random.default_rng(7)
    labels, dets = {}, {}
    for path in sorted((dota_samples / "labelTxt").glob("*.txt")):
        labels[path.stem] = path.read_text().splitlines()
        for obj in read_label_file(path).objects:
            for _ in range(int(rng.integers(0, 3))):
                sigma = rng.choice([0.3, 1.5, 5.0])
                cls = obj.name if rng.uniform() < 0.9 else DOTA_V1_0[int(rng.integers(15))]
                dets.setdefault(cls, []).append(
                    (path.stem, float(np.round(rng.uniform(), 2)), obj.poly + rng.normal(0, sigma, 8))
                )
        for _ in range(20):
            x, y, w, h = *rng.uniform(0, 1000, 2), *rng.uniform(5, 80, 2)
            dets.setdefault(DOTA_V1_0[int(rng.integers(15))], []).append(
                (path.stem, float(rng.uniform()), np.array([x, y, x + w, y, x + w, y + h, x, y + h]))
            )
    assert len(labels) == 7
    options = _write_case(tmp_path, labels, dets)
    _compare_with_reference(tmp_path, options)


def _adversarial_case(rng: np.random.Generator) -> tuple[dict, dict]:
    """Exact-threshold IoUs, duplicate GTs (argmax ties), degenerate and self-intersecting quads,
    difficult flags 0/1/2, tied scores, GT-less classes and detections on GT-less images."""
    # side s, shift d: IoU (s - d) / (s + d) hits each threshold exactly
    exact = [(3, 1), (31, 9), (4, 1), (33, 7), (17, 3), (7, 1), (9, 1), (37, 3), (19, 1), (39, 1)]
    classes = ["plane", "ship", "harbor"]
    labels, dets = {}, {}
    for k in range(4):
        name = f"I{k}"
        lines = ["imagesource:GoogleEarth", "gsd:0.5"]
        for _ in range(int(rng.integers(3, 9))):
            cls = classes[int(rng.integers(3))]
            flag = int(rng.choice([0, 0, 0, 1, 2]))
            kind = rng.integers(0, 5)
            x, y = rng.integers(0, 400, 2).astype(float)
            if kind == 0:
                s, d = exact[int(rng.integers(len(exact)))]
                g, det = square(x, y, s), square(x + d, y, s)
            elif kind == 1:
                g = np.round(np.array(square(x, y, 20)) + rng.normal(0, 2, 8)).tolist()
                det = (np.array(g) + rng.normal(0, 1.5, 8)).tolist()
            elif kind == 2:
                g = (np.tile([x, y], 4) + rng.integers(0, 3, 8)).tolist()  # collinear / repeated points
                det = (np.tile([x, y], 4) + rng.integers(0, 3, 8)).tolist()
            elif kind == 3:
                g = [x, y, x + 10, y + 10, x + 10, y, x, y + 10]  # bow tie
                det = square(x, y, 10)
            else:
                g = square(x, y, 12)
                det = square(x + 1, y + 1, 12)
            copies = 2 if rng.uniform() < 0.3 else 1  # duplicate GTs: exact argmax ties
            for _ in range(copies):
                lines.append(" ".join(f"{v:g}" for v in g) + f" {cls} {flag}")
            for _ in range(int(rng.integers(1, 3))):
                dets.setdefault(cls, []).append(
                    (name, float(rng.choice([0.3, 0.5, 0.5, 0.9])), np.array(det, dtype=float))
                )
        labels[name] = lines
    dets.setdefault("helicopter", []).append(("I0", 0.4, np.array(square(1, 1, 5), dtype=float)))
    return labels, dets


@pytest.mark.parametrize("seed", range(6))
def test_adversarial_random_cases_match_the_devkit(seed: int, tmp_path: Path):
    rng = np.random.default_rng(1000 + seed)
    labels, dets = _adversarial_case(rng)
    options = _write_case(tmp_path, labels, dets)
    _compare_with_reference(tmp_path, options, voc07=seed % 2 == 0)
