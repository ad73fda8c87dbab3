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
`broadcast_buffers=False`, as mmdet), so checkpoints hold rank 0's. Slurm's variables are read by
`dist.slurm`; starting or joining a run is `dist.launch`.
"""

from __future__ import annotations

import datetime
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rotld_cli.errors import RotldError, UsageError

WORKER_ENV = "ROTLD_DIST_WORKER"  # "1" in the processes our launcher starts
DEVICE_ENV = "ROTLD_DIST_DEVICE"  # 'cuda' or 'cpu', chosen by the launcher for its workers
TIMEOUT_ENV = "ROTLD_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 60.0  # rank 0 evaluates alone while the others wait at their next collective
REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

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


def silence_other_ranks(rank: int) -> None:
    """On ranks other than 0: no Python warnings and no rotld log lines (rank 0 shows the same ones).

    The console itself is the CLI's: it quiets it through the `on_join` callback of `maybe_launch`.
    """
    if rank == 0:
        return
    warnings.simplefilter("ignore")
    logging.getLogger("rotld_cli").setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------
# Data and model


def build_loader(dataset: Any, samples_per_gpu: int, workers_per_gpu: int, shuffle: bool,
                 seed: int | None = None) -> Any:
    """The training loader (`shuffle`): this process's slots of each step, in the order of `engine.data_order`.

    Distributed, each rank loads `samples_per_gpu` images per step, its own part of the step's
    total batch; `seed` must be the same on every rank. The order changes with the sampler's
    epoch (`set_epoch`, which `sampler_seed_hook()` or rotld's runner sets). Without `shuffle`,
    mmdet's DistributedSampler / plain loader.
    """
    if shuffle:
        from rotld_cli.engine.data_order import build_train_loader

        ctx = info()
        return build_train_loader(dataset, samples_per_gpu, workers_per_gpu, seed=0 if seed is None else seed,
                                  world_size=ctx.world_size, rank=ctx.rank)
    from mmdet.datasets import build_dataloader

    return build_dataloader(dataset, samples_per_gpu=samples_per_gpu, workers_per_gpu=workers_per_gpu, num_gpus=1,
                            dist=info().enabled, shuffle=False, seed=seed, persistent_workers=False)


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
# Agreeing across ranks (no-ops when alone)


def all_max(values: list[int]) -> list[int]:
    """The element-wise maximum of `values` over the ranks (each rank's own list when not distributed)."""
    import torch
    import torch.distributed as dist

    ctx = info()
    if not ctx.enabled:
        return [int(v) for v in values]
    device = "cuda" if ctx.backend == "nccl" else "cpu"
    tensor = torch.tensor([int(v) for v in values], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank ([value] when not distributed)."""
    import torch.distributed as dist

    ctx = info()
    if not ctx.enabled:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    import torch.distributed as dist

    if info().enabled:
        dist.barrier()
