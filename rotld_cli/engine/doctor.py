"""Environment checks behind `rotld doctor`: one structured result per component, never a crash.

Every import is its own check (a missing torch must not stop the numpy line from printing), and a
failing check carries a one-line fix. Checks that need a failed one are reported as skipped.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable

BOOTSTRAP = "run `python3 -m rotld_cli.bootstrap`"
PLUGINS = {
    "ROTATED_HEADS": ("RotatedRetinaHeadDistribution", "LDRotatedRetinaHead", "RotatedFCOSHeadDistribution",
                      "RotatedATSSHeadDistribution", "RotatedShared2FCBBoxHeadDistribution"),
    "ROTATED_DETECTORS": ("KnowledgeDistillationRotatedSingleStageDetector", "KnowledgeDistillationOrientedRCNN"),
    "ROTATED_LOSSES": ("IMLoss",),
}
OK, FAIL, SKIP, NOT_APPLICABLE = "ok", "fail", "skip", "n/a"


@dataclass
class Check:
    """One line of the report; `fix` is set on failures."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status in (FAIL, SKIP)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class CheckFailed(Exception):
    """Raised by a check body: what went wrong and the one-line fix."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class NotApplicable(Exception):
    """Raised by a check body that does not apply here (e.g. CUDA ops without a GPU)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


# ------------------------------------------------------------------------------------ the checks


def check_python() -> str:
    return sys.version.split()[0]


def check_numpy() -> str:
    """numpy 1.23+ and 2.x both work (`compat_libs.TESTED`; the suite passes under 1.26 and 2.4 + OpenCV 5.1).

    What breaks under numpy 2 is a compiled package built against numpy 1 (opencv < 4.10,
    pycocotools): its own check below names it.
    """
    import numpy

    if _version_tuple(numpy.__version__) < (1, 23):
        raise CheckFailed(f"numpy {numpy.__version__}", f"numpy {numpy.__version__} is too old: install numpy>=1.23")
    return numpy.__version__


def check_shapely() -> str:
    import shapely

    return shapely.__version__


def check_opencv() -> str:
    import cv2

    return cv2.__version__


def check_torch() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.__version__}, CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}"
    return f"{torch.__version__}, CUDA not available (CPU only)"


def check_torchvision() -> str:
    import torch

    try:
        import torchvision
    except RuntimeError as exc:  # "operator torchvision::nms does not exist": built for another torch
        raise CheckFailed(
            _first_line(exc),
            f"torchvision does not match torch {torch.__version__}: install the matching pair "
            f"(torch 2.14.1 + torchvision 0.29.1; {BOOTSTRAP})",
        ) from exc
    torch_v, vision_v = _version_tuple(torch.__version__), _version_tuple(torchvision.__version__)
    if torch_v[0] == 2 and vision_v[:2] != (0, torch_v[1] + 15):
        raise CheckFailed(
            f"torchvision {torchvision.__version__} with torch {torch.__version__}",
            f"torchvision {torchvision.__version__} is not the release for torch {torch.__version__} "
            f"(expected 0.{torch_v[1] + 15}.x): {BOOTSTRAP}",
        )
    return torchvision.__version__


def _mmcv_distribution(package_dir: str) -> str | None:
    """Name of the installed distribution ('mmcv-full', 'mmcv', 'mmcv-lite') that owns this mmcv."""
    site = os.path.dirname(package_dir)
    for dist in importlib.metadata.distributions(path=[site]):
        name = (dist.metadata["Name"] or "").lower()
        if name in ("mmcv-full", "mmcv", "mmcv-lite"):
            return name
    return None


def check_mmcv() -> str:
    try:
        import mmcv
    except ImportError as exc:
        raise CheckFailed(_first_line(exc), f"mmcv-full is not installed: {BOOTSTRAP}") from exc
    version = mmcv.__version__
    dist = _mmcv_distribution(os.path.dirname(mmcv.__file__))
    if _version_tuple(version)[:2] != (1, 7):
        raise CheckFailed(f"mmcv {version}", f"mmcv {version} installed; rotld needs mmcv-full 1.7.2: {BOOTSTRAP}")
    try:
        ext = importlib.import_module("mmcv._ext")
    except ImportError as exc:
        if dist in ("mmcv", "mmcv-lite"):
            raise CheckFailed(
                f"{dist} {version} without compiled ops",
                f"mmcv (lite) installed instead of mmcv-full: {BOOTSTRAP}",
            ) from exc
        if "undefined symbol" in str(exc):
            raise CheckFailed(
                _first_line(exc),
                f"mmcv-full's ops were compiled against another torch: rebuild them ({BOOTSTRAP})",
            ) from exc
        raise CheckFailed(
            _first_line(exc), f"mmcv-full's ops are not compiled (mmcv._ext missing): rebuild with MMCV_WITH_OPS=1 "
            f"({BOOTSTRAP})",
        ) from exc
    missing = [op for op in ("nms_rotated", "box_iou_rotated") if not hasattr(ext, op)]
    if missing:
        raise CheckFailed(f"mmcv._ext lacks {', '.join(missing)}", f"rebuild mmcv-full 1.7.2 with its ops: {BOOTSTRAP}")
    return f"{version} ({dist or 'unknown distribution'}, compiled ops present)"


