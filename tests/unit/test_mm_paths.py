"""The memory-management paths around device migration against hand-written
interleavings: GUP (slow, fast: B1-B5), fork, zap, mremap, reclaim and swap-in.

Each test builds a small memory picture, drives the paths generator by generator (one
preemption point per step) in the order the test names, and checks what the kernel
promises: who backs off, which page each entry maps, refcounts and pins, content tokens,
and that the global invariants (``check_all``) pass at the end.
"""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.lib.test_hmm import Dmirror
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import (
    F_PIN,
    F_PRIV,
    GUP_PIN_COUNTING_BIAS,
    M_WP_SEQ,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_WRITE,
    S_DATA,
    S_USED,
    PG_anon_exclusive,
    PG_dirty,
    PG_swapcache,
    pte_pfn,
    pte_type,
)
from pagerace.core.machine.layout import (
    SWAP_HAS_CACHE as SWAP_HAS_CACHE_BIT,
)
from pagerace.core.mm.fork import op_fork
from pagerace.core.mm.gup import (
    MODE_PIN,
    MODE_PIN_FAST,
    gup_fast,
    op_pin_dma,
    pin_table,
    pin_user_page,
    pin_user_page_longterm,
    unpin_user_page,
)
from pagerace.core.mm.memory import ACCESS_OK, cpu_access
from pagerace.core.mm.mremap import op_mremap
from pagerace.core.mm.swapfile import SWAP_HAS_CACHE, swap_w
from pagerace.core.mm.vma import op_child_exit, op_madv_dontneed, op_munmap
from pagerace.core.mm.vmscan import op_reclaim
from pagerace.core.oracles.invariants import check_all
from pagerace.core.oracles.world import check_drop_clean
from strategies import Stepper, model

SYS = {
    "name": "mm-paths",
    "geometry": {
        "sys_frames": 24, "dev_frames": 8, "mms": 2, "pages_per_mm": 12,
        "ptes_per_table": 4, "swap_slots": 8,
    },
    "mm": [
        {"id": 0, "vmas": [{"start": 0, "end": 8}], "populate": [{"start": 0, "end": 4}],
         "device": [{"dev": 0, "start": 4, "end": 6}]},
    ],
    "actor": [{"kind": "cpu", "count": 4}],
}


def _m(**faults: Any) -> tuple[Kernel, list[Any]]:
    m = model(SYS)
    k = m.kernel
    if faults:
        k.faults = frozenset(faults)
    return k, m.actors


def _run(k: Kernel, gen: Any) -> Any:
    return Stepper(gen).finish(k)


def _run_beside(k: Kernel, s: Stepper, other: Stepper, limit: int = 10_000) -> Any:
    """Finish ``s``; whenever it waits on a lock, step ``other`` (which holds it)."""
    for _ in range(limit):
        if s.done:
            return s.value
        if s.blocked_on(k) is not None:
            other.step()
        else:
            s.step()
    raise AssertionError("did not finish")


def _entry(k: Kernel, vpn: int, mm: int = 0) -> tuple[int, int]:
    pte = k.pte_read(mm, vpn)
    return pte_type(pte), pte_pfn(pte)


def _dev(k: Kernel) -> Dmirror:
    return k.devices[0]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------
# GUP


def test_pin_slow_path_takes_bias_and_unpin_restores() -> None:
    k, (a, *_) = _m()
    _kind, pfn = _entry(k, 0)
    rec = _run(k, pin_user_page(k, a, 0, 0, MODE_PIN, True))
    assert rec.pfn == pfn and rec.pin
    assert k.ref_count(pfn) == 1 + GUP_PIN_COUNTING_BIAS and k.pincount(pfn) == 1
    assert k.maybe_dma_pinned(pfn)
    unpin_user_page(k, a, rec, dirty=True)
    assert k.ref_count(pfn) == 1 and k.pincount(pfn) == 0
    assert pin_table(k)[a.id] == []
    check_all(k)


