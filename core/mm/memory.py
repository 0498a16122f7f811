"""CPU accesses and page faults: ``mm/memory.c`` and the migration-entry wait.

An access is what a CPU's load or store does: the TLB first, then the hardware page
walk, then a page fault (``handle_mm_fault`` → ``handle_pte_fault``). The hardware part
(TLB hit, or walk + accessed/dirty bits + the load or store) is one step: no other
actor runs in the middle of a single load or store. A fault has preemption points
wherever the kernel's fault path can be interleaved.

Transcribed from ``mm/memory.c`` (``handle_pte_fault``, ``do_anonymous_page``,
``do_wp_page``, ``do_swap_page``: its device-private branch as in kernel 6.15+, with the
``folio_trylock`` taken under the PTL and the wait for the unlock when it fails) and
``mm/migrate.c`` (``migration_entry_wait`` / ``__migration_entry_wait``, seed 002;
``migration_entry_wait_on_locked`` in current kernels: no page reference is taken).
"""

from __future__ import annotations

from ..machine import folio as fo
from ..machine import pmd as pm
from ..machine.errors import FailureKind
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    MMF_UNSTABLE,
    PMD_INVALID,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_TYPE_MASK,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    VM_ANON,
    VM_WRITE,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_uptodate,
    pte_encode,
)
from . import huge_memory as hm
from .huge_memory import VM_FAULT_FALLBACK
from .mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .rmap import folio_set_anon

# The device-private fault entry of do_swap_page() a protocol generation has
# (Variant.fault_entry, core/variants.py):
# - before 6.1 (4.14-6.0: hmm-2017, v5.0; v6 with ``fault-without-ref``): the driver's
#   fault handler runs with neither a reference on nor the lock of the device page;
# - 6.1-6.14 (v6 with ``fault-ref-no-trylock``): a reference, no lock;
# - 6.15+ (v6): folio_trylock under the PTL, a reference, wait for the unlock otherwise.
FAULT_ENTRY_NO_REF = "no_ref"
FAULT_ENTRY_REF = "ref"
FAULT_ENTRY_LOCKED = "locked"
FAULT_ENTRIES = (FAULT_ENTRY_NO_REF, FAULT_ENTRY_REF, FAULT_ENTRY_LOCKED)

# Fault results (include/linux/mm_types.h vm_fault_t), as small ints.
VM_FAULT_OK = 0
VM_FAULT_OOM = 1
VM_FAULT_SIGBUS = 2
VM_FAULT_SIGSEGV = 4
VM_FAULT_RETRY = 8

ACCESS_OK = 0
ACCESS_SIGBUS = 1
ACCESS_SIGSEGV = 2


def mm_unstable(k: Kernel, mm: int) -> bool:
    """``mm_flags_test(MMF_UNSTABLE, mm)``: the OOM reaper has started on ``mm``."""
    if not k.geo.mm_flags:  # no OOM reaper in this workload: no mm is ever unstable
        return False
    return bool(k.words.load(k.lay.MM_FLAGS + mm) & MMF_UNSTABLE)


def check_stable_address_space(k: Kernel, mm: int) -> int:
    """``check_stable_address_space()`` (include/linux/oom.h, 4.15+; 7.0 tests
    ``mm_flags_test(MMF_UNSTABLE, mm)``): ``VM_FAULT_SIGBUS`` once the OOM reaper has
    started to unmap ``mm``, so that a fault (or a migration's hole insert) never maps a
    fresh zeroed page where the program's data was reaped, else 0. Callers test it under
    the page-table lock, as the kernel does. The test-only fault ``no_stable_check``
    makes it always pass (the oracle's proof: a refault then reads zeroes)."""
    if "no_stable_check" in k.faults:
        return 0
    return VM_FAULT_SIGBUS if mm_unstable(k, mm) else 0


def _hw_access(k: Kernel, a: Actor, mm: int, vpn: int, pfn: int, write: bool) -> None:
    """The load or store itself, on frame ``pfn``, and the oracle's bookkeeping."""
    # Hot (every access): the hooks by ``in`` and a subscript, k.count inlined; no
    # call where nothing is hooked.
    hooks = k.hooks
    if "cpu_access" in hooks:  # device-exclusive access (core/oracles/device.py)
        hooks["cpu_access"](k, a, mm, vpn, pfn, write)
    ev = k.events
    if write:
        tok = k.new_token(a)
        k.set_data(pfn, tok)
        k.set_shadow(mm, vpn, tok)
        if "shadow_write" in hooks:  # MAP_SHARED aliases (core/oracles/world.py)
            hooks["shadow_write"](k, mm, vpn, pfn, tok)
        ev["cpu_writes"] = ev["cpu_writes"] + 1 if "cpu_writes" in ev else 1
    else:
        got = k.data(pfn)
        want = k.shadow(mm, vpn)
        ev["cpu_reads"] = ev["cpu_reads"] + 1 if "cpu_reads" in ev else 1
        if got != want:
            raise k.fail(
                FailureKind.STALE_READ,
                f"{a.name} read mm {mm} page {vpn} from frame {pfn} and got token "
                f"{got:#x}, but the last write there stored {want:#x}",
                actors=[a],
                pages=[pfn],
                sites=["cpu_access:load"],
                mm=mm,
                vpn=vpn,
            )


# What the PMD step of the hardware walk found (_hw_walk_pmd), besides a pfn.
_WALK_TABLE = -1  # a PTE table hangs here
_WALK_TRAP = -2  # a PMD leaf the access cannot use: the fault path
_WALK_RETRY = -3  # the accessed/dirty compare-and-swap lost a race: walk again


