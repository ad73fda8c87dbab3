"""`rotld evaluate --protocol dota|hrsc07|hrsc12|dior`: a hand-computed case where the rules differ, the
protocol stated in every table and JSON, option errors, the recipe's default; and (engine) the
MMRotate protocols against MMRotate's own `eval_rbbox_map` on random rotated boxes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rotld_cli.cli import main
from rotld_cli.dota.formats import format_task1_line
from rotld_cli.evaluation import EvaluateOptions, evaluate
from rotld_cli.evaluation.protocols import PROTOCOLS, min_area_rects
from rotld_cli.recipes import EVAL_PROTOCOLS, load_recipe


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rect(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, " ".join(err.split())


@pytest.fixture
def case(tmp_path) -> dict[str, Path]:
    """Image A: g1 (difficult) and g2; image B: g3. Ships: d1 = g1 (IoU 1), d4 far from everything,
    d2 with IoU exactly 0.5 to g2 (half of it), d3 = g3; by score d1 0.95, d4 0.9, d2 0.8, d3 0.7.
    A harbor detection on A, and no harbor in the ground truth."""
    ann, res = tmp_path / "labelTxt", tmp_path / "results"
    g1, g2, g3 = rect(0, 0, 10, 10), rect(20, 0, 30, 10), rect(0, 0, 10, 10)
    write(ann / "A.txt", " ".join(map(str, g1)) + " ship 1\n" + " ".join(map(str, g2)) + " ship 0\n")
    write(ann / "B.txt", " ".join(map(str, g3)) + " ship 0\n")
    ships = [("A", 0.95, g1), ("B", 0.9, rect(50, 50, 60, 60)), ("A", 0.8, rect(20, 0, 30, 5)), ("B", 0.7, g3)]
    write(res / "Task1_ship.txt", "".join(format_task1_line(i, s, p) + "\n" for i, s, p in ships))
    write(res / "Task1_harbor.txt", format_task1_line("A", 0.5, rect(40, 40, 45, 45)) + "\n")
    return {"ann": ann, "results": res}


def report(case, protocol: str | None, **kw) -> dict:
    options = EvaluateOptions(results=case["results"], ann_dir=case["ann"], classes=("ship", "harbor"),
                              protocol=protocol, **kw)  # fmt: skip
    return evaluate(options).report.to_json()


def test_the_protocols_differ_where_their_reference_code_does(case):
    # dota at IoU 0.5 (npos 2: g1 is difficult): d1 on difficult g1 -> ignored, d4 FP, d2 FP (0.5 is not > 0.5),
    # d3 TP: rec 0 0 0 .5, prec 0 0 0 1/3 -> VOC07: 1/3 at recall points 0, .1, ..., .5 -> 6 / 3 / 11 = 2/11.
    # Above 0.5 the same marks. The mean is over both classes; harbor (no ground truth) has AP 0.
    dota = report(case, "dota")
    assert dota["per_class"]["ship"]["AP50"] == pytest.approx(2 / 11, abs=1e-12)
    assert dota["per_class"]["ship"]["AP"] == pytest.approx(2 / 11, abs=1e-12)
    assert dota["AP50"] == pytest.approx(1 / 11, abs=1e-12) and dota["per_class"]["ship"]["num_gt"] == 2
    # hrsc07 at 0.5 (npos 3: difficult counts): d1 TP, d4 FP, d2 TP (0.5 >= 0.5), d3 TP:
    # rec 1/3 1/3 2/3 1, prec 1 .5 2/3 .75 -> VOC07: 1 at 0, .1, .2, .3 and .75 at .4 ... 1.0 -> (4 + 7 * .75) / 11.
    # Above 0.5 d2 is an FP: rec 1/3 1/3 1/3 2/3, prec 1 .5 1/3 .5 -> (4 * 1 + 3 * .5) / 11 = .5.
    # The mean skips harbor (no ground truth), as eval_rbbox_map does.
    hrsc07 = report(case, "hrsc07")
    ap50 = (4 + 7 * 0.75) / 11
    assert hrsc07["per_class"]["ship"]["AP50"] == pytest.approx(ap50, abs=1e-12)
    assert hrsc07["per_class"]["ship"]["AP55"] == pytest.approx(0.5, abs=1e-12)
    assert hrsc07["AP50"] == pytest.approx(ap50, abs=1e-12) and hrsc07["AP"] == pytest.approx((ap50 + 9 * 0.5) / 10)
    assert hrsc07["per_class"]["ship"]["num_gt"] == 3 and hrsc07["left_out_of_mean"] == ["harbor"]
    # hrsc12 (area): AP50: mrec 0 1/3 1/3 2/3 1 1, envelope 1 1 .75 .75 .75 -> 1/3 + 1/3 * .75 + 1/3 * .75 = 5/6;
    # above 0.5: mrec 0 1/3 1/3 1/3 2/3, envelope 1 1 .5 .5 .5 -> 1/3 + 1/3 * .5 = .5.
    hrsc12 = report(case, "hrsc12")
    assert hrsc12["AP50"] == pytest.approx(5 / 6, abs=1e-12) and hrsc12["AP"] == pytest.approx((5 / 6 + 9 * 0.5) / 10)
    dior = report(case, "dior")
    assert dior["AP50"] == pytest.approx(ap50, abs=1e-12) and dior["metric"] == "voc07"
    for name, result in (("dota", dota), ("hrsc07", hrsc07), ("hrsc12", hrsc12), ("dior", dior)):
        assert result["protocol"] == name and result["protocol_rules"].startswith(f"{name} protocol (")


def test_every_table_and_json_states_the_protocol(case, capsys, tmp_path):
    base = ["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--classes", "ship,harbor"]
    code, out, err = run_main([*base, "--protocol", "dior", "--out", str(tmp_path / "r"), "--plot"], capsys)
    flat = " ".join(out.split())
    assert code == 0 and "dior protocol (MMRotate 1.x DOTAMetric" in flat and "IoU >= threshold" in flat
    assert "mean over the 2 evaluated classes (--classes) that have ground truth" in flat
    assert "Summary, dior protocol (" in flat and "no ground truth for harbor: left out of the mean" in err
    markdown = " ".join((tmp_path / "r" / "report.md").read_text().split())
    assert "dior protocol (MMRotate 1.x DOTAMetric" in markdown and "## Per class (dior protocol)" in markdown
    assert json.loads((tmp_path / "r" / "report.json").read_text())["protocol"] == "dior"
    code, out, _ = run_main([*base, "--json"], capsys)
    assert json.loads(out)["protocol"] == "dota" and "DOTA devkit" in json.loads(out)["protocol_rules"]
    # --save-merged records the protocol: re-evaluating that folder uses it by default
    code, _, _ = run_main([*base, "--protocol", "hrsc12", "--save-merged", str(tmp_path / "m")], capsys)
    code, out, _ = run_main(["evaluate", "--results", str(tmp_path / "m"), "--ann-dir", str(case["ann"]), "--json"],
                            capsys)  # fmt: skip
    assert code == 0 and json.loads(out)["protocol"] == "hrsc12" and json.loads(out)["metric"] == "area"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "voc"], "--protocol must be one of dota, hrsc07, hrsc12, dior, got 'voc'"),
        (
            ["--protocol", "hrsc07", "--metric", "area"],
            "the hrsc07 protocol's AP is voc07 (--protocol hrsc12 for area)",
        ),
        (["--protocol", "dior", "--metric", "area"], "--metric area: the dior protocol's AP is voc07"),
        (["--protocol", "hrsc12", "--seed-compat"], "--seed-compat reproduces the DOTA seed script's bug"),
    ],
)
def test_protocol_option_errors_are_one_line(case, capsys, args, message):
    code, out, err = run_main(["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]), *args],
                              capsys)  # fmt: skip
    assert code == 2 and message in err and out == ""


def test_recipes_name_their_protocol_and_the_names_are_the_evaluators():
    assert EVAL_PROTOCOLS == tuple(PROTOCOLS)
    assert load_recipe("hrsc/teacher-r34-gwd-6x").get("data.protocol") == "hrsc07"
    assert load_recipe("dior/student-r18-gwd-ld-kd-1x").get("data.protocol") == "dior"
    assert load_recipe("dota2/baseline-r18-gwd-1x").get("data.protocol", "dota") == "dota"


def test_min_area_rects_keeps_rectangles_and_fits_other_quads():
    a = math.atan2(3, 4)
    exact = np.array([[87.5, 75, 127.5, 105, 112.5, 125, 72.5, 95]])  # a rotated rectangle (cos .8, sin .6)
    assert np.array_equal(min_area_rects(exact), exact)
    rounded = np.round(exact + 0.004 * np.array([[1, -1, 0, 1, -1, 0, 1, 1]]), 2)  # corners off by < 0.01 px
    fitted = min_area_rects(rounded).reshape(4, 2)
    sides = np.roll(fitted, -1, axis=0) - fitted
    assert abs(np.dot(sides[0], sides[1])) < 1e-3 * np.linalg.norm(sides[0]) * np.linalg.norm(sides[1])
    assert abs(math.atan2(sides[0][1], sides[0][0]) % (math.pi / 2) - a) < 1e-3 or abs(
        math.atan2(sides[1][1], sides[1][0]) % (math.pi / 2) - a) < 1e-3  # fmt: skip


# ------------------------------------------------------------------------------------------
# Engine: MMRotate's eval_rbbox_map on the same boxes


def corners(cx, cy, w, h, a) -> list[float]:
    """A rotated box's corners (image coordinates): the local corners turned by a."""
    c, s = math.cos(a), math.sin(a)
    local = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return [v for x, y in local for v in (cx + c * x - s * y, cy + s * x + c * y)]


