"""Benchmark the distillers' accuracy on the synthetic dataset: baseline, LD+KD, CrossKD, BCKD (LD+CrossKD).

One teacher (the demo's, trained once and reused), then for each seed a baseline R-18 and one R-18
student per distiller, all with that seed and the same schedule; each is evaluated like the demo
(val patches → merged images → DOTA devkit AP at IoU 0.50:0.95, mean over the recipe's classes).
Prints one row per model: AP50:95 per seed, its mean ± sample standard deviation over seeds, the
mean AP50 and AP75 (LD's claim is localization quality: the high-IoU column shows it), and the
mean gains over the baseline and over LD+KD; then the teacher's AP as a multiple of the baseline's
(a distiller can only pass on what the teacher knows better) and any run whose training ended
with a health warning (a classifier that detects nothing, an exploding loss). A method "beats" a
reference only when its mean gain is larger than the spread of that gain over seeds and positive
for every seed; the verdict line says so either way. Finished runs are reused, so an interrupted
benchmark continues where it stopped.

    .venv/bin/python -m bench.accuracy                 # the demo's full settings, 5 seeds, 5 models (~1.5 h on 2 cores)
    .venv/bin/python -m bench.accuracy --quick         # the demo's --quick settings: a smoke run of the procedure
    .venv/bin/python -m bench.accuracy --methods ld,crosskd --seeds 0 1 2
    .venv/bin/python -m bench.accuracy --readme README.md   # and write the table into the README
    .venv/bin/python -m bench.accuracy --family fcos   # another family's synthetic recipes (fcos, atss, orcnn)

`--readme` replaces the block between the README's `bench.accuracy` markers (one block per family)
with this run's table, verdicts and settings, so the published numbers are the benchmark's output,
never typed in. `--family` picks the teacher, baseline and students of `synthetic-<family>/`
(`FAMILY_MODELS`) and keeps their runs in their own work dir (`rotld-bench-accuracy[-quick]-<family>`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

from rotld_cli.quiet import silence_third_party

silence_third_party()  # as the CLI: the engine stack's import-time notices stay off the terminal

from rotld_cli import ui  # noqa: E402
from rotld_cli.demo import (  # noqa: E402
    DISTILLERS,
    FULL,
    MODELS,
    QUICK,
    Model,
    claim_work_dir,
    evaluate_model,
    make_data,
    parse_methods,
    run_health,
    split_data,
    train_model,
)
from rotld_cli.errors import UsageError  # noqa: E402
from rotld_cli.evaluation.table import Table  # noqa: E402
from rotld_cli.fileio import atomic_write_text  # noqa: E402
from rotld_cli.recipes import FAMILIES  # noqa: E402

NAMES = {"baseline": "baseline", "student": "LD+KD", "ld-seed": "LD+KD (seed's KD)", "crosskd": "CrossKD",
         "bckd": "BCKD", "ld-crosskd": "LD+CrossKD", "ld-binary": "LD+KD (binary KD)"}
"""Short row names (run keys → method), so the table fits a terminal."""


def family_models(family: str, methods: tuple[str, ...]) -> tuple[Model, Model, dict[str, Model]]:
    """(teacher, baseline, {method: student}) of a family's bundled synthetic recipes (`synthetic-<family>/`).

    The run keys are the RetinaNet ones (teacher, baseline, student, crosskd, bckd): each family's runs
    live in their own work dir, so the demo's training and evaluation steps serve every family unchanged."""
    folder, title = f"synthetic-{family}", FAMILIES[family].title
    students = {"ld": ("student", "LD+KD", "ld-kd"), "ld-binary": ("ld-binary", "LD+binary KD", "ld-kd-binary"),
                "crosskd": ("crosskd", "CrossKD", "crosskd"), "bckd": ("bckd", "BCKD", "bckd")}
    return (
        Model("teacher", f"Teacher R-34 ({title})", f"{folder}/teacher-r34"),
        Model("baseline", f"Baseline R-18 ({title})", f"{folder}/baseline-r18"),
        {m: Model(students[m][0], f"Student R-18 ({title}, {students[m][1]})", f"{folder}/student-r18-{students[m][2]}",
                  distilled=True) for m in methods},
    )