def test_pin_of_device_page_faults_it_back_first() -> None:
    k, (a, *_) = _m()
    kind, dpfn = _entry(k, 4)
    assert k.is_device_private(dpfn)
    rec = _run(k, pin_user_page(k, a, 0, 4, MODE_PIN_FAST, True))
    kind, pfn = _entry(k, 4)
    assert kind == PTE_PRESENT and pfn == rec.pfn and not k.is_zone_device(pfn)
    assert k.data(pfn) == k.shadow(0, 4)
    unpin_user_page(k, a, rec, dirty=True)
    check_all(k)


def test_gup_fast_between_entry_clear_and_pin_check_backs_off() -> None:
    """B1 reads the entry; collect then runs A1-A4 (clear, not pinned yet, share,
    migration entry); B3 grabs the page; B4 sees the entry changed and backs off, so
    the migration's page check sees no pin and the page moves."""
    k, (a, drv, *_) = _m()
    _kind, pfn = _entry(k, 0)
    fast = Stepper(gup_fast(k, a, 0, 0, True, True))
    fast.step()  # B1 (+B2) done, before B3
    mig = Stepper(_dev(k).migrate_to_device(k, drv, 0, 0, 1))
    mig.run_until(lambda: _entry(k, 0)[0] == PTE_MIGRATION)
    assert not k.test_flag(pfn, PG_anon_exclusive)  # A3 cleared it
    fast.step()  # B3: the pin lands on the page under migration
    assert k.pincount(pfn) == 1
    assert fast.finish(k) == -1  # B4: the entry changed
    assert k.pincount(pfn) == 0 and k.events["gup_fast_backoff_changed"] == 1
    assert mig.finish(k) == 0
    _kind, new = _entry(k, 0)
    assert k.is_device_private(new) and new != pfn
    check_all(k)


def test_gup_fast_pin_before_share_makes_collect_skip_the_page() -> None:
    """B3 lands before A2: the share fails with -EBUSY, the entry is restored and B4
    sees the same entry: the pin stands and the page is not migrated."""
    k, (a, drv, *_) = _m()
    _kind, pfn = _entry(k, 0)
    fast = Stepper(gup_fast(k, a, 0, 0, True, True))
    fast.step()
    fast.step()  # B3 done, before B4
    assert _run(k, _dev(k).migrate_to_device(k, drv, 0, 0, 1)) == 0
    assert _entry(k, 0) == (PTE_PRESENT, pfn)
    assert k.outcomes[("to_device", "pinned")] == 1
    assert fast.finish(k) == pfn  # B4, B5 pass
    assert k.test_flag(pfn, PG_anon_exclusive)


def test_gup_fast_read_pin_of_shared_page_backs_off_b5_and_unshares() -> None:
    """A read-only entry of a page fork shared: B5 backs off, the slow path unshares
    (a COW copy) and pins the now exclusive page of this mm only."""
    k, (a, f, *_) = _m()
    assert _run(k, op_fork(k, f, 0, 1)) == 0
    _kind, shared = _entry(k, 0)
    assert _entry(k, 0, 1) == (PTE_PRESENT, shared)
    assert _run(k, gup_fast(k, a, 0, 0, False, True)) == -1
    assert k.events["gup_fast_backoff_unshare"] == 1
    rec = _run(k, pin_user_page(k, a, 0, 0, MODE_PIN_FAST, False))
    assert rec.pfn != shared and _entry(k, 0) == (PTE_PRESENT, rec.pfn)
    assert k.test_flag(rec.pfn, PG_anon_exclusive)
    assert _entry(k, 0, 1) == (PTE_PRESENT, shared)
    unpin_user_page(k, a, rec, dirty=False)
    check_all(k)


