"""Which `Detector` runs a model file: chosen by its suffix, loaded only after the options are checked."""

from __future__ import annotations

from pathlib import Path

from rotld_cli.checkpoints import check_checkpoint_file
from rotld_cli.detector import Detector, TunableDetector
from rotld_cli.errors import RotldError, UsageError

BACKENDS = {".pth": "rotld checkpoint (MMRotate engine)", ".onnx": "ONNX model"}


def check_model_path(path: Path) -> None:
    """A readable model file of a known kind (before anything heavy is imported)."""
    if path.suffix.lower() not in BACKENDS:
        raise UsageError(f"{path}: unknown model file type (expected {' or '.join(BACKENDS)})")
    if path.suffix.lower() == ".pth":
        check_checkpoint_file(path)  # exists, and is a torch archive or pickle at all
    elif not path.is_file():
        raise RotldError(f"{path}: {'no such file' if not path.exists() else 'not a file'}")


def onnx_providers(path: Path, device: str | None) -> list[str] | None:
    """onnxruntime's execution providers for `--device` (None: its default, the CPU)."""
    if device != "cuda":
        return None
    try:
        import onnxruntime
    except ImportError:
        return None  # open_session reports the missing package with its install line
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise UsageError(f"--device cuda: this onnxruntime has no CUDA provider for {path} "
                         "(install onnxruntime-gpu, or drop --device cuda)")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def load_detector_backend(
    path: Path, device: str | None, batch_size: int | None, recipe: str | None = None
) -> Detector:
    """`.pth` -> the engine's `EngineDetector` (built from `recipe`, else the checkpoint's own);
    `.onnx` -> onnxruntime (`rotld export`'s file; no engine import)."""
    check_model_path(path)
    if path.suffix.lower() == ".onnx":
        from rotld_cli.deploy.onnx_detector import OnnxDetector

        return OnnxDetector.from_file(path, batch_size=batch_size or 1, providers=onnx_providers(path, device))
    from rotld_cli.engine.checkpoint_eval import load_model
    from rotld_cli.engine.devices import pick_device

    # evaluate CKPT's loader: one-line errors for a plain state dict, other classes, mismatched weights
    return load_model(path, pick_device(device), recipe, batch_size)


def lower_score_thr(detector: Detector, score_thr: float) -> float | None:
    """Lower the model's own score threshold to `score_thr` when it is higher (else the boxes between the
    two would never reach the merge); returns the model's former threshold, or None when unchanged."""
    if not isinstance(detector, TunableDetector):
        return None
    before = float(detector.test_settings()["score_thr"])
    if score_thr >= before:
        return None
    detector.set_score_thr(score_thr)
    return before
