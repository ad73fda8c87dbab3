"""Benchmark LD's accuracy gain on the synthetic dataset: distilled student minus baseline, over seeds.

One teacher (the demo's), then for each seed a baseline R-18 and an LD+KD R-18 student trained
with that seed and the same schedule; each is evaluated like the demo (val patches → merged
images → DOTA devkit AP50:95, mean over the recipe's classes). Prints every seed, the mean gain
and its spread (sample standard deviation over seeds); the target is a mean gain larger than
that spread, with every seed's gain positive. Finished runs are reused, so an interrupted
benchmark continues where it stopped.

    .venv/bin/python -m bench.accuracy                 # the demo's full settings, 3 seeds (about 1 hour on 2 cores)
    .venv/bin/python -m bench.accuracy --quick         # the demo's --quick settings: a smoke run of the procedure
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rotld_cli import ui
from rotld_cli.demo import FULL, MODELS, QUICK, claim_work_dir, evaluate_model, make_data, split_data, train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's --quick settings (1 iteration per run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds (default 0 1 2)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="runs folder, reused when rerun (default rotld-bench-accuracy[-quick])")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    work = (args.work_dir or Path("rotld-bench-accuracy" + ("-quick" if args.quick else ""))).absolute()
    started = time.perf_counter()
    claim_work_dir(work, settings)
    make_data(work, settings)
    split_data(work, settings)
    teacher_model, baseline_model, student_model = MODELS
    teacher, _ = train_model(work, settings, teacher_model, args.device)
    teacher_ap = evaluate_model(work, teacher_model, teacher, args.device)["AP"]
    rows, gains = [], []
    for seed in args.seeds:
        aps = {}
        for model in (baseline_model, student_model):
            run_dir = work / "runs" / f"{model.key}-seed{seed}"
            checkpoint, _ = train_model(work, settings, model, args.device, teacher=teacher, seed=seed, run_dir=run_dir)
            aps[model.key] = evaluate_model(work, model, checkpoint, args.device, run_dir=run_dir)["AP"]
        gain = aps["student"] - aps["baseline"]
        gains.append(gain)
        rows.append([str(seed), f"{100 * aps['baseline']:.2f}", f"{100 * aps['student']:.2f}", f"{100 * gain:+.2f}"])
    mean = statistics.fmean(gains)
    spread = statistics.stdev(gains) if len(gains) > 1 else float("nan")
    title = f"AP50:95 on merged val images ({settings.name} settings; teacher AP {100 * teacher_ap:.2f})"
    ui.console.print(ui.table(title, ["seed", "baseline AP", "LD+KD AP", "gain"], rows))
    outside = len(gains) > 1 and mean > spread and all(g > 0 for g in gains)
    print(f"mean gain {100 * mean:+.2f} AP, spread (std over {len(gains)} seeds) {100 * spread:.2f}: "
          f"{'gain outside the spread' if outside else 'gain NOT outside the spread'} "
          f"({(time.perf_counter() - started) / 60:.1f} min, runs in {work})")


if __name__ == "__main__":
    main()
