"""``check_all``'s clean path (``_proven_clean``: one decoding of the tables shared by
quick tests that let it skip a check that certainly passes) changes no verdict: over
the end states of real runs, clean and then corrupted word by word, ``check_all``
raises exactly what running every check in turn raises (kind, message, pages, details),
or passes when they all pass."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import (
    F_DATA,
    F_FLAGS,
    F_MAP,
    F_PIN,
    F_PRIV,
    F_REF,
    MMF_UNSTABLE,
    PTE_DIRTY,
    PTE_PFN_SHIFT,
    PTE_TYPE_MASK,
    S_DATA,
    S_USED,
    SHADOW_REAPED,
    SWAP_HAS_CACHE,
    Z_DEVICE,
    Z_DEVICE_PRIVATE,
    Z_FREE,
    PG_allocated,
    PG_dirty,
    PG_locked,
    PG_swapcache,
)
from pagerace.core.oracles import invariants
from pagerace.core.oracles.invariants import (
    CHECKS,
    _proven_clean,
    _proven_clean_arrays,
    check_all,
)
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload

# Workloads whose end states hold what the quick tests decode: device-private and
# coherent pages, swap entries and swap-cache pages, files, mirrors, reaped mms.
WORKLOADS = (
    "opposite-order",
    "default",
    "swap-vs-fault",
    "mirror-vs-reclaim",
    "pagecache-vs-compaction",
    "aon-coherent",
    "oom-vs-migrate",
    "exclusive-vs-reclaim",
    "fork-vs-pin",
)


def _each_in_turn(k: Kernel, final: bool = True) -> None:
    """check_all without its clean path."""
    for check in CHECKS:
        check(k)
    for extra in k.extra_checks:
        extra(k, final)


def _verdict(fn: Any, k: Kernel) -> tuple[Any, ...]:
    try:
        fn(k)
    except InvariantViolation as exc:
        f = exc.failure
        return ("violation", f.kind, f.message, f.pages, f.sites, f.details)
    except Exception as exc:  # a crash must be the same crash
        return ("error", repr(exc))
    return ("clean",)


def _corrupt(k: Kernel, r: random.Random) -> None:
    s = k.s
    nframes = s.frames.shape[0]
    what = r.randrange(12)
    if what == 10:  # a frame taken from its zone that nothing holds: a leak, counts agree
        free = [p for p in range(nframes) if not s.frames[p, F_FLAGS] & PG_allocated]
        if free:
            p = r.choice(free)
            s.frames[p, F_FLAGS] |= PG_allocated
            s.frames[p, F_REF] = r.choice([0, 1])
            s.zones[k.lay.zone_of(p), Z_FREE] -= 1
    elif what == 11:  # a mapped page put in the swap cache, its slot's count not taken
        held = [p for p in range(nframes) if s.frames[p, F_MAP] > 0]
        if held and k.geo.swap_slots:
            p = r.choice(held)
            s.frames[p, F_FLAGS] |= PG_swapcache | PG_dirty
            s.frames[p, F_REF] += 1
            s.frames[p, F_PRIV] = 1 + r.randrange(k.geo.swap_slots)
    elif what <= 2:
        p = r.randrange(nframes)
        field = r.choice([F_FLAGS, F_FLAGS, F_REF, F_MAP, F_PIN, F_DATA, F_PRIV])
        if field == F_FLAGS:
            bit = r.choice([PG_locked, PG_allocated, PG_swapcache, PG_dirty, 1 << 13,
                            Z_DEVICE, Z_DEVICE_PRIVATE])
            s.frames[p, F_FLAGS] ^= bit
        else:
            s.frames[p, field] += r.choice([-1, 1, 1024])
    elif what <= 4:
        mm = r.randrange(s.pte.shape[0])
        vpn = r.randrange(s.pte.shape[1])
        if r.random() < 0.2:
            s.pte[mm, vpn] ^= PTE_DIRTY
        else:
            t = r.randrange(PTE_TYPE_MASK + 1)
            pfn = r.choice([-1, nframes, nframes + 3, r.randrange(nframes), r.randrange(4)])
            s.pte[mm, vpn] = (pfn << PTE_PFN_SHIFT) | t
    elif what == 5:
        z = r.randrange(s.zones.shape[0])
        s.zones[z, Z_FREE] += r.choice([-1, 1])
    elif what == 6:
        table = r.choice([s.ptl, s.mm[:, :1], s.anon_vma[:, :1]])  # lock words
        if table.size:
            table[r.randrange(table.shape[0]), r.randrange(table.shape[1])] = int(r.random() < 0.9)
    elif what == 7:
        mm = r.randrange(s.shadow.shape[0])
        vpn = r.randrange(s.shadow.shape[1])
        s.shadow[mm, vpn] = r.choice([0, 0x1234, int(s.shadow[mm, vpn]) | SHADOW_REAPED])
    elif what == 8:
        slot = r.randrange(s.swap.shape[0])
        field = r.choice([S_USED, S_DATA])
        s.swap[slot, field] += r.choice([-1, 1, SWAP_HAS_CACHE])
    else:
        mf = s.views["mm_flags"]
        if mf.size:
            mf.reshape(-1)[r.randrange(mf.size)] ^= MMF_UNSTABLE


@pytest.mark.parametrize("name", WORKLOADS)
def test_check_all_judges_as_every_check_in_turn(name: str) -> None:
    w = load_workload(name)
    r = random.Random(name)
    kinds: set[FailureKind] = set()
    skipped = 0
    for seed in range(3):
        k = run_deterministic(w, variant="v6", seed=seed).kernel
        assert _verdict(check_all, k) == _verdict(_each_in_turn, k)
        snap = k.s.snapshot()
        for trial in range(120):
            k.s.restore(snap)
            for _ in range(1 + trial % 2):
                _corrupt(k, r)
            want = _verdict(_each_in_turn, k)
            assert _verdict(check_all, k) == want, (seed, trial)
            # the C pass (AtomicWords.proven_clean) proves what the numpy pass proves
            assert _proven_clean(k) == _proven_clean_arrays(k), (seed, trial)
            if want[0] == "violation":
                kinds.add(want[1])
            skipped += len(_proven_clean(k))
    assert len(kinds) >= 4, kinds  # the corruptions reach several checks
    assert skipped  # and the clean path did skip checks


def test_a_clean_end_state_skips_the_checks_it_proves() -> None:
    """opposite-order's end state: every check of CHECKS and the world's swap, dirty and
    device-page checks are proven clean (none of them runs)."""
    k = run_deterministic(load_workload("opposite-order"), variant="v5.0", seed=3).kernel
    proven = _proven_clean(k)
    assert set(CHECKS) <= proven
    from pagerace.core.oracles.world import check_device_pages, check_dirty, check_swap_counts

    assert {check_device_pages, check_dirty, check_swap_counts} <= proven


def _logged(check: Any, calls: list[str]) -> Any:
    def run(k: Kernel) -> None:
        calls.append(check.__name__)
        check(k)

    return run


def test_a_check_not_proven_runs_and_raises_its_own_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check check_all does not know (here: each one wrapped) always runs; a frame
    locked at the end: check_locks is not proven, runs and names the page."""
    k = run_deterministic(load_workload("opposite-order"), variant="v5.0", seed=3).kernel
    calls: list[str] = []
    monkeypatch.setattr(invariants, "CHECKS", [_logged(c, calls) for c in CHECKS])
    check_all(k)
    assert calls == [c.__name__ for c in CHECKS]
    monkeypatch.undo()
    p = int(k.s.pte[0, 0]) >> PTE_PFN_SHIFT
    k.s.frames[p, F_FLAGS] |= PG_locked
    assert invariants.check_locks not in _proven_clean(k)
    with pytest.raises(InvariantViolation) as info:
        check_all(k)
    assert info.value.failure.kind is FailureKind.LOCK_BALANCE
    assert f"pages [{p}]" in info.value.failure.message


