"""Benchmark `rotld export`: onnxruntime CPU vs the torch engine CPU, and the AP of the exported student.

1. Throughput (patches/s) on the same in-memory patches through `EngineDetector` (torch +
   MMRotate) and `OnnxDetector` (onnxruntime + rotld's numpy post-processing), both on the CPU
   with the same number of threads. The model is the paper's student (bundled
   `dota1/student-r18-gwd-ld-kd-1x`: R-18, 256-channel FPN and head) at 1024², freshly initialised
   (no download, no training) and saved as training saves it, then exported with the parity
   check. As in bench/inference.py, the timed runs keep no box (`score_thr` above 1): an
   untrained model's box count (0 or thousands, arbitrary) would make the NMS time arbitrary;
   what is timed is preprocessing, the network, top-k and decoding, the same work for any weights.
   Interleaved runs, best of `--repeats`.
2. Accuracy: the `rotld demo` student (`--demo-dir`, after `rotld demo`; default: a `demo --quick`
   student trained here, 1 iteration) exported, then both backends over the demo's val patches,
   Task1 files merged and scored with the DOTA devkit rules. The APs must be equal within 0.1 AP.

    .venv/bin/python -m bench.export                         # 1024² R-18 student, 4 patches; AP of a quick student
    .venv/bin/python -m bench.export --demo-dir rotld-demo   # AP of the full demo's student
    .venv/bin/python -m bench.export --quick                 # synthetic R-18 at 128², a minute
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.inference import FULL, NO_BOX, QUICK, make_checkpoint, make_patches

AP_TOLERANCE = 0.001  # 0.1 AP point, as a fraction


def throughput(root: Path, args: argparse.Namespace, size: int, count: int) -> None:
    import cv2
    import torch

    from rotld_cli.deploy.onnx_detector import OnnxDetector
    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.engine.export import ExportOptions, export_model

    recipe = QUICK["student"] if args.quick else FULL["student"]
    paths = make_patches(root / "patches", count, size)
    kind = "real DOTA crops" if paths[0].name.startswith("B") else "synthetic scenes"
    checkpoint = make_checkpoint(recipe, [f"data.img_scale={size}", "model.backbone.pretrained=null"],
                                 root / "student.pth")
    exported = export_model(ExportOptions(checkpoint, root / "student.onnx", check_images=root / "patches",
                                          check_count=2))
    p = exported.parity
    print(f"export: {exported.size_bytes / 2**20:.1f} MiB, {exported.seconds:.1f} s; parity on 2 patches: "
          f"{p.matched}/{p.reference_total} boxes, max box diff {p.max_box_diff:.1e} px, score {p.max_score_diff:.1e}; "
          f"raw scores {exported.raw_score_diff:.1e}, logits {exported.raw_logit_diff:.1e}")

    torch.set_num_threads(args.threads)
    engine = EngineDetector.from_checkpoint(checkpoint, device="cpu", batch_size=1)
    onnx = OnnxDetector.from_file(root / "student.onnx", threads=args.threads)
    engine.test_cfg.score_thr = onnx.test_cfg.score_thr = NO_BOX
    images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths]
    engine.detect(images[:1]), onnx.detect(images[:1])  # warm-up: first-call allocations are not timed
    best = {"torch engine": float("inf"), "onnxruntime": float("inf")}
    for _ in range(args.repeats):
        for name, detector in (("torch engine", engine), ("onnxruntime", onnx)):
            started = time.perf_counter()
            detector.detect(images)
            best[name] = min(best[name], time.perf_counter() - started)
    print(f"{len(images)} patches of {size}x{size} px ({kind}), {recipe}, CPU, {args.threads} thread(s), "
          f"best of {args.repeats} interleaved runs")
    for name, seconds in best.items():
        print(f"  {name:13s} {len(images) / seconds:7.3f} patches/s")
    print(f"  onnxruntime / torch: {best['torch engine'] / best['onnxruntime']:.2f}x")


def quick_demo_student(work: Path) -> Path:
    from rotld_cli.demo import MODELS, QUICK, make_data, split_data, train_model

    make_data(work, QUICK)
    split_data(work, QUICK)
    models = {m.key: m for m in MODELS}
    teacher, _ = train_model(work, QUICK, models["teacher"], "cpu")
    return train_model(work, QUICK, models["student"], "cpu", teacher=teacher)[0]


def demo_run(demo_dir: Path, run: str) -> Path:
    import json

    marker = demo_dir / "runs" / run / "done.json"
    if not marker.is_file():
        raise SystemExit(f"{demo_dir}: no finished {run} run (runs/{run}/done.json); run `rotld demo` first")
    return marker.parent / json.loads(marker.read_text())["checkpoint"]


def accuracy(root: Path, args: argparse.Namespace) -> None:
    from rotld_cli.deploy.onnx_detector import OnnxDetector
    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.engine.export import ExportOptions, export_model
    from rotld_cli.engine.patches import detect_split
    from rotld_cli.evaluation import EvaluateOptions, evaluate_results

    work = args.demo_dir or root / "demo-quick"
    checkpoint = demo_run(args.demo_dir, args.run) if args.demo_dir else quick_demo_student(work)
    val = work / "split" / "val"
    model = root / "demo-student.onnx"
    export_model(ExportOptions(checkpoint, model, check_images=val, check_count=2))
    detectors = {"torch engine": EngineDetector.from_checkpoint(checkpoint, device="cpu"),
                 "onnxruntime": OnnxDetector.from_file(model, threads=args.threads)}
    aps, runs = {}, {}
    for name, detector in detectors.items():
        if args.ap_score_thr is not None:  # the same test settings for both backends
            detector.test_cfg.score_thr = args.ap_score_thr
        folder = root / name.split()[0]
        runs[name] = detect_split(detector, val, folder)
        aps[name] = evaluate_results(EvaluateOptions(results=folder, ann_dir=work / "data" / "val" / "labelTxt",
                                                     classes=detectors[name].classes))
    onnx = runs["onnxruntime"]
    thr = "" if args.ap_score_thr is None else f", score_thr {args.ap_score_thr:g} for both"
    print(f"AP of {checkpoint} on {onnx.images} val patches of {work} (merged, DOTA devkit rules{thr}):")
    for name, report in aps.items():
        print(f"  {name:13s} AP {100 * report['AP']:6.2f}  AP50 {100 * report['AP50']:6.2f}  "
              f"AP75 {100 * report['AP75']:6.2f}  ({sum(c['num_det'] for c in report['per_class'].values())} "
              "merged detections)")
    gap = abs(aps["torch engine"]["AP"] - aps["onnxruntime"]["AP"])
    verdict = "met" if gap <= AP_TOLERANCE else "NOT met"
    print(f"  |AP difference| {100 * gap:.3f} AP points (must be <= {100 * AP_TOLERANCE:.1f}: {verdict}); "
          f"{onnx.images} patches, {onnx.images / onnx.seconds:.2f} patches/s through onnxruntime")
    assert gap <= AP_TOLERANCE, "the exported model's AP differs from the engine's"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="synthetic R-18 at 128 px, 4 patches, 1 repeat")
    parser.add_argument("--patches", type=int, default=None, help="timed patches (default 4)")
    parser.add_argument("--size", type=int, default=None, help="patch size in px (default 1024, quick 128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per backend (default 2, quick 1)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count(),
                        help="CPU threads of both backends (default: $OMP_NUM_THREADS, else all cores)")
    parser.add_argument("--demo-dir", type=Path, default=None, help="a finished `rotld demo` folder for the AP part")
    parser.add_argument("--run", default="student", help="AP part: which run of --demo-dir (default: student)")
    parser.add_argument("--ap-score-thr", type=float, default=None,
                        help="AP part: score threshold of both backends (default: the model's own)")
    parser.add_argument("--part", choices=("all", "speed", "ap"), default="all", help="run only one part")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 2)
    size = args.size or (128 if args.quick else 1024)

    from rotld_cli.engine import load_engine

    load_engine()
    with tempfile.TemporaryDirectory(prefix="rotld-bench-export-") as tmp:
        root = Path(tmp)
        if args.part in ("all", "speed"):
            throughput(root / "speed", args, size, args.patches or 4)
        if args.part in ("all", "ap"):
            accuracy(root / "ap", args)


if __name__ == "__main__":
    main()
