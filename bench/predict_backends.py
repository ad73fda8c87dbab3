"""Where `rotld predict`'s time goes, `.pth` against `.onnx`, with rotld's rotated NMS and the one it replaced.

Part of `python -m bench.predict`. Two measurements, in one process:

* NMS alone (`nms_speed`): the engine-free rotated NMS against the former implementation
  (bench/reference_nms.py) on dense scenes built from P0706's 536 labelled objects (every object
  10, 20, 50 times, jittered, as a detector's candidates before NMS) and random stress cases
  (rotated rectangles in a small area; 3% wild quads, which go through the devkit's algorithm);
  CPU seconds, best of 3, and whether the kept boxes are identical (same boxes, same order).
* The whole command (`backend_speed`): a `rotld demo --quick` student (trained here unless
  `--demo-dir` names a finished demo; 1 iteration, test settings score_thr 0 and 50 boxes per
  window: the dense case a barely trained model gives) as `.pth` (torch engine) and `.onnx`
  (onnxruntime, exported here), each run with rotld's NMS and with the former one, on the same
  images: windows/s, the model-only seconds (the network's forward: engine `extract_feat` + head,
  onnxruntime `session.run`), the rest (reading, pre- and post-processing, merge, files) and its
  share, and the seconds inside the rotated NMS (per window for `.onnx`, whose post-processing is
  rotld's; the cross-window merge for both). The Task1 files of the two NMS runs must be identical.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from bench.reference_nms import jittered_scene, random_quads, reference_nms_quads

NMS_USERS = ("rotld_cli.deploy.postprocess", "rotld_cli.predict.run")  # modules that call nms_quads


def _best_cpu(fn: Callable, args: tuple, repeats: int) -> tuple[float, object]:
    """CPU seconds of `fn(*args)` (stable on a shared machine), best of `repeats`, and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.process_time()
        result = fn(*args)
        best = min(best, time.process_time() - started)
    return best, result


def nms_scenes(samples: Path | None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, polys, scores, groups): P0706's dense scenes (when the samples are there) and random stress."""
    scenes = []
    label = samples / "labelTxt" / "P0706.txt" if samples is not None else None
    if label is not None and label.is_file():
        from rotld_cli.dota.formats import read_label_file

        objects = read_label_file(label).objects
        names = sorted({o.name for o in objects})
        polys = np.array([o.poly for o in objects])
        classes = np.array([names.index(o.name) for o in objects])
        for copies in (10, 20, 50):
            scene = jittered_scene(polys, classes, copies, 3.0, seed=copies)
            scenes.append((f"P0706 x{copies} ({len(objects)} objects), per class", *scene))
    for n, extent, odd in ((8000, 256, 0.0), (20000, 2000, 0.0), (3000, 300, 0.03)):
        wild = f", {odd:.0%} wild quads" if odd else ""
        scenes.append((f"random {n} in {extent} px{wild}", *random_quads(n, extent, seed=0, odd=odd)))
    return scenes


def nms_speed(samples: Path | None, repeats: int = 3) -> None:
    from rotld_cli.dota.rotated_nms import nms_quads

    print("\nrotated NMS alone (IoU 0.1), CPU seconds, best of", repeats)
    print(f"  {'scene':44s} {'boxes':>6s} {'kept':>5s} {'former':>8s} {'rotld':>8s} {'speed-up':>8s}  same")
    for name, polys, scores, groups in nms_scenes(samples):
        before, expected = _best_cpu(reference_nms_quads, (polys, scores, groups, 0.1), min(repeats, 2))
        after, got = _best_cpu(nms_quads, (polys, scores, groups, 0.1), repeats)
        same = "yes" if np.array_equal(expected, got) else "NO"
        print(f"  {name:44s} {len(polys):6d} {len(got):5d} {before:8.3f} {after:8.3f} {before / after:7.1f}x  {same}")


