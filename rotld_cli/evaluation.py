"""`rotld evaluate --results`: Task1 result files + DOTA labelTxt -> the DOTA devkit's APs.

Reads and validates the inputs (one located error per problem, or skip-and-count in lenient
mode), merges patch-level results to full images when the ids are patch ids, evaluates every
class at IoU 0.50:0.05:0.95 (`dota/metrics.py`) and builds the JSON-ready report. Optionally
writes the evaluated (merged) Task1 files and a DOTA-server submission zip; without ground truth
(the test split) it only merges and writes. Also here: the report as JSON + Markdown, and the
pictures (detections drawn on the full images, PR curves, AP against IoU).

Checkpoint evaluation (`rotld_cli/engine/checkpoint_eval.py`) runs the model, writes patch-level
Task1 files and evaluates them through this very module, so both modes give the same numbers.
Nothing here imports torch or the MMRotate engine.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rotld_cli.dota.classes import DOTA_V2_0, classes_for
from rotld_cli.dota.formats import (
    TASK1_PREFIX,
    FormatError,
    Task1Detections,
    class_from_task1_name,
    format_task1_line,
    parse_task1_text,
    read_label_file,
    write_task1_files,
)
from rotld_cli.dota.merge import is_patch_id, merge_detections, split_patch_id
from rotld_cli.dota.metrics import (
    SEED_THRESHOLDS,
    THRESHOLDS,
    ClassGroundTruth,
    class_mean,
    evaluate_class,
    seed_compat_means,
    threshold_name,
)
from rotld_cli.errors import RotldError, UsageError, located
from rotld_cli.fileio import atomic_path, atomic_write_text

METRICS = ("voc07", "area")
MAX_LISTED_PROBLEMS = 20
PAPER_COLUMNS = ("AP", "AP50", "AP70", "AP90")
PR_CURVE_THRESHOLDS = (0.5, 0.75)
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
ALL_DOTA_CLASSES = frozenset(DOTA_V2_0)


@dataclass
class Skipped:
    """What lenient mode left out: one message per problem, and the number of lines skipped."""

    messages: list[str] = field(default_factory=list)
    lines: int = 0
    ignored_classes: list[str] = field(default_factory=list)  # DOTA classes left out by --classes

    def add(self, message: str, lines: int = 1) -> None:
        self.messages.append(message)
        self.lines += lines


@dataclass
class EvaluateOptions:
    """What to evaluate. `ann_dir=None` merges and writes (--save-merged, --zip) without any AP.

    The evaluated images are `image_ids` when given (checkpoint mode: the images the patches were
    cut from), else the `imageset` file, else every label file of `ann_dir`. `classes` (default:
    the `dota_version` list) are the classes of the mean and of the written files; with explicit
    `classes`, result files of other DOTA classes are left out (listed in `ignored_classes`).
    """

    results: Path
    ann_dir: Path | None
    imageset: Path | None = None
    dota_version: str = "v1.0"
    metric: str = "voc07"
    merge: bool = True
    merge_iou: float = 0.1
    save_merged: Path | None = None
    zip_path: Path | None = None
    strict: bool = True
    seed_compat: bool = False
    image_ids: Sequence[str] | None = None
    classes: Sequence[str] | None = None


def read_task1_fast(path: Path, strict: bool = True, problems: list[str] | None = None) -> Task1Detections:
    """`formats.read_task1_file`, with a vectorised path for well-formed files (most of them).

    A file with any line that is not exactly 10 fields of finite numbers after the id goes
    through the strict per-line parser, which names the file and line of the problem.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, None, f"cannot read: {exc}") from None
    if all(len(line.split()) in (0, 10) for line in text.splitlines()):
        tokens = text.split()
        ids = tokens[0::10]
        del tokens[0::10]
        try:
            values = np.fromiter(map(float, tokens), dtype=np.float64, count=len(tokens)).reshape(-1, 9)
        except ValueError:
            values = None
        if values is not None and np.isfinite(values).all():
            return Task1Detections(ids, values[:, 0].copy(), values[:, 1:].copy())
    return parse_task1_text(text, path, strict=strict, problems=problems)


def _first_line_of(path: Path, image_id: str) -> int | None:
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = raw.split(None, 1)
        if tokens and tokens[0] == image_id:
            return lineno
    return None