def test_an_entry_below_frame_zero_proves_nothing_in_either_pass() -> None:
    """A mapped entry whose frame number is negative maps no frame (not the last one by
    wrapping around): neither pass proves check_entries or the later checks, and
    check_all reports what check_entries reports."""
    k = run_deterministic(load_workload("opposite-order"), variant="v5.0", seed=3).kernel
    s = k.s
    last = s.frames.shape[0] - 1
    s.frames[last, F_FLAGS] = PG_allocated  # what the entry would need, were -1 the last
    s.pte[0, 0] = (-1 << PTE_PFN_SHIFT) | (int(s.pte[0, 0]) & PTE_TYPE_MASK)
    for proven in (_proven_clean(k), _proven_clean_arrays(k)):
        assert invariants.check_entries not in proven
        assert invariants.check_counts not in proven
    assert _verdict(check_all, k) == _verdict(_each_in_turn, k)


def test_the_c_pass_runs_over_the_extensions_words() -> None:
    """Over the C extension's words check_all's quick tests are one C call; over any
    other backend (or another extra-reference hook) the numpy pass runs."""
    from pagerace.core.machine.words import _AtomicWords

    if _AtomicWords is None:
        pytest.skip("the C extension is not built")
    k = run_deterministic(load_workload("opposite-order"), variant="v5.0", seed=3).kernel
    calls: list[int] = []
    real = invariants._proven_clean_arrays

    def counted(kk: Kernel) -> Any:
        calls.append(1)
        return real(kk)

    invariants._proven_clean_arrays = counted  # type: ignore[assignment]
    try:
        assert type(k.s.words) is _AtomicWords
        assert set(CHECKS) <= _proven_clean(k) and not calls
        k.extra_refs = lambda: [0] * k.s.frames.shape[0]  # type: ignore[method-assign]
        assert set(CHECKS) <= _proven_clean(k) and calls == [1]
    finally:
        invariants._proven_clean_arrays = real  # type: ignore[assignment]