def _rotated_ops_probe(device: str) -> str:
    """One nms_rotated and one box_iou_rotated call, checked against the hand-computed IoU."""
    import torch
    from mmcv.ops import box_iou_rotated, nms_rotated

    boxes = torch.tensor(
        [[10.0, 10.0, 8.0, 4.0, 0.1], [10.5, 10.0, 8.0, 4.0, 0.1], [50.0, 50.0, 5.0, 5.0, 0.0]], device=device
    )
    inter = (8 - 0.5 * math.cos(0.1)) * (4 - 0.5 * math.sin(0.1))
    expected = inter / (64 - inter)
    iou = float(box_iou_rotated(boxes[:1], boxes[1:2])[0, 0])
    _, keep = nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), 0.5)
    if abs(iou - expected) > 1e-3 or keep.tolist() != [0, 2]:
        raise CheckFailed(
            f"wrong results on {device}: IoU {iou:.4f} (expected {expected:.4f}), "
            f"kept {keep.tolist()} (expected [0, 2])",
            f"mmcv-full's rotated ops are broken: rebuild mmcv-full ({BOOTSTRAP})",
        )
    return f"nms_rotated + box_iou_rotated OK (IoU {iou:.4f})"


def check_ops_cpu() -> str:
    return _rotated_ops_probe("cpu")


def check_ops_cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise NotApplicable("n/a (no GPU)")
    try:
        return _rotated_ops_probe("cuda")
    except CheckFailed:
        raise
    except Exception as exc:  # e.g. a CPU-only mmcv build on a GPU machine
        from mmcv.ops import get_compiling_cuda_version

        raise CheckFailed(
            f"{_first_line(exc)} (mmcv built with CUDA: {get_compiling_cuda_version()})",
            f"rebuild mmcv-full with CUDA ops (FORCE_CUDA=1) on this GPU machine: {BOOTSTRAP}",
        ) from exc


def check_mmdet() -> str:
    import mmdet

    if _version_tuple(mmdet.__version__)[:2] != (2, 28):
        raise CheckFailed(f"mmdet {mmdet.__version__}", f"rotld needs mmdet 2.28.2: {BOOTSTRAP}")
    return mmdet.__version__


def check_mmrotate() -> str:
    import mmrotate

    if _version_tuple(mmrotate.__version__)[:2] != (0, 3):
        raise CheckFailed(f"mmrotate {mmrotate.__version__}", f"rotld needs mmrotate 0.3.4: {BOOTSTRAP}")
    return mmrotate.__version__


def check_shims() -> str:
    from rotld_cli.engine import compat

    compat.apply()
    return ", ".join(compat.APPLIED)


def check_plugins() -> str:
    import mmrotate.models.builder as registries

    importlib.import_module("rotld_cli.engine.models")
    missing = [
        f"{registry}.{name}"
        for registry, names in PLUGINS.items()
        for name in names
        if getattr(registries, registry).get(name) is None
    ]
    if missing:
        raise CheckFailed(
            f"not registered: {', '.join(missing)}",
            "rotld's plugins are incomplete (rotld_cli/engine/models): reinstall rotld (`pip install -e .`)",
        )
    return ", ".join(name for names in PLUGINS.values() for name in names)


def check_distribution_head() -> str:
    """Build a small RotatedRetinaHeadDistribution and run it on random CPU features."""
    import torch
    from mmcv import ConfigDict
    from mmrotate.models import build_head

    head = build_head(
        ConfigDict(
            type="RotatedRetinaHeadDistribution",
            num_classes=3,
            in_channels=8,
            feat_channels=8,
            stacked_convs=1,
            reg_max=8,
            anchor_generator=dict(
                type="RotatedAnchorGenerator", octave_base_scale=4, scales_per_octave=3, ratios=[1.0, 0.5, 2.0],
                strides=[8, 16],
            ),
            bbox_coder=dict(
                type="DeltaXYWHAOBBoxCoder", angle_range="oc", norm_factor=None, edge_swap=False, proj_xy=False,
                target_means=(0.0,) * 5, target_stds=(1.0,) * 5,
            ),
        )
    )
    feats = (torch.rand(1, 8, 8, 8), torch.rand(1, 8, 4, 4))
    with torch.no_grad():
        cls_scores, bbox_preds = head(feats)
    shapes = [tuple(t.shape) for t in (*cls_scores, *bbox_preds)]
    broken = "the distribution head plugin is broken: reinstall rotld (`pip install -e .`)"
    if shapes != [(1, 27, 8, 8), (1, 27, 4, 4), (1, 405, 8, 8), (1, 405, 4, 4)]:
        raise CheckFailed(f"unexpected output shapes {shapes}", broken)
    if not all(torch.isfinite(t).all() for t in (*cls_scores, *bbox_preds)):
        raise CheckFailed("non-finite outputs", broken)
    return "CPU forward OK: 9 anchors x (3 classes, 5 x 9 bins = 405 ch)"