FAMILY_MODELS = {
    "retinanet": (MODELS[0], MODELS[1], DISTILLERS),
    "fcos": family_models("fcos", ("ld", "ld-binary", "crosskd", "bckd")),
    "atss": family_models("atss", ("ld", "ld-binary", "crosskd", "bckd")),
    "orcnn": family_models("orcnn", ("ld",)),
}
"""`--family` → (teacher, baseline, its distillers): which synthetic recipes the benchmark trains."""


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def verdict(name: str, reference: str, gains: list[float]) -> str:
    """'beats' only when the mean gain exceeds its spread over seeds and every seed gains."""
    mean, spread = mean_std(gains)
    beats = len(gains) > 1 and mean > spread and all(g > 0 for g in gains)
    return (f"{name} vs {reference}: {100 * mean:+.2f} AP (spread {100 * spread:.2f}) — "
            f"{'beats it' if beats else 'does NOT beat it'} on this data")


TEACHER_RATIO = 2.0
"""The teacher's AP should be at least this multiple of the baseline's mean for the comparison to mean much."""



def markers(bench: str = "accuracy", family: str = "retinanet") -> tuple[str, str]:
    """The README markers of one benchmark's block (`bench.accuracy`, `bench.ld_ablation`); another family's
    accuracy table has its own (`bench.accuracy:fcos`), the rotated RetinaNet one keeps the original."""
    name, option = (bench, "") if family == "retinanet" else (f"{bench}:{family}", f" --family {family}")
    return (f"<!-- bench.{name}:begin (written by `python -m bench.{bench}{option} --readme README.md`) -->",
            f"<!-- bench.{name}:end -->")


README_BEGIN, README_END = markers()


def readme_block(title: str, columns: list[str], rows: list[list[str]], verdicts: list[str], how: str) -> str:
    """The README's accuracy section body: title, table, verdicts, and how the run was made."""
    table = Table(title, tuple(columns), tuple(tuple(row) for row in rows)).to_markdown(heading="")
    return "\n".join([f"{title}:", "", table, *(f"- {v}" for v in verdicts), "", how])


def readme_span(path: Path, bench: str = "accuracy", family: str = "retinanet") -> tuple[str, int, int]:
    """(text, start, end) of the block: one begin marker, then one end marker; else a one-line UsageError."""
    begin, end_marker = markers(bench, family)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--readme {path}: {exc.strerror or exc}") from None
    start = text.find(begin)
    end = text.find(end_marker, start + 1) if start >= 0 else -1
    if text.count(begin) != 1 or text.count(end_marker) != 1 or end < 0:
        raise UsageError(f"--readme {path}: needs one `{begin}` ... `{end_marker}` block to replace")
    return text, start, end


def write_readme(path: Path, block: str, bench: str = "accuracy", family: str = "retinanet") -> None:
    """Replace what lies between the markers; everything else is kept."""
    text, start, end = readme_span(path, bench, family)
    atomic_write_text(path, text[: start + len(markers(bench, family)[0])] + "\n" + block + "\n" + text[end:])


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


