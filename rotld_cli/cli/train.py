"""`rotld train-teacher` and `rotld distill`: the two training commands, on one set of arguments.

Both take the same options (`TRAIN_OPTIONS`, `LAUNCH_OPTIONS`); `distill` adds the teacher's
(`TEACHER_OPTIONS`). Each command is generated from these tables and receives one `TrainArgs`.
Order of work: the recipe and `--set` are checked first (engine-free, well under a second), then
the launch options (which may start worker processes), then the engine trains.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from rotld_cli.cli import app

# (name, type, typer default) of the options both training commands take
TRAIN_OPTIONS: list[tuple[str, Any, Any]] = [
    ("work_dir", Optional[Path],
     typer.Option(None, "--work-dir", help="Run folder (default: work_dirs/<recipe name>).")),
    ("resume", bool, typer.Option(False, "--resume", help="Continue the run in --work-dir from its newest complete "
                                  "checkpoint (iteration or epoch; a damaged one is skipped with a warning).")),
    ("resume_from", Optional[Path], typer.Option(None, "--resume-from", help="Continue from this checkpoint.")),
    ("checkpoint_every", Optional[str], typer.Option(
        None, "--checkpoint-every",
        help="Also checkpoint inside epochs: every N iterations (2000), after a duration of training (30m, 2h) "
             "or both (2000,30m); 0: only at epoch ends (default: the recipe's runtime.checkpoint_every).")),
    ("keep", Optional[int], typer.Option(None, "--keep", help="Iteration checkpoints kept (the newest; default 2).")),
    ("requeue", bool, typer.Option(False, "--requeue", help="Slurm: after SIGUSR1/SIGTERM save, `scontrol requeue` the "
                                   "job; a start in a work dir holding checkpoints resumes it.")),
    ("overrides", Optional[list[str]],
     typer.Option(None, "--set", help="Override a recipe key, e.g. --set schedule.lr=0.005 (repeatable).")),
    ("classes_from", Optional[Path],
     typer.Option(None, "--classes-from", help="Train on the classes of a file (one name per line, e.g. `rotld "
                  "convert`'s DST/classes.txt): sets data.classes.")),
    ("device", Optional[str], typer.Option(None, "--device", help="cpu or cuda (default: cuda if available).")),
    ("amp", bool, typer.Option(False, "--amp", help="Mixed precision (fp16) training; CUDA only.")),
    ("seed", Optional[int], typer.Option(None, "--seed", help="Random seed (default: the recipe's runtime.seed).")),
    ("deterministic", bool, typer.Option(False, "--deterministic", help="Deterministic kernels (slower on GPU).")),
    ("auto_scale_lr", bool,
     typer.Option(False, "--auto-scale-lr", help="Scale the lr linearly with the total batch.")),
    ("pretrained", Optional[Path], typer.Option(None, "--pretrained", help="Local backbone checkpoint (offline use).")),
    ("no_pretrained", bool, typer.Option(False, "--no-pretrained", help="Random backbone init (no download).")),
    ("no_validate", bool,
     typer.Option(False, "--no-validate", help="Skip the patch-level evaluation during training.")),
    ("trust_checkpoint", bool, typer.Option(False, "--trust-checkpoint", help="Load the --teacher / --resume "
                                            "checkpoint as a full pickle: only for files whose source you trust.")),
]
LAUNCH_OPTIONS: list[tuple[str, Any, Any]] = [
    ("gpus", Optional[int], typer.Option(None, "--gpus", help="GPUs on this machine; N > 1 starts one process per GPU "
                                         "(torchrun, NCCL). 0: CPU processes (gloo), see --nproc.")),
    ("nproc", Optional[int],
     typer.Option(None, "--nproc", help="CPU processes with --gpus 0 (e.g. --gpus 0 --nproc 2).")),
    ("nnodes", Optional[int],
     typer.Option(None, "--nnodes", help="Machines in the run; each runs the same command with its --node-rank.")),
    ("node_rank", Optional[int], typer.Option(None, "--node-rank", help="This machine's index, 0..nnodes-1.")),
    ("master_addr", Optional[str],
     typer.Option(None, "--master-addr", help="Address of the --node-rank 0 machine (several machines).")),
    ("master_port", Optional[int], typer.Option(None, "--master-port", help="Its TCP port (default: a free one on one "
                                                "machine, 29500 on several).")),
    ("launcher", str, typer.Option("auto", "--launcher", help="auto: rotld starts torchrun when more than one process "
                                   "is asked; torchrun: started by your own torchrun; slurm: one srun task per GPU.")),
]
TEACHER_OPTIONS: list[tuple[str, Any, Any]] = [
    ("teacher", Optional[Path],
     typer.Option(None, "--teacher", help="Teacher checkpoint (from `rotld train-teacher`).")),
    ("teacher_recipe", Optional[str], typer.Option(
        None, "--teacher-recipe", help="The teacher's recipe (default: the one stored in the checkpoint).")),
]


@dataclass
class TrainArgs:
    """One training command line: the recipe, the run's options and the launch options."""

    recipe: str
    work_dir: Path | None = None
    resume: bool = False
    resume_from: Path | None = None
    checkpoint_every: str | None = None
    keep: int | None = None
    overrides: list[str] | None = None
    classes_from: Path | None = None
    device: str | None = None
    amp: bool = False
    seed: int | None = None
    deterministic: bool = False
    auto_scale_lr: bool = False
    pretrained: Path | None = None
    no_pretrained: bool = False
    no_validate: bool = False
    trust_checkpoint: bool = False
    gpus: int | None = None
    nproc: int | None = None
    nnodes: int | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    launcher: str = "auto"
    requeue: bool = False
    teacher: Path | None = None
    teacher_recipe: str | None = None

    def train_options(self, device: str | None = None):
        """The engine's TrainOptions (engine-free), with the console's training display."""
        from rotld_cli import ui
        from rotld_cli.training import TrainOptions

        return TrainOptions(
            work_dir=self.work_dir, resume=self.resume, overrides=list(self.overrides or []),
            classes_from=self.classes_from,
            device=device if device is not None else self.device, amp=self.amp, seed=self.seed,
            deterministic=self.deterministic, auto_scale_lr=self.auto_scale_lr, pretrained=self.pretrained,
            no_pretrained=self.no_pretrained, validate=not self.no_validate, teacher=self.teacher,
            teacher_recipe=self.teacher_recipe, trust_checkpoint=self.trust_checkpoint,
            reporter=ui.TrainDisplay(), resume_from=self.resume_from, checkpoint_every=self.checkpoint_every,
            keep=self.keep, requeue=self.requeue,
        )

    def launch_options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _, _ in LAUNCH_OPTIONS}


