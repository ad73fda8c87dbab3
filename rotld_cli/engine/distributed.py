"""Inside one process of a distributed run: the process group, this process's rank, and rank-0 gating.

Why a module of its own: the training code asks the same few questions whether it runs alone,
under our torchrun launch, under a user's torchrun or as a Slurm task ("am I rank 0?", "how many
processes share the batch?", "which sampler and wrapper?"). The answers come from the initialised
process group, so nothing has to be threaded through the training options.

Environment contract (what torchrun exports and what `slurm_worker_env` builds from Slurm's
variables): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. On CUDA the process drives
GPU `LOCAL_RANK % torch.cuda.device_count()` (one GPU per process; a Slurm task that sees only its
own GPU uses index 0) and the backend is NCCL; on CPU the backend is gloo.

Only rank 0 prints progress and writes checkpoints and logs; the other ranks are silenced by
`silence_other_ranks()`. Each rank keeps its own BatchNorm running statistics (DDP with
`broadcast_buffers=False`, as mmdet), so checkpoints hold rank 0's.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from rotld_cli.errors import RotldError, UsageError

WORKER_ENV = "ROTLD_DIST_WORKER"  # "1" in the processes our launcher starts
DEVICE_ENV = "ROTLD_DIST_DEVICE"  # 'cuda' or 'cpu', chosen by the launcher for its workers
TIMEOUT_ENV = "ROTLD_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 60.0  # rank 0 evaluates alone while the others wait at their next collective
REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank 0 of 1 when nothing is distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        """The device the backend implies: NCCL drives GPUs, gloo runs on the CPU."""
        return "cuda" if self.backend == "nccl" else "cpu"


# --------------------------------------------------------------------------------------------
# Process group


def _env_int(environ: Mapping[str, str], name: str, minimum: int = 0) -> int:
    raw = environ.get(name)
    try:
        value = int(raw) if raw is not None else None
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise RotldError(f"distributed run: environment variable {name}={raw!r} is not an integer >= {minimum}")
    return value


def env_ranks(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) from the environment; a missing or bad variable is one line."""
    environ = os.environ if environ is None else environ
    missing = [name for name in REQUIRED_ENV if name not in environ]
    if missing:
        raise RotldError(
            f"distributed run: {', '.join(missing)} not set; start the run with `rotld ... --gpus N` "
            "(or torchrun, or srun with --launcher slurm)"
        )
    rank = _env_int(environ, "RANK")
    world = _env_int(environ, "WORLD_SIZE", minimum=1)
    local = _env_int(environ, "LOCAL_RANK") if "LOCAL_RANK" in environ else 0
    if rank >= world:
        raise RotldError(f"distributed run: RANK={rank} is not below WORLD_SIZE={world}")
    return rank, world, local


def timeout() -> datetime.timedelta:
    """How long a collective waits for a peer (ROTLD_DIST_TIMEOUT_MIN, default 60 minutes)."""
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        minutes = float(raw) if raw is not None else DEFAULT_TIMEOUT_MIN
    except ValueError:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r}: expected a number of minutes") from None
    if minutes <= 0:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of minutes")
    return datetime.timedelta(minutes=minutes)