def _hw_walk_pmd(k: Kernel, a: Actor, mm: int, vpn: int, write: bool) -> int:
    """The PMD step of the hardware walk (``geometry.thp``, v7). A huge present PMD the
    access may use (valid, writable for a store) gets accessed (and dirty) by
    compare-and-swap and fills the huge TLB: returns the pfn of the page. A PMD table
    goes on to the PTE (``_WALK_TABLE``); a none PMD (no table: the PTE words under it
    are not read, as ``move_normal_pmd`` relies on) and every other leaf (a PMD migration or
    device-private entry, a huge PMD invalidated by a split, a store through a
    read-only one) traps (``_WALK_TRAP``)."""
    n = k.geo.ptes_per_table
    idx = vpn // n
    pw = pm.pmd_w(k, mm, idx)
    pmd = k.words.load(pw)
    kind = pmd & PTE_TYPE_MASK
    if kind == pm.PMD_TABLE:
        return _WALK_TABLE
    if kind == PTE_NONE:  # no table to walk: the fault path (pte_alloc)
        return _WALK_TRAP
    if kind != PTE_PRESENT or pmd & PMD_INVALID or (write and not pmd & PTE_WRITE):
        return _WALK_TRAP
    new = pmd | PTE_YOUNG | (PTE_DIRTY if write else 0)
    if new != pmd and not k.words.cas(pw, pmd, new):
        return _WALK_RETRY
    head = pmd >> PTE_PFN_SHIFT
    pm.htlb_fill(k, a, mm, idx, head, write)
    return head + vpn % n