class _Clock:
    """Seconds spent inside the wrapped callables (CPU-synchronous: the benchmark runs on the CPU)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


@contextlib.contextmanager
def _nms(implementation: Callable, clock: _Clock) -> Iterator[None]:
    """Every rotld module that calls the rotated NMS calls `implementation`, timed."""
    import importlib

    modules = [importlib.import_module(name) for name in NMS_USERS]
    saved = [m.nms_quads for m in modules]
    for module in modules:
        module.nms_quads = clock.wrap(implementation)
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.nms_quads = original


class _TimedSession:
    """An onnxruntime session whose `run` is timed (the model-only part of an `OnnxDetector`)."""

    def __init__(self, session, clock: _Clock) -> None:
        self._session, self.run = session, clock.wrap(session.run)

    def __getattr__(self, name):
        return getattr(self._session, name)


def _model_clock(detector) -> _Clock:
    """Time the network's forward only: onnxruntime's `run`, or the engine's backbone+neck and head."""
    clock = _Clock()
    if hasattr(detector, "session"):
        detector.session = _TimedSession(detector.session, clock)
    else:
        module = detector.model.module
        module.extract_feat = clock.wrap(module.extract_feat)
        module.bbox_head.forward = clock.wrap(module.bbox_head.forward)
    return clock


def backend_speed(root: Path, paths: list[Path], checkpoint: Path, params, repeats: int, threads: int) -> None:
    """windows/s of `predict` for .pth and .onnx, model-only time, the rest's share, NMS before/after."""
    import torch

    from rotld_cli.deploy.onnx_detector import OnnxDetector
    from rotld_cli.dota.rotated_nms import nms_quads
    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.engine.export import ExportOptions, export_model
    from rotld_cli.predict.run import PredictOptions, image_windows, predict

    onnx_path = root / "student.onnx"
    if not onnx_path.exists():
        export_model(ExportOptions(checkpoint, onnx_path, check_count=1))
    torch.set_num_threads(threads)
    detectors = {
        ".pth (torch engine)": EngineDetector.from_checkpoint(checkpoint, device="cpu", batch_size=1),
        ".onnx (onnxruntime)": OnnxDetector.from_file(onnx_path, threads=threads),
    }
    clocks = {name: _model_clock(d) for name, d in detectors.items()}
    import cv2

    windows = sum(len(image_windows(*cv2.imread(str(p)).shape[1::-1], params)) for p in paths)
    options = PredictOptions(split=params, redo=True)
    implementations = {"former": reference_nms_quads, "rotld": nms_quads}
    rows: dict[tuple[str, str], dict] = {}
    for detector in detectors.values():  # warm-up on the first image: first-call allocations are not timed
        predict(detector, paths[:1], root / "warm", options, {"file": "bench"})
    for _ in range(repeats):  # interleaved: a burst of load on a shared machine hits every run alike
        for name, detector in detectors.items():
            for nms_name, implementation in implementations.items():
                nms_clock, model_clock = _Clock(), clocks[name]
                model_clock.seconds = 0.0
                out = root / f"out-{name.split()[0][1:]}-{nms_name}"
                with _nms(implementation, nms_clock):
                    started = time.perf_counter()
                    predict(detector, paths, out, options, {"file": "bench"})
                    seconds = time.perf_counter() - started
                run = {"seconds": seconds, "model": model_clock.seconds, "nms": nms_clock.seconds, "out": out}
                if (name, nms_name) not in rows or seconds < rows[name, nms_name]["seconds"]:
                    rows[name, nms_name] = run
    print(f"\nrotld predict, {len(paths)} images, {windows} windows, CPU, {threads} thread(s), best of {repeats}; "
          f"model-only = the network's forward; the rest = reading, pre/post-processing, merge, files")  # fmt: skip
    print(f"  {'model':22s} {'NMS':7s} {'windows/s':>9s} {'model-only s':>12s} {'rest s':>8s} {'rest share':>10s} "
          f"{'in NMS s':>9s}")  # fmt: skip
    for (name, nms_name), run in rows.items():
        rest = run["seconds"] - run["model"]
        print(f"  {name:22s} {nms_name:7s} {windows / run['seconds']:9.2f} {run['model']:12.2f} {rest:8.2f} "
              f"{rest / run['seconds']:9.0%} {run['nms']:9.2f}")  # fmt: skip
    for name in detectors:
        before, after = rows[name, "former"], rows[name, "rotld"]
        same = all((before["out"] / p.name).read_text() == p.read_text() for p in after["out"].glob("Task1_*.txt"))
        print(f"  {name}: NMS {before['nms'] / max(after['nms'], 1e-9):.1f}x faster "
              f"({before['nms']:.2f} s -> {after['nms']:.2f} s), rest share "
              f"{(before['seconds'] - before['model']) / before['seconds']:.0%} -> "
              f"{(after['seconds'] - after['model']) / after['seconds']:.0%}, windows/s "
              f"{windows / before['seconds']:.2f} -> {windows / after['seconds']:.2f}; "
              f"Task1 files identical: {'yes' if same else 'NO'}")  # fmt: skip