DEFAULT_METHODS = ("ld", "ld-seed", "crosskd", "bckd")
"""The distillers of the published table (LD+KD also with the seed's softmax KD and region, to show what
rotld's departures are worth); `--methods ...,ld-crosskd` adds LD+CrossKD."""


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's --quick settings (1 iteration per run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="student seeds (default 0-4)")
    parser.add_argument("--family", default="retinanet", choices=list(FAMILY_MODELS),
                        help="detector family whose synthetic recipes are compared (default retinanet)")
    parser.add_argument("--methods", default=None,
                        help=f"distillers to compare, comma-separated (retinanet default {','.join(DEFAULT_METHODS)}, "
                             f"all: {','.join(DISTILLERS)}; another family: all of its own)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="runs folder, reused when rerun (default rotld-bench-accuracy[-quick])")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also write the table into this file's bench.accuracy block (e.g. README.md)")
    args = parser.parse_args()
    teacher_model, baseline_model, distillers = FAMILY_MODELS[args.family]
    if args.readme is not None:
        try:
            readme_span(args.readme, family=args.family)  # before hours of training
        except UsageError as exc:
            parser.error(str(exc))
    default = DEFAULT_METHODS if args.family == "retinanet" else tuple(distillers)
    try:
        # every family's names are known here; another family's are refused below with this one's list
        known = tuple(dict.fromkeys([*DISTILLERS, *(m for f in FAMILY_MODELS.values() for m in f[2])]))
        methods = parse_methods(args.methods or ",".join(default), known=known)
    except UsageError as exc:  # one line naming the option, exit 2
        parser.error(str(exc))
    missing = [m for m in methods if m not in distillers]
    if missing:
        parser.error(f"--methods: {missing[0]} is not available for the {args.family} family (use "
                     f"{','.join(distillers)})")
    settings = QUICK if args.quick else FULL
    suffix = ("-quick" if args.quick else "") + ("" if args.family == "retinanet" else f"-{args.family}")
    work = (args.work_dir or Path("rotld-bench-accuracy" + suffix)).absolute()
    started = time.perf_counter()
    claim_work_dir(work, settings)
    make_data(work, settings)
    split_data(work, settings)
    models = [baseline_model, *(distillers[m] for m in methods)]
    teacher, _ = train_model(work, settings, teacher_model, args.device)
    teacher_metrics = evaluate_model(work, teacher_model, teacher, args.device)
    warnings = [f"teacher: {w}" for w in run_health(work / "runs" / teacher_model.key)]
    metrics: dict[str, list[dict[str, float]]] = {model.key: [] for model in models}
    reused = 0
    for seed in args.seeds:
        for model in models:
            run_dir = work / "runs" / f"{model.key}-seed{seed}"
            checkpoint, was_done = train_model(work, settings, model, args.device, teacher=teacher, seed=seed,
                                               run_dir=run_dir)
            reused += was_done
            metrics[model.key].append(evaluate_model(work, model, checkpoint, args.device, run_dir=run_dir))
            warnings += [f"{NAMES.get(model.key, model.key)} seed {seed}: {w}" for w in run_health(run_dir)]

    def column(key: str, metric: str = "AP") -> list[float]:
        return [m[metric] for m in metrics[key]]

    def gain(key: str, reference: str, metric: str = "AP") -> float:
        return statistics.fmean(a - b for a, b in zip(column(key, metric), column(reference, metric)))

    ld_key = distillers["ld"].key if "ld" in methods else None
    base_key = baseline_model.key
    rows = [["teacher R-34", *("" for _ in args.seeds), pct(teacher_metrics["AP"]), pct(teacher_metrics["AP50"]),
             pct(teacher_metrics["AP75"]), "", "", ""]]
    for model in models:
        aps = column(model.key)
        mean, std = mean_std(aps)

        rows.append([NAMES.get(model.key, model.key), *(pct(ap) for ap in aps), f"{pct(mean)} ± {pct(std)}",
                     pct(statistics.fmean(column(model.key, "AP50"))), pct(statistics.fmean(column(model.key, "AP75"))),
                     f"{100 * gain(model.key, base_key):+.2f}", f"{100 * gain(model.key, base_key, 'AP75'):+.2f}",
                     f"{100 * gain(model.key, ld_key):+.2f}" if ld_key else "–"])
    family = "" if args.family == "retinanet" else f"{FAMILIES[args.family].title}, "
    title = (f"AP on merged val images ({family}{settings.name} settings, seeds {' '.join(map(str, args.seeds))}; "
             "Δ: mean gain over the baseline)")
    columns = ["model", *(f"AP seed {s}" for s in args.seeds), "AP mean ± std", "AP50", "AP75", "Δ AP", "Δ AP75",
               "Δ AP vs LD+KD"]
    ui.console.print(ui.table(title, columns, rows))
    base_mean = statistics.fmean(column(base_key))
    ratio = teacher_metrics["AP"] / base_mean if base_mean > 0 else float("inf")
    verdicts = [f"teacher AP {pct(teacher_metrics['AP'])} = {ratio:.2f}x the baseline's mean {pct(base_mean)} "
                f"({'at least' if ratio >= TEACHER_RATIO else 'BELOW'} the {TEACHER_RATIO:g}x a distiller needs)"]
    for model in models[1:]:
        name = NAMES.get(model.key, model.key)
        verdicts.append(verdict(name, "baseline", [a - b for a, b in zip(column(model.key), column(base_key))]))
        if ld_key and model.key != ld_key:
            verdicts.append(verdict(name, "LD+KD", [a - b for a, b in zip(column(model.key), column(ld_key))]))
    verdicts.append("training health: " + ("; ".join(warnings) if warnings else
                                           f"no warning in {1 + len(args.seeds) * len(models)} runs"))
    print("\n".join(verdicts))
    minutes = (time.perf_counter() - started) / 60
    print(f"({minutes:.1f} min, runs in {work})")
    if args.readme is not None:
        family_arg = "" if args.family == "retinanet" else f" --family {args.family}"
        how = (f"`python -m bench.accuracy{' --quick' if args.quick else ''}{family_arg} "
               f"--seeds {' '.join(map(str, args.seeds))} "
               f"--methods {','.join(methods)}` on {datetime.date.today().isoformat()}, {machine()}: "
               f"{minutes:.0f} min" + (f" ({reused} finished runs reused)." if reused else "."))
        write_readme(args.readme, readme_block(title, columns, rows, verdicts, how), family=args.family)
        print(f"wrote the table into {args.readme}")


if __name__ == "__main__":
    main()