@dataclass
class Evaluation:
    """The report plus what it was computed from (for the pictures): the evaluated (merged)
    detections, the class list, the images in evaluation order and their ground truth."""

    report: dict
    detections: dict[str, Task1Detections]
    classes: tuple[str, ...]
    image_ids: list[str]
    ground_truth: dict[str, ClassGroundTruth] | None


def evaluated_classes(options: EvaluateOptions) -> tuple[str, ...]:
    """The classes of the mean: `--classes` (checked) or the `--dota-version` list."""
    if options.classes is None:
        return classes_for(options.dota_version)
    classes = tuple(options.classes)
    if not classes:
        raise UsageError("--classes: no class names")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise UsageError(f"--classes: {', '.join(repeated)} given twice")
    return classes


def _class_set_name(options: EvaluateOptions, classes: Sequence[str]) -> str:
    return f"DOTA {options.dota_version}" if options.classes is None else f"the {len(classes)} evaluated classes"


def evaluated_image_ids(options: EvaluateOptions) -> list[str]:
    """The images of the evaluation, in order; each must have a label file in `ann_dir`."""
    assert options.ann_dir is not None
    if options.image_ids is not None:
        ids = list(dict.fromkeys(options.image_ids))
        missing = [i for i in ids if not (options.ann_dir / f"{i}.txt").is_file()]
        if missing:
            raise RotldError(
                f"--ann-dir {options.ann_dir}: no label file for {len(missing)} of the {len(ids)} images "
                f"(e.g. {missing[0]}.txt); is it the labelTxt folder of the images the patches were cut from?"
            )
        if not ids:
            raise RotldError("no images to evaluate")
        return ids
    if options.imageset is None:
        ids = sorted(p.stem for p in options.ann_dir.glob("*.txt"))
        if not ids:
            raise RotldError(f"--ann-dir {options.ann_dir}: no labelTxt files (*.txt)")
        return ids
    try:
        lines = options.imageset.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--imageset {options.imageset}: cannot read: {exc}") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            continue
        if name in seen:
            raise RotldError(located(options.imageset, lineno, f"image id {name!r} repeats line {seen[name]}"))
        if not (options.ann_dir / f"{name}.txt").is_file():
            raise RotldError(located(options.imageset, lineno, f"no label file {options.ann_dir / (name + '.txt')}"))
        seen[name] = lineno
        ids.append(name)
    if not ids:
        raise RotldError(f"--imageset {options.imageset}: no image ids")
    return ids


def _ground_truth(ann_dir: Path, image_ids: Sequence[str], classes: Sequence[str]) -> dict[str, ClassGroundTruth]:
    per_class: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in classes}
    for image_id in image_ids:
        objects = read_label_file(ann_dir / f"{image_id}.txt").objects
        for name in classes:
            mine = [o for o in objects if o.name == name]
            polys = np.array([o.poly for o in mine], dtype=np.float64).reshape(-1, 8)
            per_class[name].append((polys, np.array([o.difficulty for o in mine], dtype=np.int64)))
    return {name: ClassGroundTruth.from_images(per_class[name]) for name in classes}


def _read_results(options: EvaluateOptions, classes: Sequence[str], skipped: Skipped) -> dict[str, Task1Detections]:
    if not options.results.is_dir():
        raise UsageError(f"--results {options.results}: not a directory")
    files = sorted(options.results.glob(f"{TASK1_PREFIX}*.txt"))
    if not files:
        raise RotldError(f"--results {options.results}: no {TASK1_PREFIX}<class>.txt files")
    known = set(classes)
    dets: dict[str, Task1Detections] = {}
    for path in files:
        name = class_from_task1_name(path)
        if name not in known and options.classes is not None and name in ALL_DOTA_CLASSES:
            skipped.ignored_classes.append(name)
            continue
        if name not in known:
            message = located(path, None, f"unknown class {name!r} for {_class_set_name(options, classes)}")
            if options.strict:
                hint = "--dota-version" if options.classes is None else "--classes"
                raise RotldError(f"{message} (classes: {', '.join(classes)}; see {hint})")
            skipped.add(
                message,
                sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()),
            )
            continue
        problems: list[str] = []
        dets[name] = read_task1_fast(path, strict=options.strict, problems=problems)
        for message in problems:
            skipped.add(message)
    if not dets:
        raise RotldError(f"--results {options.results}: no result file of {_class_set_name(options, classes)}")
    return dets


