"""The training data order (rotld_cli/engine/data_order.py): a function of (seed, epoch, step), skippable, the
same images per step for any split of the total batch over processes, augmentations seeded per image."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rotld_cli.engine.data_order import (  # noqa: E402
    SeededSamples,
    StepSampler,
    describe_data_change,
    sample_seed,
)

# 7 images in two aspect-ratio groups (mmdet's `flag`): 4 wide, 3 tall, interleaved
FLAGS = np.array([0, 1, 0, 1, 0, 0, 1])


def steps_of(sampler: StepSampler) -> list[list[tuple[int, int]]]:
    """The sampler's (index, seed) items, one list per step."""
    items = list(sampler)
    size = sampler.samples_per_gpu
    return [items[i : i + size] for i in range(0, len(items), size)]


def test_an_epoch_is_mmdets_group_shuffle_cut_into_steps_of_the_total_batch():
    """Same (seed, epoch): same order. Each step is one group. The images (with the repeats that pad each
    group to a multiple of the total batch) are those mmdet's DistributedGroupSampler gives all ranks."""
    from mmdet.datasets.samplers import DistributedGroupSampler

    class Flags:
        flag = FLAGS

    for epoch in (0, 1):
        sampler = StepSampler(FLAGS, samples_per_gpu=1, world_size=2, rank=0, seed=7)
        steps = sampler.epoch_steps(epoch)
        assert steps.shape == (4, 2) and sampler.steps_per_epoch == 4  # ceil(4/2) + ceil(3/2)
        assert np.array_equal(steps, StepSampler(FLAGS, 1, 2, 1, seed=7).epoch_steps(epoch))
        assert all(len({FLAGS[i] for i in step}) == 1 for step in steps)
        mmdet = []
        for rank in (0, 1):
            reference = DistributedGroupSampler(Flags(), samples_per_gpu=1, num_replicas=2, rank=rank, seed=7)
            reference.set_epoch(epoch)
            mmdet += list(reference)
        assert Counter(steps.ravel().tolist()) == Counter(mmdet)
    assert not np.array_equal(sampler.epoch_steps(0), sampler.epoch_steps(1))


def test_each_rank_takes_its_slots_of_every_step():
    ranks = [StepSampler(FLAGS, samples_per_gpu=1, world_size=2, rank=r, seed=3) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    got = [steps_of(sampler) for sampler in ranks]
    expected = ranks[0].epoch_steps(2)
    assert [[i for i, _ in step] for step in got[0]] == [[row[0]] for row in expected.tolist()]
    assert [[i for i, _ in step] for step in got[1]] == [[row[1]] for row in expected.tolist()]
    assert len(ranks[0]) == 4  # per rank: 4 steps x 1 image


def test_a_resumed_epoch_skips_the_steps_done_and_the_next_starts_at_zero():
    sampler = StepSampler(FLAGS, samples_per_gpu=2, seed=11)
    sampler.set_epoch(5)
    whole = steps_of(sampler)
    sampler.set_start(3)
    assert steps_of(sampler) == whole[3:]
    assert steps_of(sampler) == whole  # set_start applies to one pass
    sampler.set_start(len(whole))
    assert steps_of(sampler) == []  # resumed after the last step: only the epoch's end is left
    with pytest.raises(ValueError, match=r"outside the epoch's 0\.\.4"):
        sampler.set_start(5)


def test_the_same_total_batch_over_other_processes_sees_the_same_images_and_seeds():
    one = StepSampler(FLAGS, samples_per_gpu=2, world_size=1, rank=0, seed=5)
    two = [StepSampler(FLAGS, samples_per_gpu=1, world_size=2, rank=r, seed=5) for r in (0, 1)]
    for sampler in (one, *two):
        sampler.set_epoch(4)
    merged = [a + b for a, b in zip(steps_of(two[0]), steps_of(two[1]))]
    assert merged == steps_of(one)
    seeds = [seed for step in merged for _, seed in step]
    assert len(set(seeds)) == len(seeds)
    assert seeds[0] == sample_seed(5, 4, 0, 0) and seeds[1] == sample_seed(5, 4, 0, 1)


class Augmenting:
    """A dataset whose samples are the random draws its 'pipeline' makes (as flips and crops do)."""

    flag = FLAGS

    def __len__(self):
        return len(FLAGS)

    def __getitem__(self, index):
        return torch.tensor([index, np.random.rand(), random.random(), torch.rand(1).item()], dtype=torch.float64)


def test_augmentations_follow_the_sample_and_leave_the_callers_generators_alone():
    samples = SeededSamples(Augmenting())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    first = samples[(3, 99)]
    assert torch.equal(first, samples[(3, 99)]) and not torch.equal(first, samples[(3, 100)])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == before
    assert samples.flag is FLAGS  # the wrapped dataset's attributes


def test_loader_workers_do_not_change_the_batches():
    """The same batches, bit for bit, with 0 or 2 loader worker processes (mmdet's collate, as in training)."""
    from rotld_cli.engine.data_order import build_train_loader

    def batches(workers: int) -> list[torch.Tensor]:
        loader = build_train_loader(Augmenting(), samples_per_gpu=2, workers_per_gpu=workers, seed=9)
        loader.sampler.set_epoch(1)
        return [batch for batch in loader]

    plain, workers = batches(0), batches(2)
    assert len(plain) == 4
    assert all(torch.equal(a, b) for a, b in zip(plain, workers, strict=True))


def test_a_data_change_is_named():
    before = {"sha256": "a", "digests": {"P1": "x", "P2": "y", "P3": "z"}}
    now = {"sha256": "b", "digests": {"P1": "x", "P2": "w", "P4": "v", "P5": "u"}}
    assert (
        describe_data_change(before, now)
        == "2 patches added (e.g. P4), 1 patch removed (e.g. P3), 1 patch changed (e.g. P2)"
    )
    assert describe_data_change(before, {**before, "sha256": "c"}) == "the same patches in another order"
    assert describe_data_change(before, dict(before)) is None
