"""Benchmark inference throughput (images/s) of `rotld evaluate CKPT`, with baselines measured in the same run.

On the same patches, with the paper's models (the bundled DOTA recipes: distribution Rotated
RetinaNet, 256-channel FPN and head), built and saved as checkpoints the way training saves them:
* the R-18 student against the R-34 teacher, both through rotld's batched loop: the student must
  be faster (LD only changes training; the student's inference is the plain R-18 detector's);
* rotld's loop (`engine/patches.detect_patches` over `EngineDetector`: batches, Task1 conversion)
  against plain MMRotate inference on the same student model: `inference_detector` once per image
  (MMRotate 0.3.4's `mmrotate.apis` exports no `inference_detector`; its demos use mmdet's), plus
  the same Task1 conversion. Target: rotld >= 1.0x.

Weights are freshly initialised with a fixed seed (no download, no training). How many boxes
such weights push over the score threshold is arbitrary (0 or 200 per patch, depending on the
draw), and the NMS time with it, so the timed runs keep no box (`score_thr` above 1): what is
timed is image decoding, the network, box decoding and top-k, the same work for any weights.
Detections of both loops are compared separately on two patches with `score_thr=0` (they must
agree). Each loop runs `--repeats` times, interleaved, after a warm-up; the fastest run counts,
and the process's CPU time is printed too (it stays stable when other jobs share the machine,
where wall times scatter). rotld's batch size and loader processes are `rotld evaluate`'s
defaults for the device (`checkpoint_eval.device_defaults`).

    .venv/bin/python -m bench.inference            # 8 patches of 1024 px cut from ../shared/dota-samples
    .venv/bin/python -m bench.inference --quick    # synthetic recipes, 6 patches of 128 px, a few seconds
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "dota-samples"
FULL = {"teacher": "dota1/teacher-r34-gwd-2x", "student": "dota1/student-r18-gwd-ld-kd-1x"}
NO_BOX = 1.01  # sigmoid scores never exceed it: nothing reaches NMS in the timed runs
QUICK = {"teacher": "synthetic/teacher-r34-gwd", "student": "synthetic/student-r18-gwd-ld-kd"}


def make_patches(out: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """`count` patches of `size` px named like prepare-dota's: crops of the real DOTA samples when
    they are there (and big enough), else synthetic scenes."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = sorted((SAMPLES / "images").glob("*.png")) if SAMPLES.is_dir() else []
    images = [img for img in (cv2.imread(str(p)) for p in sources) if img is not None and min(img.shape[:2]) >= size]
    paths = []
    if images:
        for k in range(count):
            image = images[k % len(images)]
            y = int(rng.integers(0, image.shape[0] - size + 1))
            x = int(rng.integers(0, image.shape[1] - size + 1))
            path = out / f"B{k:04d}__{size}__{x}___{y}.png"
            cv2.imwrite(str(path), image[y : y + size, x : x + size])
            paths.append(path)
        return paths
    from rotld_cli.demo.scenes import generate_dataset

    generate_dataset(out.parent / "synthetic", num_train=0, num_val=count, image_size=size, seed=seed)
    for src in sorted((out.parent / "synthetic" / "val" / "images").glob("*.png")):
        path = out / f"{src.stem}__{size}__0___0.png"
        path.write_bytes(src.read_bytes())
        paths.append(path)
    return paths


def make_checkpoint(recipe_ref: str, overrides: list[str], path: Path, seed: int = 0) -> Path:
    """An initialised model saved as training saves it (weights + the resolved recipe in meta)."""
    import torch
    from mmrotate.models import build_detector

    from rotld_cli.engine import checkpoints as ckpt
    from rotld_cli.engine.config import build_config
    from rotld_cli.recipes import load_recipe

    recipe = load_recipe(recipe_ref, overrides)
    cfg = build_config(recipe.without_teacher())
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    model = build_detector(cfg.model)
    mmcv_log = logging.getLogger("mmcv")  # init_weights logs one INFO block per parameter
    level = mmcv_log.level
    mmcv_log.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        mmcv_log.setLevel(level)
    meta = {
        "recipe": recipe.to_yaml(),
        "recipe_name": recipe.name,
        "classes": list(recipe.classes),
        "angle_version": recipe.get("model.angle_version"),
    }
    return ckpt.save_checkpoint(path, ckpt.model_state_dict(model), meta)


def rotld_loop(detector, paths: list[Path], batch_size: int) -> dict:
    """`rotld evaluate CKPT`'s loop: `detect_patches` (reading, batching) then the Task1 conversion."""
    from rotld_cli.dota.polygons import detections_to_task1
    from rotld_cli.engine.patches import detect_patches

    ids: list[str] = []
    outputs: list = []

    def keep(batch_ids, dets) -> None:
        ids.extend(batch_ids)
        outputs.extend(dets)

    stats = detect_patches(detector, paths, keep, batch_size=batch_size)
    assert not stats.unreadable, stats.unreadable
    return detections_to_task1(outputs, ids, detector.classes, detector.angle_version)