def cpu_access(k: Kernel, a: Actor, mm: int, vpn: int, write: bool) -> Path:
    """A CPU load or store of one virtual page, faulting until it succeeds.

    Returns ``ACCESS_OK``, or ``ACCESS_SIGBUS`` / ``ACCESS_SIGSEGV`` when the fault path
    gives up (the process would get the signal).
    """
    retries = 0
    hw = k.hw_lock  # the parallel engine's: a hardware access is one atomic step
    thp = k.geo.thp  # v7 (the geometry's: fixed for the run)
    hooks = k.hooks
    while True:
        if hw is not None:
            hw.acquire(mm, vpn)
        try:
            if thp:  # v7: a hit in the huge TLB (2M translations, cached apart)
                n = k.geo.ptes_per_table
                t = pm.htlb_lookup(k, a, mm, vpn // n)
                if t >= 0 and (not write or t & 1):
                    htlb_hit = hooks.get("htlb_hit")  # the huge stale-TLB oracle
                    if htlb_hit is not None:
                        htlb_hit(k, a, mm, vpn, t, write)
                    _hw_access(k, a, mm, vpn, (t >> 1) + vpn % n, write)
                    return ACCESS_OK
            # TLB hit: the translation is cached, no page walk (arch TLB).
            t = k.tlb_lookup(a, mm, vpn)
            if t >= 0 and (not write or t & 1):
                if "tlb_hit" in hooks:  # the stale-TLB oracle (core/oracles/world.py)
                    hooks["tlb_hit"](k, a, mm, vpn, t, write)
                _hw_access(k, a, mm, vpn, t >> 1, write)
                return ACCESS_OK
            # Hardware page walk: read the entry, set accessed/dirty, fill the TLB.
            trap = False
            if thp:  # v7: the walk reads the PMD first
                got = _hw_walk_pmd(k, a, mm, vpn, write)
                if got == _WALK_RETRY:
                    continue
                if got >= 0:
                    _hw_access(k, a, mm, vpn, got, write)
                    return ACCESS_OK
                trap = got == _WALK_TRAP
            pte = 0 if trap else k.pte_read(mm, vpn)
            if pte & PTE_TYPE_MASK == PTE_PRESENT and (not write or pte & PTE_WRITE):
                new = pte | PTE_YOUNG | (PTE_DIRTY if write else 0)
                if new == pte or k.words.cas(k.pte_w(mm, vpn), pte, new):
                    pfn = pte >> PTE_PFN_SHIFT
                    k.tlb_fill(a, mm, vpn, pfn, write)
                    _hw_access(k, a, mm, vpn, pfn, write)
                    return ACCESS_OK
                continue
        finally:
            if hw is not None:
                hw.release(mm, vpn)
        yield  # the access traps
        # handle_mm_fault(k, a, mm, vpn, write), inlined (hot: one frame fewer at every
        # point of a fault): lock_mm_and_find_vma's mmap_read_lock, then the fault under
        # it, which may drop it (FAULT_FLAG_ALLOW_RETRY).
        yield from k.mmap_read_lock(a, mm, "handle_mm_fault:mmap_read_lock")
        dropped = [False]
        try:
            r = yield from handle_mm_fault_locked(k, a, mm, vpn, write, retry=dropped)
        finally:
            if not dropped[0]:
                k.mmap_read_unlock(a, mm, "handle_mm_fault:mmap_read_unlock")
        if r & VM_FAULT_SIGBUS:
            a.sigbus += 1
            k.count("sigbus")
            return ACCESS_SIGBUS
        if r & VM_FAULT_SIGSEGV:
            k.count("sigsegv")
            return ACCESS_SIGSEGV
        retries += 1
        if retries > 1 and retries % 64 == 0:
            k.count("fault_retry_64")
        yield


def handle_mm_fault(k: Kernel, a: Actor, mm: int, vpn: int, write: bool) -> Path:
    """``lock_mm_and_find_vma()`` + ``handle_mm_fault()`` → ``handle_pte_fault()``
    under ``mmap_read_lock`` (the user fault: the model's CPU takes the lock).
    ``cpu_access`` has these lines inlined: keep the two the same."""
    yield from k.mmap_read_lock(a, mm, "handle_mm_fault:mmap_read_lock")
    dropped = [False]  # FAULT_FLAG_ALLOW_RETRY: set once the path released the lock
    try:
        return (yield from handle_mm_fault_locked(k, a, mm, vpn, write, retry=dropped))
    finally:
        if not dropped[0]:  # VM_FAULT_RETRY after release_fault_lock() leaves it dropped
            k.mmap_read_unlock(a, mm, "handle_mm_fault:mmap_read_unlock")


def handle_mm_fault_locked(
    k: Kernel, a: Actor, mm: int, vpn: int, write: bool, retry: list[bool] | None = None
) -> Path:
    """``handle_mm_fault()`` → ``handle_pte_fault()`` for a caller that already holds
    ``mmap_read_lock`` (``hmm_vma_fault``, ``faultin_page``). ``retry``:
    ``FAULT_FLAG_ALLOW_RETRY`` (a user fault), a one-element list: a path that must sleep
    on a folio lock may drop ``mmap_lock`` (and set ``retry[0]``) and return
    ``VM_FAULT_RETRY``; without it (GUP of a locked caller, ``hmm_vma_fault``) it sleeps
    with the lock held."""
    row = k.s.find_vma(mm, vpn)
    if row < 0:
        return VM_FAULT_SIGSEGV
    vflags = k.s.vma_flags(mm, row)
    if write and not vflags & VM_WRITE:
        return VM_FAULT_SIGSEGV
    k.count("faults")
    if k.geo.thp:  # v7: the PMD level of __handle_mm_fault first
        ret = yield from handle_pmd_fault_v7(k, a, mm, row, vpn, write)
        if ret != VM_FAULT_FALLBACK:
            return ret
    pte = k.pte_read(mm, vpn)  # vmf->orig_pte = ptep_get_lockless()
    kind = pte & PTE_TYPE_MASK
    if kind == PTE_NONE:
        return (yield from do_anonymous_page(k, a, mm, vpn, write, vflags))
    # Every other branch takes the PTL next (handle_pte_fault's spin_lock, or
    # do_swap_page's / migration_entry_wait's) and re-checks the entry there: the
    # lockless read and the lock are apart, as in the kernel.
    yield
    if kind == PTE_PRESENT:
        if write and not pte & PTE_WRITE:
            if k.geo.thp and fo.folio_test_large(k, fo.page_folio(k, pte >> PTE_PFN_SHIFT)):
                return (yield from do_wp_page_large_v7(k, a, mm, vpn, pte))
            return (yield from do_wp_page(k, a, mm, vpn, pte))
        return VM_FAULT_OK  # spurious: the TLB will refill on retry
    if kind == PTE_MIGRATION:
        yield from migration_entry_wait(k, a, mm, vpn)
        return VM_FAULT_OK
    if kind == PTE_DEVICE_PRIVATE:
        return (yield from do_swap_page_device(k, a, mm, vpn, pte))
    if kind == PTE_DEVICE_EXCLUSIVE:
        return (yield from remove_device_exclusive_entry(k, a, mm, vpn, pte, retry))
    swapin = k.hooks.get("do_swap_page")
    if swapin is not None:
        return (yield from swapin(k, a, mm, vpn, pte, write))
    return VM_FAULT_SIGBUS


def handle_pmd_fault_v7(k: Kernel, a: Actor, mm: int, vma: int, vpn: int, write: bool) -> Path:
    """The PMD level of ``__handle_mm_fault()`` (7.0 mm/memory.c 6407-6455), for the
    ``v7`` generation (``geometry.thp``). Returns ``VM_FAULT_FALLBACK`` when the fault
    goes on at the PTE level (``handle_pte_fault``), else the fault's result.

    - PMD none in a THP-eligible VMA (``VM_HUGEPAGE``:
      :func:`~core.mm.huge_memory.thp_vma_allowable_order`): ``create_huge_pmd`` →
      :func:`~core.mm.huge_memory.do_huge_pmd_anonymous_page`, unless it falls back
      (no aligned folio free): then, as for any other none PMD, the PTE level, whose
      ``do_anonymous_page`` begins with ``pte_alloc`` (``pmd_install`` under the PMD
      lock: done here);
    - a device-private PMD: :func:`~core.mm.huge_memory.do_huge_pmd_device_private`;
    - a PMD migration entry: :func:`~core.mm.huge_memory.pmd_migration_entry_wait`,
      then 0 (the access retries);
    - a huge present PMD: a write through a read-only one goes to ``wp_huge_pmd`` →
      :func:`~core.mm.huge_memory.do_huge_pmd_wp_page` (anonymous VMAs only; no
      userfaultfd), which may split the PMD and fall back; otherwise, under the PMD
      lock, ``huge_pmd_set_accessed``. No NUMA hinting (``pmd_protnone``).
    """
    idx = vpn // k.geo.ptes_per_table
    orig = pm.pmdp_get(k, mm, idx)  # vmf->orig_pmd = pmdp_get_lockless()
    kind = orig & PTE_TYPE_MASK
    if kind == PTE_NONE and hm.thp_vma_allowable_order(k, mm, vma, vpn):
        ret = yield from hm.do_huge_pmd_anonymous_page(
            k, a, mm, vma, vpn, write, check_stable_address_space
        )
        if ret != VM_FAULT_FALLBACK:
            return ret
        yield  # fallback: handle_pte_fault → do_anonymous_page → pte_alloc
    if kind == PTE_NONE:
        ptl = yield from pm.pmd_lock(k, a, mm, idx, "pte_alloc:pmd_lock")  # pmd_install
        cur = pm.pmdp_get(k, mm, idx)
        if pm.pmd_none(cur):
            pm.set_pmd_at(k, mm, idx, pm.PMD_TABLE)
        elif not pm.pmd_is_table(cur):
            # A huge PMD got there first (a THP fault, a migration's insert):
            # do_anonymous_page's pte_offset_map_lock() finds no PTE table and returns
            # 0; the access retries through the PMD.
            k.spin_unlock(a, ptl, "pte_alloc:pmd_unlock")
            k.count("pte_alloc_raced_huge")
            return VM_FAULT_OK
        k.spin_unlock(a, ptl, "pte_alloc:pmd_unlock")
        return VM_FAULT_FALLBACK
    if kind == pm.PMD_TABLE:
        return VM_FAULT_FALLBACK
    k.count("thp_pmd_faults")
    yield  # the lockless read and the PMD lock are apart
    if kind == PTE_DEVICE_PRIVATE:
        return (yield from hm.do_huge_pmd_device_private(k, a, mm, vpn, orig))
    if kind == PTE_MIGRATION:
        yield from hm.pmd_migration_entry_wait(k, a, mm, idx)
        return VM_FAULT_OK
    if kind != PTE_PRESENT:
        return VM_FAULT_OK  # no other PMD leaf in the model
    if write and not orig & PTE_WRITE:
        return (yield from hm.do_huge_pmd_wp_page(k, a, mm, vma, vpn, orig))  # or FALLBACK
    ptl = yield from pm.pmd_lock(k, a, mm, idx, "__handle_mm_fault:pmd_lock")
    hm.huge_pmd_set_accessed(k, mm, idx, orig, write)  # else fix_spurious_fault: nothing
    k.spin_unlock(a, ptl, "__handle_mm_fault:pmd_unlock")
    return VM_FAULT_OK


def do_anonymous_page(
    k: Kernel, a: Actor, mm: int, vpn: int, write: bool, vflags: int
) -> Path:
    """``do_anonymous_page()``: allocate a zeroed page for an empty entry.

    The model maps a fresh page on read faults too, read-only, where the kernel maps the
    shared zero page; a later write then goes through ``do_wp_page`` and reuses it.
    Both 7.0 branches test :func:`check_stable_address_space` under the PTL; the model's
    one branch does too, in the generations that have it (``Variant.stable_check_fault``:
    4.15+, so ``v5.0`` and ``v6``, not ``hmm-2017``).
    """
    if not vflags & VM_ANON:
        return VM_FAULT_SIGBUS
    pfn = k.alloc_page(a, 0, "do_anonymous_page")
    if pfn < 0:
        k.count("oom")
        return VM_FAULT_OOM
    yield
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, "do_anonymous_page:ptl")
    if k.pte_read(mm, vpn) != 0:
        # Someone populated it meanwhile (the kernel's !pte_none recheck).
        k.spin_unlock(a, ptl, "do_anonymous_page:ptl")
        k.put_page(a, pfn, "do_anonymous_page:release")
        return VM_FAULT_OK
    if k.variant.stable_check_fault:
        # 7.0 (both the zero-page and the own-page branch; 4.15+, 3f70dc38cec2): under
        # the PTL, after the recheck: an OOM-reaped mm gets SIGBUS, never a zeroed page.
        ret = check_stable_address_space(k, mm)
        if ret:
            k.spin_unlock(a, ptl, "do_anonymous_page:ptl")
            k.put_page(a, pfn, "do_anonymous_page:release")
            k.count("unstable_sigbus")
            return ret
    k.set_flag(pfn, PG_anon | PG_anon_exclusive | PG_uptodate)
    folio_set_anon(k, pfn, mm, vpn)
    k.mapcount_add(pfn, 1)  # folio_add_new_anon_rmap; the allocation's reference maps it
    k.folio_add_lru(a, pfn, "do_anonymous_page:folio_add_lru_vma")
    bits = PTE_YOUNG
    if write and vflags & VM_WRITE:
        bits |= PTE_WRITE | PTE_DIRTY
    k.set_pte(mm, vpn, pte_encode(PTE_PRESENT, pfn, bits))
    k.spin_unlock(a, ptl, "do_anonymous_page:ptl")
    return VM_FAULT_OK