def init_from_env(device: str) -> DistInfo:
    """Join the process group described by the environment (idempotent): NCCL on 'cuda', gloo on 'cpu'."""
    import torch
    import torch.distributed as dist

    from rotld_cli.engine.devices import dist_backend

    if dist.is_available() and dist.is_initialized():
        return info()
    if device not in ("cuda", "cpu"):
        raise UsageError(f"distributed run: device must be 'cuda' or 'cpu', got {device!r}")
    rank, world, local = env_ranks()
    if device == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise RotldError("distributed run: NCCL needs a GPU but none is visible; use --gpus 0 --nproc N on CPUs")
        torch.cuda.set_device(local % count)
    try:
        dist.init_process_group(backend=dist_backend(device), timeout=timeout())
    except (RuntimeError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RotldError(
            f"distributed run: rank {rank} of {world} could not join the process group at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({detail})"
        ) from None
    return info()


def info() -> DistInfo:
    """This process's rank, world size, local rank and backend (rank 0 of 1 when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", 0))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                    backend=str(dist.get_backend()))


def is_main_process() -> bool:
    return info().is_main


def world_size() -> int:
    return info().world_size


def barrier() -> None:
    """Wait for every rank (a no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def destroy() -> None:
    """Leave the process group (a no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shared_seed(seed: int) -> int:
    """Rank 0's seed on every rank: a seed drawn at random per process would differ."""
    import torch
    import torch.distributed as dist

    if not info().enabled:
        return int(seed)
    value = torch.tensor([int(seed)], dtype=torch.int64)
    if info().backend == "nccl":
        value = value.cuda()
    dist.broadcast(value, src=0)
    return int(value.item())


def total_batch(samples_per_gpu: int, world: int | None = None) -> int:
    """Images per optimizer step over all processes (what `--auto-scale-lr` scales the lr with)."""
    return int(samples_per_gpu) * (world_size() if world is None else int(world))


# --------------------------------------------------------------------------------------------
# Rank-0-only output


def main_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorate a function that writes or prints: it runs on rank 0 and returns None elsewhere."""

    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        return fn(*args, **kwargs) if is_main_process() else None

    wrapper.__name__ = getattr(fn, "__name__", "main_only")
    wrapper.__doc__ = fn.__doc__
    return wrapper


def print_main(*objects: Any, **kwargs: Any) -> None:
    """`ui.console.print` on rank 0 only."""
    from rotld_cli import ui

    if is_main_process():
        ui.console.print(*objects, **kwargs)


def silence_other_ranks(rank: int) -> None:
    """On ranks other than 0: no console output and no Python warnings (rank 0 shows the same ones)."""
    from rotld_cli import ui

    if rank == 0:
        return
    ui.console.quiet = True
    warnings.simplefilter("ignore")


# --------------------------------------------------------------------------------------------
# Data and model


def build_loader(dataset: Any, samples_per_gpu: int, workers_per_gpu: int, shuffle: bool, seed: int | None = None,
                 worker_init_fn: Callable[[int], None] | None = None) -> Any:
    """mmdet's `build_dataloader`, sharded across ranks when distributed.

    Distributed, each rank loads `samples_per_gpu` images per step from its own shard
    (DistributedGroupSampler when shuffling, DistributedSampler otherwise); register
    `sampler_seed_hook()` so the shuffle changes every epoch. `seed` must be the same on every rank.
    """
    from mmdet.datasets import build_dataloader

    loader = build_dataloader(
        dataset,
        samples_per_gpu=samples_per_gpu,
        workers_per_gpu=workers_per_gpu,
        num_gpus=1,
        dist=info().enabled,
        shuffle=shuffle,
        seed=seed,
        persistent_workers=False,
    )
    if worker_init_fn is not None:
        loader.worker_init_fn = worker_init_fn
    return loader


def sampler_seed_hook() -> Any | None:
    """mmcv's DistSamplerSeedHook (reshuffles each rank's shard every epoch) when distributed, else None."""
    from mmcv.runner import DistSamplerSeedHook

    return DistSamplerSeedHook() if info().enabled else None


def wrap(model: Any, device: str, find_unused_parameters: bool = False) -> Any:
    """MMDistributedDataParallel under a process group, else the single-process wrapper.

    A KD detector keeps its teacher outside `parameters()`: DDP neither broadcasts nor reduces it;
    every rank holds its own frozen copy, loaded from the same file.
    """
    from mmcv.utils import get_logger

    from rotld_cli.engine.devices import wrap_distributed, wrap_model

    if not info().enabled:
        return wrap_model(model, device)
    get_logger("mmcv").setLevel(logging.WARNING)  # not "Reducer buckets have been rebuilt" on the console
    with warnings.catch_warnings():
        # torch's advice is to keep broadcast_buffers=False while buffers must stay rank-local (BatchNorm stats)
        warnings.filterwarnings("ignore", message=r"`broadcast_buffers` is deprecated", category=FutureWarning)
        return wrap_distributed(model, device, find_unused_parameters=find_unused_parameters)


# --------------------------------------------------------------------------------------------
# Slurm


@dataclass(frozen=True)
class SlurmEnv:
    """The Slurm step's view of this task (srun exports these variables to every task)."""

    proc_id: int
    ntasks: int
    local_id: int
    node_id: int
    nnodes: int
    nodelist: str
    job_id: str | None
    tasks_per_node: tuple[int, ...]


def read_slurm_env(environ: Mapping[str, str] | None = None) -> SlurmEnv:
    """Slurm's task variables; a missing one means we are not an srun task (one line naming it)."""
    environ = os.environ if environ is None else environ

    def first(*names: str) -> tuple[str, str | None]:
        for name in names:
            if environ.get(name):
                return name, environ[name]
        return names[0], None

    values: dict[str, int] = {}
    for key, names in (("proc_id", ("SLURM_PROCID",)), ("ntasks", ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")),
                       ("local_id", ("SLURM_LOCALID",)), ("node_id", ("SLURM_NODEID",)),
                       ("nnodes", ("SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"))):
        name, raw = first(*names)
        if raw is None:
            raise UsageError(f"--launcher slurm: {name} is not set; start one task per GPU with `srun ... rotld ...`")
        try:
            values[key] = int(raw)
        except ValueError:
            raise UsageError(f"--launcher slurm: {name}={raw!r} is not an integer") from None
    name, nodelist = first("SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST")
    if nodelist is None:
        raise UsageError(f"--launcher slurm: {name} is not set; start the tasks with `srun ... rotld ...`")
    _, tasks_text = first("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    tasks = parse_tasks_per_node(tasks_text) if tasks_text else ()
    if not 0 <= values["proc_id"] < values["ntasks"]:
        raise UsageError(f"--launcher slurm: SLURM_PROCID={values['proc_id']} is not below "
                         f"SLURM_NTASKS={values['ntasks']}")
    return SlurmEnv(job_id=environ.get("SLURM_JOB_ID"), nodelist=nodelist, tasks_per_node=tasks, **values)


_TASKS_ITEM = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


def parse_tasks_per_node(text: str) -> tuple[int, ...]:
    """Slurm's compressed per-node counts: '4(x2),3' -> (4, 4, 3)."""
    counts: list[int] = []
    for item in text.split(","):
        match = _TASKS_ITEM.match(item.strip())
        if not match:
            raise UsageError(f"--launcher slurm: cannot read the tasks per node {text!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return tuple(counts)


def _split_top_level(text: str) -> list[str]:
    """Split a hostlist at the commas outside brackets: 'a[1,2],b' -> ['a[1,2]', 'b']."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (part.strip() for part in parts) if p]


def first_host_of(nodelist: str) -> str:
    """The first host of a Slurm hostlist without `scontrol`: 'gpu[07-09,12],cpu1' -> 'gpu07'.

    Each bracket group contributes its first value (zero padding kept), which is the first host
    Slurm's own expansion yields.
    """
    hosts = _split_top_level(nodelist)
    if not hosts:
        raise UsageError(f"--launcher slurm: empty node list {nodelist!r}")

    def first_value(match: re.Match) -> str:
        return match.group(1).split(",")[0].split("-")[0]

    host = re.sub(r"\[([^\]]*)\]", first_value, hosts[0])
    if not host or "[" in host or "]" in host:
        raise UsageError(f"--launcher slurm: cannot read the node list {nodelist!r}")
    return host


def master_host(nodelist: str, scontrol: str | None = None) -> str:
    """The host of rank 0: `scontrol show hostnames NODELIST`'s first line when scontrol runs, else our parser."""
    scontrol = shutil.which("scontrol") if scontrol is None else scontrol
    if scontrol:
        try:
            out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out:
            return out[0]
    return first_host_of(nodelist)


def slurm_port(job_id: str | None, default: int = 29500) -> int:
    """A port every task of the job derives alike: 20000 + job id mod 20000 (jobs sharing a node differ)."""
    if job_id and job_id.isdigit():
        return 20000 + int(job_id) % 20000
    return default


def slurm_worker_env(slurm: SlurmEnv, master_addr: str, master_port: int, gpu_count: int) -> dict[str, str]:
    """The torchrun-style variables for one Slurm task (LOCAL_RANK = the GPU it drives, as mmcv does)."""
    local = slurm.local_id % gpu_count if gpu_count > 0 else slurm.local_id
    per_node = slurm.tasks_per_node[slurm.node_id] if slurm.node_id < len(slurm.tasks_per_node) else None
    env = {
        "RANK": str(slurm.proc_id),
        "WORLD_SIZE": str(slurm.ntasks),
        "LOCAL_RANK": str(local),
        "NODE_RANK": str(slurm.node_id),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }
    if per_node is not None:
        env["LOCAL_WORLD_SIZE"] = str(per_node)
    return env
