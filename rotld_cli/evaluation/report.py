"""The evaluation report, typed: what was evaluated, over which classes, the APs, and (checkpoint
mode) how the patches were run. `to_json` is the `--json` object and `report.json`; `to_markdown`
is `report.md`. Fractions in [0, 1]; the tables (`table.py`) show percent."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotld_cli.evaluation.table import PAPER_COLUMNS, detections_table, pct, per_class_table, summary_table
from rotld_cli.fileio import atomic_write_text

MAX_LISTED_PROBLEMS = 20
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass
class ClassResult:
    """One class: detections evaluated, and with ground truth its APs by threshold name and counts."""

    num_det: int
    aps: dict[str, float] | None = None
    ap: float | None = None
    num_gt: int | None = None
    num_difficult: int | None = None

    def to_json(self) -> dict[str, Any]:
        if self.aps is None:
            return {"num_det": self.num_det}
        return {**self.aps, "AP": self.ap, "num_gt": self.num_gt, "num_difficult": self.num_difficult,
                "num_det": self.num_det}


@dataclass
class PatchRun:
    """Checkpoint mode: which model ran on which patches, how fast, with which test settings."""

    checkpoint: str
    recipe: str
    split_dir: str
    patch_results: str
    total: int
    run: int
    skipped_empty: int
    unreadable: list[tuple[str, str]]
    device: str
    batch_size: int
    seconds: float
    test_cfg: dict[str, Any]

    @property
    def patches_per_s(self) -> float:
        return self.run / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "recipe": self.recipe,
            "split_dir": self.split_dir,
            "patch_results": self.patch_results,
            "patches": {
                "total": self.total, "run": self.run, "skipped_empty": self.skipped_empty,
                "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable[:MAX_LISTED_PROBLEMS]],
            },
            "inference": {"device": self.device, "batch_size": self.batch_size, "seconds": self.seconds,
                          "patches_per_s": self.patches_per_s},
            "test_cfg": self.test_cfg,
        }  # fmt: skip

    def describe(self) -> str:
        """One line: patches run, skipped, speed."""
        speed = f"{self.patches_per_s:.1f} patches/s on {self.device}"
        line = f"{self.run} of {self.total} patches in {self.seconds:.1f} s ({speed})"
        if self.skipped_empty:
            line += f", {self.skipped_empty} without objects skipped (--skip-empty-patches)"
        if self.unreadable:
            line += f", {len(self.unreadable)} unreadable skipped"
        return line


@dataclass
class Problems:
    """Lines skipped under the bad-line policy (skip and count): how many, and the first messages."""

    lines: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, message: str, lines: int = 1) -> None:
        self.messages.append(message)
        self.lines += lines

    def to_json(self) -> dict[str, Any]:
        return {"lines": self.lines, "problems": self.messages[:MAX_LISTED_PROBLEMS]}


@dataclass
class EvaluationReport:
    """Everything `rotld evaluate` reports. `means` holds AP and AP50..AP95 over `classes`
    (`class_set` says which set that is and why); without ground truth `evaluated` is False."""

    classes: tuple[str, ...]
    class_set: str
    num_images: int
    merged: bool
    per_class: dict[str, ClassResult]
    evaluated: bool = True
    dota_version: str | None = None
    metric: str = "voc07"
    protocol: str = "dota"  # evaluation.protocols: whose rules turned the matches into the AP
    protocol_rules: str = ""  # its one-line description, in every table and report
    left_out_of_mean: list[str] = field(default_factory=list)  # classes without ground truth (MMRotate's mean)
    means: dict[str, float] = field(default_factory=dict)
    seed_compat: bool = False
    devkit: dict[str, float] | None = None  # the correct means when `means` carry the seed's bug
    skipped: Problems = field(default_factory=Problems)  # result-file lines left out
    ignored_classes: list[str] = field(default_factory=list)  # result files outside the class set
    images_note: str | None = None  # which images were evaluated, when not every label file's
    gt_skipped: Problems = field(default_factory=Problems)  # ground-truth lines left out
    gt_outside: dict[str, int] = field(default_factory=dict)  # GT objects of classes outside the set
    saved: str | None = None
    zip: str | None = None
    out: str | None = None
    pictures: dict[str, Any] = field(default_factory=dict)
    run: PatchRun | None = None

    @property
    def missing_classes(self) -> list[str]:
        """Classes of the set without a single detection (AP 0)."""
        return [c for c in self.classes if self.per_class[c].num_det == 0]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.evaluated:
            out.update(self.means)
            out["seed_compat"] = self.seed_compat
            if self.devkit is not None:
                out["devkit"] = dict(self.devkit)
        out["per_class"] = {c: self.per_class[c].to_json() for c in self.classes}
        if self.evaluated:
            out["metric"] = self.metric
            out["protocol"] = self.protocol
            out["protocol_rules"] = self.protocol_rules
            out["left_out_of_mean"] = list(self.left_out_of_mean)
        out["evaluated"] = self.evaluated
        out["dota_version"] = self.dota_version
        out["classes"] = list(self.classes)
        out["class_set"] = self.class_set
        out["num_images"] = self.num_images
        if self.images_note is not None:
            out["images_note"] = self.images_note
        out["merged"] = self.merged
        out["missing_classes"] = self.missing_classes
        out["skipped"] = self.skipped.to_json()
        out["ignored_classes"] = list(self.ignored_classes)
        out["ground_truth"] = {**self.gt_skipped.to_json(), "outside_classes": dict(self.gt_outside)}
        if self.saved is not None:
            out["saved"] = self.saved
        if self.zip is not None:
            out["zip"] = self.zip
        if self.run is not None:
            out.update(self.run.to_json())
        if self.pictures:
            out["pictures"] = self.pictures
        if self.out is not None:
            out["out"] = self.out
        return out

    def notes(self) -> list[str]:
        """What a reader must know besides the numbers: left-out classes, objects and lines."""
        notes = [self.images_note] if self.images_note else []
        if self.gt_outside:
            total = sum(self.gt_outside.values())
            counts = ", ".join(f"{n} {c}" for c, n in sorted(self.gt_outside.items()))
            notes.append(f"ground truth: {total} object(s) of classes outside the mean not evaluated ({counts})")
        if self.gt_skipped.lines:
            first = self.gt_skipped.messages[0]
            notes.append(f"ground truth: skipped {self.gt_skipped.lines} bad line(s); first: {first}")
        if self.skipped.lines:
            notes.append(f"--lenient: skipped {self.skipped.lines} line(s); first problem: {self.skipped.messages[0]}")
        if self.ignored_classes:
            notes.append(f"result files of {', '.join(self.ignored_classes)} left out (not in {self.class_set})")
        if self.left_out_of_mean:
            notes.append(f"no ground truth for {', '.join(self.left_out_of_mean)}: left out of the mean "
                         f"({self.protocol} protocol, as MMRotate's eval_rbbox_map)")  # fmt: skip
        return notes

    def to_markdown(self) -> str:
        """`report.md`: what was evaluated, the summary and per-class tables, notes."""
        lines = ["# rotld evaluation", ""]
        if self.run is not None:
            run = self.run
            lines += [f"- checkpoint: `{run.checkpoint}`", f"- recipe: {run.recipe}", f"- patches: `{run.split_dir}`",
                      f"- {run.describe()}",
                      "- test settings: " + ", ".join(f"{k} {v}" for k, v in run.test_cfg.items())]
        lines.append(
            f"- {self.num_images} images, {len(self.classes)} classes ({self.class_set})"
            + (", patch detections merged (rotated NMS per image and class)" if self.merged else "")
        )
        if not self.evaluated:
            return "\n".join(lines) + "\n\n" + detections_table(self).to_markdown()
        lines += [f"- AP (%) at IoU 0.50:0.05:0.95, {self.protocol_rules}", ""]
        text = "\n".join(lines) + "\n" + summary_table(self).to_markdown()
        if self.devkit is not None:
            correct = ", ".join(f"{k} {pct(self.devkit[k])}" for k in PAPER_COLUMNS)
            text += f"\nCorrect values: {correct}\n"
        text += "\n" + per_class_table(self).to_markdown()
        notes = self.notes()
        if notes:
            text += "\n" + "".join(f"- {n}\n" for n in notes)
        return text

    def write_files(self, out_dir: Path) -> tuple[Path, Path]:
        """`report.json` and `report.md` in `out_dir`, atomically."""
        json_path, md_path = out_dir / REPORT_JSON, out_dir / REPORT_MD
        atomic_write_text(json_path, json.dumps(self.to_json(), indent=2) + "\n")
        atomic_write_text(md_path, self.to_markdown())
        return json_path, md_path
