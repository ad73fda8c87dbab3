"""torch 2.x shims for mmcv-full 1.7.2 / mmdet 2.28.2 / mmrotate 0.3.4, applied once by `apply()`.

Why: these releases predate torch 2.x. Each shim below fixes one breakage reproduced with torch
2.14 on Python 3.11; its docstring quotes the error seen without it, and
tests/test_engine_compat.py shows the unpatched code failing and the patched code working.
Every patched attribute keeps its original in `ORIGINALS[key]`; `APPLIED` lists the shims applied.

Checkpoint loading (torch >= 2.6 defaults `torch.load` to `weights_only=True`), decided per call site:
- mmcv's local-file loader (`load_checkpoint`, `CheckpointLoader`, `runner.resume`) and its
  http(s)/torchvision loader stay on `weights_only=True`. mmcv's own checkpoints hold, besides
  tensors and plain containers, numpy scalars/arrays (e.g. an EvalHook `best_score`) and
  possibly datetimes in `meta`; those harmless types are allowed *only inside these loaders*
  (`torch.serialization.safe_globals`, nothing is added process-wide). mmcv's http loader went
  through `torch.hub.load_state_dict_from_url`, whose default is `weights_only=False`: it is
  made safe too.
- Full unpickling (`weights_only=False`) happens only inside `with trusted_checkpoints():`, the
  explicit trust path for a file the user vouches for. A refused file raises a RotldError that
  names the file and the offending global instead of torch's multi-paragraph message.

Noisy import-time messages are silenced by `rotld_cli.quiet.silence_third_party()`, which the CLI
runs before any command (and `load_engine()` again, for library use) — see that module for the list.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterator
from typing import Any, Callable

from rotld_cli.errors import RotldError

ORIGINALS: dict[str, Any] = {}
APPLIED: list[str] = []

_applied = False
_trust_depth = 0


def _patch(owner: Any, name: str, new: Any, key: str) -> None:
    """Replace `owner.name` by `new`, remembering the original once under `key`."""
    ORIGINALS.setdefault(key, getattr(owner, name))
    setattr(owner, name, new)


def quiet_imports() -> None:
    """Silence the harmless, noisy messages of importing the stack (call before importing mmcv)."""
    from rotld_cli.quiet import silence_third_party

    silence_third_party()


# --------------------------------------------------------------------------------------- devices


def _shim_get_anchors_device() -> None:
    """mmrotate 0.3.4 `RotatedAnchorHead.get_anchors` calls `grid_priors(featmap_sizes, device)`.

    The second positional parameter of `grid_priors` is *dtype*, so the anchors are built on the
    default device 'cuda' whatever the input: every CPU forward fails with "Found no NVIDIA driver
    on your system" / "Torch not compiled with CUDA enabled", and on a GPU machine CPU inputs would
    meet GPU anchors. The fix passes `device=` by keyword (mmdet's `AnchorHead.get_anchors` does).
    RotatedRetinaHead inherits it; its own `filter_bboxes`/`refine_bboxes` and
    `RotatedAnchorHead._get_bboxes` already pass `device=` by keyword.
    """
    from mmrotate.models.dense_heads.rotated_anchor_head import RotatedAnchorHead

    def get_anchors(self, featmap_sizes, img_metas, device="cuda"):
        multi_level_anchors = self.anchor_generator.grid_priors(featmap_sizes, device=device)
        anchor_list = [multi_level_anchors for _ in range(len(img_metas))]
        valid_flag_list = [
            self.anchor_generator.valid_flags(featmap_sizes, img_meta["pad_shape"], device=device)
            for img_meta in img_metas
        ]
        return anchor_list, valid_flag_list

    get_anchors.__doc__ = RotatedAnchorHead.get_anchors.__doc__
    _patch(RotatedAnchorHead, "get_anchors", get_anchors, "RotatedAnchorHead.get_anchors")


def _shim_scatter_stream() -> None:
    """mmcv's `Scatter.forward` calls torch's `_get_stream(device)` with an int GPU index.

    torch >= 2.x reads `device.type`, so every CPU->GPU scatter of MMDataParallel /
    MMDistributedDataParallel fails with "'int' object has no attribute 'type'"
    (open-mmlab/mmdetection#10720). The fix hands torch a `torch.device('cuda', index)`.
    """
    import mmcv.parallel._functions as mmcv_functions
    import torch
    import torch.nn.parallel._functions as torch_functions

    def _get_stream(device):
        if isinstance(device, int):
            device = torch.device("cuda", device)
        return torch_functions._get_stream(device)

    _patch(mmcv_functions, "_get_stream", _get_stream, "mmcv.parallel._functions._get_stream")


def _shim_ddp_forward() -> None:
    """mmcv's `MMDistributedDataParallel._run_ddp_forward` reads `self._use_replicated_tensor_module`.

    torch 2.0 removed that attribute, so every DDP forward (e.g. the distributed evaluation hook)
    fails with "'MMDistributedDataParallel' object has no attribute '_use_replicated_tensor_module'".
    The fix scatters the DataContainers (to the DDP device, or to the CPU with device_ids=None)
    and runs torch's own `_run_ddp_forward`.
    """
    from mmcv.parallel import MMDistributedDataParallel
    from mmcv.parallel.scatter_gather import scatter_kwargs
    from torch.nn.parallel import DistributedDataParallel

    def _run_ddp_forward(self, *inputs, **kwargs):
        target = self.device_ids[0] if self.device_ids else -1
        inputs, kwargs = scatter_kwargs(inputs, kwargs, [target], dim=self.dim)
        return DistributedDataParallel._run_ddp_forward(self, *inputs[0], **kwargs[0])

    key = "MMDistributedDataParallel._run_ddp_forward"
    _patch(MMDistributedDataParallel, "_run_ddp_forward", _run_ddp_forward, key)


def _shim_ddp_cpu_steps() -> None:
    """mmcv's `MMDistributedDataParallel.train_step/val_step` skip scattering when device_ids is None.

    That is how DDP runs on CPU (gloo), so the model received raw DataContainers:
    "AssertionError: <class 'mmcv.parallel.data_container.DataContainer'>" in any head that
    expects a tensor. The fix unwraps them on the CPU first (what MMDataParallel does on CPU).
    """
    from mmcv.parallel import MMDistributedDataParallel
    from mmcv.parallel.scatter_gather import scatter_kwargs

    def wrap(original: Callable) -> Callable:
        def step(self, *inputs, **kwargs):
            if not self.device_ids:
                inputs, kwargs = scatter_kwargs(inputs, kwargs, [-1], dim=self.dim)
                inputs, kwargs = inputs[0], kwargs[0]
            return original(self, *inputs, **kwargs)

        step.__doc__ = original.__doc__
        return step

    for name in ("train_step", "val_step"):
        original = getattr(MMDistributedDataParallel, name)
        _patch(MMDistributedDataParallel, name, wrap(original), f"MMDistributedDataParallel.{name}")


def _shim_init_dist_local_rank() -> None:
    """mmcv's `_init_dist_pytorch` does `torch.cuda.set_device(rank % torch.cuda.device_count())`.

    On a CPU (gloo) run that is "ZeroDivisionError: integer modulo by zero"; on several nodes it
    picks the GPU from the global rank. torch >= 2.0 launchers (torchrun; `torch.distributed.launch`
    now passes `--local-rank`, not `--local_rank`) export LOCAL_RANK: the fix selects the GPU from
    LOCAL_RANK and only when CUDA is available.
    """
    import mmcv.runner.dist_utils as dist_utils
    import torch
    import torch.distributed as dist

    def _init_dist_pytorch(backend: str, **kwargs) -> None:
        if torch.cuda.is_available() and backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend, **kwargs)

    _patch(dist_utils, "_init_dist_pytorch", _init_dist_pytorch, "mmcv.runner.dist_utils._init_dist_pytorch")


def _on_gloo() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo"


def _shim_gloo_collectives() -> None:
    """mmdet's distributed helpers put their collective tensors on 'cuda' unconditionally.

    `init_random_seed` / `sync_random_seed` (seed broadcast, distributed samplers) and
    `collect_results_cpu` (distributed evaluation, `multi_gpu_test`) fail on a CPU gloo run with
    "Found no NVIDIA driver on your system". On gloo the fix broadcasts the seed from a CPU tensor
    and gathers results with `gather_object`; NCCL runs are unchanged.
    """
    import mmdet.apis as mmdet_apis
    import mmdet.apis.test as mmdet_test
    import mmdet.apis.train as mmdet_train
    import mmdet.core.utils as core_utils
    import mmdet.core.utils.dist_utils as mmdet_dist
    import mmdet.datasets.samplers.class_aware_sampler as class_aware
    import mmdet.datasets.samplers.distributed_sampler as distributed_sampler
    import mmdet.datasets.samplers.infinite_sampler as infinite_sampler
    import torch.distributed as dist
    from mmcv.runner import get_dist_info

    original_seed = mmdet_dist.sync_random_seed
    original_init_seed = mmdet_train.init_random_seed
    original_collect = mmdet_test.collect_results_cpu

    def sync_random_seed(seed=None, device="cuda"):
        return original_seed(seed, "cpu" if _on_gloo() else device)

    def init_random_seed(seed=None, device="cuda"):
        return original_init_seed(seed, "cpu" if _on_gloo() else device)

    def collect_results_cpu(result_part, size, tmpdir=None):
        if not _on_gloo():
            return original_collect(result_part, size, tmpdir)
        rank, world_size = get_dist_info()
        parts: list[Any] | None = [None] * world_size if rank == 0 else None
        dist.gather_object(result_part, parts, dst=0)
        if rank != 0:
            return None
        ordered = [item for group in zip(*parts) for item in group]
        return ordered[:size]

    for module in (mmdet_dist, core_utils, class_aware, distributed_sampler, infinite_sampler):
        _patch(module, "sync_random_seed", sync_random_seed, f"{module.__name__}.sync_random_seed")
    for module in (mmdet_train, mmdet_apis):
        _patch(module, "init_random_seed", init_random_seed, f"{module.__name__}.init_random_seed")
    _patch(mmdet_test, "collect_results_cpu", collect_results_cpu, "mmdet.apis.test.collect_results_cpu")


def _shim_multiclass_nms_rotated_device() -> None:
    """mmrotate 0.3.4 `multiclass_nms_rotated` builds `labels = torch.arange(num_classes)` on the CPU.

    It then indexes those labels with the indices of the scores kept: on a GPU torch 2.x refuses
    ("indices should be either on cpu or on the same device as the indexed tensor (cpu)"), which
    ended every inference path on CUDA (validation in training, `evaluate CKPT`, the demo). The fix
    is the same function with the labels made on the scores' device; every module that imported
    the function by name gets it.
    """
    import sys

    import mmrotate.core.post_processing.bbox_nms_rotated as nms_module
    import torch
    from mmcv.ops import nms_rotated

    original = nms_module.multiclass_nms_rotated

    def multiclass_nms_rotated(multi_bboxes, multi_scores, score_thr, nms, max_num=-1, score_factors=None,
                               return_inds=False):
        num_classes = multi_scores.size(1) - 1
        if multi_bboxes.shape[1] > 5:
            bboxes = multi_bboxes.view(multi_scores.size(0), -1, 5)
        else:
            bboxes = multi_bboxes[:, None].expand(multi_scores.size(0), num_classes, 5)
        scores = multi_scores[:, :-1]
        labels = torch.arange(num_classes, dtype=torch.long, device=scores.device).view(1, -1).expand_as(scores)
        bboxes, scores, labels = bboxes.reshape(-1, 5), scores.reshape(-1), labels.reshape(-1)
        valid_mask = scores > score_thr
        if score_factors is not None:
            scores = scores * score_factors.view(-1, 1).expand(multi_scores.size(0), num_classes).reshape(-1)
        inds = valid_mask.nonzero(as_tuple=False).squeeze(1)
        bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]
        if bboxes.numel() == 0:
            dets = torch.cat([bboxes, scores[:, None]], -1)
            return (dets, labels, inds) if return_inds else (dets, labels)
        # Class-aware NMS in one call: each class shifted by max(x, y) + max(w, h) + 1 (as mmrotate).
        max_coordinate = bboxes[:, :2].max() + bboxes[:, 2:4].max()
        offsets = labels.to(bboxes) * (max_coordinate + 1)
        bboxes_for_nms = bboxes.clone()
        bboxes_for_nms[:, :2] = bboxes_for_nms[:, :2] + offsets[:, None]
        _, keep = nms_rotated(bboxes_for_nms, scores, nms.iou_thr)
        if max_num > 0:
            keep = keep[:max_num]
        dets = torch.cat([bboxes[keep], scores[keep][:, None]], 1)
        return (dets, labels[keep], keep) if return_inds else (dets, labels[keep])

    multiclass_nms_rotated.__doc__ = original.__doc__
    for name, module in list(sys.modules.items()):
        if name.startswith("mmrotate") and getattr(module, "multiclass_nms_rotated", None) is original:
            _patch(module, "multiclass_nms_rotated", multiclass_nms_rotated, f"{name}.multiclass_nms_rotated")


# ----------------------------------------------------------------------------------------- numpy


def _shim_numpy_aliases() -> None:
    """mmdet's `CustomDataset.get_cat_ids` uses `np.int`, removed in numpy 1.24.

    It fails with "module 'numpy' has no attribute 'int'" (used by ClassBalancedDataset; DOTADataset
    inherits it). mmrotate's evaluation (`eval_rbbox_map`) and DOTADataset use no removed alias.
    """
    from mmdet.datasets.custom import CustomDataset

    def get_cat_ids(self, idx):
        return self.data_infos[idx]["ann"]["labels"].astype(int).tolist()

    get_cat_ids.__doc__ = CustomDataset.get_cat_ids.__doc__
    _patch(CustomDataset, "get_cat_ids", get_cat_ids, "CustomDataset.get_cat_ids")


# ----------------------------------------------------------------------------------- checkpoints


def checkpoint_safe_globals() -> list[Any]:
    """The harmless non-tensor types mmcv checkpoints carry in `meta` (numpy scalars/arrays, datetimes)."""
    import datetime

    import numpy as np

    dtype_classes = {type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                                 np.float16, np.float32, np.float64, np.str_)}
    return [
        np.core.multiarray.scalar,
        np.core.multiarray._reconstruct,
        np.ndarray,
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
        datetime.datetime,
        datetime.date,
        datetime.timedelta,
    ]


@contextlib.contextmanager
def trusted_checkpoints() -> Iterator[None]:
    """Inside this block mmcv's loaders unpickle everything (`weights_only=False`): trusted files only."""
    global _trust_depth
    _trust_depth += 1
    try:
        yield
    finally:
        _trust_depth -= 1


def checkpoints_trusted() -> bool:
    return _trust_depth > 0


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def safe_torch_load(load: Callable[..., Any], source: str, *args: Any, **kwargs: Any) -> Any:
    """Call `load(..., weights_only=...)` with the checkpoint allowlist; a refusal is one RotldError line."""
    import torch

    if checkpoints_trusted():
        return load(*args, weights_only=False, **kwargs)
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return load(*args, weights_only=True, **kwargs)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        found = _UNSUPPORTED_GLOBAL.search(str(exc))
        if not found and "Weights only load failed" not in str(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RotldError(f"{source}: not a readable PyTorch checkpoint ({first})") from exc
        what = f"`{found.group(1)}`" if found else "objects other than tensors and plain data"
        raise RotldError(
            f"{source}: refusing to unpickle {what} from this checkpoint (torch weights_only loading); "
            "load it as trusted only if you trust where it comes from"
        ) from exc


def _shim_checkpoint_loading() -> None:
    """mmcv's checkpoint loaders under torch >= 2.6's `weights_only=True` default (see module doc).

    Without the shim a checkpoint whose meta holds a numpy scalar fails with "Weights only load
    failed ... Unsupported global: GLOBAL numpy.core.multiarray.scalar"; http(s) downloads were
    unpickled with `weights_only=False`.
    """
    import os.path as osp

    import mmcv.runner.checkpoint as ckpt
    import torch
    from mmcv.runner import get_dist_info

    def load_from_local(filename, map_location=None):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f"{filename} can not be found.")
        return safe_torch_load(torch.load, filename, filename, map_location=map_location)

    def load_from_http(filename, map_location=None, model_dir=None):
        def fetch():
            return safe_torch_load(
                torch.hub.load_state_dict_from_url, filename, filename, model_dir=model_dir, map_location=map_location
            )

        rank, world_size = get_dist_info()
        if rank == 0:
            checkpoint = fetch()
        if world_size > 1:
            torch.distributed.barrier()
            if rank > 0:
                checkpoint = fetch()
        return checkpoint

    replacements = {ckpt.load_from_local: load_from_local, ckpt.load_from_http: load_from_http}
    for prefix, loader in list(ckpt.CheckpointLoader._schemes.items()):
        if loader in replacements:
            ckpt.CheckpointLoader._schemes[prefix] = replacements[loader]
    _patch(ckpt, "load_from_local", load_from_local, "mmcv.runner.checkpoint.load_from_local")
    _patch(ckpt, "load_from_http", load_from_http, "mmcv.runner.checkpoint.load_from_http")


SHIMS: list[tuple[str, Callable[[], None]]] = [
    ("get_anchors_device", _shim_get_anchors_device),
    ("scatter_stream_device", _shim_scatter_stream),
    ("multiclass_nms_rotated_device", _shim_multiclass_nms_rotated_device),
    ("ddp_forward_torch2", _shim_ddp_forward),
    ("ddp_cpu_steps", _shim_ddp_cpu_steps),
    ("init_dist_local_rank", _shim_init_dist_local_rank),
    ("gloo_collectives", _shim_gloo_collectives),
    ("numpy_aliases", _shim_numpy_aliases),
    ("checkpoint_weights_only", _shim_checkpoint_loading),
]


def apply() -> None:
    """Apply every shim once (idempotent); the engine must be importable."""
    global _applied
    if _applied:
        return
    quiet_imports()
    for name, shim in SHIMS:
        shim()
        APPLIED.append(name)
    _applied = True
