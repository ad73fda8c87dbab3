"""`rotld prepare-dota`: split every image of a DOTA tree into patches + annfiles, resumably.

The geometry lives in rotld_cli.dota.split; this module walks the source layout, runs one job per
image (inline or in a process pool), records each finished image in a marker file so a killed
run resumes where it stopped, collects bad inputs as problems instead of stopping (each reported
once), removes the outputs of images that left SRC (only the files its markers record), and writes
`manifest.json` (parameters + counts) atomically.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from rotld_cli import __version__
from rotld_cli.dota.classes import classes_for
from rotld_cli.dota.formats import FormatError, read_label_file
from rotld_cli.dota.split import (
    SplitParams,
    annfile_lines,
    crop_patch,
    image_id_problem,
    plan_patches,
    quad_polygons,
)
from rotld_cli.errors import RotldError, UsageError, located
from rotld_cli.fileio import atomic_path, atomic_write_text, exclusive_lock, file_signature
from rotld_cli.fileio import read_json_object as read_marker

log = logging.getLogger(__name__)

# The image extensions img_split accepts (case-sensitive, as its `_load_dota_single`).
IMAGE_EXTS = (".jpg", ".JPG", ".png", ".tif", ".bmp")
IMAGE_LIKE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")  # reported when not spelt as above
OUTPUT_EXTS = (".png", ".bmp", ".tif", ".jpg")
DOTA_SPLITS = ("train", "val", "test")
PRESETS: dict[str, dict[str, tuple]] = {
    "ss": {"sizes": (1024,), "gaps": (200,), "rates": (1.0,)},
    "ms": {"sizes": (1024,), "gaps": (500,), "rates": (0.5, 1.0, 1.5)},
}
MANIFEST = "manifest.json"
STATE_DIR = ".rotld-prepare"  # lock + per-image completion markers; hidden so dataset globs skip it
MANIFEST_FORMAT = "rotld-prepare-dota/1"


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that shapes the output, plus how to run (workers, splits, overwrite)."""

    split: SplitParams = field(default_factory=SplitParams)
    ext: str = ".png"
    png_compression: int | None = None  # None: OpenCV's speed-tuned default (what img_split writes)
    dota_version: str = "v1.0"
    classes: tuple[str, ...] | None = None  # a custom class list (--classes, --classes-from) instead of the version's
    workers: int = 1
    splits: tuple[str, ...] | None = None
    overwrite: bool = False
    strict: bool = False  # stop at the first bad label line instead of skipping (and counting) it

    def validate(self) -> None:
        s = self.split
        if not s.sizes or len(s.sizes) != len(s.gaps):
            raise UsageError(
                f"--sizes and --gaps need the same number of values, got {list(s.sizes)} and {list(s.gaps)}"
            )
        if len(s.sizes) > 1 and len(s.rates) > 1:
            raise UsageError("give several --sizes or several --rates, not both (as img_split)")
        if any(r <= 0 for r in s.rates):
            raise UsageError(f"--rates must be positive, got {list(s.rates)}")
        for size, gap in s.window_specs():
            if gap < 0 or size <= gap:
                raise UsageError(f"--sizes/--gaps: window {size} with gap {gap}: need 0 <= gap < size (after the rate)")
        if not 0 <= s.img_rate_thr < 1:
            raise UsageError(f"--img-rate-thr must be in [0, 1), got {s.img_rate_thr}")
        if not 0 <= s.iof_thr <= 1:
            raise UsageError(f"--iof-thr must be in [0, 1], got {s.iof_thr}")
        if len(s.padding_value) not in (1, 3) or not all(0 <= v <= 255 for v in s.padding_value):
            raise UsageError(f"--padding-value: one or three values in 0..255 (B,G,R), got {list(s.padding_value)}")
        if self.ext not in OUTPUT_EXTS:
            raise UsageError(f"--ext must be one of {', '.join(OUTPUT_EXTS)}, got {self.ext!r}")
        if self.png_compression is not None and not 0 <= self.png_compression <= 9:
            raise UsageError(f"--png-compression must be in 0..9, got {self.png_compression}")
        if self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        classes_for(self.dota_version)

    def output_params(self, layout: str) -> dict:
        """The parameters recorded in (and compared against) the manifest."""
        s = self.split
        return {
            "layout": layout,
            "sizes": list(s.sizes),
            "gaps": list(s.gaps),
            "rates": list(s.rates),
            "windows": [list(w) for w in s.window_specs()],
            "img_rate_thr": s.img_rate_thr,
            "iof_thr": s.iof_thr,
            "padding": s.padding,
            "padding_value": list(s.padding_value),
            "ext": self.ext,
            "png_compression": self.png_compression,
            "dota_version": self.dota_version,
            **({"classes": list(self.classes)} if self.classes is not None else {}),  # absent: old manifests resume
        }

    def class_list(self) -> tuple[str, ...]:
        """The labels' classes: a line naming another class is skipped, counted and named."""
        return self.classes if self.classes is not None else classes_for(self.dota_version)