def do_wp_page(k: Kernel, a: Actor, mm: int, vpn: int, orig: int) -> Path:
    """``do_wp_page()``: a write to a present read-only entry.

    7.0 (``v6``): reuse the page when this mm maps it exclusively
    (``wp_can_reuse_anon_folio``: the page is ``PageAnonExclusive``, or it is the only
    mapping and nobody else holds a reference); otherwise copy it (``wp_page_copy``).
    ``hmm-2017`` and ``v5.0`` (``Variant.wp_reuse_by_mapcount``) run 4.14-5.0's rule
    instead: :func:`do_wp_page_anon_414`.
    """
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, "do_wp_page:ptl")
    pte = k.pte_read(mm, vpn)
    if pte != orig:
        k.spin_unlock(a, ptl, "do_wp_page:ptl")
        return VM_FAULT_OK
    pfn = pte >> PTE_PFN_SHIFT
    f = k.flags(pfn)
    if k.variant.wp_reuse_by_mapcount and f & PG_anon:
        return (yield from do_wp_page_anon_414(k, a, mm, vpn, orig, pfn))
    if f & PG_anon and (
        f & PG_anon_exclusive or (k.mapcount(pfn) == 1 and k.ref_count(pfn) == 1)
    ):
        k.set_flag(pfn, PG_anon_exclusive)
        k.set_pte(mm, vpn, pte | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
        k.flush_tlb_range(mm, vpn, vpn + 1)
        k.spin_unlock(a, ptl, "do_wp_page:ptl")
        k.count("wp_reuse")
        return VM_FAULT_OK
    k.get_page(a, pfn, "do_wp_page:get")
    k.spin_unlock(a, ptl, "do_wp_page:ptl")
    return (yield from wp_page_copy(k, a, mm, vpn, orig, pfn))


def do_wp_page_anon_414(k: Kernel, a: Actor, mm: int, vpn: int, orig: int, pfn: int) -> Path:
    """``do_wp_page()`` of 4.14-5.0 for an anonymous non-KSM page (the model has no
    KSM write faults), entered with the PTL held and the entry ``pte_same``.

    v5.0 mm/memory.c ``do_wp_page`` (the branch at about line 2512, per the hunk
    header ``@@ -2509`` of the 5.1 patch "mm: reuse only-pte-mapped KSM page in
    do_wp_page" against it; 4.14's is the same code, ``vmf``-based since 4.10):
    ``if (PageAnon(vmf->page) && !PageKsm(vmf->page))``: ``trylock_page``;
    when it fails, ``get_page``, ``pte_unmap_unlock``, ``lock_page`` (a sleep, with
    ``mmap_sem`` held), ``pte_offset_map_lock`` and, unless ``pte_same``, back out
    (``unlock_page``, unlock, ``put_page``, return 0); else ``put_page``. Then
    ``reuse_swap_page(vmf->page, &total_map_swapcount)`` (mm/swapfile.c,
    :func:`~pagerace.core.mm.swapfile.reuse_swap_page`, through
    ``k.hooks["reuse_swap_page"]``): when it says yes, ``page_move_anon_rmap`` if
    ``total_map_swapcount == 1``, ``unlock_page`` and ``wp_page_reuse`` (the entry
    young, dirty and writable; the PTL dropped); otherwise ``unlock_page`` and copy:
    ``get_page``, ``pte_unmap_unlock``, :func:`wp_page_copy`.

    The reuse depends on the mapcount and the swap count only, never on the refcount
    or ``PageAnonExclusive`` (5.8/5.9's refcount rule, 09854ba94c6a, and 5.19's
    ``PageAnonExclusive`` came later): a page another reference holds (a GUP pin) is
    reused, so that reference stays coherent with the mapping. Nothing here sets or
    reads ``PG_anon_exclusive`` (docs/generations.md lists what else still does under
    these generations).
    """
    ptl = k.ptl_word(mm, vpn)
    if not k.trylock_page(a, pfn, "do_wp_page:trylock_page"):
        k.get_page(a, pfn, "do_wp_page:get_page")
        k.spin_unlock(a, ptl, "do_wp_page:ptl")
        yield  # between pte_unmap_unlock and lock_page
        yield from k.lock_page(a, pfn, "do_wp_page:lock_page")
        yield from k.spin_lock(a, ptl, "do_wp_page:ptl")
        if k.pte_read(mm, vpn) != orig:  # !pte_same(): back out
            k.unlock_page(a, pfn, "do_wp_page:unlock_page")
            k.spin_unlock(a, ptl, "do_wp_page:ptl")
            k.put_page(a, pfn, "do_wp_page:put_page")
            k.count("wp_old_backout")
            return VM_FAULT_OK
        k.put_page(a, pfn, "do_wp_page:put_page")
    reuse = k.hooks.get("reuse_swap_page")
    if reuse is not None:
        ok, total_map_swapcount = reuse(k, a, pfn)
    else:  # no swap in this kernel: page_trans_huge_map_swapcount() is the mapcount
        total_map_swapcount = k.mapcount(pfn)
        ok = total_map_swapcount <= 1
    if ok:
        if total_map_swapcount == 1:
            # page_move_anon_rmap(): the model's anon mapping names the mm and page
            # the page was first mapped at (folio_set_anon); a page this mm maps alone
            # keeps it (the anon_vma of the model is the mm's).
            k.count("wp_old_move_anon_rmap")
        k.unlock_page(a, pfn, "do_wp_page:unlock_page")
        # wp_page_reuse(): pte_mkyoung, maybe_mkwrite(pte_mkdirty()),
        # ptep_set_access_flags (the model flushes, as its 7.0 reuse does), unlock.
        k.set_pte(mm, vpn, orig | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
        k.flush_tlb_range(mm, vpn, vpn + 1)
        k.spin_unlock(a, ptl, "do_wp_page:ptl")
        k.count("wp_reuse")
        return VM_FAULT_OK
    k.unlock_page(a, pfn, "do_wp_page:unlock_page")
    k.get_page(a, pfn, "do_wp_page:get")
    k.spin_unlock(a, ptl, "do_wp_page:ptl")
    return (yield from wp_page_copy(k, a, mm, vpn, orig, pfn))


def wp_page_copy(
    k: Kernel, a: Actor, mm: int, vpn: int, orig: int, pfn: int, head: int = -1
) -> Path:
    """``wp_page_copy()``, entered with a reference on the old page and the PTL
    dropped: copy the page, and under an ``MMU_NOTIFY_CLEAR`` invalidation and the PTL
    switch the entry to the copy if it is still ``orig``.

    7.0 and 4.14-5.0 (v5.0 mm/memory.c, from about line 2235; its
    ``mmu_notifier_range_init`` at about 2275) have the same order: the copy,
    ``invalidate_range_start``, the PTL, ``pte_same``, clear and flush the entry, the
    new page's rmap and LRU, the new entry, the old page's rmap removed and its mapping
    reference put under the PTL, the unlock, ``invalidate_range_end``, the caller's
    reference put. What differs is not modelled: 4.14-5.0 clear with
    ``ptep_clear_flush_notify`` and map with ``set_pte_at_notify`` (the secondary-TLB
    ``->invalidate_range`` / ``->change_pte`` callbacks, gone by 7.0), end with
    ``mmu_notifier_invalidate_range_only_end`` (4.15+; 4.14's ``_end``), and 4.14's
    range carries no event (5.2+). The new page is ``PG_anon_exclusive`` in every
    generation, as the model's other new anonymous pages (do_anonymous_page).

    ``head`` (v7, :func:`do_wp_page_large_v7`): the old page's folio, whose references
    and PTE mapping are dropped with the folio functions (``folio_put``,
    ``folio_remove_rmap_pte``); -1: the old page is its own small folio.
    """
    if head < 0:
        def put(site: str) -> None:
            k.put_page(a, pfn, site)
    else:
        def put(site: str) -> None:
            fo.folio_put(k, a, head, site)
    ptl = k.ptl_word(mm, vpn)
    yield
    new = k.alloc_page(a, 0, "wp_page_copy")
    if new < 0:
        put("wp_page_copy:put")
        k.count("oom")  # as do_anonymous_page and do_swap_page count theirs
        return VM_FAULT_OOM
    k.set_data(new, k.data(pfn))  # __wp_page_copy_user
    yield
    # 7.0: an MMU_NOTIFY_CLEAR invalidation of the page around the switch.
    rng = MmuNotifierRange(MMU_NOTIFY_CLEAR, mm, vpn, vpn + 1)
    yield from mmu_notifier_invalidate_range_start(k, a, rng)
    yield from k.spin_lock(a, ptl, "wp_page_copy:ptl")
    if k.pte_read(mm, vpn) != orig:
        k.spin_unlock(a, ptl, "wp_page_copy:ptl")
        yield from mmu_notifier_invalidate_range_end(k, a, rng)
        k.put_page(a, new, "wp_page_copy:release")
        put("wp_page_copy:put")
        return VM_FAULT_OK
    k.ptep_get_and_clear(mm, vpn)
    k.flush_tlb_range(mm, vpn, vpn + 1)
    k.set_flag(new, PG_anon | PG_anon_exclusive | PG_uptodate)
    folio_set_anon(k, new, mm, vpn)  # folio_add_new_anon_rmap
    k.mapcount_add(new, 1)
    k.folio_add_lru(a, new, "wp_page_copy:folio_add_lru_vma")
    k.set_pte(mm, vpn, pte_encode(PTE_PRESENT, new, PTE_WRITE | PTE_DIRTY | PTE_YOUNG))
    # folio_remove_rmap_pte on the old page
    if head < 0:
        k.mapcount_add(pfn, -1)
    else:
        fo.folio_remove_rmap_ptes(k, head, pfn, 1, mm)
    put("wp_page_copy:unmap")
    k.spin_unlock(a, ptl, "wp_page_copy:ptl")
    yield from mmu_notifier_invalidate_range_end(k, a, rng)
    put("wp_page_copy:put")
    k.count("wp_copy")
    return VM_FAULT_OK


def _wp_can_reuse_large_anon_folio(k: Kernel, head: int) -> bool:
    """``__wp_can_reuse_large_anon_folio()`` (7.0 mm/memory.c 4013): reuse a PTE-mapped
    page of a large anonymous folio only when more than one page is mapped, the folio is
    not "maybe mapped shared" (``FOLIO_MM_IDS_SHARED_BIT`` of ``_mm_ids``: a second mm
    maps it, e.g. after fork) and every reference is a mapping (``folio_large_mapcount
    == folio_ref_count``), the last two checked again under
    ``folio_lock_large_mapcount`` (one step in the model: nothing between yields). No
    THP swap cache."""
    if fo.folio_large_mapcount(k, head) <= 1:
        return False
    if fo.folio_maybe_mapped_shared(k, head) and "mm_ids_ignore_shared" not in k.faults:
        return False
    return fo.folio_large_mapcount(k, head) == fo.folio_ref_count(k, head)


def do_wp_page_large_v7(k: Kernel, a: Actor, mm: int, vpn: int, orig: int) -> Path:
    """``do_wp_page()`` (7.0 mm/memory.c 4129) for a write to a read-only PTE that maps a
    page of a large folio (``v7``: after a PMD split, e.g. ``do_huge_pmd_wp_page``'s
    fallback). Under the PTL: reuse when the page is ``PageAnonExclusive`` or
    :func:`_wp_can_reuse_large_anon_folio` (then ``SetPageAnonExclusive``); else
    ``folio_get`` and ``wp_page_copy``: a small copy of the one page, the old page's PTE
    mapping removed from the large folio (``folio_remove_rmap_pte``; the deferred split
    queue is not modelled). The PTL is re-read: a small folio (the large one was split
    meanwhile) takes v6's reuse test."""
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, "do_wp_page:ptl")
    pte = k.pte_read(mm, vpn)
    if pte != orig:
        k.spin_unlock(a, ptl, "do_wp_page:ptl")
        return VM_FAULT_OK
    pfn = pte >> PTE_PFN_SHIFT
    head = fo.page_folio(k, pfn)
    large = fo.folio_test_large(k, head)
    if k.test_flag(head, PG_anon) and (
        k.test_flag(pfn, PG_anon_exclusive)
        or (
            _wp_can_reuse_large_anon_folio(k, head)
            if large
            else k.mapcount(pfn) == 1 and k.ref_count(pfn) == 1
        )
    ):
        k.set_flag(pfn, PG_anon_exclusive)
        k.set_pte(mm, vpn, pte | PTE_WRITE | PTE_DIRTY | PTE_YOUNG)  # wp_page_reuse
        k.flush_tlb_range(mm, vpn, vpn + 1)
        k.spin_unlock(a, ptl, "do_wp_page:ptl")
        k.count("wp_reuse")
        return VM_FAULT_OK
    k.get_page(a, head, "do_wp_page:folio_get")
    k.spin_unlock(a, ptl, "do_wp_page:ptl")
    return (yield from wp_page_copy(k, a, mm, vpn, orig, pfn, head))


def migration_entry_wait(k: Kernel, a: Actor, mm: int, vpn: int) -> Path:
    """``migration_entry_wait()``: sleep until the page under migration is unlocked.

    Current kernels take no page reference (``migration_entry_wait_on_locked``, since
    5.17) and drop the PTL only once the wait is queued: the next unlock wakes the
    waiter even if the page is relocked, freed or reused before it runs. The catalog bug
    ``waiter-takes-ref`` restores the older ``get_page_unless_zero`` before sleeping.
    """
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, "migration_entry_wait:ptl")
    pte = k.pte_read(mm, vpn)
    if pte & PTE_TYPE_MASK != PTE_MIGRATION:
        k.spin_unlock(a, ptl, "migration_entry_wait:ptl")
        return
    # v7: the entry names a page; its folio's lock and reference are the head's
    # (softleaf_entry_wait_on_locked: page_folio()). Order-0 folios: the page itself.
    pfn = fo.page_folio(k, pte >> PTE_PFN_SHIFT)
    if not k.page_locked(pfn):
        k.spin_unlock(a, ptl, "migration_entry_wait:ptl")
        raise k.fail(
            FailureKind.MIGRATION_ENTRY_UNLOCKED,
            f"mm {mm} page {vpn} has a migration entry for frame {pfn}, which is not locked "
            "(migration entries must point at locked pages)",
            actors=[a],
            pages=[pfn],
            sites=["migration_entry_wait"],
        )
    if "waiter-takes-ref" in k.bugs:
        # Before 5.17: get_page_unless_zero() and then wait_on_page_locked().
        took_ref = k.get_page_unless_zero(a, pfn)
        k.spin_unlock(a, ptl, "migration_entry_wait:ptl")
        if took_ref:
            yield  # the reference is visible to the migration while we go to sleep
        yield from k.wait_on_page_locked(a, pfn, "migration_entry_wait:folio_wait_locked")
        if took_ref:
            k.put_page(a, pfn, "migration_entry_wait:put_page")
        return
    yield from k.migration_entry_wait_on_locked(
        a, pfn, ptl, "migration_entry_wait:folio_wait_locked", "migration_entry_wait:ptl"
    )


