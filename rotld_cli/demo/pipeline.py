"""`rotld demo`: the synthetic end-to-end pipeline of the paper, small enough for a laptop CPU.

Steps (each reuses what a previous run completed): render the synthetic DOTA-like dataset,
split it with prepare-dota, train the R-34 teacher, train the R-18 baseline and the R-18 LD+KD
student for the same schedule, detect on the val patches, merge them to full images and
evaluate AP at IoU 0.50:0.95 with the DOTA devkit's rules, then print and save the comparison
table the paper shows (AP, AP50, AP70, AP90 per model).

Layout of the work dir: `data/` (synthetic DOTA root), `split/` (patches), `runs/{teacher,
baseline,student}/` (checkpoints, logs, `results/`), `report.md`, `demo.json` (the settings).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rotld_cli import ui
from rotld_cli.errors import UsageError
from rotld_cli.fileio import atomic_write_text

DEMO_FILE = "demo.json"
TABLE_COLUMNS = ("AP", "AP50", "AP70", "AP90")


@dataclass(frozen=True)
class DemoSettings:
    """Dataset, split and schedule of one demo flavour (full or --quick)."""

    name: str
    num_train: int
    num_val: int
    image_size: int
    objects_per_image: tuple[int, int]
    object_scale: float
    distractors_per_image: tuple[int, int]
    difficult_fraction: float
    patch: int
    gap: int
    overrides: tuple[str, ...] = ()  # --set for all three runs
    batch_size: int = 8  # inference


FULL = DemoSettings(
    name="full",
    num_train=80,
    num_val=20,
    image_size=256,
    objects_per_image=(6, 12),
    object_scale=1.0,
    distractors_per_image=(0, 3),
    difficult_fraction=0.0,
    patch=128,
    gap=0,
)
QUICK = DemoSettings(
    name="quick",
    num_train=4,
    num_val=2,
    image_size=128,
    objects_per_image=(4, 6),
    object_scale=1.0,
    distractors_per_image=(0, 2),
    difficult_fraction=0.0,
    patch=128,
    gap=0,
    # Score threshold 0: a 1-iteration model scores below the usual 0.05, yet merge and evaluation must run.
    overrides=("schedule.epochs=1", "schedule.warmup_iters=1", "schedule.lr_steps=[1]", "model.test.score_thr=0.0",
               "model.test.max_per_img=50"),
)


@dataclass(frozen=True)
class Model:
    """One row of the comparison: which recipe, how it is trained."""

    key: str
    label: str
    recipe: str
    distilled: bool = False


MODELS = (
    Model("teacher", "Teacher R-34 (GWD)", "synthetic/teacher-r34-gwd"),
    Model("baseline", "Baseline R-18 (GWD)", "synthetic/baseline-r18-gwd"),
    Model("student", "Student R-18 (GWD, LD+KD)", "synthetic/student-r18-gwd-ld-kd", distilled=True),
)


@dataclass
class DemoResult:
    work_dir: Path
    rows: dict[str, dict[str, float]]
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None


def default_work_dir(quick: bool) -> Path:
    return Path("rotld-demo-quick" if quick else "rotld-demo")


def run_demo(work_dir: Path | None = None, quick: bool = False, device: str | None = None,
             log: Callable[[str], None] = ui.info) -> DemoResult:
    """Run (or finish) the whole pipeline in `work_dir` and return the table's numbers."""
    settings = QUICK if quick else FULL
    work_dir = (work_dir or default_work_dir(quick)).absolute()
    started = time.perf_counter()
    claim_work_dir(work_dir, settings)
    reused: list[str] = []
    log(f"[bold]1/5[/] synthetic dataset → {work_dir / 'data'}")
    make_data(work_dir, settings)
    log(f"[bold]2/5[/] prepare-dota → {work_dir / 'split'}")
    split_data(work_dir, settings)
    checkpoints: dict[str, Path] = {}
    for model in MODELS:
        log(f"[bold]3/5[/] train {model.label} → {work_dir / 'runs' / model.key}")
        checkpoint, was_reused = train_model(work_dir, settings, model, device, teacher=checkpoints.get("teacher"))
        checkpoints[model.key] = checkpoint
        if was_reused:
            reused.append(model.key)
            log(f"  reused the finished run ({checkpoint.name})")
    log("[bold]4/5[/] detect on the val patches, merge, evaluate AP50:95 (DOTA devkit rules)")
    rows = {model.key: evaluate_model(work_dir, settings, model, checkpoints[model.key], device)
            for model in MODELS}
    seconds = time.perf_counter() - started
    log("[bold]5/5[/] report")
    report = write_report(work_dir, settings, rows, seconds, reused)
    return DemoResult(work_dir=work_dir, rows=rows, reused=reused, seconds=seconds, report=report)


def claim_work_dir(work_dir: Path, settings: DemoSettings) -> None:
    """Record the flavour; a work dir made by the other flavour is refused (its data differ)."""
    marker = work_dir / DEMO_FILE
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8")).get("settings", {}).get("name")
        except (OSError, ValueError):
            previous = None
        if previous not in (None, settings.name):
            flag = "--quick " if previous == "quick" else ""
            raise UsageError(
                f"--work-dir {work_dir}: holds a `rotld demo {flag}`run ({previous}); choose another --work-dir"
            )
    elif work_dir.exists() and any(work_dir.iterdir()):
        raise UsageError(f"--work-dir {work_dir}: exists and is not a rotld demo folder; choose another --work-dir")
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"settings": asdict(settings)}, indent=2) + "\n")


