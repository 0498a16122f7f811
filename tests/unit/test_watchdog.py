"""The parallel engine's watchdog and trace logic, in-process, with recording fakes.

No process is spawned and nothing sleeps: the actor table is a numpy array the test
writes, lock owners are a dict, psutil samples are scripted, and the clock is a number
the test moves (trio's MockClock, xdist's MockNode). The real-process tier is
``tests/stress/test_parallel.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from pagerace.core.machine.layout import (
    A_PROGRESS,
    A_STATE,
    A_STEPS,
    A_WAIT_LOCK,
    A_WAIT_MASK,
    A_WAIT_WORD,
    ACTOR_BLOCKED,
    ACTOR_IDLE,
    ACTOR_RUNNING,
    ACTOR_WORDS,
)
from pagerace.harness.parallel._engine import _merge_stats, assign_actors
from pagerace.harness.parallel.shm import W_COUNT, BlockLayout
from pagerace.harness.parallel.trace import RingReader, decode, encode, merge, replay_ops
from pagerace.harness.parallel.watchdog import (
    ProcSample,
    Watchdog,
    WatchdogConfig,
    classify_stuck,
    find_cycles,
)

PAGE_A, PAGE_B, PTL = 100, 108, 500


@dataclass
class Fakes:
    """Everything the watchdog reads, as plain data, plus a record of what it asked."""

    n: int
    table: np.ndarray = field(init=False)
    owners: dict[int, int] = field(default_factory=dict)  # lock word → owner
    exitcodes: dict[int, int | None] = field(default_factory=dict)
    samples: dict[int, ProcSample] = field(default_factory=dict)
    steps: dict[int, int] = field(default_factory=dict)
    now: float = 0.0
    asked_owner: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.table = np.zeros((self.n, ACTOR_WORDS), dtype=np.int64)

    def block(self, aid: int, word: int, mask: int = 1) -> None:
        self.table[aid, A_STATE] = ACTOR_BLOCKED
        self.table[aid, A_WAIT_WORD] = word
        self.table[aid, A_WAIT_MASK] = mask
        self.table[aid, A_WAIT_LOCK] = word

    def run(self, aid: int) -> None:
        self.table[aid, A_STATE] = ACTOR_RUNNING
        self.table[aid, A_WAIT_MASK] = 0

    def lock_owner(self, word: int) -> int:
        self.asked_owner.append(word)
        return self.owners.get(word, -1)

    def sample(self, wid: int) -> ProcSample | None:
        self.sampled.append(wid)
        return self.samples.get(wid)

    def watchdog(self, workers: list[list[int]], **cfg: float) -> Watchdog:
        base = dict(sample_interval=0.5, livelock_seconds=1.0, livelock_steps=100, stuck_seconds=2.0)
        base.update(cfg)
        return Watchdog(
            WatchdogConfig(**base),  # type: ignore[arg-type]
            workers,
            read_actors=lambda: self.table.copy(),
            lock_owner=self.lock_owner,
            lock_held=lambda word, mask: word in self.owners,
            exitcode=lambda wid: self.exitcodes.get(wid),
            sample=self.sample,
            worker_steps=lambda wid: self.steps.get(wid, 0),
            clock=lambda: self.now,
            names=[f"cpu{i}" for i in range(self.n)],
        )


# -- cycle finding ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("waits", "cycles"),
    [
        ({}, []),
        ({0: 1}, []),  # a chain: 1 is not waiting
        ({0: 1, 1: 0}, [(0, 1)]),
        ({1: 0, 0: 1}, [(0, 1)]),  # insertion order does not matter
        ({2: 2}, [(2,)]),  # waits for a lock it holds itself
        ({0: 1, 1: 2, 2: 1}, [(1, 2)]),  # a tail into a cycle
        ({0: 1, 1: 0, 2: 3, 3: 2, 4: 0}, [(0, 1), (2, 3)]),
        ({3: 1, 1: 2, 2: 3}, [(1, 2, 3)]),  # rotated to the smallest id
    ],
)
def test_find_cycles(waits: dict[int, int], cycles: list[tuple[int, ...]]) -> None:
    assert find_cycles(waits) == cycles


# -- deadlock -----------------------------------------------------------------------------
def _abba(f: Fakes) -> None:
    f.owners = {PAGE_A: 0, PAGE_B: 1}
    f.block(0, PAGE_B)
    f.block(1, PAGE_A)


def test_cycle_that_persists_over_two_polls_is_a_deadlock() -> None:
    f = Fakes(3)
    wd = f.watchdog([[0, 2], [1]])
    _abba(f)
    assert wd.poll() is None  # seen once: could be a half-written picture
    f.now += 0.05
    v = wd.poll()
    assert v is not None and v.kind == "deadlock"
    assert v.actors == (0, 1)
    assert v.locks == (PAGE_B, PAGE_A)
    assert v.workers == (0, 1)
    assert "cpu0 → cpu1 → cpu0" in v.message
    assert v.details["waits"] == {0: (PAGE_B, 1), 1: (PAGE_A, 0)}
    assert PAGE_A in f.asked_owner and PAGE_B in f.asked_owner


def test_transient_cycle_is_not_a_deadlock() -> None:
    f = Fakes(2)
    wd = f.watchdog([[0], [1]])
    _abba(f)
    assert wd.poll() is None
    f.run(1)  # actor 1 got its lock after all
    del f.owners[PAGE_A]
    f.now += 0.05
    assert wd.poll() is None
    _abba(f)
    f.now += 0.05
    assert wd.poll() is None  # a new cycle starts counting again


def test_cycle_whose_actors_progressed_between_polls_is_not_a_deadlock() -> None:
    f = Fakes(2)
    wd = f.watchdog([[0], [1]])
    _abba(f)
    assert wd.poll() is None
    f.table[0, A_PROGRESS] += 1  # finished an operation in between and came back
    f.now += 0.05
    assert wd.poll() is None
    f.now += 0.05
    v = wd.poll()
    assert v is not None and v.kind == "deadlock"


def test_released_lock_is_no_edge() -> None:
    f = Fakes(2)
    wd = f.watchdog([[0, 1]])
    _abba(f)
    f.owners = {PAGE_B: 1}  # PAGE_A is free: actor 1 is about to wake
    assert wd.poll() is None
    f.now += 0.05
    assert wd.poll() is None


def test_self_deadlock_is_a_cycle_of_one() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]])
    f.owners = {PTL: 0}
    f.block(0, PTL, mask=-1)
    wd.poll()
    f.now += 0.05
    v = wd.poll()
    assert v is not None and v.kind == "deadlock" and v.actors == (0,)


# -- livelock -----------------------------------------------------------------------------
def test_actor_stepping_without_progress_is_a_livelock() -> None:
    f = Fakes(2)
    wd = f.watchdog([[0], [1]])
    f.run(0)
    f.run(1)
    assert wd.poll() is None
    for _ in range(5):
        f.now += 0.25
        f.table[0, A_STEPS] += 50
        f.table[1, A_STEPS] += 50
        f.table[1, A_PROGRESS] += 1  # actor 1 keeps finishing operations
        v = wd.poll()
        if v is not None:
            break
    assert v is not None and v.kind == "livelock"
    assert v.actors == (0,) and v.workers == (0,)
    assert v.details["steps"] >= 100 and v.details["seconds"] >= 1.0


def test_slow_but_few_steps_is_not_a_livelock() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]], stuck_seconds=100.0)
    f.run(0)
    f.samples[0] = ProcSample("running", 0.0, 1 << 20)
    wd.poll()
    for _ in range(10):
        f.now += 0.5
        f.table[0, A_STEPS] += 5  # 5 steps per half second: slow, not spinning
        assert wd.poll() is None


def test_idle_actor_is_not_a_livelock() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]], stuck_seconds=100.0)
    f.table[0, A_STATE] = ACTOR_IDLE
    wd.poll()
    for _ in range(10):
        f.now += 0.5
        f.table[0, A_STEPS] += 1000
        assert wd.poll() is None


# -- dead, stuck, runaway workers ---------------------------------------------------------
def test_killed_worker_is_named() -> None:
    f = Fakes(3)
    wd = f.watchdog([[0, 2], [1]])
    assert wd.poll() is None
    f.exitcodes[1] = -9
    v = wd.poll()
    assert v is not None and v.kind == "dead"
    assert v.workers == (1,) and v.actors == (1,)
    assert "worker 1" in v.message and "SIGKILL" in v.message and "cpu1" in v.message
    assert wd.state[1] == "dead"


def test_finished_worker_may_exit() -> None:
    f = Fakes(2)
    wd = f.watchdog([[0], [1]])
    wd.finish(0)
    f.exitcodes[0] = 0
    assert wd.poll() is None
    f.exitcodes[1] = 3
    v = wd.poll()
    assert v is not None and v.kind == "dead" and "exited with status 3" in v.message


@pytest.mark.parametrize(
    ("status", "cpu1", "all_blocked", "want"),
    [
        ("zombie", 0.0, False, "dead"),
        ("stopped", 0.0, False, "stopped"),
        ("running", 0.9, True, "blocked"),  # spinning on a lock: blocked, not livelocked
        ("running", 0.9, False, "livelock"),
        ("sleeping", 0.5, False, "livelock"),  # mostly sleeping, yet 50% CPU
        ("sleeping", 0.0, False, "blocked"),
        ("disk-sleep", 0.01, False, "blocked"),
    ],
)
def test_classify_stuck(status: str, cpu1: float, all_blocked: bool, want: str) -> None:
    prev = ProcSample("running", 0.0, 0)
    assert classify_stuck(prev, ProcSample(status, cpu1, 0), 1.0, all_blocked) == want


def _stuck_run(f: Fakes, wd: Watchdog, status: str, cpu_per_s: float) -> object:
    cpu = 0.0
    for _ in range(20):
        f.samples[0] = ProcSample(status, cpu, 50 << 20)
        v = wd.poll()
        if v is not None:
            return v
        f.now += 0.5
        cpu += cpu_per_s * 0.5
    return None


def test_sleeping_worker_without_steps_is_blocked() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]])
    f.block(0, PAGE_A)  # waits on a lock nobody holds any more in the table: no cycle
    v = _stuck_run(f, wd, "sleeping", 0.0)
    assert v is not None and v.kind == "blocked"  # type: ignore[attr-defined]
    assert v.details["seconds"] >= 2.0  # type: ignore[attr-defined]
    assert f.sampled  # psutil was consulted


def test_busy_worker_without_steps_or_lock_is_livelocked() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]])
    f.run(0)
    v = _stuck_run(f, wd, "running", 0.9)
    assert v is not None and v.kind == "livelock"  # type: ignore[attr-defined]


def test_stopped_worker() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]])
    f.run(0)
    v = _stuck_run(f, wd, "stopped", 0.0)
    assert v is not None and v.kind == "stopped"  # type: ignore[attr-defined]


def test_progressing_worker_is_never_stuck() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]])
    f.run(0)
    for i in range(20):
        f.samples[0] = ProcSample("running", i * 0.5, 50 << 20)
        f.steps[0] = i * 10
        f.table[0, A_PROGRESS] = i
        assert wd.poll() is None
        f.now += 0.5
    assert wd.state[0] == "ok"


def test_runaway_worker() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]], rss_limit=100 << 20)
    f.samples[0] = ProcSample("running", 0.0, 50 << 20)
    assert wd.poll() is None
    f.now += 0.5
    f.steps[0] = 10
    f.samples[0] = ProcSample("running", 0.5, 400 << 20)
    v = wd.poll()
    assert v is not None and v.kind == "runaway" and "350 MiB" in v.message


def test_samples_are_rate_limited() -> None:
    f = Fakes(1)
    wd = f.watchdog([[0]], sample_interval=0.5)
    f.samples[0] = ProcSample("running", 0.0, 1)
    for _ in range(10):
        wd.poll()
        f.now += 0.05
    assert len(f.sampled) == 1  # ten polls in 0.5 s, one psutil sample


# -- trace --------------------------------------------------------------------------------
def test_ring_reader_merges_by_ticket_and_survives_wraparound() -> None:
    lay = BlockLayout(model_words=4, workers=2, hw_words=2, ring_entries=8)
    arr = np.zeros(lay.words, dtype=np.int64)
    reader = RingReader(arr, lay)
    count = [0, 0]

    def log(wid: int, ticket: int, actor: int) -> None:
        arr[lay.ring(wid) + count[wid] % 8] = encode(ticket, actor)
        count[wid] += 1
        arr[lay.cw(wid, W_COUNT)] = count[wid]

    t = 0
    for rnd in range(3):  # 3 rounds of 6 + 6 entries: each ring wraps, drained in time
        for _ in range(6):
            log(rnd % 2, t, 0 + (rnd % 2))
            t += 1
            log(1 - rnd % 2, t, 1 - (rnd % 2))
            t += 1
        reader.drain()
    sched, gaps = merge(reader.entries())
    assert gaps == 0 and sum(reader.lost) == 0
    assert len(sched) == 36
    assert list(sched[:4]) == [0, 1, 0, 1] and list(sched[12:16]) == [1, 0, 1, 0]
    assert decode(encode(12345, 7)) == (12345, 7)


def test_ring_reader_counts_lapped_entries() -> None:
    lay = BlockLayout(model_words=0, workers=1, ring_entries=4)
    arr = np.zeros(lay.words, dtype=np.int64)
    reader = RingReader(arr, lay)
    for t in range(10):
        arr[lay.ring(0) + t % 4] = encode(t, 0)
    arr[lay.cw(0, W_COUNT)] = 10
    reader.drain()
    assert reader.lost == [6]
    sched, gaps = merge(reader.entries())
    assert len(sched) == 4 and gaps == 6  # tickets 6..9 kept, 0..5 missing


def test_replay_ops_repeats_and_cuts_each_list() -> None:
    ops = [[("read", 0, 1), ("write", 0, 2)], [("evict", 0)], []]
    assert replay_ops(ops, [3, 0, 5]) == [
        [("read", 0, 1), ("write", 0, 2), ("read", 0, 1)],
        [],
        [],
    ]


def test_assign_and_merge_stats() -> None:
    assert assign_actors(5, 2) == [(0, 2, 4), (1, 3)]
    big = 1 << 62
    a = {"s": [1, 0, 2, 1, 1, 10, 10, 10, 1, 5, 5, 5]}
    _merge_stats(a, {"s": [2, 1, 0, 0, 0, 0, big, 0, 2, 6, 1, 4], "t": [1] * 12})
    assert a["s"] == [3, 1, 2, 1, 1, 10, 10, 10, 3, 11, 1, 5]
    assert a["t"] == [1] * 12
