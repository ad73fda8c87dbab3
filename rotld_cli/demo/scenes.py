"""The built-in DOTA-like dataset: rendered scenes with exact oriented labels, for the demo and tests.

Why synthetic: the demo trains a teacher and two students on a laptop CPU in minutes, and tests
need labels whose geometry is known exactly. Each image is *planned* first (every object's
oriented box, every clutter shape, the random seeds of texture and noise) and *rendered* second,
so labels never depend on pixels, and a test can render the same scene without its objects and
see that only the labelled boxes changed.

What makes it DOTA-like: images larger than the training patch (split and merge get exercised),
DOTA v1.0 class names and labelTxt files, objects at any angle with class-typical shapes, sizes
and aspect ratios, rows of vehicles/ships/tanks, some objects cut by the image border (labelled
with their full box, coordinates outside the image, as DOTA does), tiny low-contrast
`difficult=1` objects, textured backgrounds, distractor shapes, blur, varying contrast and noise.

A dataset directory remembers its parameters in `synthetic.json`. Calling `generate_dataset`
again with the same parameters renders only the images that are missing (the demo reuses its
data); different parameters on a directory that already holds images are an error, never a
silent overwrite: delete the directory or choose another one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rotld_cli.dota.classes import DOTA_V1_0
from rotld_cli.dota.formats import read_label_file
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.fileio import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
PARAMS_FILE = "synthetic.json"
SPLITS = ("train", "val")
Color = tuple[float, float, float]  # BGR, the order cv2 writes


@dataclass(frozen=True)
class ClassStyle:
    """How one class looks: length along its heading (px at scale 1), width/length, BGR palette."""

    length: tuple[float, float]
    aspect: tuple[float, float]
    palette: tuple[Color, ...]
    rows: bool
    can_be_difficult: bool
    axis_aligned: bool = False


CLASS_STYLES: dict[str, ClassStyle] = {
    "plane": ClassStyle((20, 40), (0.85, 1.1), ((236, 236, 236), (205, 208, 212), (168, 172, 178)), True, False),
    "small-vehicle": ClassStyle(
        (9, 15),
        (0.42, 0.55),
        ((40, 40, 200), (170, 90, 30), (235, 235, 235), (35, 35, 35), (175, 175, 180), (40, 150, 200)),
        True,
        True,
    ),
    "large-vehicle": ClassStyle(
        (16, 32), (0.28, 0.4), ((225, 225, 225), (150, 150, 150), (60, 120, 200), (140, 90, 40)), True, True
    ),
    "ship": ClassStyle(
        (16, 40), (0.2, 0.33), ((230, 230, 230), (120, 120, 120), (50, 50, 150), (70, 60, 40)), True, True
    ),
    "tennis-court": ClassStyle((24, 38), (0.44, 0.5), ((70, 140, 60), (160, 100, 50), (70, 100, 170)), True, False),
    "storage-tank": ClassStyle(
        (10, 28), (1.0, 1.0), ((225, 225, 220), (190, 195, 195), (150, 160, 165)), True, True, True
    ),
    "swimming-pool": ClassStyle((14, 30), (0.45, 0.7), ((230, 190, 60), (210, 160, 40), (240, 210, 120)), False, False),
}
SUPPORTED_CLASSES: tuple[str, ...] = tuple(name for name in DOTA_V1_0 if name in CLASS_STYLES)
DEFAULT_CLASSES: tuple[str, ...] = ("plane", "small-vehicle", "large-vehicle", "ship", "storage-tank")

_TERRAIN: tuple[Color, ...] = (
    (80, 115, 90),
    (125, 155, 170),
    (118, 118, 112),
    (62, 78, 92),
    (160, 165, 160),
    (95, 135, 120),
)
_DARK_GLASS: Color = (38, 36, 34)
_WHITE: Color = (238, 238, 238)


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter that changes the pixels; stored in `synthetic.json`."""

    seed: int = 0
    num_train: int = 40
    num_val: int = 12
    image_size: tuple[int, int] = (640, 640)
    classes: tuple[str, ...] = DEFAULT_CLASSES
    objects_per_image: tuple[int, int] = (10, 25)
    object_scale: float = 1.0
    difficult_fraction: float = 0.08
    border_fraction: float = 0.08
    row_fraction: float = 0.3
    distractors_per_image: tuple[int, int] = (10, 30)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@dataclass(frozen=True)