def make_data(work_dir: Path, settings: DemoSettings) -> dict[str, Any]:
    from rotld_cli.demo.scenes import generate_dataset

    return generate_dataset(
        work_dir / "data",
        num_train=settings.num_train,
        num_val=settings.num_val,
        image_size=settings.image_size,
        seed=0,
        objects_per_image=settings.objects_per_image,
        object_scale=settings.object_scale,
        distractors_per_image=settings.distractors_per_image,
        difficult_fraction=settings.difficult_fraction,
    )


def split_data(work_dir: Path, settings: DemoSettings):
    from rotld_cli.dota.prepare import PrepareOptions, prepare_dota
    from rotld_cli.dota.split import SplitParams

    # One process: the images are few, and a fork after OpenCV has started its threads can hang.
    options = PrepareOptions(split=SplitParams(sizes=(settings.patch,), gaps=(settings.gap,)), workers=1)
    return prepare_dota(work_dir / "data", work_dir / "split", options, show_progress=ui.is_interactive())


def run_overrides(work_dir: Path, settings: DemoSettings, model: Model) -> list[str]:
    overrides = [f"data.root={work_dir / 'split'}", f"data.img_scale={settings.patch}", *settings.overrides]
    if model.distilled:
        # The teacher as it was trained here (the demo's overrides included), not the bundled file.
        overrides.append(f"teacher.recipe={work_dir / 'runs' / 'teacher' / 'recipe.yaml'}")
    return overrides


def train_model(work_dir: Path, settings: DemoSettings, model: Model, device: str | None,
                teacher: Path | None = None, seed: int | None = None, run_dir: Path | None = None) -> tuple[Path, bool]:
    """Train one model unless its run is complete; an interrupted run is resumed. Returns (checkpoint, reused)."""
    from rotld_cli.engine import checkpoints as ckpt
    from rotld_cli.engine.train import TrainOptions, distill, is_complete, train_teacher

    run_dir = run_dir or work_dir / "runs" / model.key
    if is_complete(run_dir):
        marker = json.loads((run_dir / ckpt.DONE_MARKER).read_text(encoding="utf-8"))
        return run_dir / marker["checkpoint"], True
    options = TrainOptions(
        overrides=run_overrides(work_dir, settings, model), work_dir=run_dir, device=device,
        resume=(run_dir / ckpt.LATEST).is_file(), validate=False, seed=seed, teacher=teacher,
    )
    result = distill(model.recipe, options) if model.distilled else train_teacher(model.recipe, options)
    return result.checkpoint, False


def evaluate_model(work_dir: Path, settings: DemoSettings, model: Model, checkpoint: Path, device: str | None,
                   run_dir: Path | None = None) -> dict[str, float]:
    """AP/AP50/.../AP95 (fractions) of one checkpoint on the merged val images; cached per checkpoint hash."""
    from rotld_cli.engine import checkpoints as ckpt
    from rotld_cli.engine.infer import infer_split
    from rotld_cli.evaluation import EvaluateOptions, evaluate_results

    results = (run_dir or work_dir / "runs" / model.key) / "results"
    cache = results / "metrics.json"
    sha = ckpt.sha256_file(checkpoint)
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("checkpoint_sha256") == sha:
            return cached["metrics"]
    inferred = infer_split(checkpoint, work_dir / "split" / "val", out_dir=results / "patches", device=device,
                           batch_size=settings.batch_size, show_progress=ui.is_interactive())
    report = evaluate_results(EvaluateOptions(
        results=results / "patches", ann_dir=work_dir / "data" / "val" / "labelTxt", save_merged=results / "merged",
    ))
    metrics = class_subset_means(report, inferred.classes)
    metrics["patches_per_s"] = inferred.patches_per_s
    atomic_write_text(cache, json.dumps({"checkpoint": str(checkpoint), "checkpoint_sha256": sha,
                                         "metrics": metrics, "report": report}, indent=2) + "\n")
    return metrics


def class_subset_means(report: dict[str, Any], classes) -> dict[str, float]:
    """Class means over the recipe's classes only (the report averages all 15 DOTA classes)."""
    names = [k for k in report["per_class"][classes[0]] if k.startswith("AP")]
    return {name: sum(report["per_class"][c][name] for c in classes) / len(classes) for name in names}


def table_rows(rows: dict[str, dict[str, float]]) -> list[list[str]]:
    out = []
    for model in MODELS:
        metrics = rows[model.key]
        out.append([model.label, *(f"{100 * metrics[c]:.1f}" for c in TABLE_COLUMNS)])
    return out


def write_report(work_dir: Path, settings: DemoSettings, rows: dict[str, dict[str, float]], seconds: float,
                 reused: list[str]) -> Path:
    """`report.md`: the table, the gains over the baseline, and how it was made."""
    header = "| Model | " + " | ".join(TABLE_COLUMNS) + " |"
    lines = [
        "# rotld demo: Rotated LD on the synthetic DOTA-like dataset",
        "",
        f"Val: {settings.num_val} images of {settings.image_size}² px, split into {settings.patch}² patches, "
        "detections merged to full images (rotated NMS, IoU 0.1), DOTA devkit AP (VOC07 11-point), "
        "AP = mean of AP50..AP95.",
        "",
        header,
        "|" + "---|" * (len(TABLE_COLUMNS) + 1),
        *("| " + " | ".join(row) + " |" for row in table_rows(rows)),
        "",
    ]
    base, student = rows["baseline"], rows["student"]
    gains = ", ".join(f"{c} {100 * (student[c] - base[c]):+.1f}" for c in TABLE_COLUMNS)
    lines += [f"LD+KD student vs baseline: {gains}.", ""]
    lines += [f"Wall time: {seconds / 60:.1f} min" + (f" (reused: {', '.join(reused)})" if reused else "") + ".", ""]
    lines += ["Runs: `runs/teacher`, `runs/baseline`, `runs/student` (checkpoints, `log.jsonl`, `metrics.csv`, "
              "`results/metrics.json`)."]
    path = work_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