def test_pin_dma_writes_land_at_the_pinned_address() -> None:
    k, (a, *_) = _m()
    assert _run(k, op_pin_dma(k, a, 0, 1, MODE_PIN, 3, 1)) == 0
    assert k.events["dma_writes"] == 3
    _kind, pfn = _entry(k, 1)
    assert k.data(pfn) == k.shadow(0, 1) and k.shadow(0, 1) >> 40 == a.id + 1
    check_all(k)


# --------------------------------------------------------------------------------------
# fork and COW


def test_fork_of_pinned_exclusive_page_copies_it_for_the_child() -> None:
    k, (a, f, cpu, _) = _m()
    rec = _run(k, pin_user_page(k, a, 0, 0, MODE_PIN, True))
    assert _run(k, op_fork(k, f, 0, 1)) == 0
    kind, child = _entry(k, 0, 1)
    assert kind == PTE_PRESENT and child != rec.pfn
    assert k.data(child) == k.data(rec.pfn) and k.shadow(1, 0) == k.shadow(0, 0)
    parent = k.pte_read(0, 0)
    assert pte_pfn(parent) == rec.pfn and parent & PTE_WRITE  # untouched, still exclusive
    assert k.events["fork_dup_ebusy"] == 1
    # The other pages are shared copy-on-write, read-only on both sides.
    _kind, p1 = _entry(k, 1)
    assert _entry(k, 1, 1) == (PTE_PRESENT, p1) and not k.pte_read(0, 1) & PTE_WRITE
    assert k.mapcount(p1) == 2 and not k.test_flag(p1, PG_anon_exclusive)
    # A parent write to the pinned page reuses it; a child write to a shared page copies.
    assert _run(k, cpu_access(k, cpu, 0, 0, True)) == ACCESS_OK
    assert _entry(k, 0)[1] == rec.pfn
    assert _run(k, cpu_access(k, cpu, 1, 1, True)) == ACCESS_OK
    assert _entry(k, 1, 1)[1] != p1 and k.mapcount(p1) == 1
    unpin_user_page(k, a, rec, dirty=True)
    assert _run(k, op_child_exit(k, f, 1)) == 0
    check_all(k)


def test_fork_copies_device_private_entries_read_only() -> None:
    k, (_a, f, cpu, _) = _m()
    _kind, d = _entry(k, 4)
    assert k.pte_read(0, 4) & PTE_WRITE
    assert _run(k, op_fork(k, f, 0, 1)) == 0
    assert _entry(k, 4, 1) == _entry(k, 4)
    assert not k.pte_read(0, 4) & PTE_WRITE and not k.pte_read(1, 4) & PTE_WRITE
    assert k.mapcount(d) == 2
    # A child write faults the shared device page back, then copies it (COW).
    assert _run(k, cpu_access(k, cpu, 1, 4, True)) == ACCESS_OK
    assert _run(k, cpu_access(k, cpu, 0, 4, False)) == ACCESS_OK
    assert _entry(k, 4)[1] != _entry(k, 4, 1)[1]
    assert _run(k, op_child_exit(k, f, 1)) == 0
    check_all(k)


def test_fork_copies_a_migration_entry_and_the_migration_maps_the_child() -> None:
    """fork runs while an eviction (which holds no mmap_lock) has the page under a
    migration entry: the child gets a read-only migration entry, and
    remove_migration_ptes (which rescans) maps the child too."""
    k, (_a, f, ev, cpu) = _m()
    tok = k.shadow(0, 4)
    evict = Stepper(_dev(k).release(k, ev))
    evict.run_until(lambda: _entry(k, 4)[0] == PTE_MIGRATION)
    assert k.pte_read(0, 4) & PTE_WRITE
    assert _run_beside(k, Stepper(op_fork(k, f, 0, 1)), evict) == 0
    assert _entry(k, 4)[0] == PTE_MIGRATION and _entry(k, 4, 1) == _entry(k, 4)
    assert not k.pte_read(0, 4) & PTE_WRITE and not k.pte_read(1, 4) & PTE_WRITE
    assert evict.finish(k) == 0
    kind, p = _entry(k, 4, 1)
    assert kind == PTE_PRESENT and _entry(k, 4) == (kind, p) and k.data(p) == tok
    assert k.mapcount(p) == 2
    assert _run(k, cpu_access(k, cpu, 1, 4, True)) == ACCESS_OK  # COW in the child
    assert _entry(k, 4)[1] == p and k.data(p) == tok
    assert _run(k, op_child_exit(k, f, 1)) == 0
    check_all(k)


