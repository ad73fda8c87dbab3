"""End to end, one recipe per dataset: tiny synthetic images written in HRSC2016, DIOR-R, FAIR1M and
YOLO-OBB's own formats -> `rotld convert` -> `rotld prepare-dota` -> `rotld train-teacher` ->
`rotld distill` -> `rotld evaluate` (the recipe's protocol), all through the CLI. HRSC2016 and DIOR-R
run their bundled recipes (shrunk to 1 epoch of 128 px images); FAIR1M and YOLO-OBB (your own
class names) run the dota1 recipes with `--classes-from DST/classes.txt`, and the YOLO model then
predicts with those names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.engine]
pytest.importorskip("mmrotate")

from rotld_cli.cli import main  # noqa: E402

WIDTH, HEIGHT = 128, 96


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def cli(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert exc.value.code == 0, (argv, err[-2000:])
    return out


def scene(rng: np.random.Generator, path: Path, classes: int) -> list[tuple[list[float], tuple, int]]:
    """An image of 2-3 filled rotated boxes; returns each box's corners, (cx, cy, w, h, angle) and class."""
    img = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    objects = []
    for k in range(int(rng.integers(2, 4))):
        cx, cy = 24 + 40 * k + rng.uniform(-4, 4), rng.uniform(30, 66)
        w, h, a = rng.uniform(18, 30), rng.uniform(10, 16), rng.uniform(-1.2, 1.2)
        c, s = math.cos(a), math.sin(a)
        local = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
        poly = [v for x, y in local for v in (cx + c * x - s * y, cy + s * x + c * y)]
        label = k % classes
        cv2.fillPoly(img, [np.round(np.array(poly).reshape(4, 2)).astype(np.int32)], (40 + 120 * label, 200, 60))
        objects.append((poly, (cx, cy, w, h, a), label))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return objects


def hrsc_source(root: Path, rng) -> None:
    for split, ids in (
        ("trainval", ["100000001", "100000002", "100000003", "100000004"]),
        ("test", ["100000005", "100000006"]),
    ):
        write(root / "ImageSets" / f"{split}.txt", "\n".join(ids) + "\n")
        for image_id in ids:
            objects = scene(rng, root / "FullDataSet" / "AllImages" / f"{image_id}.bmp", 1)
            xml = "".join(f"<HRSC_Object><Class_ID>100000001</Class_ID><difficult>0</difficult><mbox_cx>{cx}</mbox_cx>"
                          f"<mbox_cy>{cy}</mbox_cy><mbox_w>{w}</mbox_w><mbox_h>{h}</mbox_h><mbox_ang>{a}</mbox_ang>"
                          "</HRSC_Object>" for _, (cx, cy, w, h, a), _ in objects)  # fmt: skip
            write(
                root / "FullDataSet" / "Annotations" / f"{image_id}.xml",
                f"<HRSC_Image><Annotated>1</Annotated><HRSC_Objects>{xml}</HRSC_Objects></HRSC_Image>",
            )


def dior_source(root: Path, rng) -> None:
    tags = ("x_left_top", "y_left_top", "x_right_top", "y_right_top",
            "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom")  # fmt: skip
    names = ("airplane", "ship")
    for split, ids in (("train", ["00001", "00002"]), ("val", ["00003", "00004"]), ("test", ["11726", "11727"])):
        write(root / "ImageSets" / "Main" / f"{split}.txt", "\n".join(ids) + "\n")
        folder = "JPEGImages-test" if split == "test" else "JPEGImages-trainval"
        for image_id in ids:
            objects = scene(rng, root / folder / f"{image_id}.jpg", 2)
            xml = "".join(f"<object><name>{names[label].capitalize()}</name><difficult>0</difficult><robndbox>"
                          + "".join(f"<{t}>{round(v)}</{t}>" for t, v in zip(tags, poly)) + "</robndbox></object>"
                          for poly, _, label in objects)  # fmt: skip
            write(
                root / "Annotations" / "Oriented Bounding Boxes" / f"{image_id}.xml", f"<annotation>{xml}</annotation>"
            )


def fair1m_source(root: Path, rng) -> None:
    names = ("Small Car", "Passenger Ship")
    for split, ids in (("train", ["0", "1", "2", "3"]), ("validation", ["10", "11"])):
        for image_id in ids:
            objects = scene(rng, root / split / "images" / f"{image_id}.tif", 2)
            xml = "".join(f"<object><coordinate>pixel</coordinate><possibleresult><name>{names[label]}</name>"
                          "</possibleresult><points>"
                          + "".join(f"<point>{poly[2 * i]:.6f},{poly[2 * i + 1]:.6f}</point>" for i in (0, 1, 2, 3, 0))
                          + "</points></object>" for poly, _, label in objects)  # fmt: skip
            write(root / split / "labelXml" / f"{image_id}.xml", f"<annotation><objects>{xml}</objects></annotation>")


