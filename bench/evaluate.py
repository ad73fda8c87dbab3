"""Benchmark `rotld evaluate --results` against the devkit's per-detection loop, in the same run.

The case is DOTA-val-sized and deterministic: 458 images (800-4000 px), ~30 labelled objects
each (integer quads, some difficult), ~2000 detections per image over the 15 classes (jittered
copies of the objects, some with the wrong class, plus background boxes), written as Task1 files.

Timed, on the same files:
* rotld: `evaluate_results` (read + validate + AP at the 10 thresholds);
* the reference (`tests/devkit_reference.py`, the devkit's loop, one detection and one polygon
  IoU at a time). Its pure-Python port of the C++ IoU costs ~0.3 ms a call, far more than the
  devkit's C++, so it is timed in two parts: the loop at all 10 thresholds with IoUs looked up
  in a table of bit-exact devkit values (a lower bound on the devkit's own time: the real one
  also pays a C++ IoU per call), and the pure-Python IoU per call on a sample, from which the
  full reference time is extrapolated (stated as such). The APs of the loop must equal rotld's
  to 1e-9; the sampled pure-Python IoUs must equal the table's exactly. By default the loop runs
  on the first 64 images (rotld evaluates the same subset for the equality check) and its time
  is scaled to the whole case by detection count, as the output says; `--reference-images 0`
  runs it on every image.
* merge: the same detections cut into 1024 px patches with 200 px overlap (ids `P__1024__x___y`,
  duplicates in overlaps), merged back by `merge_detections` (shift + rotated NMS at IoU 0.1).

    .venv/bin/python -m bench.evaluate                       # reference on 64 images, ~2-3 minutes
    .venv/bin/python -m bench.evaluate --reference-images 0  # reference on all 458, ~10 minutes
    .venv/bin/python -m bench.evaluate --quick               # 4 small images, a few seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rotld_cli.dota.classes import DOTA_V1_0
from rotld_cli.dota.formats import Task1Detections, format_task1_line
from rotld_cli.dota.merge import merge_detections
from rotld_cli.dota.polyiou import iou_poly_pairs
from rotld_cli.evaluation import EvaluateOptions, evaluate_results, read_task1_fast
from rotld_cli.evaluation.metrics import THRESHOLDS, threshold_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import devkit_reference as reference

PATCH, STRIDE = 1024, 824


def _quads(cx, cy, w, h, angle) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    corners = []
    for sx, sy in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
        corners += [cx + sx * w * c - sy * h * s, cy + sx * w * s + sy * h * c]
    return np.stack(corners, axis=-1)


def make_case(root: Path, n_images: int, objects: int, dets: int, seed: int = 0) -> dict:
    """labelTxt/, results/ (Task1), imageset.txt; returns the in-memory detections and image sizes."""
    rng = np.random.default_rng(seed)
    (root / "labelTxt").mkdir(parents=True)
    (root / "results").mkdir()
    names = [f"P{k:04d}" for k in range(n_images)]
    sizes = rng.integers(800, 4001, size=(n_images, 2))
    per_class: dict[str, list] = {c: [] for c in DOTA_V1_0}
    for name, (width, height) in zip(names, sizes):
        present = rng.choice(len(DOTA_V1_0), size=4, replace=False)
        cls = rng.choice(present, size=objects)
        w = rng.uniform(8, 150, objects)
        h = w * rng.uniform(0.3, 1.0, objects)
        cx = rng.uniform(80, width - 80, objects)
        cy = rng.uniform(80, height - 80, objects)
        angle = rng.uniform(-np.pi / 2, np.pi / 2, objects)
        gt = np.rint(_quads(cx, cy, w, h, angle))
        difficult = rng.choice([0, 0, 0, 0, 0, 0, 0, 0, 1, 2], size=objects)
        lines = ["imagesource:GoogleEarth", "gsd:0.15"]
        lines += [" ".join(str(int(v)) for v in q) + f" {DOTA_V1_0[c]} {d}" for q, c, d in zip(gt, cls, difficult)]
        (root / "labelTxt" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        # ~40% of the detections around the objects, the rest background
        near = int(dets * 0.4)
        src = rng.integers(0, objects, near)
        jitter = rng.choice([0.02, 0.08, 0.25], size=near)
        dcls = np.where(rng.uniform(size=near) < 0.8, cls[src], rng.integers(0, len(DOTA_V1_0), near))
        dq = _quads(
            cx[src] + rng.normal(0, 1, near) * jitter * w[src],
            cy[src] + rng.normal(0, 1, near) * jitter * h[src],
            w[src] * np.exp(rng.normal(0, jitter)),
            h[src] * np.exp(rng.normal(0, jitter)),
            angle[src] + rng.normal(0, jitter),
        )
        dscore = np.clip(1.0 - jitter * 3 + rng.normal(0, 0.1, near), 0.01, 1.0)
        far = dets - near
        bw = rng.uniform(8, 150, far)
        bq = _quads(
            rng.uniform(0, width, far),
            rng.uniform(0, height, far),
            bw,
            bw * rng.uniform(0.3, 1, far),
            rng.uniform(-1.6, 1.6, far),
        )
        bcls = rng.integers(0, len(DOTA_V1_0), far)
        bscore = rng.uniform(0.01, 0.5, far)
        quads = np.round(np.concatenate([dq, bq]), 2)
        scores = np.round(np.concatenate([dscore, bscore]), 4)
        for c, q, s in zip(np.concatenate([dcls, bcls]), quads, scores):
            per_class[DOTA_V1_0[c]].append((name, float(s), q))
    (root / "imageset.txt").write_text("\n".join(names) + "\n")
    out = {}
    for c, rows in per_class.items():
        (root / "results" / f"Task1_{c}.txt").write_text("".join(format_task1_line(i, s, q) + "\n" for i, s, q in rows))
        out[c] = read_task1_fast(root / "results" / f"Task1_{c}.txt")
    return {"dets": out, "sizes": dict(zip(names, sizes.tolist())), "names": names}


def patch_level(
    dets: dict[str, Task1Detections], sizes: dict[str, list[int]], seed: int = 1
) -> dict[str, Task1Detections]:
    """Each detection once per 1024 px window (stride 824) holding its box, slightly jittered."""
    rng = np.random.default_rng(seed)
    out = {}
    for c, det in dets.items():
        ids, scores, polys = [], [], []
        image = np.array(det.image_ids)
        for name in np.unique(image):
            mine = image == name
            q, s = det.polys[mine], det.scores[mine]
            width, height = sizes[str(name)]
            for x in range(0, max(width - PATCH, 0) + STRIDE, STRIDE):
                for y in range(0, max(height - PATCH, 0) + STRIDE, STRIDE):
                    inside = (q[:, 0::2].min(1) >= x) & (q[:, 0::2].max(1) < x + PATCH)
                    inside &= (q[:, 1::2].min(1) >= y) & (q[:, 1::2].max(1) < y + PATCH)
                    k = int(inside.sum())
                    shifted = q[inside] - np.array([x, y] * 4) + rng.normal(0, 0.3, (k, 8))
                    ids += [f"{name}__{PATCH}__{x}___{y}"] * k
                    scores.append(np.clip(s[inside] + rng.normal(0, 0.01, k), 0.001, 1.0))
                    polys.append(np.round(shifted, 2))
        out[c] = Task1Detections(ids, np.concatenate(scores), np.concatenate(polys).reshape(-1, 8))
    return out


class IouTable:
    """The devkit's IoU for every (GT, detection) pair the reference asks for, precomputed exactly."""

    def __init__(self, root: Path, classes) -> None:
        self.values: dict[tuple, float] = {}
        names = (root / "imageset.txt").read_text().split()
        recs = {n: reference.parse_gt(str(root / "labelTxt" / f"{n}.txt")) for n in names}
        for c in classes:
            det = read_task1_fast(root / "results" / f"Task1_{c}.txt")
            gts, dts = [], []
            for image_id, poly in zip(det.image_ids, det.polys):
                for obj in recs[image_id]:
                    if obj["name"] == c:
                        gts.append(obj["bbox"])
                        dts.append(poly)
            if gts:
                values = iou_poly_pairs(np.array(gts), np.array(dts))
                for g, d, v in zip(gts, dts, values.tolist()):
                    self.values[(*g, *d.tolist())] = v
        self.calls = 0

    def __call__(self, gt, det) -> float:
        self.calls += 1
        return self.values[(*gt.tolist(), *det.tolist())]