def _drop_unknown_images(
    dets: dict[str, Task1Detections], known: set[str], options: EvaluateOptions, skipped: Skipped
) -> dict[str, Task1Detections]:
    """Detections must name an evaluated image (a patch id: the image it was cut from)."""
    out = {}
    for name, det in dets.items():
        image_of = {}
        for image_id in dict.fromkeys(det.image_ids):
            parsed = split_patch_id(image_id) if options.merge else None
            image_of[image_id] = parsed[0] if parsed is not None else image_id
        missing = [i for i, image in image_of.items() if image not in known]
        if not missing:
            out[name] = det
            continue
        path = options.results / f"{TASK1_PREFIX}{name}.txt"
        if options.image_ids is not None:
            where = "the evaluated images"
        elif options.imageset is not None:
            where = "the --imageset list"
        else:
            where = f"the ground truth ({options.ann_dir})"
        if options.strict:
            image_id = missing[0]
            shown = image_id if image_of[image_id] == image_id else f"{image_id} (image {image_of[image_id]})"
            hint = " (the ground truth has this patch id: pass --no-merge)" if image_id in known else ""
            raise RotldError(located(path, _first_line_of(path, image_id), f"image id {shown} is not in {where}{hint}"))
        drop = set(missing)
        keep = np.array([i not in drop for i in det.image_ids], dtype=bool)
        count = int((~keep).sum())
        line = _first_line_of(path, missing[0])
        skipped.add(
            located(path, line, f"{count} detection(s) on {len(drop)} image(s) not in {where}, e.g. {missing[0]}"),
            count,
        )
        out[name] = Task1Detections([i for i, k in zip(det.image_ids, keep) if k], det.scores[keep], det.polys[keep])
    return out


def task1_texts(dets: dict[str, Task1Detections], classes: Sequence[str]) -> dict[str, str]:
    """File name -> content of every class's Task1 file (empty files for classes without detections)."""
    texts = {}
    for name in classes:
        det = dets.get(name)
        lines = (
            []
            if det is None
            else [format_task1_line(i, s, p) for i, s, p in zip(det.image_ids, det.scores.tolist(), det.polys.tolist())]
        )
        texts[f"{TASK1_PREFIX}{name}.txt"] = "\n".join(lines) + ("\n" if lines else "")
    return texts


