"""The AP tables, built once as data: `rotld evaluate` prints them (Rich), `report.md` and the demo's
report write them (Markdown). The columns of every AP table are defined here and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rotld_cli.evaluation.metrics import THRESHOLDS, threshold_name
from rotld_cli.evaluation.protocols import get_protocol

if TYPE_CHECKING:
    from rotld_cli.evaluation.report import EvaluationReport

PAPER_COLUMNS: tuple[str, ...] = ("AP", "AP50", "AP70", "AP90")
"""The paper's table: AP (mean of AP50..AP95), AP50, AP70, AP90."""
THRESHOLD_COLUMNS: tuple[str, ...] = tuple(threshold_name(t) for t in THRESHOLDS)
TERMINAL_COLUMNS: tuple[str, ...] = ("AP50", "AP75")
"""The thresholds a terminal's per-class table shows (all ten do not fit 80 columns); files show all."""


@dataclass(frozen=True)
class Table:
    """A titled table of strings; `to_markdown` for files, `cli` renders the same rows with Rich."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_markdown(self, heading: str = "##") -> str:
        lines = [f"{heading} {self.title}", ""] if heading else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def pct(value: float) -> str:
    """A fraction as the tables show it: percent, two decimals."""
    return f"{100.0 * value:.2f}"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    return Table(title, tuple(columns), tuple(tuple(str(v) for v in row) for row in rows))


def summary_table(report: EvaluationReport) -> Table:
    """One row: the protocol's columns (DOTA: the paper's and AP75), as reported (seed-script values
    with --seed-compat); the title states the protocol."""
    columns = get_protocol(report.protocol).summary_columns
    label = "seed script values (accumulator bug reproduced)" if report.seed_compat else "paper form"
    label = f"{label}, {report.protocol_rules}" if report.protocol == "dota" else report.protocol_rules
    title = f"Summary, {label}"
    return _table(title, columns, [[pct(report.means[c]) for c in columns]])


def per_class_table(report: EvaluationReport, thresholds: Sequence[str] = THRESHOLD_COLUMNS) -> Table:
    """Per class: GTs, detections, the APs of `thresholds`, AP50:95; last row the mean over the class set."""
    rows: list[list[object]] = []
    for name in report.classes:
        entry = report.per_class[name]
        assert entry.aps is not None and entry.ap is not None
        rows.append([name, entry.num_gt, entry.num_det, *(pct(entry.aps[n]) for n in thresholds), pct(entry.ap)])
    rows.append(["mean", "", "", *(pct(report.means[n]) for n in thresholds), pct(report.means["AP"])])
    return _table(f"Per class ({report.protocol} protocol)", ["class", "GTs", "detections", *thresholds, "AP50:95"],
                  rows)  # fmt: skip


def detections_table(report: EvaluationReport) -> Table:
    """Without ground truth: the merged detections per class."""
    title = f"{report.num_images} images, detections merged and written (no --ann-dir: no AP)"
    return _table(title, ["class", "detections"], [[c, report.per_class[c].num_det] for c in report.classes])


def comparison_table(title: str, rows: Sequence[tuple[str, Mapping[str, float]]]) -> Table:
    """One row per model (label, its report's `means`): the paper's columns. The demo's table."""
    return _table(title, ["Model", *PAPER_COLUMNS], [[label, *(pct(means[c]) for c in PAPER_COLUMNS)]
                                                     for label, means in rows])
