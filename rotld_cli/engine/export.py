"""`rotld export`: a rotld checkpoint → an ONNX graph + metadata, checked against the engine.

What goes into the graph: backbone, FPN and head, up to the head's raw maps (sigmoid class
scores and distribution logits, both NHWC per level). What stays outside, in the engine-free
`rotld_cli.deploy` layer: the integral, anchors, box decoding and the class-aware rotated NMS.
Why: the NMS is data-dependent (a greedy loop over a variable number of boxes) and would need
mmdeploy's custom `NMSRotated` op, which plain onnxruntime lacks; rotld's own polygon NMS is
already engine-free and tested against the devkit. Top-k per level, the integral and decode are
then cheapest on the ~2000 kept anchors per level instead of all 196k, and numpy keeps them
byte-for-byte reviewable against mmrotate (method.md §1.3-1.7).

The export only succeeds after a parity check: the same images through `EngineDetector` (torch,
the model's own mmrotate post-processing) and `OnnxDetector` (onnxruntime + numpy), detections
matched box by box within a stated tolerance. The file is written to a temporary name and only
renamed onto OUT once the check passes.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rotld_cli import __version__
from rotld_cli.checkpoints import check_checkpoint_file, sha256_file
from rotld_cli.deploy.metadata import (
    METADATA_KEY,
    AnchorSettings,
    CoderSettings,
    DetectionSettings,
    InputSettings,
    ModelMetadata,
    PointSettings,
)
from rotld_cli.deploy.onnx_detector import INPUT_NAME, OnnxDetector, output_names
from rotld_cli.deploy.parity import ParityReport, Tolerance, compare_detections
from rotld_cli.deploy.postprocess import grid_anchors, grid_points
from rotld_cli.deploy.preprocess import collate, prepare_image
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.fileio import atomic_path
from rotld_cli.recipes import FAMILIES

DEFAULT_OPSET = 17
PARITY_ADVICE = (
    "float-level ties at a threshold or top-k are tolerated already: check on patches the model detects on "
    "(--check-images DIR, e.g. a prepare-dota split), or widen --box-tol/--score-tol if this difference is acceptable"
)
NOT_EXERCISED = (
    "the parity check matched no detection{ties}: only the raw head outputs were compared; pass --check-images DIR "
    "with patches the model detects on (e.g. a prepare-dota split) to compare its boxes"
)
EXPORTABLE_FAMILIES = ("retinanet", "atss", "fcos")
TWO_STAGE_EXPORT = (
    "a two-stage graph needs the proposal step (top-k, box decoding, NMS per image) between the RPN and the "
    "RoI head, and RoIAlignRotated, which stock onnxruntime lacks (mmdeploy's custom ops); export the RPN+FPN "
    "and the RoI head as two graphs with the proposal NMS in numpy between them (README: export)"
)
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".jpg")


@dataclass
class ExportOptions:
    checkpoint: Path
    out: Path
    size: int | None = None
    """Fixed square input size (a multiple of 32); None: any height/width (padded to a multiple of 32)."""
    opset: int = DEFAULT_OPSET
    recipe: str | None = None
    check_images: Path | None = None
    """Folder of patches for the parity check; None: synthetic scenes at the model's input size."""
    check_count: int = 4
    tolerance: Tolerance = field(default_factory=Tolerance)
    overwrite: bool = False
    """Replace an existing OUT (default: refuse it)."""


@dataclass
class ExportResult:
    out: Path
    sha256: str
    size_bytes: int
    metadata: ModelMetadata
    parity: ParityReport
    raw_score_diff: float
    raw_logit_diff: float
    check_images: list[str]
    seconds: float