@pytest.mark.engine
def test_mmrotate_protocols_equal_eval_rbbox_map(tmp_path, monkeypatch):
    pytest.importorskip("mmrotate")
    from rotld_cli.engine import load_engine

    load_engine()
    from mmrotate.core import poly2obb_np
    from mmrotate.core.evaluation import eval_map

    class InlinePool:  # eval_rbbox_map's spawn pool, run in this process (same calls, same order)
        def __init__(self, *args): ...

        def starmap(self, fn, args):
            return [fn(*a) for a in args]

        def close(self): ...

    monkeypatch.setattr(eval_map, "get_context", lambda method: type("Ctx", (), {"Pool": InlinePool}))
    rng = np.random.default_rng(3)
    classes = ("ship", "harbor", "plane")  # plane: no ground truth at all
    ann, res = tmp_path / "labelTxt", tmp_path / "results"
    dets: dict[str, list[str]] = {c: [] for c in classes}
    annotations, det_results = [], []
    for k in range(6):
        image_id = f"I{k}"
        gt_lines, boxes, labels = [], [], []
        per_class = [[] for _ in classes]
        for _ in range(rng.integers(3, 8)):
            label = int(rng.integers(0, 2))
            box = [rng.uniform(20, 180), rng.uniform(20, 180), rng.uniform(8, 40), rng.uniform(8, 40),
                   rng.uniform(0, math.pi)]  # fmt: skip
            poly = np.round(corners(*box), 2)
            gt_lines.append(" ".join(f"{v:.2f}" for v in poly) + f" {classes[label]} {int(rng.integers(0, 2))}")
            boxes.append(poly2obb_np(poly.astype(np.float32), "oc"))
            labels.append(label)
            for _ in range(rng.integers(0, 3)):  # detections near the object, and far from anything
                noisy = [box[0] + rng.normal(0, 3), box[1] + rng.normal(0, 3), box[2] * rng.uniform(0.7, 1.3),
                         box[3] * rng.uniform(0.7, 1.3), box[4] + rng.normal(0, 0.2)]  # fmt: skip
                per_class[label].append((noisy, rng.uniform()))
        per_class[int(rng.integers(0, 3))].append(([rng.uniform(0, 200), rng.uniform(0, 200), 15, 10, 0.3],
                                                   rng.uniform()))  # fmt: skip
        write(ann / f"{image_id}.txt", "\n".join(gt_lines) + "\n")
        results = []
        for c, found in enumerate(per_class):
            rows = []
            for box, score in found:
                line = format_task1_line(image_id, score, corners(*box))
                dets[classes[c]].append(line)
                poly = np.array([float(v) for v in line.split()[2:]], dtype=np.float32)  # as the Task1 file holds it
                rows.append([*poly2obb_np(poly, "oc"), score])
            results.append(np.array(rows, dtype=np.float32).reshape(-1, 6))
        det_results.append(results)
        annotations.append({"bboxes": np.array(boxes, dtype=np.float32), "labels": np.array(labels, dtype=np.int64),
                            "bboxes_ignore": np.zeros((0, 5), np.float32),
                            "labels_ignore": np.zeros(0, np.int64)})  # fmt: skip
    for name, rows in dets.items():
        write(res / f"Task1_{name}.txt", "".join(line + "\n" for line in rows))
    for protocol, use_07 in (("hrsc07", True), ("hrsc12", False), ("dior", True)):
        ours = evaluate(EvaluateOptions(results=res, ann_dir=ann, classes=classes, protocol=protocol)).report
        for thr in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
            mean_ap, per = eval_map.eval_rbbox_map(det_results, annotations, iou_thr=thr, use_07_metric=use_07,
                                                   dataset=classes, logger="silent", nproc=1)  # fmt: skip
            name = f"AP{round(thr * 100)}"
            assert ours.means[name] == pytest.approx(mean_ap, abs=2e-6), (protocol, name)
            for c, result in zip(classes[:2], per):
                assert ours.per_class[c].aps[name] == pytest.approx(float(result["ap"]), abs=2e-6), (protocol, c, name)
                assert ours.per_class[c].num_gt == result["num_gts"]
        assert ours.left_out_of_mean == ["plane"]


@pytest.mark.engine
def test_hrsc_corners_equal_mmrotates_obb2poly_le90():
    pytest.importorskip("mmrotate")
    from rotld_cli.engine import load_engine

    load_engine()
    from mmrotate.core import obb2poly_np

    from rotld_cli.datasets.hrsc2016 import mbox_corners

    rng = np.random.default_rng(0)
    for _ in range(200):
        box = [rng.uniform(0, 1000), rng.uniform(0, 600), rng.uniform(5, 400), rng.uniform(5, 100),
               rng.uniform(-math.pi / 2, math.pi / 2)]  # fmt: skip
        expected = obb2poly_np(np.array([[*box, 0.0]]), "le90")[0, :8]
        assert np.abs(np.array(mbox_corners(*box)) - expected).max() < 1e-9