def test_fork_copies_swap_entries_and_exit_drops_their_count() -> None:
    k, (_a, f, r, _) = _m()
    assert _run(k, op_reclaim(k, r, 0, 1)) == 1
    kind, slot = _entry(k, 0)
    assert kind == PTE_SWAP and k.pte_read(0, 0) & PTE_EXCLUSIVE
    assert _run(k, op_fork(k, f, 0, 1)) == 0
    assert _entry(k, 0, 1) == (PTE_SWAP, slot)
    assert not k.pte_read(0, 0) & PTE_EXCLUSIVE
    assert k.words.load(swap_w(k, slot, S_USED)) == 2
    assert _run(k, op_child_exit(k, f, 1)) == 0
    assert k.words.load(swap_w(k, slot, S_USED)) == 1
    check_all(k)


# --------------------------------------------------------------------------------------
# zap


def test_madvise_dontneed_racing_collect_drops_the_migration_entry() -> None:
    k, (_a, drv, z, cpu) = _m()
    _kind, p0 = _entry(k, 0)
    mig = Stepper(_dev(k).migrate_to_device(k, drv, 0, 0, 2))
    mig.run_until(lambda: _entry(k, 1)[0] == PTE_MIGRATION)
    # shares mmap_read_lock; waits only for the PTL collect holds
    assert _run_beside(k, Stepper(op_madv_dontneed(k, z, 0, 0, 2)), mig) == 0
    assert _entry(k, 0)[0] == PTE_NONE and k.shadow(0, 0) == 0
    assert mig.finish(k) == 0
    assert _entry(k, 0)[0] == PTE_NONE and _entry(k, 1)[0] == PTE_NONE
    assert not k.test_flag(p0, 1 << 8)  # PG_allocated: the old page was freed
    check_all(k)
    assert _run(k, cpu_access(k, cpu, 0, 0, False)) == ACCESS_OK  # a fresh zero page
    check_all(k)


def test_munmap_waits_for_migration_and_removes_the_vma() -> None:
    k, (_a, drv, z, cpu) = _m()
    mig = Stepper(_dev(k).migrate_to_device(k, drv, 0, 0, 4))
    mig.run_until(lambda: _entry(k, 0)[0] == PTE_MIGRATION)
    un = Stepper(op_munmap(k, z, 0, 2, 6))
    un.step()
    assert un.blocked_on(k) is not None and un.blocked_on(k).kind == "mmap"
    assert mig.finish(k) == 0
    assert un.finish(k) == 0
    for v in range(2, 6):
        assert _entry(k, v)[0] == PTE_NONE and k.shadow(0, v) == 0
    assert k.s.find_vma(0, 3) < 0 and k.s.find_vma(0, 1) >= 0 and k.s.find_vma(0, 6) >= 0
    assert _run(k, cpu_access(k, cpu, 0, 3, True)) == 2  # ACCESS_SIGSEGV
    check_all(k)


def test_zap_flushes_before_freeing_so_no_stale_tlb_hit() -> None:
    k, (_a, z, cpu, _) = _m()
    assert _run(k, cpu_access(k, cpu, 0, 0, True)) == ACCESS_OK
    assert k.tlb_lookup(cpu, 0, 0) >= 0
    assert _run(k, op_madv_dontneed(k, z, 0, 0, 1)) == 0
    assert k.tlb_lookup(cpu, 0, 0) < 0
    assert _run(k, cpu_access(k, cpu, 0, 0, True)) == ACCESS_OK
    check_all(k)


