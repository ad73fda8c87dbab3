"""Benchmark one `rotld distill` iteration against what it cannot avoid: a student step + a teacher forward.

Measured in one run on the same batch: (a) a full distillation training step (student forward,
teacher forward under no_grad, the LD head's losses incl. the LD region, backward, SGD step);
(b) the same student trained without distillation (plain distribution head: forward, backward,
step); (c) the teacher's forward alone (features + head, no_grad, eval mode). The ratio
a / (b + c) is the cost of LD's own work (region, KL losses); target <= 1.10. The three are
interleaved round by round and the medians compared, so drift on a shared machine hits all alike.

    .venv/bin/python -m bench.distill_overhead            # the paper's scale: dota1 recipes, 1024 px, batch 2
    .venv/bin/python -m bench.distill_overhead --recipes synthetic   # the demo's recipes as they are
    .venv/bin/python -m bench.distill_overhead --quick    # 16-channel heads, 128 px, batch 2, a few seconds

The device is the GPU when there is one (`--device cpu|cuda` to choose).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rotld_cli.quiet import silence_third_party

silence_third_party()  # as the CLI: the engine stack's import-time notices stay off the terminal

import torch  # noqa: E402

from rotld_cli import ui  # noqa: E402
from rotld_cli.demo.scenes import generate_dataset  # noqa: E402
from rotld_cli.dota.prepare import PrepareOptions, prepare_dota  # noqa: E402
from rotld_cli.dota.split import SplitParams  # noqa: E402
from rotld_cli.engine import load_engine  # noqa: E402

TARGET = 1.10
RECIPES = {
    "dota1": ("dota1/teacher-r34-gwd-2x", "dota1/student-r18-gwd-ld-kd-1x", "dota1/baseline-r18-gwd-1x"),
    "synthetic": ("synthetic/teacher-r34-gwd", "synthetic/student-r18-gwd-ld-kd", "synthetic/baseline-r18-gwd"),
}


def make_split(root: Path, patch: int, batch: int) -> Path:
    """`batch` synthetic training patches (one per image), split by prepare-dota."""
    generate_dataset(root / "data", num_train=batch, num_val=1, image_size=patch, seed=0,
                     objects_per_image=(6, 10), distractors_per_image=(0, 3), difficult_fraction=0.0)
    prepare_dota(root / "data", root / "split", PrepareOptions(split=SplitParams(sizes=(patch,), gaps=(0,))))
    return root / "split"


def build(recipe_ref: str, overrides: list[str], teacher_recipe: Path | None = None):
    from mmrotate.models import build_detector

    from rotld_cli.engine.config import build_config
    from rotld_cli.engine.train import quiet_init_logs
    from rotld_cli.recipes import load_recipe

    extra = [f"teacher.recipe={teacher_recipe}"] if teacher_recipe else []
    recipe = load_recipe(recipe_ref, overrides + extra)
    cfg = build_config(recipe)
    cfg.model.backbone.init_cfg = None
    if recipe.is_student:
        cfg.model.teacher_config.model.backbone.init_cfg = None
    model = build_detector(cfg.model)
    with quiet_init_logs():
        model.init_weights()
    return model, cfg, recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and images: a few seconds")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 10, quick 3)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--recipes", default="dota1", choices=sorted(RECIPES),
                        help="dota1: the paper's models at 1024 px, batch 2 (default); synthetic: the demo's")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 10)
    load_engine()
    from rotld_cli.engine.devices import pick_device
    from rotld_cli.recipes import load_recipe

    args.device = pick_device(args.device)
    teacher_ref, student_ref, baseline_ref = RECIPES["synthetic" if args.quick else args.recipes]
    student_recipe = load_recipe(student_ref)
    patch, batch = student_recipe.get("data.img_scale"), student_recipe.get("data.samples_per_gpu")
    if args.quick:
        patch, batch = 128, 2
    from mmcv.parallel import collate, scatter
    from mmrotate.datasets import build_dataset

    from rotld_cli.recipes import save_resolved

    with tempfile.TemporaryDirectory(prefix="rotld-bench-") as tmp:
        root = Path(tmp)
        split = make_split(root, patch, batch)
        common = [f"data.root={split}", f"data.img_scale={patch}", f"data.samples_per_gpu={batch}"]
        if args.quick:
            common += ["model.neck.out_channels=16", "model.head.feat_channels=16", "model.head.norm_groups=8",
                       "model.head.stacked_convs=1"]
        teacher, _, teacher_recipe = build(teacher_ref, common)
        teacher_file = save_resolved(teacher_recipe, root / "teacher")
        student, cfg, _ = build(student_ref, common, teacher_file)
        baseline, _, _ = build(baseline_ref, common)
        baseline.load_state_dict(student.state_dict())  # same weights: same forward cost
        student.teacher_model.load_state_dict(teacher.state_dict())
        dataset = build_dataset(cfg.data.train)
        data = collate([dataset[i] for i in range(batch)], samples_per_gpu=batch)
        device = torch.device(args.device)
        data = scatter(data, [device.index or 0])[0] if args.device == "cuda" else {
            k: (v.data[0] if hasattr(v, "data") else v) for k, v in data.items()}
        for model in (student, baseline, teacher):
            model.to(device)
        student.train(), baseline.train(), teacher.eval()
        optim_s = torch.optim.SGD(student.parameters(), lr=1e-5, momentum=0.9)
        optim_b = torch.optim.SGD(baseline.parameters(), lr=1e-5, momentum=0.9)

        def sync() -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()

        def step(model, optimizer) -> float:
            sync()
            start = time.perf_counter()
            losses = model(return_loss=True, **data)
            loss, _ = model._parse_losses(losses)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sync()
            return time.perf_counter() - start

        def teacher_forward() -> float:
            sync()
            start = time.perf_counter()
            with torch.no_grad():
                teacher.bbox_head(teacher.extract_feat(data["img"]))
            sync()
            return time.perf_counter() - start

        for _ in range(2):  # warm-up: allocator, kernels, anchor caches
            step(student, optim_s), step(baseline, optim_b), teacher_forward()
        times: dict[str, list[float]] = {"distill": [], "student": [], "teacher": []}
        for _ in range(rounds):
            times["distill"].append(step(student, optim_s))
            times["student"].append(step(baseline, optim_b))
            times["teacher"].append(teacher_forward())

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["distill"] / (med["student"] + med["teacher"])
    rows = [[name, f"{1000 * value:.1f}", f"{1000 * min(times[name]):.1f}"] for name, value in med.items()]
    rows.append(["student + teacher", f"{1000 * (med['student'] + med['teacher']):.1f}", ""])
    scale = "quick" if args.quick else args.recipes
    title = f"distill overhead ({scale}, {batch}x{patch}px, {args.device}, {rounds} rounds)"
    ui.console.print(ui.table(title, ["step", "median ms", "min ms"], rows))
    verdict = "OK" if ratio <= TARGET else "ABOVE TARGET"
    print(f"distill / (student step + teacher forward) = {ratio:.3f}x (target <= {TARGET:.2f}x): {verdict}")


if __name__ == "__main__":
    main()