@dataclass
class SplitFolder:
    """One folder to split: `name` is 'train'/'val'/'test' for a DOTA root, '.' for a lone split."""

    name: str
    images: Path
    labels: Path | None
    out: Path


@dataclass(frozen=True)
class ImageJob:
    """One source image and where its patches, annfiles and completion marker go."""

    split: str
    image_id: str
    image: Path
    label: Path | None
    out_images: Path
    out_annfiles: Path
    marker: Path
    params: SplitParams
    ext: str
    png_compression: int | None
    classes: tuple[str, ...]
    strict: bool = False


@dataclass
class ImageStats:
    """Counts of one image (or, summed, of a split): what the final table and manifest show."""

    images: int = 0
    patches: int = 0
    empty_patches: int = 0
    objects: Counter = field(default_factory=Counter)  # source objects per class
    annotations: Counter = field(default_factory=Counter)  # annfile lines per class
    truncated: Counter = field(default_factory=Counter)  # annfile lines with difficulty 2 per class
    dropped: int = 0  # source objects kept in no patch
    repaired: int = 0  # invalid polygons fixed with make_valid
    unlabelled: int = 0  # images without a label file (split as empty)
    skipped_lines: int = 0  # bad label lines left out (the image's other objects are kept)

    def add(self, other: ImageStats) -> None:
        for name in ("images", "patches", "empty_patches", "dropped", "repaired", "unlabelled", "skipped_lines"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("objects", "annotations", "truncated"):
            getattr(self, name).update(getattr(other, name))

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("objects", "annotations", "truncated"):
            data[name] = dict(sorted(getattr(self, name).items()))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ImageStats:
        counters = {name: Counter(data.get(name, {})) for name in ("objects", "annotations", "truncated")}
        plain = {k: int(v) for k, v in data.items() if k not in counters and k in cls.__dataclass_fields__}
        return cls(**plain, **counters)


@dataclass
class ImageOutcome:
    """Stats of a split image (None: the image was skipped) and the problems to report about it."""

    split: str
    image_id: str
    stats: ImageStats | None = None
    problems: list[str] = field(default_factory=list)
    stop: bool = False  # --strict met a bad label line: the run stops here


@dataclass
class PrepareSummary:
    """The result of a run: counts per split (resumed images included) and the problems."""

    out: Path
    params: dict
    stats: dict[str, ImageStats]
    problems: list[str]
    resumed: int
    seconds: float
    removed_stale: int = 0  # patches of images no longer in SRC (or changed) deleted from OUT

    @property
    def total(self) -> ImageStats:
        total = ImageStats()
        for stats in self.stats.values():
            total.add(stats)
        return total

    def to_dict(self) -> dict:
        return {
            "out": str(self.out),
            "params": self.params,
            "splits": {name: stats.to_dict() for name, stats in self.stats.items()},
            "total": self.total.to_dict(),
            "resumed_images": self.resumed,
            "removed_stale_patches": self.removed_stale,
            "problems": self.problems,
            "seconds": round(self.seconds, 3),
        }


class ImageReadError(RotldError):
    """A source image that cannot be decoded (missing, truncated, corrupt)."""


# ---------------------------------------------------------------------------------------------
# Source layout


def find_split_folders(src: Path, out: Path, splits: tuple[str, ...] | None) -> tuple[str, list[SplitFolder]]:
    """('dota-root', [train, val, test present, then any other folder with images/, e.g. `rotld convert`'s
    trainval]) or ('split-folder', [the folder itself])."""
    if not src.is_dir():
        raise UsageError(f"SRC {src}: not a directory")
    if (src / "images").is_dir():
        if splits:
            raise UsageError(f"--splits: {src} is a single split folder (it has images/), not a DOTA root")
        return "split-folder", [_split_folder(".", src, out)]
    others = sorted(
        p.name
        for p in src.iterdir()
        if p.name not in DOTA_SPLITS and not p.name.startswith(".") and (p / "images").is_dir()
    )
    names = list(splits) if splits else [name for name in DOTA_SPLITS if (src / name / "images").is_dir()] + others
    if not names:
        raise UsageError(f"SRC {src}: expected images/ (one split) or train/, val/, test/ with images/ (a DOTA root)")
    for name in names:
        if not (src / name / "images").is_dir():
            raise UsageError(f"--splits: {src / name / 'images'} does not exist")
    return "dota-root", [_split_folder(name, src / name, out / name) for name in names]


def _split_folder(name: str, folder: Path, out: Path) -> SplitFolder:
    labels = folder / "labelTxt"
    return SplitFolder(name, folder / "images", labels if labels.is_dir() else None, out)


def marker_dir(out_root: Path, split: str) -> Path:
    return out_root / STATE_DIR / "done" / split


def list_jobs(folder: SplitFolder, out_root: Path, options: PrepareOptions) -> tuple[list[ImageJob], list[str]]:
    """One job per image (sorted by id), and the problems found by listing: label files without
    an image, two images with the same id."""
    problems = []
    by_id: dict[str, Path] = {}
    refused_ids: set[str] = set()
    for path in sorted(folder.images.iterdir()):
        if path.suffix not in IMAGE_EXTS:
            if path.suffix.lower() in IMAGE_LIKE_EXTS:
                problems.append(located(path, None, f"{path.suffix} is not an extension img_split reads "
                                                    f"({' '.join(IMAGE_EXTS)}); rename it to split it (skipped)"))
            continue
        if not path.is_file():
            problems.append(located(path, None, "not a readable file (a folder or a broken link); skipped"))
            continue
        refused = image_id_problem(path.stem)
        if refused is not None:
            problems.append(located(path, None, f"image name {path.stem!r} {refused}; rename it (skipped)"))
            refused_ids.add(path.stem)
            continue
        if path.stem in by_id:
            problems.append(located(path, None, f"another image has the same id ({by_id[path.stem].name}); skipped"))
            continue
        by_id[path.stem] = path
    if folder.labels is not None:
        for label in sorted(folder.labels.glob("*.txt")):
            if label.stem not in by_id and label.stem not in refused_ids:
                problems.append(
                    located(label, None, f"label file without an image (no {label.stem}.* in {folder.images})")
                )
    classes = options.class_list()
    markers = marker_dir(out_root, folder.name)
    jobs = []
    for image_id, path in by_id.items():
        label = folder.labels / f"{image_id}.txt" if folder.labels is not None else None
        jobs.append(
            ImageJob(
                split=folder.name,
                image_id=image_id,
                image=path,
                label=label,
                out_images=folder.out / "images",
                out_annfiles=folder.out / "annfiles",
                marker=markers / f"{image_id}.json",
                params=options.split,
                ext=options.ext,
                png_compression=options.png_compression,
                classes=classes,
                strict=options.strict,
            )
        )
    return jobs, problems


# ---------------------------------------------------------------------------------------------
# One image


def decode_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """BGR uint8 pixels as cv2.imread gives them; a truncated PNG/JPEG is an error, not a gray tail.

    `flags` adds to the decode (predict passes IMREAD_ANYDEPTH to see 16-bit pixels)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(located(path, None, f"cannot read image: {exc.strerror or exc}")) from None
    if not data:
        raise ImageReadError(located(path, None, "empty image file (0 bytes)"))
    if path.suffix == ".png" and data.rfind(b"IEND") < data.rfind(b"IDAT"):
        raise ImageReadError(located(path, None, "truncated PNG image (no IEND after the last IDAT chunk)"))
    if path.suffix in (".jpg", ".JPG") and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageReadError(located(path, None, "truncated JPEG image (no end marker after the last scan)"))
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:  # OpenCV asserts on some inputs instead of returning None
        image = None
    if image is None:
        raise ImageReadError(located(path, None, "cannot decode image (corrupt or not an image)"))
    return image


def encode_flags(ext: str, png_compression: int | None) -> list[int]:
    if ext == ".png" and png_compression is not None:
        return [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    return []


def write_image(path: Path, pixels: np.ndarray, flags: list[int]) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels, flags):
            raise RotldError(located(path, None, "cannot write image"))


def write_annfile_fast(path: Path, lines: list[str]) -> None:
    """The annfile (0 bytes without objects) renamed into place without fsync: safe against a
    kill like the patch images beside it, and ~6% faster than fsync-ing thousands of tiny files."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def split_image(job: ImageJob) -> ImageOutcome:
    """Split one image: write its patches and annfiles, then its completion marker (last)."""
    try:
        unlabelled = job.label is not None and not job.label.exists()
        labels = (
            read_label_file(job.label, classes=job.classes, strict=job.strict) if job.label and not unlabelled else None
        )
        image = decode_image(job.image)
    except FormatError as exc:
        stop = job.strict and exc.line is not None
        return ImageOutcome(job.split, job.image_id, problems=[str(exc)], stop=stop)
    except ImageReadError as exc:
        return ImageOutcome(job.split, job.image_id, problems=[str(exc)])

    objects = labels.objects if labels is not None else []
    names = [obj.name for obj in objects]
    difficulties = [obj.difficulty for obj in objects]
    polys = np.array([obj.poly for obj in objects], dtype=np.float32).reshape(-1, 8)
    geoms, repaired = quad_polygons(polys)
    height, width = image.shape[:2]
    patches = plan_patches(job.image_id, width, height, polys, job.params, geoms)

    skipped = labels.skipped if labels is not None else []
    stats = ImageStats(
        images=1,
        patches=len(patches),
        repaired=int(repaired.sum()),
        unlabelled=int(unlabelled),
        skipped_lines=len(skipped),
    )
    stats.objects.update(names)
    padding = job.params.padding_value if job.params.padding else None
    flags = encode_flags(job.ext, job.png_compression)
    kept = np.zeros(len(objects), dtype=bool)
    for patch in patches:
        write_image(job.out_images / f"{patch.name}{job.ext}", crop_patch(image, patch.window, padding), flags)
        lines = annfile_lines(patch, names, difficulties)
        write_annfile_fast(job.out_annfiles / f"{patch.name}.txt", lines)
        stats.annotations.update(names[i] for i in patch.object_indices)
        stats.truncated.update(names[i] for i in patch.object_indices[patch.truncated])
        stats.empty_patches += int(not lines)
        kept[patch.object_indices] = True
    stats.dropped = int((~kept).sum())

    marker = {
        "image": job.image.name,
        "image_signature": file_signature(job.image),
        "label_signature": file_signature(job.label),
        "patches": [patch.name for patch in patches],
        "stats": stats.to_dict(),
        "problems": skipped,  # reported again when a rerun resumes the image: the label is unchanged
    }
    atomic_write_text(job.marker, json.dumps(marker))
    return ImageOutcome(job.split, job.image_id, stats=stats, problems=list(skipped))


def completed_outcome(job: ImageJob) -> ImageOutcome | None:
    """The recorded outcome of an image finished by an earlier run, if all its outputs still exist
    and its source files are unchanged; None means it has to be (re)done."""
    marker = read_marker(job.marker)
    if marker is None:
        return None
    if marker.get("image_signature") != file_signature(job.image):
        return None
    if marker.get("label_signature") != file_signature(job.label):
        return None
    for name in marker.get("patches", []):
        if not (job.out_images / f"{name}{job.ext}").is_file() or not (job.out_annfiles / f"{name}.txt").is_file():
            return None
    stats = ImageStats.from_dict(marker.get("stats", {}))
    return ImageOutcome(job.split, job.image_id, stats=stats, problems=list(marker.get("problems", [])))


def remove_recorded_outputs(marker: Path, out_images: Path, out_annfiles: Path, ext: str) -> int:
    """Delete the patches and annfiles an earlier run recorded in `marker`, then the marker;
    returns the number of patches removed. Only files rotld wrote are touched."""
    recorded = read_marker(marker) or {}
    removed = 0
    for name in recorded.get("patches", []):
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            continue  # not a patch name this module writes
        image = out_images / f"{name}{ext}"
        removed += int(image.is_file())
        image.unlink(missing_ok=True)
        (out_annfiles / f"{name}.txt").unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    return removed


def remove_stale_outputs(
    folder: SplitFolder, out_root: Path, jobs: list[ImageJob], todo: list[ImageJob], ext: str
) -> int:
    """Outputs that no longer match SRC: those of images gone from it (or now refused), and the
    earlier outputs of images about to be redone (a changed image may give fewer patches)."""
    markers = marker_dir(out_root, folder.name)
    if not markers.is_dir():
        return 0
    current = {job.image_id for job in jobs}
    stale = [m for m in markers.glob("*.json") if m.stem not in current]
    stale += [job.marker for job in todo if job.split == folder.name and job.marker.exists()]
    out_images, out_annfiles = folder.out / "images", folder.out / "annfiles"
    return sum(remove_recorded_outputs(m, out_images, out_annfiles, ext) for m in stale)


# ---------------------------------------------------------------------------------------------
# The run


def output_lock(out: Path):
    """Refuse a second prepare-dota writing into the same OUT at the same time."""
    return exclusive_lock(out / STATE_DIR / "lock", f"{out}: another `rotld prepare-dota` is writing here")


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RotldError(located(path, None, f"unreadable manifest ({exc}); use --overwrite to start over")) from None


def check_out_dir(out: Path, manifest: dict | None, params: dict, overwrite: bool) -> list[str]:
    """Refuse to mix parameters in one OUT; returns the splits of a previous run to delete."""
    if manifest is None:
        foreign = [p.name for p in out.iterdir() if p.name != STATE_DIR] if out.is_dir() else []
        if foreign and not overwrite:
            raise UsageError(
                f"OUT {out} is not empty and has no {MANIFEST} from `rotld prepare-dota`; "
                "choose a new folder or pass --overwrite to write into it"
            )
        return []
    old = manifest.get("params", {})
    if old == params:
        return []
    changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
    if not overwrite:
        detail = ", ".join(f"{k} {old.get(k)!r} -> {params.get(k)!r}" for k in changed)
        raise UsageError(f"{out / MANIFEST}: made with other parameters ({detail}); pass --overwrite to replace it")
    return list(manifest.get("splits", {}))


def remove_outputs(out: Path, splits: list[str]) -> None:
    """Delete what an earlier run wrote for these splits (only called when its manifest proves it)."""
    for split in splits:
        for sub in ("images", "annfiles"):
            shutil.rmtree(out / split / sub, ignore_errors=True)
        shutil.rmtree(marker_dir(out, split), ignore_errors=True)


def remove_temp_files(folders: list[SplitFolder], out: Path) -> None:
    """Temp files (`.<name>.<random>`) left by a killed run; this run holds the lock, so none is live."""
    for folder in folders:
        for directory in (folder.out / "images", folder.out / "annfiles", marker_dir(out, folder.name)):
            if directory.is_dir():
                for path in directory.iterdir():
                    if path.name.startswith(".") and path.is_file():
                        path.unlink()


def write_manifest(out: Path, manifest: dict) -> None:
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the pool, no worker tracebacks
    cv2.setNumThreads(1)  # one image per process: OpenCV threads would only fight over the cores


@contextmanager
def image_runner(workers: int, n_jobs: int) -> Iterator:
    """A `map(split_image, jobs)` yielding outcomes in completion order: inline for one worker,
    else a process pool over images.

    Workers come from a fork server, not a plain fork: a caller that already runs threads (torch's
    OpenMP pool in `rotld demo`, OpenCV's) would otherwise fork children that deadlock on a lock
    held by a thread that does not exist in the child."""
    if workers == 1 or n_jobs <= 1:
        yield lambda jobs: map(split_image, jobs)
        return
    with multiprocessing.get_context("forkserver").Pool(min(workers, n_jobs), initializer=_init_worker) as pool:
        yield lambda jobs: pool.imap_unordered(split_image, jobs, chunksize=1)


ProgressFn = Callable[[Iterator[ImageOutcome], int], Iterator[ImageOutcome]]
"""`progress(outcomes, total)`: pass the outcomes through while showing progress (the CLI draws a bar)."""


def prepare_dota(src: Path, out: Path, options: PrepareOptions, progress: ProgressFn | None = None) -> PrepareSummary:
    """Split SRC (a DOTA root or one split folder) into OUT; resumes an interrupted run.

    Bad inputs become `problems` (the run goes on with the other images); the caller decides
    the exit status. Raises UsageError for options that conflict with an existing OUT.
    Each problem is also logged as a warning when found; `progress` wraps the image outcomes.
    """
    options.validate()
    start = time.perf_counter()
    src, out = Path(src), Path(out)
    layout, folders = find_split_folders(src, out, options.splits)
    for folder in folders:
        if (folder.out / "images").resolve() == folder.images.resolve():
            raise UsageError(f"OUT {out}: would write the patches into the source images ({folder.images})")
    params = options.output_params(layout)
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT {out}: exists and is not a directory")
    manifest = read_manifest(out)
    to_remove = check_out_dir(out, manifest, params, options.overwrite)
    out.mkdir(parents=True, exist_ok=True)

    with output_lock(out):
        if options.overwrite and manifest is not None:
            remove_outputs(out, sorted(set(to_remove) | {f.name for f in folders}))
            manifest = None if to_remove else manifest
        remove_temp_files(folders, out)
        manifest = manifest or {}
        manifest.update(format=MANIFEST_FORMAT, rotld_version=__version__, params=params, complete=False)
        manifest.setdefault("splits", {})
        manifest["source"] = str(src.resolve())
        write_manifest(out, manifest)

        problems: dict[str, list[str]] = {folder.name: [] for folder in folders}
        stats = {folder.name: ImageStats() for folder in folders}
        todo: list[ImageJob] = []
        resumed_outcomes: list[ImageOutcome] = []
        removed_stale = 0
        for folder in folders:
            jobs, problems[folder.name] = list_jobs(folder, out, options)
            for problem in problems[folder.name]:
                log.warning(problem)
            folder_todo = []
            for job in jobs:
                done = completed_outcome(job)
                if done is None or (options.strict and done.problems):  # --strict re-reads skipped lines
                    folder_todo.append(job)
                else:
                    resumed_outcomes.append(done)
            removed_stale += remove_stale_outputs(folder, out, jobs, folder_todo, options.ext)
            todo += folder_todo
        resumed = len(resumed_outcomes)
        if resumed:
            log.info(f"resuming: {resumed} image(s) already split in {out}")
        if removed_stale:
            log.info(f"removed {removed_stale} patch(es) of images that left or changed in {src}")
        stopped = None
        for outcome in resumed_outcomes:
            _record(outcome, stats, problems)

        with image_runner(options.workers, len(todo)) as run:
            outcomes = run(todo)
            for outcome in progress(outcomes, len(todo)) if progress is not None and todo else outcomes:
                _record(outcome, stats, problems, quiet=outcome.stop)
                if outcome.stop:
                    stopped = outcome.problems[0]
                    break

        all_problems = sorted(p for split_problems in problems.values() for p in split_problems)
        summary = PrepareSummary(out, params, stats, all_problems, resumed, time.perf_counter() - start, removed_stale)
        for name, split_stats in stats.items():
            manifest["splits"][name] = {**split_stats.to_dict(), "problems": sorted(problems[name])}
        total = ImageStats()
        for split_stats in manifest["splits"].values():  # earlier runs' splits too
            total.add(ImageStats.from_dict(split_stats))
        manifest["total"] = total.to_dict()
        manifest["seconds"] = round(summary.seconds, 3)
        manifest["complete"] = stopped is None and not any(split["problems"] for split in manifest["splits"].values())
        write_manifest(out, manifest)
    if stopped is not None:
        raise RotldError(f"{stopped} (--strict stops at the first bad label line; fix it and rerun to resume)")
    return summary


def _record(
    outcome: ImageOutcome, stats: dict[str, ImageStats], problems: dict[str, list[str]], quiet: bool = False
) -> None:
    """Add an image's counts to its split and report its problems, each once, as it comes."""
    if outcome.stats is not None:
        stats[outcome.split].add(outcome.stats)
    problems[outcome.split].extend(outcome.problems)
    if not quiet:
        for problem in outcome.problems:
            log.warning(problem)
