"""Which `Detector` runs a model file: chosen by its suffix, loaded only after the options are checked."""

from __future__ import annotations

from pathlib import Path

from rotld_cli.detector import Detector
from rotld_cli.errors import RotldError, UsageError

BACKENDS = {".pth": "rotld checkpoint (MMRotate engine)", ".onnx": "ONNX model"}


def check_model_path(path: Path) -> None:
    """A readable model file of a known kind (before anything heavy is imported)."""
    if path.suffix.lower() not in BACKENDS:
        raise UsageError(f"{path}: unknown model file type (expected {' or '.join(BACKENDS)})")
    if not path.is_file():
        raise RotldError(f"{path}: {'no such file' if not path.exists() else 'not a file'}")


def load_detector_backend(path: Path, device: str | None, batch_size: int | None) -> Detector:
    """`.pth` -> the engine's `EngineDetector`; `.onnx` -> the ONNX runtime detector (not yet wired)."""
    check_model_path(path)
    if path.suffix.lower() == ".onnx":
        raise UsageError(f"{path}: ONNX models are not available in `rotld predict` yet; give a .pth checkpoint")
    from rotld_cli.engine.detector import EngineDetector

    return EngineDetector.from_checkpoint(path, device=device, batch_size=batch_size)