def do_swap_page_device(k: Kernel, a: Actor, mm: int, vpn: int, orig: int) -> Path:
    """``do_swap_page()`` for a device-private entry: hand the fault to the driver.

    Current kernels (6.15+, seed 000 era): under the PTL, recheck the entry
    (``pte_same``), ``folio_trylock`` the device page, take a reference, drop the PTL and
    call ``pgmap->ops->migrate_to_ram(vmf)`` with the page locked, then unlock and put it.
    When the trylock fails, wait for the unlock and retry the fault.

    Which entry runs is the variant's (``k.variant.fault_entry``): hmm-2017 and v5.0
    have the 4.14-6.0 one (``device_private_entry_fault()`` → the pgmap's fault
    handler, neither a reference nor the lock); on v6 the catalog bugs put the older
    ones back: ``fault-without-ref`` (before 6.1) and ``fault-ref-no-trylock`` (6.1-6.14:
    a reference, no lock).
    """
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, "do_swap_page:ptl")
    if k.pte_read(mm, vpn) != orig:
        k.spin_unlock(a, ptl, "do_swap_page:ptl")
        return VM_FAULT_OK
    page = orig >> PTE_PFN_SHIFT
    dev = k.device_for(page)
    # trylock_page / get_page / unlock_page / put_page act on page_folio(vmf->page): a
    # page of a large device folio (v7, after a PMD split) locks and references its
    # head; the driver is handed the page. Order-0 folios: the page itself.
    pfn = fo.page_folio(k, page)
    entry = k.variant.fault_entry(k)  # which kernel's device-private fault entry
    if entry == FAULT_ENTRY_NO_REF:
        k.spin_unlock(a, ptl, "do_swap_page:ptl")
        yield
        return (yield from dev.migrate_to_ram(k, a, mm, vpn, page, locked=False))
    if entry == FAULT_ENTRY_REF:
        k.get_page(a, pfn, "do_swap_page:get_page")
        k.spin_unlock(a, ptl, "do_swap_page:ptl")
        yield
        ret = yield from dev.migrate_to_ram(k, a, mm, vpn, page, locked=False)
        k.put_page(a, pfn, "do_swap_page:put_page")
        return ret
    if k.trylock_page(a, pfn, "do_swap_page:folio_trylock"):
        k.get_page(a, pfn, "do_swap_page:get_page")
        k.spin_unlock(a, ptl, "do_swap_page:ptl")
        yield
        ret = yield from dev.migrate_to_ram(k, a, mm, vpn, page, locked=True)
        # unlock_page(vmf->page) / put_page(vmf->page): page_folio() again, after the
        # driver: a large device folio split during the migration (v7,
        # migrate_vma_split_folio) moved the lock and reference to the page's new folio.
        pfn = fo.page_folio(k, page)
        k.unlock_page(a, pfn, "do_swap_page:folio_unlock")
        fo.folio_put(k, a, pfn, "do_swap_page:put_page")  # order 0: put_page
        return ret
    # softleaf_entry_wait_on_locked(): drop the PTL once queued, sleep, then retry.
    yield from k.migration_entry_wait_on_locked(
        a, pfn, ptl, "do_swap_page:wait_on_locked", "do_swap_page:ptl"
    )
    return VM_FAULT_OK


