"""`rotld predict`'s outputs on the real DOTA samples, with a stand-in model (no engine): Task1 files of
every run, resume by content, the --out folder, boxes in the padding, pictures, the model's threshold,
and `evaluate --results` on a predict folder."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from rotld_cli.cli.predict import notes
from rotld_cli.detector import Detector, TunableDetector
from rotld_cli.dota.formats import read_label_file, read_task1_file
from rotld_cli.dota.split import SplitParams
from rotld_cli.errors import UsageError
from rotld_cli.evaluation import EvaluateOptions, evaluate
from rotld_cli.predict.backend import lower_score_thr
from rotld_cli.predict.outputs import check_out_dir
from rotld_cli.predict.run import PredictOptions, image_windows, predict

CLASSES = ("ship", "harbor", "large-vehicle", "small-vehicle")  # those of P0706 and P1888
MODEL = {"file": "oracle.onnx", "sha256": "0" * 64}


def rbox(poly: np.ndarray) -> list[float]:
    """The rotated box of a labelled quad ('oc' angles: radians)."""
    (cx, cy), (w, h), angle = cv2.minAreaRect(np.asarray(poly, dtype=np.float32).reshape(4, 2))
    return [cx, cy, w, h, np.deg2rad(angle)]


class Oracle:
    """A stand-in model that finds one image's labelled objects (score 0.9) in each window it is shown,
    in the order `rotld predict` reads them (row by row), and optionally `extra` boxes at image coordinates."""

    angle_version = "oc"

    def __init__(self, labels, width: int, height: int, params: SplitParams, extra=(), score_thr: float = 0.05):
        self.classes = CLASSES
        self.objects = [(CLASSES.index(o.name), rbox(o.poly)) for o in labels.objects if o.name in CLASSES]
        self.objects += list(extra)
        windows = image_windows(width, height, params)
        # `rotld predict` reads the windows row by row (top to bottom, then left to right)
        self.origins = iter(windows[np.lexsort((windows[:, 0], windows[:, 1])), :2].tolist())
        self.score_thr = score_thr
        self.seen = 0

    def test_settings(self) -> dict:
        return {"score_thr": self.score_thr, "iou_thr": 0.1, "max_per_img": 2000, "nms_pre": 2000}

    def set_score_thr(self, value: float) -> None:
        self.score_thr = value

    def detect(self, images):
        out = []
        for image in images:
            x0, y0 = next(self.origins)
            h, w = image.shape[:2]
            per_class = [[] for _ in CLASSES]
            for label, (cx, cy, bw, bh, a, *score) in self.objects:
                if x0 <= cx < x0 + w and y0 <= cy < y0 + h:
                    s = score[0] if score else 0.9
                    if s >= self.score_thr:
                        per_class[label].append([cx - x0, cy - y0, bw, bh, a, s])
            out.append([np.asarray(b, dtype=np.float32).reshape(-1, 6) for b in per_class])
            self.seen += 1
        return out


def oracle_for(dota_samples, image_id: str, params: SplitParams, **kwargs) -> Oracle:
    labels = read_label_file(dota_samples / "labelTxt" / f"{image_id}.txt")
    height, width = cv2.imread(str(dota_samples / "images" / f"{image_id}.png")).shape[:2]
    return Oracle(labels, width, height, params, **kwargs)


PARAMS = SplitParams()  # 1024 px windows, 200 px gaps: P1888 (712 x 557) is one padded window


def test_task1_files_hold_every_run_and_evaluate_scores_the_predicted_images(dota_samples, tmp_path):
    out = tmp_path / "p"
    for image_id in ("P1888", "P0706"):  # two runs into one folder
        detector = oracle_for(dota_samples, image_id, PARAMS)
        assert isinstance(detector, Detector) and isinstance(detector, TunableDetector)
        summary = predict(detector, [dota_samples / "images" / f"{image_id}.png"], out, PredictOptions(), MODEL)
        assert summary.problems == []
    assert sorted(p.stem for p in (out / "images").glob("*.json")) == ["P0706", "P1888"]
    ids = set()
    for name in CLASSES:
        ids |= set(read_task1_file(out / f"Task1_{name}.txt").image_ids)
    assert ids == {"P0706", "P1888"}  # before: only the last run's P0706
    assert json.loads((out / "rotld-task1.json").read_text())["images"] == ["P0706", "P1888"]
    # evaluate --results on the folder: the two predicted images, not the 7 label files of --ann-dir
    ann = dota_samples / "labelTxt"
    assert len(list(ann.glob("*.txt"))) == 7
    report = evaluate(EvaluateOptions(results=out, ann_dir=ann, classes=CLASSES)).report
    assert report.num_images == 2
    assert report.means["AP50"] == pytest.approx(1.0)
    assert report.images_note.startswith("evaluated the 2 image(s) rotld predict wrote into")
    assert report.images_note in report.notes()
    everything = evaluate(EvaluateOptions(results=out, ann_dir=ann, classes=CLASSES, imageset=_all_ids(ann, tmp_path)))
    assert everything.report.num_images == 7 and everything.report.means["AP50"] < 0.9  # what --imageset asks for


def _all_ids(ann, tmp_path):
    path = tmp_path / "all.txt"
    path.write_text("\n".join(sorted(p.stem for p in ann.glob("*.txt"))) + "\n")
    return path


def test_results_of_another_model_are_named_not_mixed(dota_samples, tmp_path):
    out = tmp_path / "p"
    p1888 = dota_samples / "images" / "P1888.png"
    predict(oracle_for(dota_samples, "P1888", PARAMS), [p1888], out, PredictOptions(), MODEL)
    other = {"file": "other.pth", "sha256": "1" * 64}
    p0706 = dota_samples / "images" / "P0706.png"
    summary = predict(oracle_for(dota_samples, "P0706", PARAMS), [p0706], out, PredictOptions(), other)
    assert summary.task1_images == ["P0706"]
    assert summary.left_out == [("P1888.json", "made with another model or other settings")]
    assert any("P1888.json" in n and "not in the Task1 files" in n for n in notes(summary))


def test_a_replaced_image_is_predicted_again_a_copied_one_resumes(dota_samples, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image = src / "x.png"
    shutil.copy(dota_samples / "images" / "P1888.png", image)
    out = tmp_path / "p"
    first = predict(oracle_for(dota_samples, "P1888", PARAMS), [image], out, PredictOptions(), MODEL)
    assert first.to_dict()["predicted"] == 1
    stored = json.loads((out / "images" / "x.json").read_text())
    assert (stored["width"], stored["height"]) == (712, 557)

    os.utime(image, ns=(1, 1))  # the same bytes, another modification time (a copy, a touch): resumed
    again = predict(oracle_for(dota_samples, "P1888", PARAMS), [image], out, PredictOptions(), MODEL)
    assert again.to_dict()["resumed"] == 1

    shutil.copy(dota_samples / "images" / "P0706.png", image)  # another picture at the same path
    oracle = oracle_for(dota_samples, "P0706", PARAMS)
    replaced = predict(oracle, [image], out, PredictOptions(), MODEL)
    assert replaced.to_dict()["predicted"] == 1 and oracle.seen == 4  # before: "resumed 1"
    stored = json.loads((out / "images" / "x.json").read_text())
    assert (stored["width"], stored["height"]) == (1111, 1182)
    assert stored["source"]["bytes"] == image.stat().st_size

    # same size, other bytes (an edited BMP): the SHA-256 tells them apart, whatever the modification time
    bmp = src / "y.bmp"
    pixels = cv2.imread(str(dota_samples / "images" / "P1888.png"))
    cv2.imwrite(str(bmp), pixels)
    predict(oracle_for(dota_samples, "P1888", PARAMS), [bmp], out, PredictOptions(), MODEL)
    size = bmp.stat().st_size
    cv2.imwrite(str(bmp), pixels[::-1])
    assert bmp.stat().st_size == size
    oracle = oracle_for(dota_samples, "P1888", PARAMS)
    assert predict(oracle, [bmp], out, PredictOptions(), MODEL).to_dict()["predicted"] == 1 and oracle.seen == 1


def test_out_must_be_new_empty_or_a_predict_folder(dota_samples, tmp_path):
    source = dota_samples / "images" / "P1888.png"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Task1_plane.txt").write_text("P1 0.9 1 1 2 1 2 2 1 2\n")
    with pytest.raises(UsageError, match=r"holds files rotld predict did not write \(Task1_plane.txt\)"):
        predict(oracle_for(dota_samples, "P1888", PARAMS), [source], mine, PredictOptions(), MODEL)
    assert (mine / "Task1_plane.txt").read_text() == "P1 0.9 1 1 2 1 2 2 1 2\n"
    assert sorted(p.name for p in mine.iterdir()) == ["Task1_plane.txt"]
    with pytest.raises(UsageError, match="holds the SOURCE image"):
        check_out_dir(dota_samples / "images", [source])
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_out_dir(tmp_path / "file" / "out", [source])
    empty = tmp_path / "empty"
    empty.mkdir()
    predict(oracle_for(dota_samples, "P1888", PARAMS), [source], empty, PredictOptions(), MODEL)
    check_out_dir(empty, [source])  # a folder rotld predict wrote: accepted again


def test_boxes_centred_in_the_padding_are_dropped(dota_samples, tmp_path):
    # P1888 is 712 x 557: its one 1024 px window is mostly padding; a model finds things there
    # the last one is inside (kept)
    padding = [(0, [640.0, 768.0, 60.0, 30.0, 0.3, 0.8]), (1, [900.0, 100.0, 40.0, 40.0, 0.0, 0.7]),
               (0, [700.0, 550.0, 60.0, 30.0, 0.0, 0.6])]  # fmt: skip
    detector = oracle_for(dota_samples, "P1888", PARAMS, extra=padding)
    out = tmp_path / "p"
    summary = predict(detector, [dota_samples / "images" / "P1888.png"], out, PredictOptions(), MODEL)
    result = json.loads((out / "images" / "P1888.json").read_text())
    centres = np.array([[d["rbox"]["cx"], d["rbox"]["cy"]] for d in result["detections"]])
    assert (centres[:, 0] <= 712).all() and (centres[:, 1] <= 557).all()
    assert [700.0, 550.0] in np.round(centres, 2).tolist()
    assert result["outside_image"] == 2 and summary.to_dict()["outside_image"] == 2
    lines = [line for name in CLASSES for line in (out / f"Task1_{name}.txt").read_text().splitlines()]
    assert len(lines) == len(result["detections"])
    assert any("2 detection(s) centred outside their image" in n for n in notes(summary))


def test_pictures_on_a_rerun_and_pictures_without_boxes(dota_samples, tmp_path):
    source = dota_samples / "images" / "P1888.png"
    out = tmp_path / "p"
    predict(oracle_for(dota_samples, "P1888", PARAMS), [source], out, PredictOptions(), MODEL)
    assert not (out / "vis").exists()
    detector = oracle_for(dota_samples, "P1888", PARAMS)
    summary = predict(detector, [source], out, PredictOptions(save_vis=True), MODEL)
    assert summary.to_dict()["resumed"] == 1 and detector.seen == 0  # nothing detected again
    picture = cv2.imread(str(out / "vis" / "P1888.png"))  # before: no vis/ at all
    assert picture.shape == (557, 712, 3) and (picture != cv2.imread(str(source))).any()
    high = predict(oracle_for(dota_samples, "P1888", PARAMS), [source], out,
                   PredictOptions(save_vis=True, vis_score_thr=0.95), MODEL)  # fmt: skip
    assert np.array_equal(cv2.imread(str(out / "vis" / "P1888.png")), cv2.imread(str(source)))
    assert high.to_dict()["pictures_without_boxes"] == ["P1888"]
    assert any("1 picture(s) show no box" in n and "--vis-score-thr 0.95 (best score 0.9)" in n for n in notes(high))


def test_a_score_threshold_below_the_models_lowers_the_models(dota_samples, tmp_path):
    faint = [(0, [300.0, 300.0, 40.0, 20.0, 0.0, 0.02])]
    detector = oracle_for(dota_samples, "P1888", PARAMS, extra=faint, score_thr=0.05)
    assert lower_score_thr(detector, 0.1) is None and detector.score_thr == 0.05  # above it: the merge filters
    assert lower_score_thr(detector, 0.01) == 0.05 and detector.score_thr == 0.01
    out = tmp_path / "p"
    summary = predict(detector, [dota_samples / "images" / "P1888.png"], out, PredictOptions(score_thr=0.01), MODEL)
    scores = [d["score"] for d in json.loads((out / "images" / "P1888.json").read_text())["detections"]]
    assert min(scores) == pytest.approx(0.02)
    assert summary.model_settings["score_thr"] == 0.01
