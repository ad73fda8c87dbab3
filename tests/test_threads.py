"""The CPU-share governor: torch's threads follow the cores other processes leave free.

The /proc readings are replaced by a scripted machine (busy ticks of all CPUs, this process's own
ticks, a clock), so each case states exactly how much CPU the neighbours used.
"""

from __future__ import annotations

import pytest

from rotld_cli import threads


class ScriptedMachine:
    """Two cores; `advance(seconds, own_cores, other_cores)` books the CPU each side used."""

    def __init__(self, monkeypatch) -> None:
        self.now, self.busy, self.own = 0.0, 10_000, 3_000
        monkeypatch.setattr(threads, "_busy_ticks", lambda: self.busy)
        monkeypatch.setattr(threads, "_own_ticks", lambda: self.own)
        monkeypatch.setattr(threads, "usable_cores", lambda: 2)
        monkeypatch.setattr(threads, "CLOCK_TICKS", 100)

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.now += seconds
        self.own += round(own_cores * seconds * 100)
        self.busy += round((own_cores + other_cores) * seconds * 100)


def test_threads_follow_the_free_cores(monkeypatch):
    machine = ScriptedMachine(monkeypatch)
    applied = []
    governor = threads.CpuShareGovernor(applied.append, max_threads=2, interval_s=10.0, clock=machine.clock)
    machine.advance(5, own_cores=2.0, other_cores=0.0)
    assert governor.poll() is None  # before the interval: nothing measured, nothing changed
    machine.advance(5, own_cores=2.0, other_cores=0.0)
    assert governor.poll() is None  # alone: it keeps its 2 threads
    machine.advance(10, own_cores=1.33, other_cores=0.67)  # one busy neighbour, sharing with our 2 threads
    assert governor.poll() == 1 and applied == [1]
    machine.advance(10, own_cores=1.0, other_cores=1.0)  # it keeps its core: we stay at one thread
    assert governor.poll() is None and governor.threads == 1
    machine.advance(10, own_cores=1.0, other_cores=0.05)  # it is gone (a little background noise)
    assert governor.poll() == 2 and applied == [1, 2]


def test_never_below_one_nor_above_the_start(monkeypatch):
    machine = ScriptedMachine(monkeypatch)
    applied = []
    governor = threads.CpuShareGovernor(applied.append, max_threads=1, interval_s=1.0, clock=machine.clock)
    machine.advance(1, own_cores=1.0, other_cores=0.0)
    assert governor.poll() is None  # 2 cores free, but it started with 1 thread (e.g. --nproc 2)
    assert governor.threads_for(others=5.0) == 1
    governor.max_threads = 8
    assert governor.threads_for(others=0.0) == 2  # never more than the usable cores
    assert governor.threads_for(others=0.4) == 2 and governor.threads_for(others=0.6) == 1  # nearest core
    assert applied == []


def test_without_proc_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(threads, "_busy_ticks", lambda: None)
    governor = threads.CpuShareGovernor(lambda n: pytest.fail("changed"), max_threads=2, interval_s=0.0)
    assert governor.poll() is None


@pytest.mark.parametrize(("environ", "wanted"), [
    ({}, True),
    ({"OMP_NUM_THREADS": "2"}, False),  # the user fixed the count: a reproducible run
    ({"OMP_WAIT_POLICY": "passive"}, False),  # the test suite, or a user who shares the cores by hand
    ({"OMP_WAIT_POLICY": "ACTIVE"}, True),
])
def test_a_user_setting_turns_it_off(environ, wanted):
    assert threads.governor_wanted(environ) is wanted


def test_the_proc_readers_on_this_machine():
    """On Linux both readers return tick counts that grow with the work done."""
    busy, own = threads._busy_ticks(), threads._own_ticks()
    if busy is None or own is None:
        pytest.skip("no /proc/stat or /proc/self/stat on this system")
    total = sum(i * i for i in range(3_000_000))  # ~0.2 s of this process's CPU
    assert total > 0
    assert threads._own_ticks() > own and threads._busy_ticks() >= busy + (threads._own_ticks() - own) // 2
