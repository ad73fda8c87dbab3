"""Training checkpoints that survive a kill at any moment and load with `weights_only=True`.

Why our own format instead of mmcv's `save_checkpoint`: mmcv writes the file in place (a kill
mid-write leaves a corrupt `epoch_N.pth`) and makes `latest.pth` a symlink. Here every file is
written to a temporary name beside the target and renamed over it, `latest.pth` is a real file,
and `meta` holds only plain types (the RNG states, recipe text, classes, teacher hash) so that
`torch.load(..., weights_only=True)` accepts it: nobody has to trust pickled code to resume.

A run writes `epoch_N.pth` at epoch ends and `iter_N.pth` (N: iterations done) inside epochs;
`latest.pth` is the newest of them. `find_resumable` picks the newest one that is complete: a
torn or damaged file (truncated, or a byte changed: the zip records' CRC-32, which `torch.load`
does not check) is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rotld_cli.checkpoints import sha256_file  # noqa: F401  (re-exported: one hashing helper)
from rotld_cli.engine import faults
from rotld_cli.errors import RotldError
from rotld_cli.fileio import atomic_path

LATEST = "latest.pth"
DONE_MARKER = "done.json"
FORMAT_VERSION = 1
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pth$")
_ITER_RE = re.compile(r"^iter_(\d+)\.pth$")
# fileio.atomic_path's temporary names for our checkpoints: `.NAME.<random>.pth` beside NAME
_TEMP_RE = re.compile(r"^\.(latest|epoch_\d+|iter_\d+)\.pth\..+\.pth$")

log = logging.getLogger(__name__)


class CheckpointError(RotldError):
    """A checkpoint that cannot be read, or that lacks what the caller needs."""


def epoch_name(epoch: int) -> str:
    return f"epoch_{epoch}.pth"


def iter_name(iters: int) -> str:
    return f"iter_{iters}.pth"


def _numbered(work_dir: os.PathLike[str] | str, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    found = []
    for path in Path(work_dir).glob("*.pth"):
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def epoch_checkpoints(work_dir: os.PathLike[str] | str) -> list[tuple[int, Path]]:
    """`epoch_N.pth` files of a run, oldest first."""
    return _numbered(work_dir, _EPOCH_RE)


def iter_checkpoints(work_dir: os.PathLike[str] | str) -> list[tuple[int, Path]]:
    """`iter_N.pth` files of a run, oldest first."""
    return _numbered(work_dir, _ITER_RE)


def check_plain(value: Any, where: str = "meta") -> None:
    """Raise TypeError unless `value` is built from None/bool/int/float/str/list/tuple/dict/Tensor.

    These are the types the `weights_only` unpickler accepts; anything else would make the
    checkpoint unloadable without trusting arbitrary code.
    """
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}, not str/int")
            check_plain(item, f"{where}.{key}")
        return
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__name__}, not a plain type")


def to_plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples-of-numpy to plain Python values (recursively)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as weights_only-safe values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states only when CUDA is in use)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state((npst["bit_generator"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda_states])


def model_state_dict(model: torch.nn.Module) -> OrderedDict:
    """CPU copy of the model's weights, unwrapping (MM)DataParallel; never teacher weights.

    The KD detector keeps its teacher outside the module tree, so the teacher is not in the
    state_dict by construction; the key filter is a second line of defence.
    """
    module = model.module if hasattr(model, "module") else model
    state = module.state_dict()
    out = OrderedDict((k, v.detach().cpu()) for k, v in state.items() if not k.startswith("teacher_model."))
    return out


def save_checkpoint(path: os.PathLike[str] | str, state_dict: Mapping[str, torch.Tensor], meta: dict[str, Any],
                    optimizer_state: Mapping[str, Any] | None = None) -> Path:
    """Write {state_dict, optimizer, meta} to `path` atomically (temp file, fsync, rename)."""
    check_plain(meta)
    payload: dict[str, Any] = {"meta": dict(meta, format=FORMAT_VERSION), "state_dict": state_dict}
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        faults.fire("save")  # the tests' "killed while saving": the file is complete, not yet renamed
    return path


def publish_latest(source: os.PathLike[str] | str, work_dir: os.PathLike[str] | str) -> Path:
    """Make `latest.pth` a real file with the bytes of `source` (hard link, else copy), atomically."""
    latest = Path(work_dir) / LATEST
    with atomic_path(latest) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
    return latest


def load_checkpoint(path: os.PathLike[str] | str, what: str = "checkpoint", trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint on CPU, weights only unless `trust` (rotld_cli.checkpoints' loader); one-line errors."""
    from rotld_cli.checkpoints import load_checkpoint_file

    path = Path(path)
    try:
        ckpt = load_checkpoint_file(path, trust=trust)
    except RotldError as exc:
        raise CheckpointError(f"{what}: {exc}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{what} {path}: not a checkpoint (a {type(ckpt).__name__}, expected a dict)")
    if "state_dict" not in ckpt:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return {"state_dict": ckpt, "meta": {}}
        raise CheckpointError(f"{what} {path}: no 'state_dict' in the file")
    ckpt.setdefault("meta", {})
    return ckpt