# --------------------------------------------------------------------------------------
# mremap


def test_mremap_moves_a_migration_entry_and_the_eviction_finds_it() -> None:
    k, (_a, ev, rm, cpu) = _m()
    tok = k.shadow(0, 4)
    evict = Stepper(_dev(k).release(k, ev))
    evict.run_until(lambda: _entry(k, 4)[0] == PTE_MIGRATION)
    assert _run(k, op_mremap(k, rm, 0, 4, 2, 8)) == 0
    assert _entry(k, 4)[0] == PTE_NONE and _entry(k, 8)[0] == PTE_MIGRATION
    assert k.shadow(0, 8) == tok and k.shadow(0, 4) == 0
    assert evict.finish(k) == 0
    kind, p = _entry(k, 8)
    assert kind == PTE_PRESENT and k.data(p) == tok
    assert _run(k, cpu_access(k, cpu, 0, 9, False)) == ACCESS_OK
    check_all(k)


def test_mremap_refuses_an_occupied_destination() -> None:
    k, (_a, rm, *_) = _m()
    assert _run(k, op_mremap(k, rm, 0, 0, 2, 6)) == -22
    assert _run(k, op_mremap(k, rm, 0, 0, 2, 11)) == -22
    check_all(k)


# --------------------------------------------------------------------------------------
# reclaim and swap


def test_swap_out_then_swap_in_keeps_content() -> None:
    k, (_a, r, cpu, _) = _m()
    assert _run(k, cpu_access(k, cpu, 0, 1, True)) == ACCESS_OK
    tok = k.shadow(0, 1)
    assert _run(k, op_reclaim(k, r, 0, 4)) == 4
    kind, slot = _entry(k, 1)
    assert kind == PTE_SWAP and k.words.load(swap_w(k, slot, S_DATA)) == tok
    assert k.events["pageout"] == 4 and k.outcomes[("reclaim", "reclaimed")] == 4
    check_all(k)
    assert _run(k, cpu_access(k, cpu, 0, 1, False)) == ACCESS_OK
    kind, p = _entry(k, 1)
    assert kind == PTE_PRESENT and k.data(p) == tok
    # A read fault keeps the folio in the swap cache, clean (7.0 should_try_to_free_swap:
    # only a write fault frees the copy); the exclusive entry maps it writable, clean.
    assert k.test_flag(p, PG_swapcache) and not k.test_flag(p, PG_dirty)
    assert k.words.load(swap_w(k, slot, S_USED)) == SWAP_HAS_CACHE_BIT
    assert k.pte_read(0, 1) & PTE_WRITE and not k.pte_read(0, 1) & PTE_DIRTY
    check_all(k)
    # The store needs no fault: the hardware sets the dirty bit of the entry. A swap-cache
    # page mapped through a dirty entry is not clean for the dirty-conservation oracle.
    assert _run(k, cpu_access(k, cpu, 0, 1, True)) == ACCESS_OK
    assert _entry(k, 1)[1] == p and k.pte_read(0, 1) & PTE_DIRTY
    assert k.data(p) != k.words.load(swap_w(k, slot, S_DATA))
    check_all(k)
    # Reclaim again: the dirty entry moves its dirt to the folio, which is written out.
    assert _run(k, op_reclaim(k, r, p, 1)) == 1
    assert k.words.load(swap_w(k, slot, S_DATA)) == k.shadow(0, 1)
    check_all(k)


