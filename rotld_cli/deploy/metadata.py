"""The metadata block of an exported model: everything needed to run it, in the ONNX file itself.

Stored as one JSON string under the `rotld` key of the model's `metadata_props`, which
onnxruntime exposes as `custom_metadata_map` without the `onnx` package.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rotld_cli.errors import RotldError

METADATA_KEY = "rotld"
FORMAT = 2
"""The newest metadata layout this runtime reads. Anchor-head exports (rotated RetinaNet, ATSS) are
still written as format 1, so older runtimes keep reading them; a rotated FCOS export (points,
centerness) is format 2."""


@dataclass
class DetectionSettings:
    """The head's test_cfg: top-k per level, score threshold, class-aware rotated NMS, cap."""

    nms_pre: int = 2000
    score_thr: float = 0.05
    iou_thr: float = 0.1
    max_per_img: int = 2000


@dataclass
class AnchorSettings:
    """mmdet `AnchorGenerator` arguments (rotated: θ = 0); base sizes are the strides."""

    strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    ratios: list[float] = field(default_factory=lambda: [1.0, 0.5, 2.0])
    octave_base_scale: float = 4.0
    scales_per_octave: int = 3
    center_offset: float = 0.0


@dataclass
class PointSettings:
    """mmdet `MlvlPointGenerator` (rotated FCOS): one point per location at (index + offset) · stride."""

    strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    offset: float = 0.5


@dataclass
class CoderSettings:
    """`DeltaXYWHAOBBoxCoder` (no edge swap, no xy projection, no angle norm factor)."""

    means: list[float] = field(default_factory=lambda: [0.0] * 5)
    stds: list[float] = field(default_factory=lambda: [1.0] * 5)
    wh_ratio_clip: float = 16 / 1000
    angle_range: str = "oc"


@dataclass
class InputSettings:
    """The test pipeline: keep-ratio resize to `img_scale`, Normalize, Pad to a multiple of `size_divisor`."""

    img_scale: list[int] = field(default_factory=lambda: [1024, 1024])
    keep_ratio: bool = True
    mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    to_rgb: bool = True
    size_divisor: int = 32
    fixed_size: int | None = None
    """Export `--size`: the graph takes exactly fixed_size² inputs (None: any multiple of size_divisor)."""


@dataclass
class ModelMetadata:
    """What `OnnxDetector` needs beside the graph, and where the model came from."""

    classes: list[str]
    angle_version: str
    reg_max: int
    integral_project: list[float]
    integral_angle_project: list[float]
    num_anchors: int
    input: InputSettings = field(default_factory=InputSettings)
    test_cfg: DetectionSettings = field(default_factory=DetectionSettings)
    anchors: AnchorSettings = field(default_factory=AnchorSettings)
    coder: CoderSettings = field(default_factory=CoderSettings)
    family: str = "retinanet"
    """'retinanet' and 'atss': anchors and delta coder; 'fcos': points, distance coder and centerness."""
    points: PointSettings | None = None
    rotld_version: str = ""
    source_checkpoint: str = ""
    source_sha256: str = ""
    recipe: str = ""
    opset: int = 0
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "model") -> ModelMetadata:
        """Parse the stored JSON; a missing or malformed block is a one-line error naming `where`."""
        try:
            data = json.loads(text)
            parts = {
                "input": InputSettings(**data.pop("input")),
                "test_cfg": DetectionSettings(**data.pop("test_cfg")),
                "anchors": AnchorSettings(**data.pop("anchors")),
                "coder": CoderSettings(**data.pop("coder")),
                "points": None if data.get("points") is None else PointSettings(**data.pop("points")),
            }
            data.pop("points", None)
            meta = cls(**data, **parts)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RotldError(f"{where}: malformed rotld metadata ({type(exc).__name__}: {exc})") from None
        if meta.format > FORMAT:
            raise RotldError(f"{where}: written by a newer rotld (metadata format {meta.format}); upgrade rotld")
        return meta

    @property
    def strides(self) -> list[int]:
        """The FPN levels' strides: of the points (FCOS) or of the anchors."""
        return list(self.points.strides if self.points is not None else self.anchors.strides)

    @classmethod
    def from_props(cls, props: Mapping[str, Any], where: str = "model") -> ModelMetadata:
        if METADATA_KEY not in props:
            raise RotldError(f"{where}: not a rotld export (no '{METADATA_KEY}' metadata); make it with `rotld export`")
        return cls.from_json(props[METADATA_KEY], where)
