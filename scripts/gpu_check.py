"""`make gpu-check`: prove on a CUDA machine that every rotld command runs on the GPU, in one go.

Steps (each a real `rotld` process, as a user runs it; a failed step does not stop the others
unless a later one needs its output):

1. engine: the checkout's venv on this machine's torch (`bootstrap --system-torch`), building
   mmcv-full's CUDA ops for the visible GPU's architecture only when the installed build lacks
   them (the wheel is cached);
2. doctor (CUDA ops included); 3. prepare-dota on ../shared/dota-samples (synthetic 1024 px
   scenes when absent); 4. train-teacher with the dota1 R-34 recipe and `--amp` for a few dozen
   iterations, validation included; 5. distill (LD+KD) from it; 6. evaluate CKPT with
   `--save-vis`; 7. demo --quick on CUDA; 8. benchmarks at 1024 px, batch 2: distill overhead,
   inference throughput, training data-loader throughput.

It prints one summary table (step, ok/FAIL, seconds, key figure) and writes it as JSON.

    python3 scripts/gpu_check.py [--offline --find-links DIR] [--samples DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "dota-samples"


@dataclass
class Step:
    name: str
    ok: bool = False
    seconds: float = 0.0
    figure: str = ""
    detail: str = ""


class Check:
    """Runs the steps, keeps their logs under `work`, and the summary."""

    def __init__(self, work: Path, python: str) -> None:
        self.work = work
        self.python = python
        self.steps: list[Step] = []

    def run(self, name: str, args: list[str], figure=None, timeout: int = 600, module: bool = True) -> Step:
        step = Step(name)
        command = [self.python, "-m", *args] if module else args
        started = time.perf_counter()
        print(f"[gpu-check] {name}: {' '.join(command)}", flush=True)
        try:
            proc = subprocess.run(command, cwd=self.work, capture_output=True, text=True, timeout=timeout,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
            output = proc.stdout + proc.stderr
            step.ok = proc.returncode == 0
            if not step.ok:
                step.detail = (output.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
        except subprocess.TimeoutExpired as exc:
            raw = exc.stdout or ""
            output = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            step.detail = f"timed out after {timeout} s"
        step.seconds = time.perf_counter() - started
        (self.work / f"{name}.log").write_text(output, encoding="utf-8")
        if step.ok and figure is not None:
            try:
                step.figure = figure(output)
            except Exception as exc:  # a figure we cannot read is reported, the step still passed
                step.figure = f"(figure unreadable: {type(exc).__name__})"
        print(f"[gpu-check] {name}: {'ok' if step.ok else 'FAIL'} in {step.seconds:.0f} s {step.figure or step.detail}",
              flush=True)
        self.steps.append(step)
        return step

    def skip(self, name: str, why: str) -> None:
        self.steps.append(Step(name, ok=False, detail=f"skipped: {why}"))

    def summary(self) -> str:
        width = max(len(s.name) for s in self.steps)
        lines = [f"{'step':{width}}  {'result':6}  {'seconds':>7}  key figure", "-" * (width + 40)]
        for s in self.steps:
            lines.append(f"{s.name:{width}}  {'ok' if s.ok else 'FAIL':6}  {s.seconds:7.1f}  {s.figure or s.detail}")
        return "\n".join(lines)


def _search(pattern: str, text: str, group: int = 1) -> str:
    found = re.findall(pattern, text)
    if not found:
        raise ValueError(pattern)
    last = found[-1]
    return last if isinstance(last, str) else last[group - 1]


def _json_tail(text: str) -> dict:
    """The last JSON object a `--json` command printed."""
    start = text.rfind("\n{")
    return json.loads(text[start + 1 if start >= 0 else text.index("{"):])


def venv_python(args: argparse.Namespace, check: Check) -> str:
    """The checkout's venv on this machine's torch, with mmcv-full's CUDA ops (built once, cached)."""
    venv = REPO / args.venv
    command = [sys.executable, "-m", "rotld_cli.bootstrap", "--system-torch", "--venv", str(venv)]
    command += ["--offline"] * args.offline + [a for d in args.find_links for a in ("--find-links", d)]
    command += ["--allow-untested"] * args.allow_untested

    def built(out: str) -> str:
        seconds = re.findall(r"built \S+ in (\d+) s", out)
        kept = re.findall(r"keeping ([^(\n]+?)(?: \(| of )", out)
        return (f"{kept[-1]}; " if kept else "") + (f"built in {seconds[-1]} s" if seconds else "cached wheel")

    check.run("engine (mmcv-full CUDA)", command, module=False, timeout=1200, figure=built)
    return str(venv / "bin" / "python")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default=str(SAMPLES),
                        help="DOTA images + labelTxt (default ../shared/dota-samples)")
    parser.add_argument("--work", default="gpu-check", help="output folder (default ./gpu-check)")
    parser.add_argument("--json", default=None, help="summary JSON (default WORK/summary.json)")
    parser.add_argument("--venv", default=".venv", help="the checkout's venv (default .venv)")
    parser.add_argument("--offline", action="store_true", help="install from local wheel folders only")
    parser.add_argument("--find-links", action="append", default=[], metavar="DIR")
    parser.add_argument("--iterations", type=int, default=30, help="training iterations per run (about)")
    parser.add_argument("--skip-engine", action="store_true", help="use this interpreter as it is")
    parser.add_argument("--allow-untested", action="store_true",
                        help="pass --allow-untested to the bootstrap (torch/numpy/OpenCV outside the tested ranges)")
    args = parser.parse_args(argv)

    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    check = Check(work, sys.executable)
    if not args.skip_engine:
        check.python = venv_python(args, check)
    rotld = ["rotld_cli"]

    check.run("doctor", [*rotld, "doctor", "--json"], timeout=300,
              figure=lambda out: next(c["detail"] for c in _json_tail(out)["checks"] if c["name"] == "mmcv ops (CUDA)"))

    samples = Path(args.samples)
    split = work / "split"
    if (samples / "images").is_dir():
        data, ann = samples, samples / "labelTxt"
    else:
        data = work / "scenes"
        check.run("synthetic scenes", ["-c", "from rotld_cli.demo.scenes import generate_dataset as g; "
                                       f"g({str(data)!r}, num_train=4, num_val=0, image_size=1024, seed=0)"])
        data, ann = data / "train", data / "train" / "labelTxt"
    for part in ("train", "val"):
        check.run(f"prepare-dota {part}", [*rotld, "prepare-dota", str(data), str(split / part), "--preset", "ss",
                                           "--json"],
                  figure=lambda out: _search(r'"patches":\s*(\d+)', out) + " patches")
    patches = len(list((split / "train" / "images").glob("*.png")))
    epochs = max(1, round(args.iterations / max(1, patches // 2)))
    schedule = ["--set", f"data.root={split}", "--set", f"schedule.epochs={epochs}",
                "--set", "schedule.warmup_iters=10", "--set", f"schedule.lr_steps=[{epochs}]",
                "--set", f"runtime.eval_interval={epochs}", "--set", f"runtime.checkpoint_interval={epochs}",
                "--no-pretrained", "--device", "cuda", "--amp"]

    def training_figure(out: str) -> str:
        rate = _search(r"([\d.]+ (?:it/s|s/it))", out)
        ap = _search(r"val mAP \(epoch \d+\)\s*│\s*([\d.]+)", out)
        return f"{epochs} epochs x {patches // 2} it, {rate}, val mAP {ap}"

    teacher = check.run("train-teacher (amp)", [*rotld, "train-teacher", "dota1/teacher-r34-gwd-2x", *schedule,
                                                "--work-dir", str(work / "teacher")], figure=training_figure)
    if teacher.ok:
        student = check.run("distill LD+KD (amp)", [
            *rotld, "distill", "dota1/student-r18-gwd-ld-kd-1x", "--teacher", str(work / "teacher" / "latest.pth"),
            *schedule, "--work-dir", str(work / "student")], figure=training_figure)
    else:
        check.skip("distill LD+KD (amp)", "no teacher")
        student = teacher
    if student.ok:
        check.run("evaluate CKPT", [*rotld, "evaluate", str(work / "student" / "latest.pth"), "--split-dir",
                                    str(split / "val"), "--ann-dir", str(ann), "--device", "cuda", "--save-vis",
                                    str(work / "vis"), "--out", str(work / "eval"), "--json"],
                  figure=lambda out: "AP50 {}, {} pictures".format(
                      _search(r'"AP50":\s*([\d.]+)', out), len(list((work / "vis").rglob("*.*")))))
    else:
        check.skip("evaluate CKPT", "no student")
    check.run("demo --quick", [*rotld, "demo", "--quick", "--device", "cuda", "--work-dir", str(work / "demo")],
              timeout=900, figure=lambda out: _search(r"(student[^\n]*)", out)[:60])
    check.run("bench distill overhead", ["bench.distill_overhead", "--device", "cuda"],
              figure=lambda out: _search(r"= ([\d.]+x)", out))
    check.run("bench inference", ["bench.inference", "--device", "cuda", "--batch-size", "2"],
              figure=lambda out: _search(r"student R-18, rotld loop\s+([\d.]+ images/s)", out))
    check.run("bench data loader", ["bench.dataloader"], figure=lambda out: _search(r"(\d[\d.]* images/s[^\n]*)", out))

    print()
    print(check.summary())
    summary = {"steps": [asdict(s) for s in check.steps],
               "ok": all(s.ok for s in check.steps),
               "seconds": round(sum(s.seconds for s in check.steps), 1)}
    out = Path(args.json) if args.json else work / "summary.json"
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nsummary: {out} ({summary['seconds']:.0f} s in all)")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