def _subset(root: Path, names: list[str]) -> Path:
    """The same case restricted to `names` (the devkit refuses detections outside its image set)."""
    sub = root / "subset"
    (sub / "results").mkdir(parents=True)
    (sub / "labelTxt").symlink_to(root / "labelTxt")
    (sub / "imageset.txt").write_text("\n".join(names) + "\n")
    keep = set(names)
    for path in sorted((root / "results").glob("Task1_*.txt")):
        lines = path.read_text().splitlines(keepends=True)
        (sub / "results" / path.name).write_text("".join(line for line in lines if line.split(" ", 1)[0] in keep))
    return sub


def _run_reference(root: Path, table: IouTable) -> tuple[list[list[float]], float]:
    t0 = time.perf_counter()
    aps = reference.evaluate_all(
        str(root / "results" / "Task1_{:s}.txt"),
        str(root / "labelTxt" / "{:s}.txt"),
        str(root / "imageset.txt"),
        DOTA_V1_0,
        THRESHOLDS,
        True,
        table,
    )
    return aps, time.perf_counter() - t0


def _python_iou_cost(table: IouTable, sample: int) -> float:
    """Seconds per call of the pure-Python devkit IoU, checked bit-equal to the table's values."""
    keys = list(table.values)
    picks = np.random.default_rng(0).choice(len(keys), size=min(sample, len(keys)), replace=False)
    t0 = time.perf_counter()
    for k in picks.tolist():
        value, expected = reference.iou_poly(keys[k][:8], keys[k][8:]), table.values[keys[k]]
        assert value == expected or (value != value and expected != expected), "pure-Python IoU differs"
    return (time.perf_counter() - t0) / max(len(picks), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 small images: a few seconds")
    parser.add_argument("--images", type=int, default=458, help="images in the case (DOTA val: 458)")
    parser.add_argument("--reference-images", type=int, default=64, help="images for the reference loop (0: all)")
    parser.add_argument("--iou-sample", type=int, default=2000, help="pure-Python IoU calls timed")
    args = parser.parse_args(argv)
    n_images, n_dets_img = (4, 500) if args.quick else (args.images, 2000)
    n_ref = n_images if args.quick or args.reference_images <= 0 else min(args.reference_images, n_images)
    with tempfile.TemporaryDirectory(prefix="rotld-bench-eval-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        case = make_case(root, n_images, objects=30, dets=n_dets_img)
        n_dets = sum(len(d) for d in case["dets"].values())
        print(f"case: {n_images} images, {n_dets} detections, 15 classes ({time.perf_counter() - t0:.1f} s to make)")

        options = EvaluateOptions(results=root / "results", ann_dir=root / "labelTxt", imageset=root / "imageset.txt")
        t0 = time.perf_counter()
        report = evaluate_results(options)
        fast = time.perf_counter() - t0
        print(
            f"rotld, all {n_images} images (read + AP at 10 IoU thresholds): {fast:.2f} s  (AP50 {report['AP50']:.4f})"
        )

        sub = _subset(root, case["names"][:n_ref]) if n_ref < n_images else root
        sub_options = EvaluateOptions(results=sub / "results", ann_dir=sub / "labelTxt", imageset=sub / "imageset.txt")
        sub_report = evaluate_results(sub_options)
        sub_dets = sum(v["num_det"] for v in sub_report["per_class"].values())
        table = IouTable(sub, DOTA_V1_0)
        ref, loop = _run_reference(sub, table)
        diff = max(
            abs(ref[k][c] - sub_report["per_class"][name][threshold_name(t)])
            for k, t in enumerate(THRESHOLDS)
            for c, name in enumerate(DOTA_V1_0)
        )
        print(
            f"reference loop on {n_ref} images ({sub_dets} detections, {table.calls} IoU calls served from the table): "
            f"{loop:.1f} s; max |AP difference| vs rotld on the same images: {diff:.1e}"
        )
        assert diff <= 1e-9, f"rotld and the devkit reference disagree by {diff}"
        per_call = _python_iou_cost(table, args.iou_sample)
        print(f"pure-Python devkit IoU: {per_call * 1e6:.0f} us/call (sampled, bit-identical to the table)")

        scale = n_dets / sub_dets
        loop_all = loop * scale
        full_ref = loop_all + per_call * table.calls * scale
        how = "" if n_ref == n_images else f", extrapolated x{scale:.2f} by detection count from {n_ref} images"
        print(f"reference loop alone (IoU free{how}): {loop_all:.1f} s -> rotld {loop_all / fast:.1f}x faster")
        print(f"reference with its IoU (calls x cost{how}): {full_ref:.1f} s -> rotld {full_ref / fast:.1f}x faster")

        patches = patch_level(case["dets"], case["sizes"])
        n_patch = sum(len(d) for d in patches.values())
        t0 = time.perf_counter()
        merged = merge_detections(patches, 0.1)
        merge_s = time.perf_counter() - t0
        print(f"merge: {n_patch} patch-level detections -> {sum(len(d) for d in merged.values())} in {merge_s:.2f} s")


if __name__ == "__main__":
    main()