def command_argv(ctx: typer.Context) -> list[str]:
    """The arguments `rotld` was called with (after the program name), for workers to re-run.

    `cli.main(argv)` stores them in the root context; a programmatic `main([...])` must not
    launch workers with this process's own `sys.argv`.
    """
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and "argv" in obj:
        return list(obj["argv"])
    return sys.argv[1:]


def run_training(args: TrainArgs, argv: list[str], student: bool) -> None:
    """Check the request, launch (or join) the processes, train, print the summary."""
    from rotld_cli import ui
    from rotld_cli.training import training_recipe

    recipe = training_recipe(args.recipe, args.train_options(), student=student)  # before the engine loads
    from rotld_cli.cli.worker import quiet_other_ranks
    from rotld_cli.engine.dist.launch import maybe_launch, worker_device

    code = maybe_launch(argv, **args.launch_options(), device=args.device, debug=ui.debug_enabled(),
                        on_join=quiet_other_ranks)
    if code is not None:
        raise typer.Exit(code)
    options = args.train_options(device=worker_device(args.gpus, args.device))  # --gpus 0: CPU processes
    from rotld_cli.engine.train import distill, train_teacher  # after the launch: the launcher needs no engine

    render_result((distill if student else train_teacher)(recipe, options))


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
        resumed = Path(result.resumed_checkpoint).name if result.resumed_checkpoint else f"epoch {result.resumed_from}"
        rows.append(["resumed from", resumed])
    if result.teacher:
        rows.append(["teacher", f"{result.teacher['path']} (sha256 {result.teacher['sha256'][:12]}...)"])
    rows += [[name, f"{value:.4f}"] for name, value in result.final_losses.items()]
    if result.evaluations:
        rows += [[f"val {k} (epoch {result.evaluations[-1]['epoch']})", f"{v:.4f}"]
                 for k, v in result.evaluations[-1].items() if k != "epoch"]
    ui.console.print(ui.table("Training finished", ["", "value"], rows, justify_numbers=False))
    for verdict in result.health:  # last: a run that detects nothing or whose loss exploded says so
        ui.warn(verdict)


def _register(name: str, help: str, recipe_help: str, student: bool) -> Callable[..., None]:
    """Add one training command whose parameters are the option tables (one signature, not two copies)."""
    table = (TEACHER_OPTIONS if student else []) + TRAIN_OPTIONS + LAUNCH_OPTIONS
    kind = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("ctx", kind, annotation=typer.Context),
        inspect.Parameter("recipe", kind, default=typer.Argument(..., help=recipe_help), annotation=str),
        *[inspect.Parameter(key, kind, default=default, annotation=annotation) for key, annotation, default in table],
    ]

    def command(ctx: typer.Context, **values: Any) -> None:
        run_training(TrainArgs(**values), command_argv(ctx), student=student)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    app.command(name, help=help)(command)
    return command


assert {f.name for f in fields(TrainArgs)} == {"recipe"} | {
    key for key, _, _ in TRAIN_OPTIONS + LAUNCH_OPTIONS + TEACHER_OPTIONS
}, "TrainArgs and the option tables must name the same parameters"

train_cmd = _register(
    "train-teacher", "Train a teacher (or baseline) detector from a YAML recipe.",
    "Recipe file or bundled name (see `rotld recipes list`).", student=False,
)
distill_cmd = _register(
    "distill", "Distill a student from a teacher checkpoint with a YAML recipe: LD+KD, CrossKD, BCKD or LD+CrossKD, "
    "as the recipe's distill.method says (`rotld recipes list` names them).",
    "Student recipe file or bundled name (see `rotld recipes list`).", student=True,
)