def check_options(options: ExportOptions) -> None:
    """Everything checkable before the engine is imported or a file is written."""
    if options.out.suffix.lower() != ".onnx":
        raise UsageError(f"OUT {options.out}: the output file must end in .onnx")
    if options.out.is_dir():
        raise UsageError(f"OUT {options.out}: is a directory; give a file name ending in .onnx")
    blocker = next((p for p in options.out.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"OUT {options.out}: {blocker} is a file, not a folder")
    if options.out.exists() and not options.overwrite:
        raise UsageError(f"OUT {options.out}: exists; pass --overwrite to replace it (or choose another name)")
    if options.size is not None and (options.size < 64 or options.size % 32):
        raise UsageError(f"--size must be a multiple of 32 and at least 64, got {options.size}")
    if not 11 <= options.opset <= 20:
        raise UsageError(f"--opset must be between 11 and 20, got {options.opset}")
    if options.check_count < 1:
        raise UsageError(f"--check-count must be at least 1, got {options.check_count}")
    check_checkpoint_file(options.checkpoint)
    if options.check_images is not None:
        check_image_paths(options.check_images, options.check_count)
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise RotldError(f"{module} is not installed; `pip install onnx onnxruntime`") from None


def check_image_paths(folder: Path, count: int) -> list[Path]:
    """The first `count` images of `folder` (or of `folder/images`, a prepare-dota split)."""
    if not folder.exists():
        raise UsageError(f"--check-images {folder}: no such folder")
    if not folder.is_dir():
        raise UsageError(f"--check-images {folder}: not a folder (give a folder of patches, e.g. a prepare-dota split)")
    folder = folder / "images" if (folder / "images").is_dir() else folder
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UsageError(f"--check-images {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return paths[:count]


class _HeadMaps:
    """Builds the traced module lazily (torch is imported only here, inside the engine)."""

    @staticmethod
    def module(detector: Any):
        import torch

        class HeadMaps(torch.nn.Module):
            """image → per level: sigmoid scores (N, H, W, A*C) and distribution logits (N, H, W, A*5*(R+1));
            a point head (rotated FCOS) also gives its sigmoid centerness (N, H, W, 1), and its logits are the
            distance logits followed by the angle logits."""

            def __init__(self, model: Any) -> None:
                super().__init__()
                self.backbone, self.neck, self.head = model.backbone, model.neck, model.bbox_head

            def forward(self, image):
                outs = self.head(self.neck(self.backbone(image)))
                scores = [c.sigmoid().permute(0, 2, 3, 1) for c in outs[0]]
                if len(outs) == 4:  # (cls, distance logits, angle logits, centerness)
                    logits = [torch.cat([b, a], dim=1).permute(0, 2, 3, 1) for b, a in zip(outs[1], outs[2])]
                    return (*scores, *logits, *[c.sigmoid().permute(0, 2, 3, 1) for c in outs[3]])
                return (*scores, *[b.permute(0, 2, 3, 1) for b in outs[1]])

        return HeadMaps(detector).eval()


def _pipeline_settings(cfg: Any, size: int | None, where: str) -> InputSettings:
    """Resize/Normalize/Pad of the config's test pipeline; anything else cannot be reproduced."""
    steps = list(cfg.data.test.pipeline)
    aug = next((s for s in steps if s["type"] == "MultiScaleFlipAug"), None)
    if aug is None or aug.get("flip"):
        raise RotldError(f"{where}: the test pipeline is not a single-scale MultiScaleFlipAug; cannot export it")
    transforms = {t["type"]: t for t in aug["transforms"]}
    unknown = set(transforms) - {"RResize", "Resize", "Normalize", "Pad", "DefaultFormatBundle", "ImageToTensor",
                                 "Collect"}
    scale = aug.get("img_scale")
    if unknown or "Normalize" not in transforms or not isinstance(scale, (tuple, list)) or len(scale) != 2:
        raise RotldError(f"{where}: test pipeline steps {sorted(unknown) or 'Normalize/img_scale missing'} "
                         "cannot be reproduced outside the engine")
    norm = transforms["Normalize"]
    resize = transforms.get("RResize") or transforms.get("Resize") or {}
    if size is not None and size < max(scale):
        raise UsageError(f"--size {size} is smaller than the model's test scale {max(scale)} (every image is "
                         f"resized to fit {scale[0]}x{scale[1]} first); use --size {max(scale)} or more")
    return InputSettings(
        img_scale=[int(v) for v in scale], keep_ratio=bool(resize.get("keep_ratio", True)),
        mean=[float(v) for v in norm["mean"]], std=[float(v) for v in norm["std"]],
        to_rgb=bool(norm.get("to_rgb", True)), size_divisor=int(transforms.get("Pad", {}).get("size_divisor", 1)),
        fixed_size=size,
    )  # fmt: skip


def build_metadata(model: Any, cfg: Any, recipe: Any, checkpoint: Path, options: ExportOptions) -> ModelMetadata:
    """Read everything the post-processing needs from the built model; refuse what numpy does not reproduce."""
    where = str(checkpoint)
    if recipe.family not in EXPORTABLE_FAMILIES:
        raise RotldError(f"{where}: {FAMILIES[recipe.family].title} cannot be exported yet: {TWO_STAGE_EXPORT}")
    head = model.bbox_head
    if not hasattr(head, "integral") or not hasattr(head, "integral_angle"):
        raise RotldError(f"{where}: {type(head).__name__} is not rotld's distribution head; cannot export it")
    if not head.use_sigmoid_cls:
        raise RotldError(f"{where}: the head uses softmax classification; export supports sigmoid heads only")
    coder = head.bbox_coder
    if recipe.family == "fcos":
        anchors, points = AnchorSettings(), PointSettings(strides=[int(s) for s in head.strides],
                                                          offset=float(head.prior_generator.offset))
        coder_settings = CoderSettings(angle_range=str(coder.angle_version))
    else:
        odd = [name for name, value in (("norm_factor", coder.norm_factor), ("edge_swap", coder.edge_swap),
                                        ("proj_xy", coder.proj_xy), ("add_ctr_clamp", coder.add_ctr_clamp)) if value]
        if odd:
            raise RotldError(f"{where}: box coder options {', '.join(odd)} are not supported by the exported decoder")
        gen = cfg.model.bbox_head.anchor_generator
        anchors, points = AnchorSettings(
            strides=[int(s) for s in gen["strides"]], ratios=[float(r) for r in gen["ratios"]],
            octave_base_scale=float(gen["octave_base_scale"]), scales_per_octave=int(gen["scales_per_octave"]),
            center_offset=float(gen.get("center_offset", 0.0)),
        ), None  # fmt: skip
        if gen.get("scales") is not None or gen.get("base_sizes") is not None or gen.get("centers") is not None:
            raise RotldError(f"{where}: anchor generator options scales/base_sizes/centers are not supported by "
                             "export")
        coder_settings = CoderSettings(means=[float(v) for v in coder.means], stds=[float(v) for v in coder.stds],
                                       angle_range=str(coder.angle_range))
    test_cfg = head.test_cfg
    return ModelMetadata(
        classes=list(recipe.classes), angle_version=str(recipe.get("model.angle_version")),
        reg_max=int(head.reg_max), integral_project=head.integral.project.tolist(),
        integral_angle_project=head.integral_angle.project.tolist(),
        num_anchors=int(getattr(head, "num_anchors", 1)),
        input=_pipeline_settings(cfg, options.size, where),
        test_cfg=DetectionSettings(
            nms_pre=int(test_cfg.get("nms_pre", -1)), score_thr=float(test_cfg.score_thr),
            iou_thr=float(test_cfg.nms.iou_thr), max_per_img=int(test_cfg.max_per_img),
        ),
        anchors=anchors, points=points, family=recipe.family, format=2 if points is not None else 1,
        coder=coder_settings,
        rotld_version=__version__, source_checkpoint=checkpoint.name, source_sha256=sha256_file(checkpoint),
        recipe=str(getattr(recipe, "label", recipe.name)), opset=options.opset,
    )  # fmt: skip


def verify_anchors(model: Any, meta: ModelMetadata) -> None:
    """The numpy anchors (or points) equal the engine's generator's, bit for bit, on a non-square grid."""
    import torch

    sizes = [(3, 5)] * len(meta.strides)
    head = model.bbox_head  # mmrotate's anchor heads call their generator anchor_generator, mmdet's point heads not
    generator = head.prior_generator if meta.points is not None else head.anchor_generator
    theirs = generator.grid_priors([torch.Size(s) for s in sizes], device="cpu")
    for level, (stride, (h, w)) in enumerate(zip(meta.strides, sizes)):
        ours = (grid_points(h, w, stride, meta.points) if meta.points is not None
                else grid_anchors(h, w, stride, meta.anchors))
        if not np.array_equal(theirs[level].numpy(), ours):
            raise RotldError(f"priors of level {level} differ from the engine's generator; cannot export this model")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The TorchScript exporter's deprecation and tracer warnings are not the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_graph(model: Any, path: Path, meta: ModelMetadata, opset: int) -> None:
    """Trace backbone+FPN+head to ONNX (dynamic batch; dynamic or fixed H, W), then attach `meta`."""
    import onnx
    import torch

    levels = len(meta.strides)
    names = output_names(levels, meta.family)
    fixed = meta.input.fixed_size
    side = fixed or int(np.ceil(max(meta.input.img_scale) / meta.input.size_divisor)) * meta.input.size_divisor
    axes = {INPUT_NAME: {0: "batch"} if fixed else {0: "batch", 2: "height", 3: "width"}}
    for i, name in enumerate(names):
        axes[name] = {0: "batch"} if fixed else {0: "batch", 1: f"height_{i % levels}", 2: f"width_{i % levels}"}
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            _HeadMaps.module(model), (torch.zeros(1, 3, side, side),), str(path), dynamo=False,
            opset_version=opset, input_names=[INPUT_NAME], output_names=names, dynamic_axes=axes,
            do_constant_folding=True,
        )  # fmt: skip
    graph = onnx.load(str(path))
    graph.doc_string = f"rotld {__version__} export of {meta.source_checkpoint} (sha256 {meta.source_sha256})"
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def synthetic_check_images(side: int, count: int) -> list[np.ndarray]:
    """Rendered DOTA-like scenes (rotld's synthetic data) at the model's input size: no files needed."""
    from rotld_cli.demo.scenes import make_config, plan_scene, render_scene

    config = make_config(seed=0, num_train=0, num_val=count, image_size=side,
                         objects_per_image=(6, 12), distractors_per_image=(4, 10))
    return [render_scene(plan_scene(config, i)) for i in range(count)]


def load_check_images(options: ExportOptions, side: int) -> tuple[list[np.ndarray], list[str]]:
    import cv2

    if options.check_images is None:
        return synthetic_check_images(side, options.check_count), [f"synthetic scene {i}" for i in
                                                                    range(options.check_count)]
    images, names = [], []
    for path in check_image_paths(options.check_images, options.check_count):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise RotldError(f"{path}: cannot decode the image (--check-images)")
        images.append(image)
        names.append(path.name)
    return images, names


def raw_differences(model: Any, onnx_detector: OnnxDetector, images: Sequence[np.ndarray],
                    tol: float) -> tuple[float, float, list[float | None]]:
    """Largest |torch − onnxruntime| over every anchor's scores and logits (same input tensor), and per
    image the highest score at which a level's `nms_pre` top-k cut falls within `tol` of the next anchor
    (a tie two backends may break either way; None where no cut does)."""
    import torch

    module = _HeadMaps.module(model)
    meta = onnx_detector.meta
    levels, num_classes, nms_pre = len(meta.strides), len(meta.classes), meta.test_cfg.nms_pre
    score_diff = logit_diff = 0.0
    ties: list[float | None] = []
    for image in images:
        batch = collate([prepare_image(image, meta.input)], meta.input)
        with torch.no_grad():
            ours = [t.numpy() for t in module(torch.from_numpy(batch))]
        theirs = onnx_detector.session.run(None, {INPUT_NAME: batch})
        diffs = [float(np.abs(a - b).max()) for a, b in zip(ours, theirs)]
        scores = diffs[:levels] + diffs[2 * levels:]  # class scores and (a point head's) centerness
        score_diff, logit_diff = max(score_diff, *scores), max(logit_diff, *diffs[levels:2 * levels])
        tie = None  # a point head ranks by score x centerness: its class scores still show a top-k tie
        for scores in theirs[:levels]:
            best = np.sort(scores.reshape(-1, num_classes).max(axis=1))[::-1]
            if 0 < nms_pre < best.size and best[nms_pre - 1] - best[nms_pre] <= tol:
                tie = max(tie or 0.0, float(best[nms_pre - 1]))
        ties.append(tie)
    return score_diff, logit_diff, ties


def padded_like(cfg: Any, settings: InputSettings) -> Any:
    """The config with the export's padding: a fixed-size graph pads every image to size², the engine
    to a multiple of 32; the parity check must compare the same input, so the engine pads like the graph."""
    if settings.fixed_size is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    for step in cfg.data.test.pipeline:
        for transform in step.get("transforms", []):
            if transform["type"] == "Pad":
                transform.pop("size_divisor", None)
                transform["size"] = (settings.fixed_size, settings.fixed_size)
    return cfg


def export_model(options: ExportOptions, on_step: Callable[[str], None] | None = None) -> ExportResult:
    """Load, export, check parity, then (only then) write OUT atomically."""
    step = on_step or (lambda _: None)
    check_options(options)
    started = time.perf_counter()
    from rotld_cli.engine import load_engine

    load_engine()
    from rotld_cli.engine.checkpoint_eval import load_model
    from rotld_cli.engine.detector import EngineDetector

    step("loading the checkpoint")
    loaded = load_model(options.checkpoint, "cpu", options.recipe)
    wrapped, recipe = loaded.model, loaded.recipe
    model = wrapped.module
    cfg = model.cfg
    meta = build_metadata(model, cfg, recipe, options.checkpoint, options)
    verify_anchors(model, meta)
    side = meta.input.fixed_size or max(meta.input.img_scale)
    images, names = load_check_images(options, side)
    with atomic_path(options.out) as tmp:
        step(f"exporting the graph (opset {options.opset})")
        export_graph(model, tmp, meta, options.opset)
        step(f"parity check on {len(images)} image(s): torch vs onnxruntime")
        onnx_detector = OnnxDetector.from_file(tmp)
        engine = EngineDetector(wrapped, padded_like(cfg, meta.input).data.test.pipeline, meta.classes,
                                meta.angle_version, "cpu")
        score_diff, logit_diff, topk_ties = raw_differences(model, onnx_detector, images, options.tolerance.score)
        cfg = meta.test_cfg
        report = compare_detections(engine.detect(images), onnx_detector.detect(images), meta.classes,
                                    cfg.score_thr, options.tolerance, names, iou_thr=cfg.iou_thr,
                                    max_per_img=cfg.max_per_img, topk_ties=topk_ties)  # fmt: skip
        if score_diff > options.tolerance.score:
            report.problems.insert(0, f"class scores of some anchor differ by {score_diff:.2g} before post-processing")
        if not report.ok:
            raise RotldError(f"{options.out}: not written, onnxruntime disagrees with torch beyond the tolerance "
                             f"({options.tolerance.describe()}): {report.problems[0]}; {PARITY_ADVICE}")
    return ExportResult(
        out=options.out, sha256=sha256_file(options.out), size_bytes=options.out.stat().st_size, metadata=meta,
        parity=report, raw_score_diff=score_diff, raw_logit_diff=logit_diff, check_images=names,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def as_json_dict(result: ExportResult) -> dict[str, Any]:
    p = result.parity
    return {
        "out": str(result.out), "sha256": result.sha256, "bytes": result.size_bytes, "opset": result.metadata.opset,
        "input": "dynamic" if result.metadata.input.fixed_size is None else result.metadata.input.fixed_size,
        "classes": result.metadata.classes, "source_sha256": result.metadata.source_sha256,
        "parity": {
            "images": result.check_images, "matched": p.matched, "engine_detections": p.reference_total,
            "onnx_detections": p.candidate_total, "borderline": p.borderline, "ties": dict(p.ties),
            "exercised": p.exercised, "max_box_diff": p.max_box_diff,
            "max_angle_diff": p.max_angle_diff, "max_score_diff": p.max_score_diff,
            "raw_score_diff": result.raw_score_diff, "raw_logit_diff": result.raw_logit_diff,
        },
        "seconds": round(result.seconds, 2),
    }  # fmt: skip

