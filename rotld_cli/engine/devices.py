"""Device choice and model wrapping for our own train entry (mmrotate's `train_detector` hard-codes `.cuda()`).

mmcv's runner calls `model.train_step(data_batch, optimizer)` on a wrapper that unpacks the
DataContainers of a batch: MMDataParallel for one process, MMDistributedDataParallel under
torchrun. These helpers build the right one for 'cuda' or 'cpu' (the CPU DDP path runs on gloo
and relies on the `ddp_*` shims in compat).
"""

from __future__ import annotations

import os
from typing import Any

from rotld_cli.errors import UsageError


def pick_device(requested: str | None = None) -> str:
    """'cuda' when a GPU is usable, else 'cpu'; an explicit 'cuda' without a GPU is a usage error."""
    import torch

    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in ("cuda", "cpu"):
        raise UsageError(f"--device: expected 'cuda', 'cpu' or 'auto', got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no usable GPU (torch.cuda.is_available() is False); use --device cpu")
    return requested


def local_rank() -> int:
    """This process's GPU index under torchrun (LOCAL_RANK; `torch.distributed.launch --local-rank` is obsolete)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def dist_backend(device: str) -> str:
    """NCCL for GPUs, gloo for CPU processes."""
    return "nccl" if device == "cuda" else "gloo"


def wrap_model(model: Any, device: str) -> Any:
    """Single-process wrapper: MMDataParallel on GPU 0, or on the CPU with no device ids.

    On a GPU machine asked for 'cpu', torch's DataParallel would grab every GPU (device_ids=None)
    and move the model to GPU 0, so the CPU wrapper is built without that constructor there.
    """
    import torch
    from mmcv.parallel import MMDataParallel

    if device == "cuda":
        return MMDataParallel(model.cuda(0), device_ids=[0])
    if not torch.cuda.is_available():
        return MMDataParallel(model, device_ids=None)
    wrapped = MMDataParallel.__new__(MMDataParallel)
    torch.nn.Module.__init__(wrapped)
    wrapped.module = model
    wrapped.device_ids = []
    wrapped.dim = 0
    return wrapped


def wrap_distributed(model: Any, device: str, find_unused_parameters: bool = False) -> Any:
    """DDP wrapper for one torchrun process: the LOCAL_RANK GPU, or device_ids=None on CPU/gloo.

    `broadcast_buffers=False` as in mmrotate's `train_detector`; the process group must be
    initialised first (mmcv's `init_dist('pytorch', backend=dist_backend(device))`).
    """
    import torch
    from mmcv.parallel import MMDistributedDataParallel

    if device == "cuda":
        rank = local_rank()
        torch.cuda.set_device(rank)
        return MMDistributedDataParallel(
            model.cuda(rank),
            device_ids=[rank],
            broadcast_buffers=False,
            find_unused_parameters=find_unused_parameters,
        )
    return MMDistributedDataParallel(
        model, device_ids=None, broadcast_buffers=False, find_unused_parameters=find_unused_parameters
    )