def yolo_source(root: Path, rng) -> None:
    write(root / "data.yaml", "train: images/train\nval: images/val\nnames: {0: my car, 1: my boat}\n")
    for split, ids in (("train", ["a", "b", "c", "d"]), ("val", ["e", "f"])):
        for image_id in ids:
            objects = scene(rng, root / "images" / split / f"{image_id}.png", 2)
            rows = [f"{label} " + " ".join(f"{v / (WIDTH if i % 2 == 0 else HEIGHT):.6f}" for i, v in enumerate(poly))
                    for poly, _, label in objects]  # fmt: skip
            write(root / "labels" / split / f"{image_id}.txt", "\n".join(rows) + "\n")


# format, source writer, its train / test split after `rotld convert`, teacher, student, the classes
# (None: --classes-from DST/classes.txt), the protocol `rotld evaluate` must use by default
DATASETS = {
    "hrsc2016": (hrsc_source, "trainval", "test", "hrsc/teacher-r34-gwd-6x", "hrsc/student-r18-gwd-ld-kd-6x",
                 ("ship",), "hrsc07"),
    "dior-r": (dior_source, "trainval", "test", "dior/teacher-r34-gwd-2x", "dior/student-r18-gwd-ld-kd-1x",
               None, "dior"),
    "fair1m": (fair1m_source, "train", "val", "dota1/teacher-r34-gwd-2x", "dota1/student-r18-gwd-ld-kd-1x",
               None, "dota"),
    "yolo-obb": (yolo_source, "train", "val", "dota1/teacher-r34-gwd-2x", "dota1/student-r18-gwd-ld-kd-1x",
                 ("my-car", "my-boat"), "dota"),
}  # fmt: skip

SHRINK = """
model:
  backbone: {{pretrained: null, frozen_stages: -1, norm_eval: false}}
  neck: {{out_channels: 16}}
  head: {{feat_channels: 16, stacked_convs: 1}}
  test: {{score_thr: 0.0, max_per_img: 50, nms_pre: 200}}
data: {{root: {root}, train: {train}, val: {test}, test: {test}, img_scale: [{w}, {h}], samples_per_gpu: 2,
        workers_per_gpu: 0}}
schedule: {{epochs: 1, warmup_iters: 1, lr_steps: [1]}}
runtime: {{eval_interval: 1, checkpoint_interval: 1, log_interval: 1}}
"""


@pytest.mark.parametrize("fmt", list(DATASETS))
def test_convert_prepare_train_distill_evaluate(fmt, tmp_path, capsys):
    make, train, test, teacher_recipe, student_recipe, classes, protocol = DATASETS[fmt]
    make(tmp_path / "source", np.random.default_rng(len(fmt)))
    dota, split = tmp_path / "dota", tmp_path / "split"
    cli(["convert", fmt, str(tmp_path / "source"), str(dota)], capsys)
    names = (dota / "classes.txt").read_text().split()
    if classes is not None:
        assert tuple(names) == classes
    cli(["prepare-dota", str(dota), str(split), "--sizes", "256", "--gaps", "0", "--no-padding", "--workers", "1",
         "--classes-from", str(dota / "classes.txt")], capsys)  # fmt: skip
    shrink = SHRINK.format(root=split, train=train, test=test, w=WIDTH, h=HEIGHT)
    teacher = write(tmp_path / "teacher.yaml", f"base: {teacher_recipe}\n{shrink}")
    student = write(tmp_path / "student.yaml", f"base: {student_recipe}\nteacher: {{recipe: {teacher}}}\n{shrink}")
    custom = ["--classes-from", str(dota / "classes.txt")] if teacher_recipe.startswith("dota1/") else []
    common = ["--device", "cpu", "--no-validate", *custom]
    cli(["train-teacher", str(teacher), "--work-dir", str(tmp_path / "t"), *common], capsys)
    cli(["distill", str(student), "--teacher", str(tmp_path / "t" / "latest.pth"), "--work-dir", str(tmp_path / "s"),
         *common], capsys)  # fmt: skip
    out = cli(["evaluate", str(tmp_path / "s" / "latest.pth"), "--split-dir", str(split / test), "--ann-dir",
               str(dota / test / "labelTxt"), "--out", str(tmp_path / "eval"), "--json"], capsys)  # fmt: skip
    report = json.loads(out)
    assert report["protocol"] == protocol and report["classes"] == names and report["num_images"] == 2
    written = sum(len((dota / test / "labelTxt" / p.name).read_text().splitlines())
                  for p in (dota / test / "labelTxt").glob("*.txt"))  # fmt: skip
    assert sum(entry["num_gt"] for entry in report["per_class"].values()) == written
    assert 0.0 <= report["AP50"] <= 1.0
    if fmt == "yolo-obb":  # the user's own class names, all the way to predictions
        cli(["predict", str(tmp_path / "s" / "latest.pth"), str(dota / test / "images"), "--out",
             str(tmp_path / "pred"), "--device", "cpu"], capsys)  # fmt: skip
        assert sorted(p.name for p in (tmp_path / "pred").glob("Task1_*.txt")) == [
            "Task1_my-boat.txt",
            "Task1_my-car.txt",
        ]