class SceneObject:
    """One labelled object: its oriented box (centre, length along the heading, width, heading)."""

    name: str
    cx: float
    cy: float
    length: float
    width: float
    angle: float
    color: Color
    alpha: float
    contrast: float
    difficulty: int = 0

    def quad(self) -> np.ndarray:
        """Box corners (4, 2): front-left, front-right, rear-right, rear-left; clockwise on screen."""
        half_l, half_w = self.length / 2, self.width / 2
        local = np.array([(half_l, -half_w), (half_l, half_w), (-half_l, half_w), (-half_l, -half_w)])
        return _to_image(local, self.cx, self.cy, self.angle)


@dataclass(frozen=True)
class Shape:
    """Unlabelled paint: terrain patches, roads and distractors."""

    polys: tuple[np.ndarray, ...]
    color: Color
    alpha: float


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one image; rendering is a pure function of this."""

    width: int
    height: int
    base_color: Color
    texture_seed: int
    texture_amplitude: float
    clutter: tuple[Shape, ...]
    blur_sigma: float
    objects: tuple[SceneObject, ...]
    gain: float
    bias: float
    noise_sigma: float
    noise_seed: int
    image_id: str = ""


# ----------------------------------------------------------------------------------------------
# Public API


def generate_dataset(
    root: str | os.PathLike[str],
    *,
    num_train: int = 40,
    num_val: int = 12,
    image_size: int | tuple[int, int] = 640,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    objects_per_image: tuple[int, int] = (10, 25),
    object_scale: float = 1.0,
    difficult_fraction: float = 0.08,
    border_fraction: float = 0.08,
    row_fraction: float = 0.3,
    distractors_per_image: tuple[int, int] = (10, 30),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Render `root/{train,val}/{images,labelTxt}` (ids S0000, S0001, ...) and return a summary.

    Images already present (PNG and label) are kept: with the same parameters they are the
    same bytes. `objects_per_image` is the range each image's target count is drawn from; an
    image too crowded to fit every box without overlap gets fewer (never more).
    `progress(done, total)` is called after each image.
    """
    config = make_config(
        seed=seed,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        classes=classes,
        objects_per_image=objects_per_image,
        object_scale=object_scale,
        difficult_fraction=difficult_fraction,
        border_fraction=border_fraction,
        row_fraction=row_fraction,
        distractors_per_image=distractors_per_image,
    )
    root = Path(root)
    _claim_directory(root, config)
    total = config.num_train + config.num_val
    generated = 0
    for index in range(total):
        split, image_id = split_of(config, index), image_id_of(index)
        image_path = root / split / "images" / f"{image_id}.png"
        label_path = root / split / "labelTxt" / f"{image_id}.txt"
        if not (image_path.is_file() and label_path.is_file()):
            scene = plan_scene(config, index)
            ok, png = cv2.imencode(".png", render_scene(scene))
            if not ok:
                raise RotldError(f"{image_path}: OpenCV could not encode the image")
            atomic_write_bytes(image_path, png.tobytes())
            atomic_write_text(label_path, label_text(scene))
            generated += 1
        if progress is not None:
            progress(index + 1, total)
    return _summary(root, config, generated)


