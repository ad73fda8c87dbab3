"""Benchmark CPU thread policies for training: alone, and next to 1 and 2 busy processes.

Each cell is a fresh process (libgomp reads its wait policy once) that builds the synthetic
baseline detector (R-18, the demo recipe's 64-channel head) and times real training steps on one
batch of synthetic patches (forward, losses, backward, SGD step). Policies:

* `default`: libgomp's spin-then-sleep wait (what the commands used before the governor);
* `passive`: `OMP_WAIT_POLICY=PASSIVE` (idle threads sleep at once);
* `spin10k`: `GOMP_SPINCOUNT=10000` (a shorter spin);
* `governor`: the default wait plus `rotld_cli.threads.CpuShareGovernor` (threads = the cores
  other processes leave free, re-measured every 2 s here; the commands use 10 s).

Neighbours are single-threaded busy loops started before the timed steps. Printed: the median
seconds per step of each cell, its slowdown against `default` alone, and the "fair" slowdown
(cores / this process's fair share of them, at most 2x when one of two cores is taken). Nothing is
asserted: the numbers are the machine's.

    .venv/bin/python -m bench.threads            # 3 policies x 3 loads, ~10 minutes on 2 cores
    .venv/bin/python -m bench.threads --quick    # 16-channel head, fewer steps: ~2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

POLICIES = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "governor": {"ROTLD_BENCH_GOVERNOR": "1"},
}
LOADS = (0, 1, 2)
THREAD_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "ROTLD_BENCH_GOVERNOR")


def worker(steps: int, quick: bool) -> None:
    """One cell: warm up, then time `steps` training steps; prints one JSON line."""
    from rotld_cli.quiet import silence_third_party

    silence_third_party()
    import tempfile
    from pathlib import Path

    import torch

    from rotld_cli.engine import load_engine

    load_engine()
    from mmcv.parallel import collate
    from mmrotate.datasets import build_dataset

    from bench.distill_overhead import build, make_split
    from rotld_cli.threads import CpuShareGovernor

    governor = None
    if os.environ.get("ROTLD_BENCH_GOVERNOR"):
        governor = CpuShareGovernor(torch.set_num_threads, torch.get_num_threads(), interval_s=2.0)
    batch, patch = (2, 128) if quick else (8, 128)
    with tempfile.TemporaryDirectory(prefix="rotld-bench-threads-") as tmp:
        split = make_split(Path(tmp), patch, batch)
        common = [f"data.root={split}", f"data.img_scale={patch}", f"data.samples_per_gpu={batch}"]
        if quick:
            common += ["model.neck.out_channels=16", "model.head.feat_channels=16", "model.head.norm_groups=8"]
        model, cfg, _ = build("synthetic/baseline-r18-gwd", common)
        dataset = build_dataset(cfg.data.train)
        data = collate([dataset[i] for i in range(batch)], samples_per_gpu=batch)
        data = {k: (v.data[0] if hasattr(v, "data") else v) for k, v in data.items()}
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
        times, threads = [], []
        for i in range(steps + 3):
            start = time.perf_counter()
            loss, _ = model._parse_losses(model(return_loss=True, **data))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if governor is not None:
                governor.poll()
            if i >= 3:  # warm-up: allocator, anchor caches, the governor's first sample
                times.append(time.perf_counter() - start)
                threads.append(torch.get_num_threads())
    print(json.dumps({"median": statistics.median(times), "threads": statistics.median(threads)}))


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def fair_slowdown(cores: int, threads: int, neighbours: int) -> float:
    """cores / this process's fair share when `threads` of ours and `neighbours` single threads compete."""
    share = min(threads, cores * threads / (threads + neighbours)) if neighbours else min(threads, cores)
    return min(threads, cores) / share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16-channel head, batch 2, fewer steps")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per cell (default 30, quick 10)")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help="comma-separated subset of " + ",".join(POLICIES))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (10 if args.quick else 30)
    if args.worker:
        worker(steps, args.quick)
        return
    from rotld_cli import ui
    from rotld_cli.threads import usable_cores

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        parser.error(f"--policies: unknown policy {unknown[0]!r}; use a subset of {', '.join(POLICIES)}")
    cores = usable_cores()
    base_env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    results: dict[tuple[str, int], dict[str, float]] = {}
    started = time.perf_counter()
    for load in LOADS:
        for policy in policies:
            neighbours = [busy_loop() for _ in range(load)]
            try:
                command = [sys.executable, "-m", "bench.threads", "--worker", "--steps", str(steps)]
                command += ["--quick"] if args.quick else []
                out = subprocess.run(command, env={**base_env, **POLICIES[policy]}, capture_output=True, text=True,
                                     check=True).stdout
            finally:
                for proc in neighbours:
                    proc.kill()
                    proc.wait()
            results[policy, load] = json.loads(out.strip().splitlines()[-1])
            print(f"{policy:9s} next to {load} busy: {results[policy, load]['median']:.3f} s/step", flush=True)
    alone = results.get(("default", 0), next(iter(results.values())))["median"]
    rows = []
    for policy in policies:
        for load in LOADS:
            cell = results[policy, load]
            rows.append([policy, str(load), f"{cell['median']:.3f}", f"{cell['median'] / alone:.2f}x",
                         f"{fair_slowdown(cores, cores, load):.2f}x", f"{cell['threads']:.0f}"])
    title = (f"training step by thread policy ({'quick' if args.quick else 'synthetic baseline, batch 8x128px'}, "
             f"{cores} cores, {steps} steps per cell, {(time.perf_counter() - started) / 60:.1f} min)")
    ui.console.print(ui.table(title, ["policy", "busy neighbours", "s/step", "vs default alone", "fair", "threads"],
                              rows))


if __name__ == "__main__":
    main()
