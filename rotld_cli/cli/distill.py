"""`rotld distill`: train a student with localization (LD) and classification (KD) distillation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from rotld_cli.cli import app
from rotld_cli.cli.train import (
    GPUS,
    LAUNCHER,
    MASTER_ADDR,
    MASTER_PORT,
    NNODES,
    NODE_RANK,
    NPROC,
    launch_or_none,
    render_result,
)


@app.command("distill", help="Distill a student from a teacher checkpoint with a YAML recipe.")
def distill_cmd(
    recipe: str = typer.Argument(..., help="Student recipe file or bundled name (see `rotld recipes list`)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher checkpoint (from `rotld train-teacher`)."),
    teacher_recipe: Optional[str] = typer.Option(
        None, "--teacher-recipe", help="The teacher's recipe (default: the one stored in the checkpoint)."
    ),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Run folder (default: work_dirs/<recipe name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --work-dir from its latest.pth."),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", help="Override a recipe key, e.g. --set schedule.lr=0.005 (repeatable)."
    ),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (fp16) training; CUDA only."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: the recipe's runtime.seed)."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic kernels (slower on GPU)."),
    auto_scale_lr: bool = typer.Option(False, "--auto-scale-lr", help="Scale the lr linearly with the total batch."),
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Local backbone checkpoint (offline use)."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", help="Random backbone init (no download)."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the patch-level evaluation during training."),
    gpus: Optional[int] = GPUS,
    nproc: Optional[int] = NPROC,
    nnodes: Optional[int] = NNODES,
    node_rank: Optional[int] = NODE_RANK,
    master_addr: Optional[str] = MASTER_ADDR,
    master_port: Optional[int] = MASTER_PORT,
    launcher: str = LAUNCHER,
) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spin-waiting on busy CPUs
    from rotld_cli.engine.launch import worker_device

    launch_or_none(gpus, nproc, nnodes, node_rank, master_addr, master_port, launcher, device)
    device = worker_device(gpus, device)  # --gpus 0: CPU processes
    # imported after the launch: the launching process needs no engine
    from rotld_cli.engine.train import TrainOptions, distill

    options = TrainOptions(
        work_dir=work_dir, resume=resume, overrides=list(overrides or []), device=device, amp=amp, seed=seed,
        deterministic=deterministic, auto_scale_lr=auto_scale_lr, pretrained=pretrained, no_pretrained=no_pretrained,
        validate=not no_validate, teacher=teacher, teacher_recipe=teacher_recipe,
    )
    render_result(distill(recipe, options))