def write_submission_zip(path: Path, dets: dict[str, Task1Detections], classes: Sequence[str]) -> None:
    """The DOTA server's Task1 submission: one Task1_<class>.txt per class at the zip root."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, text in task1_texts(dets, classes).items():
                zf.writestr(name, text)


def validate_options(options: EvaluateOptions) -> None:
    """Option checks that need no result file (checkpoint mode runs them before inference)."""
    if options.metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {options.metric!r}")
    if not 0.0 < options.merge_iou <= 1.0:
        raise UsageError(f"--merge-iou must be in (0, 1], got {options.merge_iou}")
    if options.ann_dir is not None and not options.ann_dir.is_dir():
        raise UsageError(f"--ann-dir {options.ann_dir}: not a directory")
    evaluated_classes(options)


def evaluate_results(options: EvaluateOptions, on_progress: Callable[[str, int], None] | None = None) -> dict:
    """Evaluate a Task1 result folder; returns the report (fractions in [0, 1]).

    `on_progress(description, classes_done)` is called when a stage starts and after each class.
    """
    return evaluate(options, on_progress).report


def evaluate(options: EvaluateOptions, on_progress: Callable[[str, int], None] | None = None) -> Evaluation:
    """`evaluate_results`, keeping the detections and ground truth the report was computed from."""

    def report_progress(description: str, advance: int = 0) -> None:
        if on_progress is not None:
            on_progress(description, advance)

    validate_options(options)
    classes = evaluated_classes(options)
    image_ids = evaluated_image_ids(options) if options.ann_dir is not None else []
    skipped = Skipped()
    dets = _read_results(options, classes, skipped)
    if options.ann_dir is not None:
        dets = _drop_unknown_images(dets, set(image_ids), options, skipped)
    merged = options.merge and any(is_patch_id(i) for d in dets.values() for i in dict.fromkeys(d.image_ids))
    if merged:
        report_progress("merging patches")
        dets = merge_detections(dets, options.merge_iou)
    if options.save_merged is not None:
        write_task1_files(options.save_merged, dets, classes)
    if options.zip_path is not None:
        write_submission_zip(options.zip_path, dets, classes)
    if options.ann_dir is None:
        report_progress("merged", len(classes))
        image_ids = list(dict.fromkeys(i for d in dets.values() for i in d.image_ids))
        report = _merge_report(options, classes, dets, image_ids, merged, skipped)
        return Evaluation(report, dets, classes, image_ids, None)
    report_progress("reading ground truth")
    gts = _ground_truth(options.ann_dir, image_ids, classes)
    index = {image_id: k for k, image_id in enumerate(image_ids)}
    thresholds = SEED_THRESHOLDS if options.seed_compat else THRESHOLDS
    per_class_aps: dict[str, list[float]] = {}
    for name in classes:
        det = dets.get(name)
        if det is None or len(det) == 0:
            per_class_aps[name] = [0.0] * len(thresholds)
        else:
            det_image = np.fromiter(map(index.__getitem__, det.image_ids), dtype=np.int64, count=len(det))
            per_class_aps[name] = evaluate_class(
                det.scores, det_image, det.polys, gts[name], thresholds, options.metric == "voc07"
            )
        report_progress(name, 1)
    report = _report(options, classes, thresholds, per_class_aps, gts, dets, image_ids, merged, skipped)
    return Evaluation(report, dets, classes, image_ids, gts)


def _mean(values: Sequence[float]) -> float:
    total = 0.0
    for v in values:
        total = total + v
    return total / len(values)


def _report(options, classes, thresholds, per_class_aps, gts, dets, image_ids, merged, skipped: Skipped) -> dict:
    names = [threshold_name(t) for t in thresholds]
    by_threshold = [[per_class_aps[c][k] for c in classes] for k in range(len(thresholds))]
    means = [class_mean(aps) for aps in by_threshold]
    report: dict = {}
    if options.seed_compat:
        reported = seed_compat_means(by_threshold)
        report["AP"] = _mean(reported)
        report.update(zip(names, reported))
        report["seed_compat"] = True
        report["devkit"] = {"AP": _mean(means), **dict(zip(names, means))}
    else:
        report["AP"] = _mean(means)
        report.update(zip(names, means))
        report["seed_compat"] = False
    report["per_class"] = {
        c: {
            **dict(zip(names, per_class_aps[c])),
            "AP": _mean(per_class_aps[c]),
            "num_gt": gts[c].npos,
            "num_difficult": int(gts[c].difficult.sum()),
            "num_det": len(dets[c]) if c in dets else 0,
        }
        for c in classes
    }
    report["metric"] = options.metric
    report["evaluated"] = True
    _common(report, options, classes, dets, image_ids, merged, skipped)
    return report


def _merge_report(options, classes, dets, image_ids, merged, skipped: Skipped) -> dict:
    """The report without ground truth: what was merged and written, no AP."""
    per_class = {c: {"num_det": len(dets[c]) if c in dets else 0} for c in classes}
    report: dict = {"evaluated": False, "per_class": per_class}
    _common(report, options, classes, dets, image_ids, merged, skipped)
    return report


def _common(report: dict, options: EvaluateOptions, classes, dets, image_ids, merged, skipped: Skipped) -> None:
    report["dota_version"] = options.dota_version
    report["classes"] = list(classes)
    report["num_images"] = len(image_ids)
    report["merged"] = merged
    report["missing_classes"] = [c for c in classes if c not in dets]
    report["skipped"] = {"lines": skipped.lines, "problems": skipped.messages[:MAX_LISTED_PROBLEMS]}
    report["ignored_classes"] = skipped.ignored_classes
    if options.save_merged is not None:
        report["saved"] = str(options.save_merged)
    if options.zip_path is not None:
        report["zip"] = str(options.zip_path)


# --------------------------------------------------------------------------------------------
# Report files


def write_report_files(out_dir: Path, report: dict) -> tuple[Path, Path]:
    """`report.json` (the `--json` object) and `report.md` (the tables) in `out_dir`, atomically."""
    json_path, md_path = out_dir / REPORT_JSON, out_dir / REPORT_MD
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    atomic_write_text(md_path, report_markdown(report))
    return json_path, md_path


def _pct(value: float) -> str:
    return f"{100.0 * value:.2f}"


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def report_markdown(report: dict) -> str:
    """The report as Markdown: what was evaluated, the paper's columns, per-class APs, notes."""
    lines = ["# rotld evaluation", ""]
    if "checkpoint" in report:
        lines += [
            f"- checkpoint: `{report['checkpoint']}`",
            f"- recipe: {report['recipe']}",
            f"- patches: `{report['split_dir']}`",
        ]
        patches = report["patches"]
        lines.append(
            f"- {patches['run']} of {patches['total']} patches run"
            + (f" ({patches['skipped_empty']} without objects skipped)" if patches["skipped_empty"] else "")
            + (f", {len(patches['unreadable'])} unreadable" if patches["unreadable"] else "")
            + f", {report['inference']['patches_per_s']:.1f} patches/s on {report['inference']['device']}"
        )
        lines.append("- test settings: " + ", ".join(f"{k} {v}" for k, v in report["test_cfg"].items()))
    classes = report["classes"]
    lines.append(
        f"- {report['num_images']} images, {len(classes)} classes"
        + (", patch detections merged (rotated NMS per image and class)" if report["merged"] else "")
    )
    if not report.get("evaluated", True):
        lines += ["", "No ground truth: detections merged and written, no AP.", ""]
        lines += _md_table(["class", "detections"], [[c, report["per_class"][c]["num_det"]] for c in classes])
        return "\n".join(lines) + "\n"
    metric = "VOC07 11-point" if report["metric"] == "voc07" else "area under the PR curve"
    lines += [f"- AP: DOTA devkit rules, {metric}, IoU 0.50:0.05:0.95 (%)", ""]
    label = "seed script values (accumulator bug reproduced)" if report["seed_compat"] else "paper form"
    lines += [f"## Summary, {label}", ""]
    summary = (*PAPER_COLUMNS, "AP75")
    lines += _md_table(summary, [[_pct(report[k]) for k in summary]])
    if report["seed_compat"]:
        true = report["devkit"]
        lines += ["", "Correct values: " + ", ".join(f"{k} {_pct(true[k])}" for k in PAPER_COLUMNS)]
    names = [threshold_name(t) for t in THRESHOLDS]
    lines += ["", "## Per class", ""]
    rows = [
        [
            c,
            report["per_class"][c]["num_gt"],
            report["per_class"][c]["num_det"],
            *(_pct(report["per_class"][c][n]) for n in names),
            _pct(report["per_class"][c]["AP"]),
        ]
        for c in classes
    ]
    rows.append(["mean", "", "", *(_pct(report[n]) for n in names), _pct(report["AP"])])
    lines += _md_table(["class", "GTs", "detections", *names, "AP50:95"], rows)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Pictures