def _passes(fn: Any, k: Kernel) -> Any:
    try:
        return fn(k)
    except Exception as exc:  # the same crash either way
        return repr(exc)


@pytest.mark.parametrize("name", ["opposite-order", "default", "swap-vs-fault"])
def test_lru_batches_count_the_same_in_c_and_numpy(name: str) -> None:
    """The C pass counts the LRU-add batches' references itself (Kernel.lru_batch_refs);
    a batch it would not read as a plain list of frames (a negative or too large count,
    a frame out of range) goes to the numpy pass: the same sets, the same verdicts."""
    k = run_deterministic(load_workload(name), variant="v6", seed=1).kernel
    s = k.s
    lb = s.lru_batch
    nframes = s.frames.shape[0]
    r = random.Random(name)
    snap = s.snapshot()
    valid = 0
    for trial in range(150):
        s.restore(snap)
        for _ in range(1 + trial % 3):
            cpu = r.randrange(lb.shape[0])
            n = r.choice([0, 1, 2, lb.shape[1] - 1, lb.shape[1], -1])
            lb[cpu, 0] = n
            for j in range(1, lb.shape[1]):
                lb[cpu, j] = r.choice([r.randrange(nframes), r.randrange(nframes), -1, nframes])
            if r.random() < 0.5:  # the references they hold, as a real batch does
                for p in lb[cpu, 1 : 1 + max(0, min(n, lb.shape[1] - 1))].tolist():
                    if 0 <= p < nframes:
                        s.frames[p, F_REF] += 1
        if r.random() < 0.3:
            _corrupt(k, r)
        assert _passes(_proven_clean, k) == _passes(_proven_clean_arrays, k), trial
        named = [lb[c, 1 : 1 + int(lb[c, 0])].tolist() for c in range(lb.shape[0]) if lb[c, 0] > 0]
        if all(0 <= p < nframes for ps in named for p in ps):  # (else numpy's IndexError)
            valid += 1
            assert _verdict(check_all, k) == _verdict(_each_in_turn, k), trial
    assert valid > 20


def test_an_extension_without_the_c_pass_gets_the_numpy_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """An extension built before the C pass existed (no ``proven_clean``): the numpy
    pass, the same set."""
    k = run_deterministic(load_workload("opposite-order"), variant="v5.0", seed=3).kernel
    want = _proven_clean(k)
    calls: list[int] = []
    real = invariants._proven_clean_arrays
    monkeypatch.setattr(invariants, "_C_PASS", False)
    monkeypatch.setattr(
        invariants, "_proven_clean_arrays", lambda kk: calls.append(1) or real(kk)
    )
    assert _proven_clean(k) == want and calls == [1]


def test_the_c_pass_on_a_geometry_of_more_than_1024_frames() -> None:
    """More frames than the C pass's stack arrays (it allocates them): the same sets as
    the numpy pass and the same verdicts, clean and corrupted."""
    from dataclasses import replace

    w = load_workload("opposite-order")
    w = replace(w, geometry=replace(w.geometry, sys_frames=1500, dev_frames=600))
    k = run_deterministic(w, variant="v5.0", seed=2).kernel
    assert k.s.frames.shape[0] > 1024
    assert set(CHECKS) <= _proven_clean(k) == _proven_clean_arrays(k)
    r = random.Random(1)
    snap = k.s.snapshot()
    for trial in range(100):
        k.s.restore(snap)
        _corrupt(k, r)
        assert _proven_clean(k) == _proven_clean_arrays(k), trial
        assert _verdict(check_all, k) == _verdict(_each_in_turn, k), trial