# --------------------------------------------------------------------------------------
# Device-exclusive entries (5.13+; as 7.0 writes them). make_device_exclusive() is in
# core/mm/rmap.py; the entry is PTE_DEVICE_EXCLUSIVE naming the page, with only the
# soft-dirty and uffd-wp bits (7.0 has one entry type; 5.13-6.13 had a readable and a
# writable one, and v6 runs 7.0's).


def restore_exclusive_pte(k: Kernel, mm: int, vpn: int, pfn: int, orig: int) -> None:
    """``restore_exclusive_pte()`` (7.0 mm/memory.c): with the folio and the PTL held,
    an ordinary present entry again: old (``pte_mkold``), soft-dirty / uffd-wp from the
    entry, writable (and dirty if the folio is) when the VMA is writable and
    ``can_change_pte_writable()``: for a private anonymous mapping, the page is
    anon-exclusive and the entry is not uffd-wp armed. No TLB flush: it was not
    present."""
    bits = orig & (PTE_SOFT_DIRTY | PTE_UFFD_WP)
    row = k.s.find_vma(mm, vpn)
    vflags = k.s.vma_flags(mm, row) if row >= 0 else 0
    if (
        vflags & VM_WRITE
        and not orig & PTE_UFFD_WP
        and k.test_flag(pfn, PG_anon)
        and k.test_flag(pfn, PG_anon_exclusive)
    ):
        if k.test_flag(pfn, PG_dirty):
            bits |= PTE_DIRTY
        bits |= PTE_WRITE
    k.set_pte(mm, vpn, pte_encode(PTE_PRESENT, pfn, bits))
    k.count("exclusive_restored")