def make_config(
    *,
    seed: int = 0,
    num_train: int = 40,
    num_val: int = 12,
    image_size: int | tuple[int, int] = 640,
    classes: Sequence[str] | None = None,
    objects_per_image: tuple[int, int] = (10, 25),
    object_scale: float = 1.0,
    difficult_fraction: float = 0.08,
    border_fraction: float = 0.08,
    row_fraction: float = 0.3,
    distractors_per_image: tuple[int, int] = (10, 30),
) -> SyntheticConfig:
    """Validate the parameters (errors name the parameter) and freeze them."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed: expected a non-negative integer, got {seed!r}")
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"{name}: expected a non-negative integer, got {value!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, int) and 64 <= v <= 8192 for v in size):
        raise UsageError(f"image_size: expected an int or (width, height) between 64 and 8192 px, got {image_size!r}")
    names = tuple(dict.fromkeys(classes)) if classes is not None else DEFAULT_CLASSES
    if not names:
        raise UsageError("classes: give at least one class")
    for name in names:
        if name not in CLASS_STYLES:
            raise UsageError(f"classes: {name!r} cannot be rendered; choose from {', '.join(SUPPORTED_CLASSES)}")
    pairs = {"objects_per_image": objects_per_image, "distractors_per_image": distractors_per_image}
    for name, pair in pairs.items():
        if len(pair) != 2 or not all(isinstance(v, int) for v in pair) or not 0 <= pair[0] <= pair[1]:
            raise UsageError(f"{name}: expected (low, high) integers with 0 <= low <= high, got {pair!r}")
    if not 0.25 <= object_scale <= 8:
        raise UsageError(f"object_scale: expected a factor between 0.25 and 8, got {object_scale!r}")
    fractions = {"difficult_fraction": difficult_fraction, "border_fraction": border_fraction}
    fractions["row_fraction"] = row_fraction
    for name, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{name}: expected a fraction between 0 and 1, got {value!r}")
    return SyntheticConfig(
        seed=seed,
        num_train=num_train,
        num_val=num_val,
        image_size=(int(size[0]), int(size[1])),
        classes=names,
        objects_per_image=(int(objects_per_image[0]), int(objects_per_image[1])),
        object_scale=float(object_scale),
        difficult_fraction=float(difficult_fraction),
        border_fraction=float(border_fraction),
        row_fraction=float(row_fraction),
        distractors_per_image=(int(distractors_per_image[0]), int(distractors_per_image[1])),
    )


def image_id_of(index: int) -> str:
    return f"S{index:04d}"


def split_of(config: SyntheticConfig, index: int) -> str:
    """Images 0..num_train-1 are train, the next num_val are val (ids never repeat across splits)."""
    return "train" if index < config.num_train else "val"


def plan_scene(config: SyntheticConfig, index: int) -> Scene:
    """Decide everything about image `index` from (seed, index) alone: independent of other images."""
    rng = np.random.default_rng([config.seed, index])
    width, height = config.image_size
    base = _jitter(rng, _TERRAIN[rng.integers(len(_TERRAIN))], 18)
    clutter = _terrain_shapes(rng, width, height) + _distractors(rng, width, height, config)
    n_objects = int(rng.integers(config.objects_per_image[0], config.objects_per_image[1] + 1))
    objects = _place_objects(rng, config, n_objects)
    return Scene(
        width=width,
        height=height,
        base_color=base,
        texture_seed=int(rng.integers(2**63)),
        texture_amplitude=float(rng.uniform(8, 26)),
        clutter=tuple(clutter),
        blur_sigma=float(rng.uniform(0.5, 1.1)),
        objects=tuple(objects),
        gain=float(rng.uniform(0.75, 1.15)),
        bias=float(rng.uniform(-18, 18)),
        noise_sigma=float(rng.uniform(2.0, 7.0)),
        noise_seed=int(rng.integers(2**63)),
        image_id=image_id_of(index),
    )


def render_scene(scene: Scene, with_objects: bool = True) -> np.ndarray:
    """BGR uint8 image. `with_objects=False` renders the identical scene minus its labelled objects."""
    img = _texture(scene)
    for shape in scene.clutter:
        _paint(img, shape.polys, shape.color, shape.alpha)
    img = cv2.GaussianBlur(img, (0, 0), scene.blur_sigma)
    if with_objects:
        for obj in scene.objects:
            _paint_object(img, obj)
    img = (img - 128.0) * scene.gain + 128.0 + scene.bias
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, scene.noise_sigma, img.shape)
    return np.clip(np.rint(img + noise.astype(np.float32)), 0, 255).astype(np.uint8)


def label_text(scene: Scene) -> str:
    """DOTA labelTxt: `imagesource:`/`gsd:` headers, then `x1 y1 ... x4 y4 class difficult` lines."""
    lines = ["imagesource:synthetic", "gsd:null"]
    for obj in scene.objects:
        coords = " ".join(_fmt(v) for v in obj.quad().reshape(-1))
        lines.append(f"{coords} {obj.name} {obj.difficulty}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Dataset directory bookkeeping


def _claim_directory(root: Path, config: SyntheticConfig) -> None:
    """Write synthetic.json, or check that the data already there was made with this config."""
    params_path = root / PARAMS_FILE
    wanted = config.to_json()
    has_data = any(
        (root / split / sub).is_dir() and any((root / split / sub).iterdir())
        for split in SPLITS
        for sub in ("images", "labelTxt")
    )
    if params_path.is_file():
        try:
            stored = json.loads(params_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RotldError(f"{params_path}: unreadable ({exc}); delete {root} to regenerate") from None
        if stored == wanted:
            return
        if has_data:
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            detail = ", ".join(f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in changed)
            raise RotldError(
                f"{root}: holds a synthetic dataset made with other parameters ({detail}); "
                "delete it or choose another directory"
            )
    elif has_data:
        raise RotldError(f"{root}: holds images or labels but no {PARAMS_FILE}; choose an empty or new directory")
    atomic_write_text(params_path, json.dumps(wanted, indent=2) + "\n")


def _summary(root: Path, config: SyntheticConfig, generated: int) -> dict[str, Any]:
    """Counts read back from the label files, so reused and new images are described alike."""
    width, height = config.image_size
    splits: dict[str, Any] = {}
    for split in SPLITS:
        per_class = dict.fromkeys(config.classes, 0)
        stats = {"images": 0, "objects": 0, "difficult": 0, "cut_by_border": 0}
        for index in range(config.num_train + config.num_val):
            if split_of(config, index) != split:
                continue
            labels = read_label_file(root / split / "labelTxt" / f"{image_id_of(index)}.txt", classes=DOTA_V1_0)
            stats["images"] += 1
            for obj in labels.objects:
                per_class[obj.name] += 1
                stats["objects"] += 1
                stats["difficult"] += obj.difficulty == 1
                xs, ys = obj.poly[0::2], obj.poly[1::2]
                stats["cut_by_border"] += bool(xs.min() < 0 or ys.min() < 0 or xs.max() > width or ys.max() > height)
        splits[split] = {**stats, "per_class": per_class}
    reused = config.num_train + config.num_val - generated
    return {"root": str(root), "params": config.to_json(), "generated": generated, "reused": reused, "splits": splits}


# ----------------------------------------------------------------------------------------------
# Planning


def _to_image(local: np.ndarray, cx: float, cy: float, angle: float) -> np.ndarray:
    """Object frame (x along the heading, y to its right on screen) to image pixels (y down)."""
    c, s = math.cos(angle), math.sin(angle)
    x, y = local[:, 0], local[:, 1]
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _jitter(rng: np.random.Generator, color: Color, amount: float) -> Color:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in color)  # type: ignore[return-value]


def _circle(cx: float, cy: float, radius: float, n: int = 36) -> np.ndarray:
    t = np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _terrain_shapes(rng: np.random.Generator, width: int, height: int) -> list[Shape]:
    """Field parcels and roads: large, sharp-edged regions like the ones aerial images show."""
    shapes = []
    for _ in range(int(rng.integers(1, 6))):
        radius = rng.uniform(0.15, 0.5) * max(width, height)
        centre = rng.uniform((0, 0), (width, height))
        points = centre + rng.uniform(-radius, radius, (7, 2))
        hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        color = _jitter(rng, _TERRAIN[rng.integers(len(_TERRAIN))], 20)
        shapes.append(Shape((hull,), color, float(rng.uniform(0.35, 0.8))))
    diagonal = math.hypot(width, height)
    for _ in range(int(rng.integers(0, 4))):
        half_w = rng.uniform(3, 9)
        local = np.array([(diagonal, -half_w), (diagonal, half_w), (-diagonal, half_w), (-diagonal, -half_w)])
        road = _to_image(local, rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0, math.pi))
        grey = rng.uniform(80, 160)
        shapes.append(Shape((road,), _jitter(rng, (grey, grey, grey), 6), float(rng.uniform(0.8, 1.0))))
    return shapes


def _distractors(rng: np.random.Generator, width: int, height: int, config: SyntheticConfig) -> list[Shape]:
    """Unlabelled shapes: triangles, blobs, lines, buildings, rings and trees (the hard negatives)."""
    shapes = []
    low, high = config.distractors_per_image
    area_factor = (width * height) / (640 * 640)
    count = round(int(rng.integers(low, high + 1)) * area_factor)
    scale = config.object_scale
    for _ in range(count):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        kind = rng.integers(6)
        color = tuple(float(v) for v in rng.uniform(20, 235, 3))
        alpha = float(rng.uniform(0.5, 1.0))
        if kind == 0:  # triangle
            t = np.sort(rng.uniform(0, 2 * math.pi, 3))
            r = rng.uniform(5, 22) * scale
            polys: tuple[np.ndarray, ...] = (np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1),)
        elif kind == 1:  # irregular blob
            pts = np.array([cx, cy]) + rng.uniform(-1, 1, (7, 2)) * rng.uniform(4, 20) * scale
            polys = (cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64),)
        elif kind == 2:  # line segment
            half_l, half_w = rng.uniform(8, 35) * scale, rng.uniform(0.5, 1.5)
            local = np.array([(half_l, -half_w), (half_l, half_w), (-half_l, half_w), (-half_l, -half_w)])
            polys = (_to_image(local, cx, cy, rng.uniform(0, math.pi)),)
        elif kind == 3:  # building with a roof ridge
            half_l = rng.uniform(20, 55) * scale
            half_w = half_l * rng.uniform(0.6, 1.0)
            angle = rng.uniform(0, math.pi)
            body = np.array([(half_l, -half_w), (half_l, half_w), (-half_l, half_w), (-half_l, -half_w)])
            ridge = np.array([(half_l, -1.0), (half_l, 1.0), (-half_l, 1.0), (-half_l, -1.0)])
            grey = rng.uniform(90, 200)
            roof = _jitter(rng, (grey * 0.9, grey, grey * 1.05), 15)
            shapes.append(Shape((_to_image(body, cx, cy, angle),), roof, alpha))
            color = tuple(0.7 * v for v in roof)
            polys = (_to_image(ridge, cx, cy, angle),)
        elif kind == 4:  # thin ring made of short segments (a roundabout-like outline, not a tank)
            polys = _ring(cx, cy, rng.uniform(7, 26) * scale, rng.uniform(0.6, 1.2), 24)
        else:  # cluster of trees
            n = int(rng.integers(3, 11))
            centres = np.array([cx, cy]) + rng.normal(0, 6 * scale, (n, 2))
            polys = tuple(_circle(x, y, rng.uniform(2, 5) * scale, 12) for x, y in centres)
            color = _jitter(rng, (40, 80, 45), 15)
        shapes.append(Shape(polys, color, alpha))
    return shapes


def _ring(cx: float, cy: float, radius: float, half_w: float, n: int) -> tuple[np.ndarray, ...]:
    """A thin annulus as n quads (one fillPoly contour cannot have a hole)."""
    t = np.arange(n + 1) * (2 * math.pi / n)
    outer = np.stack([cx + (radius + half_w) * np.cos(t), cy + (radius + half_w) * np.sin(t)], axis=1)
    inner = np.stack([cx + (radius - half_w) * np.cos(t), cy + (radius - half_w) * np.sin(t)], axis=1)
    return tuple(np.stack([outer[k], outer[k + 1], inner[k + 1], inner[k]]) for k in range(n))


def _sample_object(rng: np.random.Generator, name: str, config: SyntheticConfig) -> SceneObject:
    style = CLASS_STYLES[name]
    difficult = style.can_be_difficult and rng.random() < config.difficult_fraction
    if difficult:  # tiny and faint: DOTA's difficult=1
        length = rng.uniform(0.5, 0.7) * style.length[0] * config.object_scale
        alpha, contrast = rng.uniform(0.45, 0.7), rng.uniform(10, 22)
    else:
        length = rng.uniform(*style.length) * config.object_scale
        alpha, contrast = rng.uniform(0.75, 1.0), rng.uniform(22, 70)
    width = max(length * rng.uniform(*style.aspect), 3.0)
    length = max(length, width) if style.axis_aligned else max(length, 4.0)
    angle = -math.pi / 2 if style.axis_aligned else rng.uniform(-math.pi, math.pi)
    color = _jitter(rng, style.palette[rng.integers(len(style.palette))], 12)
    return SceneObject(
        name, 0.0, 0.0, float(length), float(width), float(angle), color, float(alpha), float(contrast), int(difficult)
    )


def _half_extent(obj: SceneObject) -> tuple[float, float]:
    c, s = abs(math.cos(obj.angle)), abs(math.sin(obj.angle))
    return (obj.length * c + obj.width * s) / 2, (obj.length * s + obj.width * c) / 2


def _place_objects(rng: np.random.Generator, config: SyntheticConfig, n_objects: int) -> list[SceneObject]:
    """Rejection sampling: boxes never overlap (labels stay exact); rows for parked/moored objects."""
    width, height = config.image_size
    placed: list[SceneObject] = []
    quads: list[np.ndarray] = []
    attempts = 0
    while len(placed) < n_objects and attempts < 60 * n_objects:
        attempts += 1
        name = config.classes[int(rng.integers(len(config.classes)))]
        first = _sample_object(rng, name, config)
        hx, hy = _half_extent(first)
        if 2 * hx >= width or 2 * hy >= height:
            continue
        cx, cy = rng.uniform(hx, width - hx), rng.uniform(hy, height - hy)
        on_border = rng.random() < config.border_fraction
        if on_border:  # centre inside, up to ~35% of the box outside: a truncated object
            side = int(rng.integers(4))
            depth = rng.uniform(0.3, 0.9)
            if side == 0:
                cx = depth * hx
            elif side == 1:
                cx = width - depth * hx
            elif side == 2:
                cy = depth * hy
            else:
                cy = height - depth * hy
        group = 1
        if CLASS_STYLES[name].rows and not on_border and rng.random() < config.row_fraction:
            group = int(rng.integers(2, 6))
        step = first.width + rng.uniform(0.25 * first.width + 2, 0.8 * first.width + 3)
        across = (-math.sin(first.angle), math.cos(first.angle))
        for k in range(min(group, n_objects - len(placed))):
            size = 1.0 if k == 0 else rng.uniform(0.94, 1.06)  # never below 3 px: MMRotate drops < 2 px
            member = replace(
                first,
                cx=float(cx + k * step * across[0]),
                cy=float(cy + k * step * across[1]),
                length=max(first.length * size, 3.0),
                width=max(first.width * size, 3.0),
                color=_jitter(rng, first.color, 8) if k else first.color,
            )
            quad = member.quad()
            if k and not _inside(quad, width, height):
                break
            if any(not _separated(quad, other, 2.0) for other in quads):
                if k == 0:
                    break
                continue
            placed.append(member)
            quads.append(quad)
    return placed


def _inside(quad: np.ndarray, width: int, height: int) -> bool:
    return bool(
        quad[:, 0].min() >= 1
        and quad[:, 1].min() >= 1
        and quad[:, 0].max() <= width - 2
        and quad[:, 1].max() <= height - 2
    )


def _separated(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """Separating-axis test for convex polygons: True when at least `gap` px apart."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for ex, ey in edges:
            norm = math.hypot(ex, ey)
            if norm == 0:
                continue
            axis = np.array([-ey / norm, ex / norm])
            pa, pb = a @ axis, b @ axis
            if pa.max() + gap <= pb.min() or pb.max() + gap <= pa.min():
                return True
    return False