def plain_loop(detector, paths: list[Path]) -> dict:
    from mmdet.apis import inference_detector

    from rotld_cli.dota.polygons import detections_to_task1

    outputs = [inference_detector(detector.model.module, str(p)) for p in paths]
    return detections_to_task1(outputs, [p.stem for p in paths], detector.classes, detector.angle_version)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads): CPU time stays stable on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def max_difference(a: dict, b: dict) -> tuple[int, float]:
    """(detections, max |difference| of polygons and scores) of two per-class detection sets, same order."""
    count, worst = 0, 0.0
    for name in a:
        assert a[name].image_ids == b[name].image_ids, f"{name}: different detections"
        count += len(a[name])
        if len(a[name]):
            worst = max(
                worst,
                float(np.abs(a[name].polys - b[name].polys).max()),
                float(np.abs(a[name].scores - b[name].scores).max()),
            )
    return count, worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="synthetic recipes, 6 patches of 128 px")
    parser.add_argument("--patches", type=int, default=None, help="number of patches (default 8, quick 6)")
    parser.add_argument("--size", type=int, default=None, help="patch size in px (default 1024, quick 128)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: rotld evaluate's (1 CPU, 4 GPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per loop (default 3, quick 1)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    args = parser.parse_args(argv)
    count = args.patches or (6 if args.quick else 8)
    size = args.size or (128 if args.quick else 1024)
    repeats = args.repeats or (1 if args.quick else 3)
    recipes = QUICK if args.quick else FULL
    overrides = [f"data.img_scale={size}", "model.backbone.pretrained=null"]

    from rotld_cli.engine import load_engine
    from rotld_cli.engine.checkpoint_eval import device_defaults, load_model
    from rotld_cli.engine.devices import pick_device

    load_engine()
    device = pick_device(args.device)
    batch_size, _ = device_defaults(device, args.batch_size, 0)
    with tempfile.TemporaryDirectory(prefix="rotld-bench-inference-") as tmp:
        root = Path(tmp)
        paths = make_patches(root / "images", count, size)
        kind = "real DOTA crops" if paths[0].name.startswith("B") else "synthetic scenes"
        print(
            f"{len(paths)} patches of {size}x{size} px ({kind}), device {device}, batch {batch_size}, "
            f"best of {repeats} interleaved runs"
        )
        loaded = {}
        for role, ref in recipes.items():
            checkpoint = make_checkpoint(ref, overrides, root / f"{role}.pth")
            loaded[role] = load_model(checkpoint, device, None, batch_size)
            loaded[role].test_cfg.score_thr = NO_BOX
        for detector in loaded.values():  # warm-up: first-call allocations are not timed
            rotld_loop(detector, paths[:1], 1)
        plain_loop(loaded["student"], paths[:1])

        runs = {
            "teacher": lambda: rotld_loop(loaded["teacher"], paths, batch_size),
            "student": lambda: rotld_loop(loaded["student"], paths, batch_size),
            "plain": lambda: plain_loop(loaded["student"], paths),
        }
        wall: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):
            for key, fn in runs.items():
                w, c = timed(fn)
                wall[key].append(w)
                cpu[key].append(c)
        rate = {k: len(paths) / min(v) for k, v in wall.items()}
        cpu_per_image = {k: min(v) / len(paths) for k, v in cpu.items()}
        labels = {
            "teacher": "teacher R-34, rotld loop",
            "student": "student R-18, rotld loop",
            "plain": "student R-18, plain MMRotate loop",
        }
        for key, label in labels.items():
            print(f"{label:35s} {rate[key]:7.2f} images/s  ({cpu_per_image[key]:.2f} CPU-s/image)")
        speedup, cpu_speedup = rate["student"] / rate["teacher"], cpu_per_image["teacher"] / cpu_per_image["student"]
        ratio, cpu_ratio = rate["student"] / rate["plain"], cpu_per_image["plain"] / cpu_per_image["student"]
        print(
            f"student/teacher: {speedup:.2f}x wall, {cpu_speedup:.2f}x CPU time "
            f"({'faster' if speedup > 1 else 'NOT faster'}; the student must be)"
        )
        print(
            f"rotld/plain MMRotate on the same model: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time "
            f"(target >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'})"
        )

        test_cfg = loaded["student"].test_cfg
        test_cfg.score_thr, test_cfg.max_per_img, test_cfg.nms_pre = 0.0, 50, 100  # small NMS: a check, not a load
        ours = rotld_loop(loaded["student"], paths[:2], batch_size)
        theirs = plain_loop(loaded["student"], paths[:2])
        n, worst = max_difference(ours, theirs)
        print(f"detections, rotld vs plain loop on 2 patches at score_thr 0: {n} boxes, max |difference| {worst:.1e}")
        assert n > 0 and worst <= 1e-2, "rotld's loop and plain MMRotate inference disagree"


if __name__ == "__main__":
    main()
