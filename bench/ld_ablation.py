"""Ablate the synthetic LD+KD recipe: which of its settings make the student beat the baseline.

Runs in a `bench.accuracy` work dir and reuses its teacher, its baseline runs, its LD+KD runs
(rotld's recipe) and its `ld-seed` runs (the seed's settings); each other variant is the LD+KD
recipe with a few `--set` overrides, trained on the same teacher, data and seeds:

* KD off (LD alone), with the seed's region box and with the circumscribed-box region;
* binary KD on the LD region only (the seed's KD region and weight 20);
* binary KD on every anchor with the seed's region box;
* LD at temperature 2, and at weight 40 (the recipe: T5, w10, as the paper).

`--family fcos|atss` ablates that family's LD+KD student the same way in its `bench.accuracy
--family` work dir (reusing its LD+KD and LD+binary-KD runs): LD alone, the softmax KD alone, the
softmax KD at weight 1; which term helps or hurts a family is measured, not assumed.

Prints one row per variant: AP50:95 per seed, its mean, mean AP75, and the mean gain over the
baseline; `--readme` writes the table into the README's `bench.ld_ablation[:family]` block.

    .venv/bin/python -m bench.accuracy                   # first: teacher, baseline, LD+KD, ld-seed (and the rest)
    .venv/bin/python -m bench.ld_ablation --seeds 0      # then the variants (~20 min per seed on 2 cores)
    .venv/bin/python -m bench.ld_ablation --family fcos --seeds 0   # after bench.accuracy --family fcos
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

from rotld_cli.quiet import silence_third_party

silence_third_party()  # as the CLI: the engine stack's import-time notices stay off the terminal

from bench.accuracy import FAMILY_MODELS, machine, pct, readme_block, readme_span, write_readme  # noqa: E402
from rotld_cli import ui  # noqa: E402
from rotld_cli.demo import DISTILLERS, FULL, QUICK, evaluate_model, run_health, train_model  # noqa: E402
from rotld_cli.errors import UsageError  # noqa: E402
from rotld_cli.recipes import FAMILIES  # noqa: E402

LD_KD = DISTILLERS["ld"]
VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (row, run folder key, overrides of the LD+KD recipe); the two reused rows train nothing new
    ("LD+KD, the seed's settings (softmax KD w20 on the LD region; seed region box)", "ld-seed", ()),
    ("LD alone (no KD), seed region box", "ld-only-seedbox",
     ("distill.loss_kd.weight=0.0", "distill.ld_region_box=seed")),
    ("LD alone (no KD), circumscribed-box region", "ld-only", ("distill.loss_kd.weight=0.0",)),
    ("LD + binary KD on the LD region (w20)", "ld-binkd-region", ("distill.loss_kd.region=ld",
                                                                  "distill.loss_kd.weight=20.0")),
    ("LD + binary KD on every anchor, seed region box", "ld-binkd-seedbox", ("distill.ld_region_box=seed",)),
    ("LD + binary KD on every anchor (rotld's recipe: LD w10 T5)", LD_KD.key, ()),
    ("... with LD at T2", "ld-T2", ("distill.loss_ld.T=2.0",)),
    ("... with LD at w40", "ld-w40", ("distill.loss_ld.weight=40.0",)),
)
FAMILY_VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # another family's LD+KD student (`synthetic-<family>/student-r18-ld-kd`: LD w10 T5 + the seed's
    # softmax KD w20 T5, both on the head's positives) with overrides; the two reused rows train nothing new
    ("LD+KD, the recipe (LD w10 + softmax KD w20, T5, on the positives)", "student", ()),
    ("LD alone (no KD)", "ld-only", ("distill.loss_kd.weight=0.0",)),
    ("softmax KD alone (w20, no LD)", "kd-only", ("distill.loss_ld.weight=0.0",)),
    ("LD + softmax KD at w1", "ld-kd-w1", ("distill.loss_kd.weight=1.0",)),
    ("LD + binary KD w1 on every point/anchor (student-r18-ld-kd-binary)", "ld-binary", ()),
)
"""The `--family fcos|atss` variants: which of LD and KD helps that family's student."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="the bench.accuracy runs folder (default rotld-bench-accuracy[-quick])")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds (default 0)")
    parser.add_argument("--quick", action="store_true", help="in a `bench.accuracy --quick` folder")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--family", default="retinanet", choices=("retinanet", "fcos", "atss"),
                        help="detector family whose LD+KD student is ablated (default retinanet)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also write the table into this file's bench.ld_ablation block (e.g. README.md)")
    args = parser.parse_args()
    if args.readme is not None:
        try:
            readme_span(args.readme, "ld_ablation", args.family)
        except UsageError as exc:
            parser.error(str(exc))
    settings = QUICK if args.quick else FULL
    suffix = ("-quick" if args.quick else "") + ("" if args.family == "retinanet" else f"-{args.family}")
    work = (args.work_dir or Path("rotld-bench-accuracy" + suffix)).absolute()
    teacher_model, baseline_model, distillers = FAMILY_MODELS[args.family]
    variants = VARIANTS if args.family == "retinanet" else FAMILY_VARIANTS
    by_key = {model.key: model for model in distillers.values()}
    from rotld_cli.engine.train import is_complete

    teacher_dir = work / "runs" / teacher_model.key
    if not is_complete(teacher_dir):
        family = "" if args.family == "retinanet" else f" --family {args.family}"
        parser.error(f"--work-dir {work}: no finished teacher; run `python -m bench.accuracy{family}` there first")
    started = time.perf_counter()
    teacher, _ = train_model(work, settings, teacher_model, args.device)  # finished: reused
    results: dict[str, list[dict[str, float]]] = {}
    warnings: list[str] = []
    for seed in args.seeds:
        for key, model, overrides in [(baseline_model.key, baseline_model, ()),
                                      *((k, by_key.get(k, distillers["ld"]), o) for _, k, o in variants)]:
            run_dir = work / "runs" / f"{key}-seed{seed}"
            checkpoint, _ = train_model(work, settings, model, args.device, teacher=teacher, seed=seed,
                                        run_dir=run_dir, overrides=overrides)
            results.setdefault(key, []).append(evaluate_model(work, model, checkpoint, args.device, run_dir=run_dir))
            warnings += [f"{key} seed {seed}: {w}" for w in run_health(run_dir)]
    base = results[baseline_model.key]
    rows = [["baseline (no teacher)", *(pct(m["AP"]) for m in base), pct(statistics.fmean(m["AP"] for m in base)),
             pct(statistics.fmean(m["AP75"] for m in base)), "+0.00"]]
    for label, key, _ in variants:
        runs = results[key]
        gain = statistics.fmean(m["AP"] - b["AP"] for m, b in zip(runs, base))
        rows.append([label, *(pct(m["AP"]) for m in runs), pct(statistics.fmean(m["AP"] for m in runs)),
                     pct(statistics.fmean(m["AP75"] for m in runs)), f"{100 * gain:+.2f}"])
    family = "" if args.family == "retinanet" else f"{FAMILIES[args.family].title}, "
    title = (f"LD+KD ablation on merged val images ({family}{settings.name} settings, seeds "
             f"{' '.join(map(str, args.seeds))})")
    columns = ["variant", *(f"AP seed {s}" for s in args.seeds), "AP mean", "AP75 mean", "Δ AP vs baseline"]
    ui.console.print(ui.table(title, columns, rows))
    notes = ["training health: " + ("; ".join(warnings) if warnings else "no warning")]
    print("\n".join(notes))
    minutes = (time.perf_counter() - started) / 60
    print(f"({minutes:.1f} min, runs in {work})")
    if args.readme is not None:
        option = ("" if args.family == "retinanet" else f" --family {args.family}") + (" --quick" if args.quick else "")
        how = (f"`python -m bench.ld_ablation{option} --seeds "
               f"{' '.join(map(str, args.seeds))}` on {datetime.date.today().isoformat()}, {machine()}: "
               f"{minutes:.0f} min (in the `bench.accuracy` work dir: its teacher and runs reused).")
        write_readme(args.readme, readme_block(title, columns, rows, notes, how), "ld_ablation", args.family)
        print(f"wrote the table into {args.readme}")


if __name__ == "__main__":
    main()