def test_swapin_of_shared_slot_keeps_page_in_swap_cache_and_clean_copy() -> None:
    k, (f, r, cpu, _) = _m()
    assert _run(k, op_reclaim(k, r, 0, 1)) == 1
    assert _run(k, op_fork(k, f, 0, 1)) == 0
    _kind, slot = _entry(k, 0)
    assert _run(k, cpu_access(k, cpu, 0, 0, False)) == ACCESS_OK
    kind, p = _entry(k, 0)
    assert kind == PTE_PRESENT and k.test_flag(p, PG_swapcache)
    assert k.words.load(swap_w(k, slot, S_USED)) == 1 | SWAP_HAS_CACHE
    check_all(k)
    # The child finds the page in the swap cache.
    assert _run(k, cpu_access(k, cpu, 1, 0, False)) == ACCESS_OK
    assert _entry(k, 0, 1) == (PTE_PRESENT, p) and k.events["swapin_cache_hit"] == 1
    # A write in the parent copies (the page is shared), the child keeps the old value.
    assert _run(k, cpu_access(k, cpu, 0, 0, True)) == ACCESS_OK
    assert _entry(k, 0)[1] != p
    assert _run(k, op_child_exit(k, f, 1)) == 0
    check_all(k)


def test_reclaim_refuses_a_pinned_page() -> None:
    k, (a, r, *_) = _m()
    rec = _run(k, pin_user_page(k, a, 0, 0, MODE_PIN, True))
    assert _run(k, op_reclaim(k, r, rec.pfn, 1)) == 1
    assert _entry(k, 0) == (PTE_PRESENT, rec.pfn)
    assert k.outcomes[("reclaim", "pinned")] == 1
    assert k.words.load(k.fw(rec.pfn, F_PIN)) == 1
    unpin_user_page(k, a, rec, dirty=True)
    check_all(k)


def test_swapin_waits_for_reclaim_holding_the_page_lock() -> None:
    k, (_a, r, cpu, _) = _m()
    _kind, p = _entry(k, 0)
    rec = Stepper(op_reclaim(k, r, p, 1))
    rec.run_until(lambda: _entry(k, 0)[0] == PTE_SWAP and k.page_locked(p))
    acc = Stepper(cpu_access(k, cpu, 0, 0, False))
    acc.run_until(lambda: acc.blocked_on(k) is not None)
    assert acc.blocked_on(k).kind == "page"
    assert rec.finish(k) == 1
    # Reclaim could not freeze the count (the fault holds a reference): page kept.
    assert k.outcomes[("reclaim", "referenced")] == 1
    assert acc.finish(k) == ACCESS_OK
    assert _entry(k, 0) == (PTE_PRESENT, p)
    check_all(k)


def test_oracle_failure_names_actor_page_and_address() -> None:
    k, (a, f, cpu, _) = _m(fork_ignores_pins=True)
    rec = _run(k, pin_user_page(k, a, 0, 0, MODE_PIN, True))
    assert _run(k, op_fork(k, f, 0, 1)) == 0
    assert _run(k, cpu_access(k, cpu, 0, 0, True)) == ACCESS_OK  # COW: a new page
    with pytest.raises(InvariantViolation) as exc:
        from pagerace.core.oracles.world import check_pin

        check_pin(k, a, rec, "dma")
    fl = exc.value.failure
    assert fl.kind is FailureKind.PIN_COHERENCY
    assert fl.actors == (a.name,) and rec.pfn in fl.pages
    assert fl.details["mm"] == 0 and fl.details["vpn"] == 0
    assert "gup:dma" in fl.sites