@dataclass
class PictureOptions:
    """`--save-vis DIR` (drawn detections, full images from `image_dir`) and `--plot` (figures into `plot_dir`)."""

    vis_dir: Path | None = None
    image_dir: Path | None = None
    vis_score_thr: float = 0.3
    plot_dir: Path | None = None


def resolve_image_dir(pictures: PictureOptions, ann_dir: Path | None) -> Path | None:
    """The full images to draw on: `--image-dir`, else the `images/` folder beside `--ann-dir`
    (DOTA's `val/images` beside `val/labelTxt`). Checked before any long work."""
    if pictures.vis_dir is None:
        return None
    if not 0.0 <= pictures.vis_score_thr <= 1.0:
        raise UsageError(f"--vis-score-thr must be in [0, 1], got {pictures.vis_score_thr}")
    if pictures.image_dir is not None:
        if not pictures.image_dir.is_dir():
            raise UsageError(f"--image-dir {pictures.image_dir}: not a directory")
        return pictures.image_dir
    if ann_dir is None:
        raise UsageError("--save-vis: pass --image-dir DIR (the full images; without --ann-dir it cannot be derived)")
    derived = ann_dir.parent / "images"
    if not derived.is_dir():
        raise UsageError(f"--save-vis: no {derived} beside --ann-dir; pass --image-dir DIR (the full images)")
    return derived


