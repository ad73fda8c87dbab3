"""`rotld demo`: the synthetic end-to-end pipeline of the paper, small enough for a laptop CPU.

Steps (each reuses what a previous run completed, each timed): render the synthetic DOTA-like
dataset, split it with prepare-dota, train the R-34 teacher, train the R-18 baseline and the R-18
LD+KD student for the same schedule, evaluate each checkpoint exactly as `rotld evaluate CKPT
--split-dir split/val --ann-dir data/val/labelTxt` does (the same function: detect on the val
patches, merge to full images, DOTA devkit AP at IoU 0.50:0.95 over the model's classes), then
print and save the comparison table the paper shows (AP, AP50, AP70, AP90 per model) with
pictures: one val image with the ground truth and the baseline's and student's detections, and
the three runs' loss curves.

Layout of the work dir: `data/` (synthetic DOTA root), `split/` (patches), `runs/{teacher,
baseline,student}/` (checkpoints, logs, `results/`: the evaluation's output folder), `figures/`,
`report.md`, `demo.json` (the settings).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rotld_cli import ui
from rotld_cli.errors import UsageError
from rotld_cli.evaluation.table import PAPER_COLUMNS, Table, comparison_table
from rotld_cli.fileio import atomic_write_text

DEMO_FILE = "demo.json"
TABLE_TITLE = "Rotated LD on the synthetic dataset (val, merged images)"
SPLIT_WORKERS = 2  # the demo's 100 images split in two processes (prepare-dota's default: one per core)


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


FULL = DemoSettings(
    name="full",
    num_train=80,
    num_val=20,
    image_size=256,
    # Dense scenes of objects the 16-101 px anchors fit (1.5x the renderer's DOTA-like sizes): about
    # 4 objects per 128 px training patch. With 6-12 objects at 1x (small vehicles 5 px wide) the
    # teacher reached 4-6 AP and the comparison was noise.
    objects_per_image=(12, 24),
    object_scale=1.5,
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
    object_scale=1.5,
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
DISTILLERS = {
    "ld": MODELS[2],
    "ld-seed": Model("ld-seed", "Student R-18 (GWD, LD+KD as the seed)", "synthetic/student-r18-gwd-ld-kd-seed",
                     distilled=True),
    "crosskd": Model("crosskd", "Student R-18 (GWD, CrossKD)", "synthetic/student-r18-gwd-crosskd", distilled=True),
    "bckd": Model("bckd", "Student R-18 (GWD, BCKD)", "synthetic/student-r18-gwd-bckd", distilled=True),
    "ld-crosskd": Model("ld-crosskd", "Student R-18 (GWD, LD+CrossKD)", "synthetic/student-r18-gwd-ld-crosskd",
                        distilled=True),
}
"""`--methods` name → the student row it adds (LD+KD keeps its `student` run folder)."""


def parse_methods(text: str, known: Sequence[str] = tuple(DISTILLERS)) -> tuple[str, ...]:
    """`ld,crosskd` → ('ld', 'crosskd'); a name not in `known` (the demo's distillers by default) is a
    one-line usage error."""
    methods = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise UsageError(f"--methods {text}: unknown distiller {unknown[0] if unknown else '(none)'!r}; "
                         f"use a comma-separated subset of {', '.join(known)}")
    return methods


def demo_models(methods: tuple[str, ...] = ("ld",)) -> tuple[Model, ...]:
    """Teacher, baseline, then one student per method, in `DISTILLERS` order."""
    return (*MODELS[:2], *(model for key, model in DISTILLERS.items() if key in methods))


@dataclass
class DemoResult:
    work_dir: Path
    rows: dict[str, dict[str, float]]
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None
    steps: dict[str, float] = field(default_factory=dict)  # step -> wall seconds
    found: str = ""  # "Objects found among the N val objects ...": the line under the table

    def table(self) -> Table:
        return demo_table(self.rows)


def default_work_dir(quick: bool) -> Path:
    return Path("rotld-demo-quick" if quick else "rotld-demo")


class StepTimer:
    """Logs each step as it starts and its wall time when it ends; keeps the times for the report."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, number: str, what: str, key: str) -> Iterator[None]:
        self.log(f"[bold]{number}[/] {what}")
        started = time.perf_counter()
        yield
        self.steps[key] = time.perf_counter() - started
        self.log(f"  {key}: {format_seconds(self.steps[key])}")


def format_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def run_demo(work_dir: Path | None = None, quick: bool = False, device: str | None = None,
             log: Callable[[str], None] = ui.info, methods: tuple[str, ...] = ("ld",)) -> DemoResult:
    """Run (or finish) the whole pipeline in `work_dir` and return the table's numbers.

    Finished runs are reused, so adding a method to an existing demo trains only its student.
    """
    if device is not None:  # a missing GPU is refused before any data is written
        from rotld_cli.engine.devices import pick_device

        device = pick_device(device)
    models = demo_models(methods)
    settings = QUICK if quick else FULL
    work_dir = (work_dir or default_work_dir(quick)).absolute()
    started = time.perf_counter()
    claim_work_dir(work_dir, settings)
    timer = StepTimer(log)
    reused: list[str] = []
    with timer.step("1/5", f"synthetic dataset → {work_dir / 'data'}", "data"):
        make_data(work_dir, settings)
    with timer.step("2/5", f"prepare-dota → {work_dir / 'split'}", "split"):
        split_data(work_dir, settings)
    checkpoints: dict[str, Path] = {}
    for model in models:
        with timer.step("3/5", f"train {model.label} → {work_dir / 'runs' / model.key}", f"train {model.key}"):
            checkpoint, was_reused = train_model(work_dir, settings, model, device, teacher=checkpoints.get("teacher"))
        checkpoints[model.key] = checkpoint
        if was_reused:
            reused.append(model.key)
            log(f"  reused the finished run ({checkpoint.name})")
        for warning in run_health(work_dir / "runs" / model.key):
            log(f"  [bold yellow]warning:[/] {model.label}: {warning}")
    rows = {}
    for model in models:
        with timer.step("4/5", f"evaluate {model.label}: detect on the val patches, merge, AP50:95 (DOTA devkit rules)",
                        f"evaluate {model.key}"):  # fmt: skip
            rows[model.key] = evaluate_model(work_dir, model, checkpoints[model.key], device)
    with timer.step("5/5", "report and figures", "report"):
        seconds = time.perf_counter() - started
        found = found_line(work_dir, models)
        report = write_report(work_dir, settings, rows, seconds, reused, timer.steps, models, found=found)
    return DemoResult(work_dir=work_dir, rows=rows, reused=reused, seconds=time.perf_counter() - started,
                      report=report, steps=timer.steps, found=found)


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

    options = PrepareOptions(split=SplitParams(sizes=(settings.patch,), gaps=(settings.gap,)), workers=SPLIT_WORKERS)
    return prepare_dota(work_dir / "data", work_dir / "split", options,
                        progress=ui.split_progress if ui.is_interactive() else None)


def run_overrides(work_dir: Path, settings: DemoSettings, model: Model) -> list[str]:
    overrides = [f"data.root={work_dir / 'split'}", f"data.img_scale={settings.patch}", *settings.overrides]
    if model.distilled:
        # The teacher as it was trained here (the demo's overrides included), not the bundled file.
        overrides.append(f"teacher.recipe={work_dir / 'runs' / 'teacher' / 'recipe.yaml'}")
    return overrides


def train_model(work_dir: Path, settings: DemoSettings, model: Model, device: str | None,
                teacher: Path | None = None, seed: int | None = None, run_dir: Path | None = None,
                overrides: Sequence[str] = ()) -> tuple[Path, bool]:
    """Train one model unless its run is complete; an interrupted run is resumed. Returns (checkpoint, reused).

    `overrides`: more `--set KEY=VALUE` after the demo's own (an ablation's variant of the recipe)."""
    from rotld_cli.engine import checkpoints as ckpt
    from rotld_cli.engine.train import TrainOptions, distill, is_complete, train_teacher

    run_dir = run_dir or work_dir / "runs" / model.key
    if is_complete(run_dir):
        marker = json.loads((run_dir / ckpt.DONE_MARKER).read_text(encoding="utf-8"))
        return run_dir / marker["checkpoint"], True
    options = TrainOptions(
        overrides=[*run_overrides(work_dir, settings, model), *overrides], work_dir=run_dir, device=device,
        resume=(run_dir / ckpt.LATEST).is_file(), validate=False, seed=seed, teacher=teacher,
        reporter=ui.TrainDisplay(),
    )
    result = distill(model.recipe, options) if model.distilled else train_teacher(model.recipe, options)
    return result.checkpoint, False


def run_health(run_dir: Path) -> list[str]:
    """The end-of-run health warnings a training wrote into its `log.jsonl` (empty for a healthy run)."""
    log_path = run_dir / "log.jsonl"
    if not log_path.is_file():
        return []
    warnings = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "health":
            warnings.append(str(record.get("message", record.get("status", ""))))
    return warnings


def evaluate_model(work_dir: Path, model: Model, checkpoint: Path, device: str | None,
                   run_dir: Path | None = None) -> dict[str, float]:
    """AP/AP50/.../AP95 (fractions) of one checkpoint on the merged val images: `rotld evaluate CKPT`'s
    own function and defaults, output in `runs/<model>/results/`; cached per checkpoint hash."""
    from rotld_cli.engine import checkpoints as ckpt
    from rotld_cli.engine.checkpoint_eval import CheckpointEvalOptions, evaluate_checkpoint

    results = (run_dir or work_dir / "runs" / model.key) / "results"
    cache = results / "metrics.json"
    sha = ckpt.sha256_file(checkpoint)
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("checkpoint_sha256") == sha:
            return cached["metrics"]
    report = evaluate_checkpoint(CheckpointEvalOptions(
        checkpoint=checkpoint, split_dir=work_dir / "split" / "val", ann_dir=work_dir / "data" / "val" / "labelTxt",
        out_dir=results, device=device,
    )).report
    metrics = dict(report.means)
    atomic_write_text(cache, json.dumps({"checkpoint": str(checkpoint), "checkpoint_sha256": sha, "metrics": metrics,
                                         "patches_per_s": report.run.patches_per_s if report.run else 0.0,
                                         "report": report.to_json()}, indent=2) + "\n")  # fmt: skip
    return metrics


def demo_table(rows: dict[str, dict[str, float]]) -> Table:
    """The comparison: one row per model run, the paper's columns (the AP table renderer of `rotld evaluate`)."""
    models = (*MODELS[:2], *DISTILLERS.values())
    return comparison_table(TABLE_TITLE, [(model.label, rows[model.key]) for model in models if model.key in rows])


def found_line(work_dir: Path, models: Sequence[Model]) -> str:
    """How many val objects each model finds, as `rotld evaluate --save-vis` draws them ('' if unknown)."""
    from rotld_cli.demo.figures import FOUND_IOU, SCORE_THR, found_in_val

    found = {m.key: found_in_val(work_dir, m.key) for m in models}
    if not all(found.values()):
        return ""
    total = next(iter(found.values()))[1]
    counts = ", ".join(f"{m.label} {found[m.key][0]}" for m in models)
    return (f"Objects found among the {total} val objects (a same-class box scoring >= {SCORE_THR} with IoU > "
            f"{FOUND_IOU}): {counts}.")


def write_report(work_dir: Path, settings: DemoSettings, rows: dict[str, dict[str, float]], seconds: float,
                 reused: list[str], steps: dict[str, float] | None = None,
                 models: tuple[Model, ...] = MODELS, found: str | None = None) -> Path:
    """`report.md`: the table, the gains over the baseline, the pictures, and how it was made (`found`: the
    objects-found line when the caller has it already)."""
    from rotld_cli.demo.figures import write_figures

    figures = write_figures(work_dir, [(m.key, m.label) for m in models])
    lines = [
        "# rotld demo: Rotated LD on the synthetic DOTA-like dataset",
        "",
        f"Val: {settings.num_val} images of {settings.image_size}² px, split into {settings.patch}² patches, "
        "detections merged to full images (rotated NMS, IoU 0.1), DOTA devkit AP (VOC07 11-point) over the "
        "model's classes, AP = mean of AP50..AP95; each row is `rotld evaluate CKPT` on that model "
        "(`runs/<model>/results/report.md`).",
        "",
        demo_table(rows).to_markdown(heading=""),
    ]
    found = found_line(work_dir, models) if found is None else found
    if found:
        lines += [found, ""]
    base = rows["baseline"]
    for model in DISTILLERS.values():
        if model.key in rows:
            gains = ", ".join(f"{c} {100 * (rows[model.key][c] - base[c]):+.2f}" for c in PAPER_COLUMNS)
            lines += [f"{model.label} vs baseline: {gains}.", ""]
    for title, path in figures:
        lines += [f"## {title}", "", f"![{title}]({path.relative_to(work_dir).as_posix()})", ""]
    lines += [f"Wall time: {seconds / 60:.1f} min" + (f" (reused: {', '.join(reused)})" if reused else "") + ".", ""]
    if steps:
        rows = tuple((k, format_seconds(v)) for k, v in steps.items())
        lines += [Table("", ("step", "wall time"), rows).to_markdown(heading="")]
    lines += ["Runs: `runs/teacher`, `runs/baseline`, `runs/student` (checkpoints, `log.jsonl`, `metrics.csv`, "
              "`results/`: report, patch-level and merged Task1 files)."]
    path = work_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