def prune_epochs(work_dir: os.PathLike[str] | str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` epoch checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return []
    return _unlink([path for _, path in epoch_checkpoints(work_dir)[:-keep]])


def prune_iters(work_dir: os.PathLike[str] | str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` iteration checkpoints (keep 0: all of them)."""
    found = iter_checkpoints(work_dir)
    return _unlink([path for _, path in found[: max(0, len(found) - keep)]])


def _unlink(paths: list[Path]) -> list[Path]:
    for path in paths:
        path.unlink(missing_ok=True)
    return paths


def remove_stale_temps(work_dir: os.PathLike[str] | str) -> list[Path]:
    """Temporary checkpoint files a killed save left behind (only names our atomic writes use)."""
    return _unlink([path for path in Path(work_dir).glob(".*.pth") if _TEMP_RE.match(path.name)])


def verify_complete(path: os.PathLike[str] | str) -> None:
    """CheckpointError unless `path` is a whole zip archive whose every record matches its CRC-32.

    `torch.load` reads a file with a changed byte without complaint (it does not check the
    CRCs torch.save wrote); zipfile's `testzip` reads every record and compares.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt ({exc})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt (record {bad} does not match its CRC-32)")


def _peek_meta(path: Path, trust: bool) -> dict[str, Any]:
    """A checkpoint's meta without reading its tensors (memory-mapped)."""
    from rotld_cli.checkpoints import torch_load

    try:
        loaded = torch_load(torch.load, path, path, map_location="cpu", mmap=True, trust=trust)
    except RotldError as exc:
        raise CheckpointError(str(exc)) from None
    meta = loaded.get("meta") if isinstance(loaded, dict) else None
    if not isinstance(meta, dict) or "iter" not in meta:
        raise CheckpointError(f"{path}: not a rotld training checkpoint (no iteration in its meta)")
    return meta


def resume_candidates(work_dir: os.PathLike[str] | str) -> list[Path]:
    """latest.pth, iter_N.pth and epoch_N.pth of a run; a file hard-linked under two names once."""
    work_dir = Path(work_dir)
    named = [path for _, path in iter_checkpoints(work_dir) + epoch_checkpoints(work_dir)]
    latest = work_dir / LATEST
    out: dict[tuple[int, int], Path] = {}
    for path in [*named, latest]:
        try:
            stat = path.stat()
        except OSError:
            continue
        out.setdefault((stat.st_dev, stat.st_ino), path)
    return list(out.values())


def find_resumable(work_dir: os.PathLike[str] | str, trust: bool = False,
                   warn: Callable[[str], None] = log.warning) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint of a run and its contents; `warn` names each one skipped.

    Newest: most iterations done; at equal counts an epoch checkpoint (its epoch-end work is done)
    before an iteration one. None when there is no complete checkpoint.
    """
    ranked = []
    for path in resume_candidates(work_dir):
        try:
            meta = _peek_meta(path, trust)
        except CheckpointError as exc:
            warn(f"--resume: skipping {exc}")
            continue
        ranked.append(((int(meta["iter"]), meta.get("kind", "epoch") == "epoch"), path))
    for _, path in sorted(ranked, key=lambda item: item[0], reverse=True):
        try:
            verify_complete(path)
            return path, load_checkpoint(path, what="--resume", trust=trust)
        except CheckpointError as exc:
            warn(f"--resume: skipping {str(exc).removeprefix('--resume: ')}")
    return None


def stored_recipe(meta: dict[str, Any], source: os.PathLike[str] | str):
    """The resolved recipe a rotld checkpoint carries in `meta['recipe']`, as a Recipe (None when absent).

    Recipes load from files, so the text goes through a temporary one; the result names the
    checkpoint's recipe (`meta['recipe_name']`) and no longer points at that file.
    """
    from rotld_cli.recipes import load_recipe

    text = meta.get("recipe")
    if not isinstance(text, str):
        return None
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="rotld-recipe-") as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            recipe = load_recipe(path)
        except RotldError as exc:
            raise CheckpointError(f"{source}: the recipe stored in the checkpoint does not load ({exc})") from None
    recipe.source, recipe.files = None, []
    recipe.name = meta.get("recipe_name") or f"{source.name} recipe"
    return recipe