def save_pictures(
    evaluation: Evaluation,
    pictures: PictureOptions,
    ann_dir: Path | None,
    metric: str = "voc07",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Draw and plot what `pictures` asks for; returns the report's `pictures` entry (paths, problems)."""
    out: dict = {}
    image_dir = resolve_image_dir(pictures, ann_dir)
    if image_dir is not None:
        from rotld_cli.dota.visualize import save_visualizations

        drawn = save_visualizations(
            image_dir, evaluation.detections, pictures.vis_dir, evaluation.classes,
            score_thr=pictures.vis_score_thr, ann_dir=ann_dir, image_ids=evaluation.image_ids, progress=progress,
        )  # fmt: skip
        out["visualizations"] = {
            "dir": str(pictures.vis_dir),
            "written": len(drawn.written),
            "problems": drawn.problems[:MAX_LISTED_PROBLEMS],
        }
    if pictures.plot_dir is not None:
        if evaluation.ground_truth is None:
            raise UsageError("--plot needs --ann-dir (the curves are computed against the ground truth)")
        out["plots"] = [str(p) for p in save_plots(evaluation, pictures.plot_dir, metric)]
    return out


def save_plots(evaluation: Evaluation, out_dir: Path, metric: str = "voc07") -> list[Path]:
    """`pr_curves_iou50.png`, `pr_curves_iou75.png` (one panel per class) and `ap_vs_iou.png`."""
    from rotld_cli.plots import ap_by_iou_from_report, plot_ap_vs_iou, plot_pr_curves, pr_curves_from_metrics

    assert evaluation.ground_truth is not None
    written = []
    for thr in PR_CURVE_THRESHOLDS:
        curves = pr_curves_from_metrics(
            evaluation.detections, evaluation.ground_truth, evaluation.image_ids, thr, metric == "voc07"
        )
        name = f"pr_curves_iou{round(thr * 100)}.png"
        title = f"Precision/recall at IoU {thr:.2f}"
        written.append(plot_pr_curves(curves, out_dir / name, title, classes=evaluation.classes))
    report = evaluation.report
    _, per_class = ap_by_iou_from_report(report)
    mean, _ = ap_by_iou_from_report(report["devkit"] if report["seed_compat"] else report)
    title = f"AP vs IoU threshold (mean over {len(evaluation.classes)} classes)"
    written.append(plot_ap_vs_iou(per_class, out_dir / "ap_vs_iou.png", title, mean=mean, classes=evaluation.classes))
    return written


@contextlib.contextmanager
def drawing_progress(show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A `progress(done, total)` callback drawing a Rich bar (started on the first call), or None."""
    if not show:
        yield None
        return
    from rotld_cli import ui

    state: dict = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = ui.progress(transient=True)
            state["bar"].start()
            state["task"] = state["bar"].add_task("drawing", total=total)
        state["bar"].update(state["task"], completed=done)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].stop()


def default_out_dir(source: Path) -> Path:
    """`work/epoch_12.pth` -> `work/epoch_12-eval/`, `runs/results/` -> `runs/results-eval/`: beside the input."""
    return source.parent / f"{source.stem if source.is_file() else source.name}-eval"


def evaluate_result_files(
    options: EvaluateOptions,
    pictures: PictureOptions | None = None,
    out_dir: Path | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    show_progress: bool = False,
) -> dict:
    """`rotld evaluate --results`: the report, plus pictures and `report.json`/`report.md` in `out_dir`."""
    pictures = pictures or PictureOptions()
    validate_options(options)
    resolve_image_dir(pictures, options.ann_dir)
    if pictures.plot_dir is not None and options.ann_dir is None:
        raise UsageError("--plot needs --ann-dir (the curves are computed against the ground truth)")
    evaluation = evaluate(options, on_progress)
    report = evaluation.report
    if pictures.vis_dir is not None or pictures.plot_dir is not None:
        with drawing_progress(show_progress) as progress:
            report["pictures"] = save_pictures(evaluation, pictures, options.ann_dir, options.metric, progress)
    if out_dir is not None:
        report["out"] = str(out_dir)
        write_report_files(out_dir, report)
    return report