# ---------------------------------------------------------------------------------- the runner

_CHECKS: list[tuple[str, Callable[[], str], tuple[str, ...], str]] = [
    ("python", check_python, (), ""),
    ("numpy", check_numpy, (), f"numpy is missing: {BOOTSTRAP}"),
    ("shapely", check_shapely, (), f"shapely is missing: {BOOTSTRAP}"),
    ("opencv", check_opencv, (), f"OpenCV (opencv-python-headless) is missing: {BOOTSTRAP}"),
    ("torch", check_torch, (), f"torch is missing or broken: {BOOTSTRAP}"),
    ("torchvision", check_torchvision, ("torch",), f"torchvision is missing: {BOOTSTRAP}"),
    ("mmcv-full", check_mmcv, ("torch", "torchvision"), f"mmcv-full is broken: {BOOTSTRAP}"),
    ("mmcv ops (CPU)", check_ops_cpu, ("mmcv-full",), f"mmcv-full's ops are broken: {BOOTSTRAP}"),
    ("mmcv ops (CUDA)", check_ops_cuda, ("mmcv-full",), f"mmcv-full's CUDA ops are broken: {BOOTSTRAP}"),
    ("mmdet", check_mmdet, ("mmcv-full",), f"mmdet 2.28.2 is missing or broken: {BOOTSTRAP}"),
    ("mmrotate", check_mmrotate, ("mmdet",), f"mmrotate 0.3.4 is missing or broken: {BOOTSTRAP}"),
    ("shims", check_shims, ("mmrotate",), "a torch-2.x shim failed to apply: report it with `rotld --debug doctor`"),
    ("plugins", check_plugins, ("shims",), "rotld's plugins fail to import: reinstall rotld (`pip install -e .`)"),
    ("distribution head", check_distribution_head, ("plugins",), "the distribution head plugin is broken"),
]


def run_checks(only: list[str] | None = None) -> list[Check]:
    """Run every check in order (or the named ones and what they need); never raises."""
    from rotld_cli.engine import compat

    compat.quiet_imports()
    results: dict[str, Check] = {}
    wanted = _with_requirements(only) if only else None
    for name, body, needs, default_fix in _CHECKS:
        if wanted is not None and name not in wanted:
            continue
        blocked = [need for need in needs if results.get(need) is None or results[need].status != OK]
        if blocked:
            results[name] = Check(name, SKIP, f"skipped: needs {', '.join(blocked)}", f"fix {blocked[0]} first")
            continue
        results[name] = _run_one(name, body, default_fix)
    return list(results.values())


def _with_requirements(names: list[str]) -> set[str]:
    needs = {name: deps for name, _, deps, _ in _CHECKS}
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in needs and name not in wanted:
            wanted.add(name)
            stack.extend(needs[name])
    return wanted


NUMPY_ABI = "compiled using NumPy 1.x cannot be run in"


def _run_one(name: str, body: Callable[[], str], default_fix: str) -> Check:
    try:
        return Check(name, OK, body())
    except CheckFailed as exc:
        return Check(name, FAIL, exc.detail, exc.fix)
    except NotApplicable as exc:
        return Check(name, NOT_APPLICABLE, str(exc))
    except Exception as exc:  # a broken install raises anything: report it, never crash
        if NUMPY_ABI in str(exc):  # numpy 2 beside a package built for numpy 1
            return Check(name, FAIL, _first_line(exc),
                         f"a package {name} imports was built for numpy 1: reinstall it built for numpy 2 "
                         "(e.g. opencv-python-headless>=4.12, pycocotools>=2.0.8) or install numpy<2")
        return Check(name, FAIL, _first_line(exc), default_fix)


def report(checks: list[Check]) -> dict[str, Any]:
    """The `--json` document: overall status plus every check."""
    return {"ok": not any(c.failed for c in checks), "checks": [c.as_dict() for c in checks]}
