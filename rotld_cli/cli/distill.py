"""`rotld distill`: train a student with localization (LD) and classification (KD) distillation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from rotld_cli.cli import app
from rotld_cli.cli.train import (
    AMP,
    AUTO_SCALE_LR,
    DETERMINISTIC,
    DEVICE,
    GPUS,
    LAUNCHER,
    MASTER_ADDR,
    MASTER_PORT,
    NNODES,
    NO_PRETRAINED,
    NO_VALIDATE,
    NODE_RANK,
    NPROC,
    PRETRAINED,
    RESUME,
    SEED,
    SET,
    WORK_DIR,
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
    work_dir: Optional[Path] = WORK_DIR,
    resume: bool = RESUME,
    overrides: Optional[list[str]] = SET,
    device: Optional[str] = DEVICE,
    amp: bool = AMP,
    seed: Optional[int] = SEED,
    deterministic: bool = DETERMINISTIC,
    auto_scale_lr: bool = AUTO_SCALE_LR,
    pretrained: Optional[Path] = PRETRAINED,
    no_pretrained: bool = NO_PRETRAINED,
    no_validate: bool = NO_VALIDATE,
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
