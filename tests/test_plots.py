"""PR curves from the devkit's TP/FP marks (hand-computed case, real labels) and the evaluation figures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rotld_cli.dota.classes import DOTA_V1_0
from rotld_cli.dota.formats import Task1Detections, read_label_file, write_task1_files
from rotld_cli.evaluation import EvaluateOptions, evaluate_results
from rotld_cli.evaluation.metrics import THRESHOLDS, ClassGroundTruth, evaluate_class, voc_ap
from rotld_cli.evaluation.plots import ap_by_iou_from_report, plot_ap_vs_iou, plot_pr_curves, pr_curves_from_metrics
from rotld_cli.evaluation.visualize import class_colours


def _square(x: float, y: float, size: float = 10.0) -> list[float]:
    return [x, y, x + size, y, x + size, y + size, x, y + size]


@pytest.fixture
def hand_case() -> tuple[dict, dict]:
    """One image. GT: A, B, C (plain) and D (difficult). Detections by score:
    0.9 on A (TP), 0.8 on nothing (FP), 0.7 on A again (FP, A is taken), 0.6 on D (ignored),
    0.5 on B shifted by 2 px (IoU 80/120 = 2/3: TP at 0.5, FP at 0.7)."""
    gt_polys = np.array([_square(0, 0), _square(100, 0), _square(200, 0), _square(300, 0)])
    gts = {"plane": ClassGroundTruth.from_images([(gt_polys, np.array([0, 0, 0, 1]))])}
    polys = np.array([_square(0, 0), _square(500, 500), _square(0, 0), _square(300, 0), _square(102, 0)])
    order = [3, 0, 4, 2, 1]  # file order differs from score order
    dets = {"plane": Task1Detections(["img"] * 5, np.array([0.9, 0.8, 0.7, 0.6, 0.5])[order], polys[order])}
    return dets, gts


def test_pr_curve_hand_computed(hand_case) -> None:
    dets, gts = hand_case
    recall, precision, ap = pr_curves_from_metrics(dets, gts, ["img"], iou_thr=0.5)["plane"]
    # cumulative TP 1,1,1,1,2 and FP 0,1,2,2,2 over npos = 3
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3, 1 / 3, 1 / 2], rtol=0, atol=1e-15)
    assert ap == pytest.approx((4 * 1.0 + 3 * 0.5) / 11, abs=1e-15)  # VOC07: t <= 0.3 -> 1, t in 0.4..0.6 -> 1/2
    recall, precision, ap = pr_curves_from_metrics(dets, gts, ["img"], iou_thr=0.7)["plane"]
    np.testing.assert_allclose(recall, [1 / 3] * 5, rtol=0, atol=1e-15)
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3, 1 / 3, 1 / 4], rtol=0, atol=1e-15)
    assert ap == pytest.approx(4 / 11, abs=1e-15)
    _, _, area = pr_curves_from_metrics(dets, gts, ["img"], iou_thr=0.5, use_07_metric=False)["plane"]
    assert area == pytest.approx(1 / 3 * 1 + 1 / 3 * 1 / 2, abs=1e-15)


def test_pr_curve_classes_without_detections_or_gt() -> None:
    gts = {
        "plane": ClassGroundTruth.from_images([(np.array([_square(0, 0)]), np.array([0]))]),
        "ship": ClassGroundTruth.from_images([(np.array([_square(0, 0)]), np.array([1]))]),  # difficult only
    }
    dets = {"ship": Task1Detections(["img"], np.array([0.9]), np.array([_square(0, 0)]))}
    curves = pr_curves_from_metrics(dets, gts, ["img"])
    assert list(curves) == ["plane", "ship"]
    for recall, precision, ap in curves.values():
        assert recall.size == 0 and precision.size == 0 and ap == 0.0


def test_pr_curves_agree_with_evaluate_class_on_real_labels(dota_samples: Path) -> None:
    ids = ["P0706", "P1888"]
    objects = {i: read_label_file(dota_samples / "labelTxt" / f"{i}.txt").objects for i in ids}
    gts, dets = {}, {}
    for name in DOTA_V1_0:
        per_image = [
            (
                np.array([o.poly for o in objects[i] if o.name == name]).reshape(-1, 8),
                np.array([o.difficulty for o in objects[i] if o.name == name]),
            )
            for i in ids
        ]
        gts[name] = ClassGroundTruth.from_images(per_image)
        rows = [
            (i, o.poly + (k % 7) * np.array([1.0, 0.0] * 4))
            for i in ids
            for k, o in enumerate(objects[i])
            if o.name == name and k % 5
        ]  # every 5th object missed, shifts of 0..6 px
        if rows:
            scores = np.array([((k * 7919) % 101) / 101 for k in range(len(rows))])
            dets[name] = Task1Detections([r[0] for r in rows], scores, np.array([r[1] for r in rows]))
    assert {"ship", "harbor", "small-vehicle", "large-vehicle"} <= set(dets)
    for thr_index in (0, 5):
        curves = pr_curves_from_metrics(dets, gts, ids, iou_thr=THRESHOLDS[thr_index])
        for name, det in dets.items():
            recall, precision, ap = curves[name]
            expected = evaluate_class(det.scores, np.array([ids.index(i) for i in det.image_ids]), det.polys, gts[name])
            assert ap == expected[thr_index]
            assert ap == voc_ap(recall, precision)
            assert len(recall) == len(det) and np.all(np.diff(recall) >= 0) and recall[-1] <= 1.0
    ship = pr_curves_from_metrics(dets, gts, ids)["ship"]
    assert 0.3 < ship[2] < 1.0  # a non-trivial curve


def _read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    assert image is not None
    return image


def test_plot_pr_curves_writes_a_png_in_the_class_colours(hand_case, tmp_path: Path) -> None:
    dets, gts = hand_case
    curves = pr_curves_from_metrics(dets, gts, ["img"])
    curves["ship"] = (np.array([0.25, 0.5, 0.75]), np.array([1.0, 1.0, 1.0]), 0.6)
    curves["harbor"] = (np.zeros(0), np.zeros(0), 0.0)
    out = tmp_path / "figs" / "pr.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    assert plot_pr_curves(curves, out, "PR at IoU 0.5", classes=DOTA_V1_0) == out
    image = _read_png(out)
    assert image.shape == (320, 900, 3)  # 3 columns x 1 row of 3.0 x 2.6 in (+0.6 in title) at 100 dpi
    assert out.stat().st_size > 10_000 and image.std() > 5
    for name in ("plane", "ship"):
        assert (image == class_colours(DOTA_V1_0)[name]).all(axis=2).sum() > 50, name
    assert not (image == class_colours(DOTA_V1_0)["harbor"]).all(axis=2).any()
    assert sorted(p.name for p in out.parent.iterdir()) == ["pr.png"]  # no temp file left


def test_plot_pr_curves_grid_for_all_classes(tmp_path: Path) -> None:
    curves = {c: (np.linspace(0.05, 0.8, 20), np.linspace(1.0, 0.4, 20), 0.5) for c in DOTA_V1_0}
    image = _read_png(plot_pr_curves(curves, tmp_path / "pr.png", "all"))
    assert image.shape == (840, 1500, 3)  # 5 x 3 grid


def test_ap_vs_iou_from_a_real_evaluation_report(dota_samples: Path, tmp_path: Path) -> None:
    objects = read_label_file(dota_samples / "labelTxt" / "P1888.txt").objects
    names = ("small-vehicle", "large-vehicle")
    rows = {name: [(k, o) for k, o in enumerate(objects) if o.name == name] for name in names}
    dets = {
        name: Task1Detections(
            ["P1888"] * len(r), np.linspace(1.0, 0.1, len(r)), np.array([o.poly + (k % 4) for k, o in r])
        )
        for name, r in rows.items()
    }
    write_task1_files(tmp_path / "results", dets, DOTA_V1_0)
    (tmp_path / "set.txt").write_text("P1888\n", encoding="utf-8")
    report = evaluate_results(
        EvaluateOptions(results=tmp_path / "results", ann_dir=dota_samples / "labelTxt", imageset=tmp_path / "set.txt")
    )
    mean, per_class = ap_by_iou_from_report(report)
    assert list(mean) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert mean[0.75] == report["AP75"]
    assert per_class["large-vehicle"][0.5] == report["per_class"]["large-vehicle"]["AP50"]
    assert list(per_class) == list(DOTA_V1_0) and all(len(v) == 10 for v in per_class.values())
    assert 0.0 < mean[0.5] and mean[0.95] < mean[0.5]

    image = _read_png(plot_ap_vs_iou(per_class, tmp_path / "ap.png", mean=mean))
    assert image.shape == (500, 800, 3)
    for name in names:
        assert (image == class_colours(DOTA_V1_0)[name]).all(axis=2).sum() > 20, name
    assert (image == 0).all(axis=2).sum() > 500  # the thick black mean line
    only_mean = _read_png(plot_ap_vs_iou(mean, tmp_path / "ap_mean.png"))
    assert only_mean.shape == (500, 800, 3)
    assert not (only_mean == class_colours(DOTA_V1_0)["large-vehicle"]).all(axis=2).any()


def test_the_evaluator_returns_the_curves_of_its_own_aps(hand_case, tmp_path: Path) -> None:
    """One evaluation pass gives the APs and, from the same TP/FP marks, the PR curves the plots draw."""
    from rotld_cli.evaluation import ClassSet, DotaEvaluator

    dets, gts = hand_case
    flags = [0, 0, 0, 1]
    lines = [" ".join(f"{v:g}" for v in poly) + f" plane {flag}" for poly, flag in zip(gts["plane"].polys, flags)]
    (tmp_path / "img.txt").write_text("\n".join(lines) + "\n")
    evaluator = DotaEvaluator(ClassSet(("plane",), "plane only"), ["img"], tmp_path)
    evaluator.process({"plane": Task1Detections(dets["plane"].image_ids[:2], dets["plane"].scores[:2],
                                                dets["plane"].polys[:2])})  # fmt: skip
    evaluator.process({"plane": Task1Detections(dets["plane"].image_ids[2:], dets["plane"].scores[2:],
                                                dets["plane"].polys[2:])})  # fmt: skip
    evaluation = evaluator.evaluate()
    assert sorted(evaluation.curves) == [0.5, 0.75]
    for thr, name in ((0.5, "AP50"), (0.75, "AP75")):
        recall, precision, ap = evaluation.curves[thr]["plane"]
        expected = pr_curves_from_metrics(dets, gts, ["img"], iou_thr=thr)["plane"]
        np.testing.assert_array_equal(recall, expected[0])
        np.testing.assert_array_equal(precision, expected[1])
        assert ap == expected[2] == evaluation.report.per_class["plane"].aps[name]
    assert evaluation.report.means["AP50"] == pytest.approx((4 * 1.0 + 3 * 0.5) / 11, abs=1e-15)
    evaluator.reset()
    assert evaluator.evaluate().report.means["AP50"] == 0.0 and evaluation.report.class_set == "plane only"