# ----------------------------------------------------------------------------------------------
# Rendering


def _texture(scene: Scene) -> np.ndarray:
    """Base colour plus three octaves of smooth noise (soil, grass, shadows at several scales)."""
    rng = np.random.default_rng(scene.texture_seed)
    w, h = scene.width, scene.height
    img = np.empty((h, w, 3), np.float32)
    img[:] = scene.base_color
    amplitude = scene.texture_amplitude
    for cell in (max(w, h) / 3, 40.0, 9.0):
        gw, gh = max(2, round(w / cell) + 1), max(2, round(h / cell) + 1)
        grid = rng.normal(0, 1, (gh, gw, 1)) + 0.35 * rng.normal(0, 1, (gh, gw, 3))
        img += amplitude * cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        amplitude *= 0.55
    return img


def _paint(img: np.ndarray, polys: Sequence[np.ndarray], color: Sequence[float], alpha: float) -> None:
    """Alpha-blend the union of anti-aliased polygons into `img` (float32), touching only their box."""
    height, width = img.shape[:2]
    points = np.concatenate(polys)
    x0, y0 = max(int(np.floor(points[:, 0].min())) - 1, 0), max(int(np.floor(points[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(points[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(points[:, 1].max())) + 2, height)
    if x0 >= x1 or y0 >= y1:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    offset = np.array([x0, y0], np.float64)
    for poly in polys:
        cv2.fillPoly(mask, [np.round((poly - offset) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    weight = mask.astype(np.float32)[..., None] * np.float32(alpha / 255.0)
    roi = img[y0:y1, x0:x1]
    roi += weight * (np.asarray(color, np.float32) - roi)


def _luma(color: Sequence[float]) -> float:
    b, g, r = color
    return 0.114 * b + 0.587 * g + 0.299 * r


def _contrast_shift(img: np.ndarray, obj: SceneObject) -> float:
    """Brightness shift that puts the object's main colour `contrast` luma away from its surroundings."""
    quad = obj.quad()
    h, w = img.shape[:2]
    x0, y0 = max(int(quad[:, 0].min()), 0), max(int(quad[:, 1].min()), 0)
    x1, y1 = min(int(quad[:, 0].max()) + 1, w), min(int(quad[:, 1].max()) + 1, h)
    background = _luma(img[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)) if x1 > x0 and y1 > y0 else 128.0
    own = _luma(obj.color)
    if abs(own - background) >= obj.contrast:
        return 0.0
    direction = 1.0 if own >= background else -1.0
    target = background + direction * obj.contrast
    if not 0 <= target <= 255:
        target = background - direction * obj.contrast
    return target - own


def _paint_object(img: np.ndarray, obj: SceneObject) -> None:
    shift = _contrast_shift(img, obj)
    for local_polys, color in _object_parts(obj):
        shifted = [float(np.clip(c + shift, 0, 255)) for c in color]
        polys = [_to_image(p, obj.cx, obj.cy, obj.angle) for p in local_polys]
        _paint(img, polys, shifted, obj.alpha)


def _rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([(x1, y0), (x1, y1), (x0, y1), (x0, y0)], np.float64)


def _object_parts(obj: SceneObject) -> list[tuple[list[np.ndarray], Sequence[float]]]:
    """Class shapes in the object frame; each silhouette spans the full length x width box."""
    L, W = obj.length, obj.width  # the box length and width, named as in the labels
    hl, hw = L / 2, W / 2
    base = obj.color
    accent = tuple(c * 0.72 for c in base) if _luma(base) > 110 else tuple(min(c * 1.5 + 30, 255) for c in base)
    if obj.name == "plane":
        fw = max(0.055 * L, 0.8)
        fuselage = np.array([(hl, 0), (0.36 * L, -fw), (-hl, -0.7 * fw), (-hl, 0.7 * fw), (0.36 * L, fw)])
        wing = np.array([(0.14 * L, 0), (-0.08 * L, -hw), (-0.2 * L, -hw), (-0.06 * L, 0)])
        tail = np.array([(-0.34 * L, 0), (-0.45 * L, -0.2 * W), (-hl, -0.2 * W), (-0.44 * L, 0)])
        flip = np.array([1.0, -1.0])
        return [([fuselage, wing, wing * flip, tail, tail * flip], base)]
    if obj.name == "ship":
        hull = np.array([(-hl, -hw), (0.18 * L, -hw), (hl, 0), (0.18 * L, hw), (-hl, hw)])
        return [([hull], base), ([_rect(-0.38 * L, -0.08 * L, -0.28 * W, 0.28 * W)], accent)]
    if obj.name == "small-vehicle":
        windows = [_rect(0.12 * L, 0.3 * L, -0.38 * W, 0.38 * W), _rect(-0.38 * L, -0.26 * L, -0.36 * W, 0.36 * W)]
        return [([_rect(-hl, hl, -hw, hw)], base), (windows, _DARK_GLASS)]
    if obj.name == "large-vehicle":
        return [
            ([_rect(-hl, 0.26 * L, -hw, hw)], base),
            ([_rect(0.3 * L, hl, -hw, hw)], accent),
            ([_rect(0.42 * L, 0.48 * L, -0.4 * W, 0.4 * W)], _DARK_GLASS),
        ]
    if obj.name == "storage-tank":
        return [([_circle(0, 0, hl)], base), ([_circle(0, 0, 0.72 * hl)], accent)]
    if obj.name == "tennis-court":
        line = max(0.45, 0.018 * W)
        inner_l, inner_w = 0.4 * L, 0.36 * W
        lines = [
            _rect(-inner_l, inner_l, -inner_w - line, -inner_w + line),
            _rect(-inner_l, inner_l, inner_w - line, inner_w + line),
            _rect(-inner_l - line, -inner_l + line, -inner_w, inner_w),
            _rect(inner_l - line, inner_l + line, -inner_w, inner_w),
            _rect(-line, line, -inner_w, inner_w),
            _rect(-0.22 * L, 0.22 * L, -line, line),
        ]
        return [([_rect(-hl, hl, -hw, hw)], base), (lines, _WHITE)]
    if obj.name == "swimming-pool":
        edge = max(1.0, 0.12 * W)
        return [([_chamfered(hl, hw, 0.15 * W)], (215, 220, 220)), ([_chamfered(hl - edge, hw - edge, 0.1 * W)], base)]
    raise AssertionError(f"no renderer for class {obj.name!r}")


def _chamfered(hl: float, hw: float, cut: float) -> np.ndarray:
    """A rectangle with cut corners (a pool); its edges still touch all four sides of the box."""
    cut = min(cut, hl / 2, hw / 2)
    xs = (hl - cut, hl, hl, hl - cut, -hl + cut, -hl, -hl, -hl + cut)
    ys = (-hw, -hw + cut, hw - cut, hw, hw, hw - cut, -hw + cut, -hw)
    return np.stack([xs, ys], axis=1)


def _fmt(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text
