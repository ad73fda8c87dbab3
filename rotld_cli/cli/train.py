"""`rotld train-teacher`: train a teacher (or baseline) detector from a YAML recipe."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from rotld_cli.cli import app

# The options both training commands share (`rotld distill` imports these).
WORK_DIR = typer.Option(None, "--work-dir", help="Run folder (default: work_dirs/<recipe name>).")
RESUME = typer.Option(False, "--resume", help="Continue the run in --work-dir from its latest.pth.")
SET = typer.Option(None, "--set", help="Override a recipe key, e.g. --set schedule.lr=0.005 (repeatable).")
DEVICE = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available).")
AMP = typer.Option(False, "--amp", help="Mixed precision (fp16) training; CUDA only.")
SEED = typer.Option(None, "--seed", help="Random seed (default: the recipe's runtime.seed).")
DETERMINISTIC = typer.Option(False, "--deterministic", help="Deterministic kernels (slower on GPU).")
AUTO_SCALE_LR = typer.Option(False, "--auto-scale-lr", help="Scale the lr linearly with the total batch.")
PRETRAINED = typer.Option(None, "--pretrained", help="Local backbone checkpoint (offline use).")
NO_PRETRAINED = typer.Option(False, "--no-pretrained", help="Random backbone init (no download).")
NO_VALIDATE = typer.Option(False, "--no-validate", help="Skip the patch-level evaluation during training.")

# The launch options of both training commands.
GPUS = typer.Option(None, "--gpus", help="GPUs on this machine; N > 1 starts one process per GPU (torchrun, NCCL). "
                    "0: CPU processes (gloo), see --nproc.")
NPROC = typer.Option(None, "--nproc", help="CPU processes with --gpus 0 (e.g. --gpus 0 --nproc 2).")
NNODES = typer.Option(None, "--nnodes", help="Machines in the run; each runs the same command with its --node-rank.")
NODE_RANK = typer.Option(None, "--node-rank", help="This machine's index, 0..nnodes-1.")
MASTER_ADDR = typer.Option(None, "--master-addr", help="Address of the --node-rank 0 machine (several machines).")
MASTER_PORT = typer.Option(None, "--master-port", help="Its TCP port (default: a free one on one machine, "
                           "29500 on several).")
LAUNCHER = typer.Option("auto", "--launcher", help="auto: rotld starts torchrun when more than one process is asked; "
                        "torchrun: started by your own torchrun; slurm: one srun task per GPU.")


def launch_or_none(gpus, nproc, nnodes, node_rank, master_addr, master_port, launcher, device) -> None:
    """Start the workers and exit with their code, or return to train in this process (alone or as one rank)."""
    from rotld_cli.engine.launch import maybe_launch

    code = maybe_launch(sys.argv[1:], gpus=gpus, nproc=nproc, nnodes=nnodes, node_rank=node_rank,
                        master_addr=master_addr, master_port=master_port, launcher=launcher, device=device)
    if code is not None:
        raise typer.Exit(code)


def render_result(result) -> None:
    """The summary panel both training commands print."""
    from rotld_cli import ui

    rows = [
        ["work dir", str(result.work_dir)],
        ["checkpoint", str(result.checkpoint)],
        ["epochs / iterations", f"{result.epochs} / {result.iters}"],
        ["wall time", f"{result.seconds:.1f} s"],
    ]
    if result.resumed_from is not None:
        rows.append(["resumed after epoch", str(result.resumed_from)])
    if result.teacher:
        rows.append(["teacher", f"{result.teacher['path']} (sha256 {result.teacher['sha256'][:12]}...)"])
    rows += [[name, f"{value:.4f}"] for name, value in result.final_losses.items()]
    if result.evaluations:
        rows += [[f"val {k} (epoch {result.evaluations[-1]['epoch']})", f"{v:.4f}"]
                 for k, v in result.evaluations[-1].items() if k != "epoch"]
    ui.console.print(ui.table("Training finished", ["", "value"], rows, justify_numbers=False))


@app.command("train-teacher", help="Train a teacher (or baseline) detector from a YAML recipe.")
def train_cmd(
    recipe: str = typer.Argument(..., help="Recipe file or bundled name (see `rotld recipes list`)."),
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
    from rotld_cli.engine.train import TrainOptions, train_teacher

    options = TrainOptions(
        work_dir=work_dir, resume=resume, overrides=list(overrides or []), device=device, amp=amp, seed=seed,
        deterministic=deterministic, auto_scale_lr=auto_scale_lr, pretrained=pretrained, no_pretrained=no_pretrained,
        validate=not no_validate,
    )
    render_result(train_teacher(recipe, options))
