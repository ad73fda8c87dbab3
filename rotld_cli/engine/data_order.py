"""The training data order as a function of (seed, epoch, step): what makes mid-epoch resume exact.

Why not mmdet's samplers as they are: `GroupSampler` shuffles with numpy's global generator and
the pipeline's augmentations draw from the global generators of whichever process runs them (the
main process, or a loader worker seeded from a per-epoch base seed). After a kill in the middle of
an epoch neither the permutation nor the workers' generator positions can be recovered without
re-running the pipeline over every batch already consumed. Here both are pure functions of
numbers the checkpoint holds:

- `StepSampler` builds an epoch as mmdet's `DistributedGroupSampler` does (a `torch.Generator`
  seeded with `seed + epoch`; each aspect-ratio group shuffled and padded by repetition; the
  batches shuffled), but cuts it into *steps of the total batch* (all processes together) and gives
  process r the slots `r*samples_per_gpu ...` of every step. Resuming at step s yields the epoch
  from step s on: the batches already trained on are skipped without being loaded. A world size
  that keeps the total batch (2 processes x 1 image, 1 x 2) sees the same images in the same steps.
- `SeededSamples` runs the pipeline of the sample in slot k of step s under generators seeded from
  (seed, epoch, s, k), then puts the caller's generators back: augmentations do not depend on the
  number of loader workers, on which worker loads a sample, or on where a run was resumed, and the
  training process's own random streams are left untouched by data loading.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def sample_seed(seed: int, epoch: int, step: int, slot: int) -> int:
    """The pipeline seed of one sample: a hash of its place in the run (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(step), int(slot)]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's CPU generator seeded with `seed` inside; the previous states after.

    Only the CPU generator of torch is reseeded (`torch.manual_seed` would reseed the CUDA ones too).
    """
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class StepSampler(Sampler):
    """Yields `(dataset index, sample seed)` for this process's slots of each step of an epoch.

    `set_epoch(e)` chooses the epoch's order, `set_start(s)` skips its first s steps (once: the next
    pass starts at step 0 again). `len()` is always a whole epoch, so iteration counts, the lr
    schedule and the progress bar are those of the uninterrupted run.
    """

    def __init__(self, flags: Any, samples_per_gpu: int, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.flags = np.asarray(flags, dtype=np.int64)
        self.samples_per_gpu = int(samples_per_gpu)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.total_batch = self.samples_per_gpu * self.world_size
        self.group_sizes = np.bincount(self.flags) if len(self.flags) else np.zeros(0, np.int64)
        self.steps_per_epoch = sum(math.ceil(int(n) / self.total_batch) for n in self.group_sizes if n)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, step: int) -> None:
        if not 0 <= step <= self.steps_per_epoch:
            raise ValueError(f"step {step} is outside the epoch's 0..{self.steps_per_epoch}")
        self.start = int(step)

    def epoch_steps(self, epoch: int) -> np.ndarray:
        """(steps, total batch) dataset indices of one epoch, identical on every process."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + int(epoch))
        blocks = []
        for group, size in enumerate(self.group_sizes):
            if size == 0:
                continue
            members = np.flatnonzero(self.flags == group)
            members = members[torch.randperm(int(size), generator=generator).numpy()]
            padded = math.ceil(int(size) / self.total_batch) * self.total_batch
            blocks.append(np.resize(members, padded).reshape(-1, self.total_batch))  # np.resize repeats
        steps = np.concatenate(blocks) if blocks else np.zeros((0, self.total_batch), np.int64)
        return steps[torch.randperm(len(steps), generator=generator).numpy()]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.start = self.start, 0
        steps = self.epoch_steps(self.epoch)
        first = self.rank * self.samples_per_gpu
        for step in range(start, len(steps)):
            for slot in range(first, first + self.samples_per_gpu):
                yield int(steps[step, slot]), sample_seed(self.seed, self.epoch, step, slot)

    def __len__(self) -> int:
        return self.steps_per_epoch * self.samples_per_gpu


class SeededSamples(Dataset):
    """A dataset read with `(index, seed)` keys: each sample's pipeline runs under its own seed."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded_rngs(seed):
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:  # flag, CLASSES, ...: the wrapped dataset's
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def worker_init(worker_id: int) -> None:
    """Loader workers ignore the stop signals: the training process saves and stops them itself.

    Slurm and a terminal's Ctrl-C signal every process of the job or group; a worker killed by
    SIGUSR1 (its default action) would fail the batch the training process is waiting for.
    """
    import signal

    from rotld_cli.engine.preemption import STOP_SIGNALS

    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def build_train_loader(
    dataset: Any, samples_per_gpu: int, workers_per_gpu: int, seed: int, world_size: int = 1, rank: int = 0
) -> DataLoader:
    """This process's training loader (mmdet's `build_dataloader` settings, with the sampler above)."""
    from mmcv.parallel import collate

    sampler = StepSampler(dataset.flag, samples_per_gpu, world_size, rank, seed)
    return DataLoader(
        SeededSamples(dataset),
        batch_size=samples_per_gpu,
        sampler=sampler,
        num_workers=workers_per_gpu,
        collate_fn=partial(collate, samples_per_gpu=samples_per_gpu),
        pin_memory=False,
        worker_init_fn=worker_init,
        generator=torch.Generator().manual_seed(int(seed)),  # worker base seeds: never the global generator
        persistent_workers=False,
    )


# --------------------------------------------------------------------------------------------
# What the data is: a fingerprint to refuse a resume on other patches


def data_fingerprint(dataset: Any) -> dict[str, Any]:
    """Per patch (in dataset order) a digest of its image file's size and its annotations, and one of all.

    Cheap (a stat per image, no decoding) yet it changes when a patch is added, removed, relabelled,
    re-cut or reordered: any of these changes which image each step of the data order loads.
    """
    digests: dict[str, str] = {}
    prefix = Path(getattr(dataset, "img_prefix", "") or "")
    for info in dataset.data_infos:
        name = str(info["filename"])
        digest = hashlib.sha256(name.encode())
        try:
            digest.update(str(os.path.getsize(prefix / name)).encode())
        except OSError:
            digest.update(b"missing")
        ann = info.get("ann") or {}
        for key in sorted(ann):
            value = np.ascontiguousarray(ann[key])
            digest.update(f"{key}{value.dtype}{value.shape}".encode())
            digest.update(value.tobytes())
        digests[Path(name).stem] = digest.hexdigest()[:16]
    whole = hashlib.sha256(json.dumps(list(digests.items())).encode()).hexdigest()
    return {"patches": len(digests), "sha256": whole, "digests": digests}


def describe_data_change(before: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """None when the fingerprints agree, else what changed, with an example patch of each kind."""
    if before.get("sha256") == now.get("sha256"):
        return None
    old, new = dict(before.get("digests") or {}), dict(now.get("digests") or {})
    parts = []
    for label, names in (
        ("added", sorted(new.keys() - old.keys())),
        ("removed", sorted(old.keys() - new.keys())),
        ("changed", sorted(k for k in old.keys() & new.keys() if old[k] != new[k])),
    ):
        if names:
            parts.append(f"{len(names)} patch{'es' if len(names) > 1 else ''} {label} (e.g. {names[0]})")
    if not parts:
        parts.append("the same patches in another order")
    return ", ".join(parts)
