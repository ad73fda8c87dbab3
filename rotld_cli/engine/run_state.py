"""What a checkpoint holds besides weights and optimizer so that a run continues exactly, and the
checks that refuse a resume which could not.

The state: the place in the data order (epoch, steps done in it: `engine.data_order` turns these
back into the same batches), every process's random generators, the hooks' own state (progress
accumulators, the logs' length, validation results: any hook with `state_dict`/`load_state_dict`),
the processes and images per process, and a fingerprint of the training patches.

A resume is refused, in one line naming the difference, when the recipe changed in a key that
shapes training, the total batch changed, `--seed`/`--amp` differ, or the patches differ. Keys that
only decide what is written or evaluated (intervals, validation data, inference settings, loader
workers, where the data lives) may change. Running on a different number of processes is allowed
when the total batch stays the same: the steps then hold the same images, with a note that the
result is not bit-identical (losses are normalised and BatchNorm statistics kept per process).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rotld_cli.engine.data_order import describe_data_change
from rotld_cli.errors import RotldError, UsageError

# Recipe keys a resumed run may change: they never alter the weights' trajectory (validation runs
# under saved-and-restored RNG states; the data are checked by fingerprint instead of path; the step
# lr schedule does not depend on the number of epochs, so a run extended to more epochs continues as
# one started with them would).
RESUME_FREE_KEYS = (
    "description",
    "schedule.epochs",
    "data.root",
    "data.val",
    "data.test",
    "data.workers_per_gpu",
    "model.test",
    "runtime.eval_interval",
    "runtime.checkpoint_interval",
    "runtime.log_interval",
    "runtime.checkpoint_every",
    "runtime.checkpoint_keep",
    "teacher.checkpoint",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return {key.rstrip("."): value for key, value in out.items()}


def _is_free(key: str, free: tuple[str, ...]) -> bool:
    return any(key == f or key.startswith(f + ".") for f in free)


def _show(value: Any) -> str:
    return "unset" if value is _UNSET else json.dumps(value)


_UNSET = object()


def recipe_difference(before: str, now: str, free: tuple[str, ...] = RESUME_FREE_KEYS) -> str | None:
    """The first key (in recipe order) whose value differs between two resolved recipes' YAML, as text."""
    old, new = _flatten(yaml.safe_load(before) or {}), _flatten(yaml.safe_load(now) or {})
    for key in [*new, *(k for k in old if k not in new)]:
        if _is_free(key, free):
            continue
        was, is_now = old.get(key, _UNSET), new.get(key, _UNSET)
        if was != is_now:
            return f"{key} is {_show(is_now)} now, was {_show(was)}"
    return None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('ss') else 's'}"


def check_world(meta: Mapping[str, Any], processes: int, samples_per_gpu: int, source: Path) -> str | None:
    """Refuse another total batch; a note (to print) when only the split over processes changed."""
    world = meta.get("world")
    if not isinstance(world, Mapping):
        return None
    was_procs, was_spg = int(world["processes"]), int(world["samples_per_gpu"])
    was_total, total = was_procs * was_spg, processes * samples_per_gpu
    if was_total != total:
        hint = f"resume with {_plural(was_procs, 'process')} and data.samples_per_gpu={was_spg}"
        if was_total % processes == 0:
            hint += f", or keep the total batch with --set data.samples_per_gpu={was_total // processes}"
        raise UsageError(
            f"--resume: {source.name} was trained with a total batch of {was_total} ({_plural(was_procs, 'process')}"
            f" x {was_spg}), this run has {total} ({_plural(processes, 'process')} x {samples_per_gpu}): its steps "
            f"would hold other images; {hint}"
        )
    if was_procs == processes:
        return None
    return (
        f"--resume: {_plural(processes, 'process')} x {samples_per_gpu} images instead of {was_procs} x {was_spg}: "
        "the same images in the same steps (the total batch is kept), but each process normalises its losses "
        "and keeps BatchNorm statistics over its own images, so the weights will not be bit-identical to an "
        "uninterrupted run"
    )


def check_resume(
    meta: Mapping[str, Any],
    *,
    recipe_yaml: str,
    seed: int | None,
    amp: bool,
    processes: int,
    samples_per_gpu: int,
    source: Path,
) -> str | None:
    """The checks that need no data: world, recipe, seed, amp. Returns a note to print, or None."""
    if "epoch" not in meta or "rng" not in meta:
        raise RotldError(f"--resume: {source} was not written by rotld's trainer (no epoch/RNG state in its meta)")
    note = check_world(meta, processes, samples_per_gpu, source)
    free = RESUME_FREE_KEYS + (("data.samples_per_gpu",) if "world" in meta else ())
    if isinstance(meta.get("recipe"), str):
        difference = recipe_difference(meta["recipe"], recipe_yaml, free)
        if difference is not None:
            raise UsageError(
                f"--resume: {source.name} was trained with another recipe: {difference}; put it back to continue "
                "this run, or start a new one in another --work-dir"
            )
    if seed is not None and "seed" in meta and int(seed) != int(meta["seed"]):
        raise UsageError(
            f"--seed {seed}: {source.name} was trained with seed {meta['seed']} (the data order and "
            "augmentations follow it); drop --seed to resume"
        )
    if "amp" in meta and bool(meta["amp"]) != bool(amp):
        how = "with" if meta["amp"] else "without"
        raise UsageError(f"--amp: {source.name} was trained {how} --amp; resume {how} it")
    return note


def check_data(meta: Mapping[str, Any], fingerprint: Mapping[str, Any], source: Path) -> None:
    """Refuse other training patches than the checkpoint's, naming what changed."""
    before = meta.get("data")
    if not isinstance(before, Mapping):
        return
    change = describe_data_change(before, fingerprint)
    if change is not None:
        raise RotldError(
            f"--resume: the training patches differ from those {source.name} was trained on ({change}); "
            "resume on the same patches, or start a new run in another --work-dir"
        )


# --------------------------------------------------------------------------------------------
# The hooks' state and each rank's random generators


def hook_states(runner: Any) -> dict[str, Any]:
    """`state_dict()` of every hook that has one, by class name."""
    return {
        type(hook).__name__: hook.state_dict() for hook in runner.hooks if callable(getattr(hook, "state_dict", None))
    }


def restore_hook_states(runner: Any, states: Mapping[str, Any]) -> None:
    for hook in runner.hooks:
        state = states.get(type(hook).__name__)
        if state is not None and callable(getattr(hook, "load_state_dict", None)):
            hook.load_state_dict(state)


def rng_for_rank(meta: Mapping[str, Any], rank: int, world_size: int) -> Mapping[str, Any]:
    """This rank's saved generators; rank 0's when the checkpoint has none per rank or another world size."""
    per_rank = meta.get("rng_ranks")
    if isinstance(per_rank, list) and len(per_rank) == world_size:
        return per_rank[rank]
    return meta["rng"]