def test_longterm_pin_moves_a_coherent_page_out_and_ebusy_when_pinned() -> None:
    table = dict(SYS)
    table["geometry"] = dict(SYS["geometry"], coherent=[0])  # type: ignore[arg-type]
    table["device"] = [{"id": 0, "coherent": True}]
    table["mm"] = [{"id": 0, "vmas": [{"start": 0, "end": 8}], "populate": [{"start": 0, "end": 4}]}]
    m = model(table)
    k, (a, b, drv, cpu) = m.kernel, m.actors
    assert _run(k, _dev(k).migrate_to_device(k, drv, 0, 0, 2)) == 0
    _kind, c0 = _entry(k, 0)
    _kind, c1 = _entry(k, 1)
    assert k.is_device_coherent(c0) and k.is_device_coherent(c1)
    assert _run(k, cpu_access(k, cpu, 0, 0, True)) == ACCESS_OK  # present: no fault
    rec = _run(k, pin_user_page_longterm(k, a, 0, 0, True))
    assert rec is not None and not k.is_zone_device(rec.pfn)
    assert _entry(k, 0) == (PTE_PRESENT, rec.pfn) and k.data(rec.pfn) == k.shadow(0, 0)
    assert k.events["longterm_pin_migrated"] == 1
    unpin_user_page(k, a, rec, dirty=True)
    short = _run(k, pin_user_page(k, b, 0, 1, MODE_PIN, True))
    assert short.pfn == c1
    assert _run(k, pin_user_page_longterm(k, a, 0, 1, True)) is None
    assert k.events["longterm_pin_ebusy"] == 1 and _entry(k, 1) == (PTE_PRESENT, c1)
    unpin_user_page(k, b, short, dirty=True)
    check_all(k)


def test_gup_fast_pin_backs_off_while_fork_copies_and_after_a_fork_ran() -> None:
    """mm->write_protect_seq: odd while fork copies (back off at once); changed between
    the start and the end of GUP-fast (a whole fork ran: back off after the pin)."""
    k, (a, f, *_) = _m()
    fork = Stepper(op_fork(k, f, 0, 1))
    fork.run_until(lambda: k.words.load(k.lay.MM + M_WP_SEQ) & 1 == 1)
    assert _run(k, gup_fast(k, a, 0, 2, True, True)) == -1
    assert fork.finish(k) == 0
    assert _run(k, op_child_exit(k, f, 1)) == 0
    check_all(k)
    k, (a, f, *_) = _m()
    fast = Stepper(gup_fast(k, a, 0, 3, True, True))
    fast.step()
    fast.step()  # pinned, before B4
    _kind, p3 = _entry(k, 3)
    assert k.pincount(p3) == 1
    assert _run(k, op_fork(k, f, 0, 1)) == 0  # a whole fork between (it saw the pin)
    assert fast.finish(k) == -1 and k.events["gup_fast_backoff_fork"] == 1
    assert k.pincount(p3) == 0
    assert _run(k, op_child_exit(k, f, 1)) == 0
    check_all(k)


def test_zap_detaches_a_pin_so_a_refault_there_is_not_incoherent() -> None:
    k, (a, z, cpu, _) = _m()
    pin = Stepper(op_pin_dma(k, a, 0, 0, MODE_PIN, 4, 1))
    pin.run_until(lambda: k.events.get("dma_writes", 0) == 1)
    _kind, p = _entry(k, 0)
    assert _run(k, op_madv_dontneed(k, z, 0, 0, 1)) == 0
    assert _run(k, cpu_access(k, cpu, 0, 0, True)) == ACCESS_OK  # a new page there
    assert _entry(k, 0)[1] != p
    assert pin.finish(k) == 0  # DMA into the old page, which nobody maps any more
    assert k.data(_entry(k, 0)[1]) == k.shadow(0, 0)
    check_all(k)


def test_dma_bookkeeping_waits_for_the_ptl_collect_holds() -> None:
    k, (a, drv, *_) = _m()
    pin = Stepper(op_pin_dma(k, a, 0, 1, 2, 3, 1))  # FOLL_GET
    pin.run_until(lambda: k.events.get("dma_writes", 0) == 1)
    mig = Stepper(_dev(k).migrate_to_device(k, drv, 0, 0, 4))
    mig.run_until(lambda: _entry(k, 1)[0] == PTE_MIGRATION)
    ptl = k.ptl_word(0, 1)
    assert k.words.load(ptl) == drv.id + 1  # collect is inside the table
    pin.step()
    pin.step()
    assert pin.blocked_on(k) is not None and pin.blocked_on(k).kind == "ptl"
    assert _run_beside(k, pin, mig) == 0
    assert mig.finish(k) == 0
    check_all(k)