def folio_lock_or_retry(
    k: Kernel, a: Actor, mm: int, pfn: int, retry: list[bool] | None, site: str
) -> Path:
    """``folio_lock_or_retry()`` / ``__folio_lock_or_retry()`` (7.0 mm/filemap.c): the
    trylock; else, for a fault that may retry, drop ``mmap_lock``
    (``release_fault_lock``), wait for the unlock and return ``VM_FAULT_RETRY``; else
    sleep for the lock with ``mmap_lock`` held. (``FAULT_FLAG_KILLABLE``'s signals are
    not modelled.)"""
    yield from k.might_sleep()
    if k.trylock_page(a, pfn, site + ":folio_trylock"):
        return VM_FAULT_OK
    if retry is not None:
        k.mmap_read_unlock(a, mm, site + ":release_fault_lock")
        retry[0] = True
        yield from k.wait_on_page_locked(a, pfn, site + ":folio_wait_locked")
        k.count("exclusive_fault_retry")
        return VM_FAULT_RETRY
    yield from k.lock_page(a, pfn, site + ":__folio_lock")
    return VM_FAULT_OK


def remove_device_exclusive_entry(
    k: Kernel, a: Actor, mm: int, vpn: int, orig: int, retry: list[bool] | None
) -> Path:
    """``do_swap_page()`` → ``remove_device_exclusive_entry()`` (7.0): a CPU touches a
    page a device holds exclusively. ``folio_try_get`` without the PTL (the entry may be
    gone and the page freed or reused: then nothing to do), ``folio_lock_or_retry``,
    an ``MMU_NOTIFY_CLEAR`` invalidation of the page with no owner (every mirror drops
    its atomic entry), and under the PTL, if the entry is still ``orig``, the present
    entry back (:func:`restore_exclusive_pte`); unlock, put, end the invalidation."""
    site = "remove_device_exclusive_entry"
    pfn = orig >> PTE_PFN_SHIFT
    if not k.get_page_unless_zero(a, pfn):  # folio_try_get()
        k.count("exclusive_fault_page_gone")
        return VM_FAULT_OK
    yield  # between the reference and the lock: the entry may change
    ret = yield from folio_lock_or_retry(k, a, mm, pfn, retry, site)
    if ret:
        k.put_page(a, pfn, "remove_device_exclusive_entry:folio_put")
        return ret
    rng = MmuNotifierRange(MMU_NOTIFY_CLEAR, mm, vpn, vpn + 1)
    if "exclusive_restore_skips_notifier" not in k.faults:
        yield from mmu_notifier_invalidate_range_start(k, a, rng)
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, "remove_device_exclusive_entry:ptl")
    if k.pte_read(mm, vpn) == orig:  # pte_same()
        restore_exclusive_pte(k, mm, vpn, pfn, orig)
    k.spin_unlock(a, ptl, "remove_device_exclusive_entry:ptl")
    k.unlock_page(a, pfn, "remove_device_exclusive_entry:folio_unlock")
    k.put_page(a, pfn, "remove_device_exclusive_entry:folio_put")
    if "exclusive_restore_skips_notifier" not in k.faults:
        yield from mmu_notifier_invalidate_range_end(k, a, rng)
    return VM_FAULT_OK