def test_map_shared_child_write_is_seen_by_the_parent() -> None:
    table = dict(SYS)
    table["mm"] = [{"id": 0, "vmas": [{"start": 0, "end": 8, "flags": ["read", "write", "anon", "shared"]}],
                    "populate": [{"start": 0, "end": 4}]}]
    m = model(table)
    k, (f, cpu, *_) = m.kernel, m.actors
    assert _run(k, op_fork(k, f, 0, 1)) == 0
    assert _entry(k, 2, 1) == _entry(k, 2) and k.pte_read(1, 2) & PTE_WRITE  # no COW
    assert _run(k, cpu_access(k, cpu, 1, 2, True)) == ACCESS_OK
    assert k.shadow(0, 2) == k.shadow(1, 2)
    assert _run(k, cpu_access(k, cpu, 0, 2, False)) == ACCESS_OK  # the parent sees it
    assert _run(k, op_child_exit(k, f, 1)) == 0
    check_all(k)


def test_get_reference_survives_swap_out_through_the_swap_cache() -> None:
    """A FOLL_GET reference keeps a page in the swap cache after reclaim unmapped it:
    the swap entry still names the referenced page (coherent), and swap-in maps it."""
    k, (a, r, cpu, _) = _m()
    pin = Stepper(op_pin_dma(k, a, 0, 1, 2, 3, 1))  # FOLL_GET, write
    pin.run_until(lambda: k.events.get("dma_writes", 0) == 1)
    _kind, p = _entry(k, 1)
    assert _run(k, op_reclaim(k, r, p, 1)) == 1
    assert _entry(k, 1)[0] == PTE_SWAP and k.test_flag(p, PG_swapcache)
    assert k.outcomes[("reclaim", "referenced")] == 1
    assert pin.finish(k) == 0  # DMA writes kept landing in the cached page
    check_all(k)
    assert _run(k, cpu_access(k, cpu, 0, 1, False)) == ACCESS_OK
    assert _entry(k, 1) == (PTE_PRESENT, p)
    check_all(k)


def test_dirty_oracle_judges_only_swapcache_pages_a_reader_can_reach() -> None:
    """A clean swap-cache page whose content is not its swap copy is a failure while a
    reader can reach it (mapped, or a swap entry names its slot), not once it is
    orphaned (no mapping, no entry: only reclaim sees it again, and drops it)."""
    k, (_a, r, cpu, _) = _m()
    assert _run(k, op_reclaim(k, r, 0, 1)) == 1
    assert _run(k, cpu_access(k, cpu, 0, 0, False)) == ACCESS_OK  # kept in the swap cache
    p = _entry(k, 0)[1]
    assert k.test_flag(p, PG_swapcache) and not k.test_flag(p, PG_dirty)
    check_all(k)
    k.set_data(p, k.data(p) ^ 1)  # test-only: a change nothing records as dirty
    k.set_shadow(0, 0, k.data(p))
    with pytest.raises(InvariantViolation) as e:
        check_all(k)
    assert e.value.failure.kind is FailureKind.DIRTY_CONSERVATION
    slot = k.words.load(k.fw(p, F_PRIV)) - 1
    with pytest.raises(InvariantViolation) as e:
        check_drop_clean(k, r, p, slot, "test")  # reclaim dropping it now loses the write
    assert e.value.failure.kind is FailureKind.DIRTY_CONSERVATION
    assert _run(k, op_munmap(k, cpu, 0, 0, 1)) == 0  # the last mapping goes
    assert k.test_flag(p, PG_swapcache) and k.mapcount(p) == 0
    check_all(k)  # orphaned: nobody can read it
    check_drop_clean(k, r, p, slot, "test")  # and dropping it loses nothing
