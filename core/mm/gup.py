"""Pinning user pages: ``mm/gup.c`` (``pin_user_pages``, ``get_user_pages``, GUP-fast,
``unpin_user_pages``).

Two ways in, two kinds of reference:

- the slow path (``__get_user_pages`` → ``follow_page_pte`` / ``faultin_page``) looks the
  entry up under ``mmap_read_lock`` and the page-table lock and faults the page in until
  it is present with the access the caller asked for;
- GUP-fast (``gup_fast_pte_range``) is lockless: B1 read the entry, B2 back off from a
  read-only entry for a write, B3 grab the folio, B4 re-read the entry and back off if it
  changed, B5 back off from a read-only entry whose page is not anon-exclusive (the
  ordering argument of ``__folio_try_share_anon_rmap`` in seed 001, rmap.h); a pin also
  backs off when ``mm->write_protect_seq`` is odd or changed (a fork is copying).

``FOLL_PIN`` adds ``GUP_PIN_COUNTING_BIAS`` to the refcount of an order-0 folio (and 1
to the model's pin count ``F_PIN``), and one reference plus one ``_pincount`` to a large
folio (7.0 ``try_grab_folio``: ``folio_has_pincount``), so ``folio_maybe_dma_pinned()``
sees it; a pin of an anonymous page requires the
page to be anon-exclusive (``gup_must_unshare``: fault with ``FAULT_FLAG_UNSHARE`` first).
``FOLL_GET`` adds a plain reference: migration's refcount check must refuse such a page
(``migrate_vma_check_page``), but fork does not see it (which is why DMA uses FOLL_PIN).

A pinner actor pins one page, holds it for a while (a DMA) writing or reading content
tokens through the pin, then unpins it. The pin-coherency oracle
(:func:`~pagerace.core.oracles.world.check_pin`) checks at the pin and at every DMA access that
the pinned page is still the page mapped at the pinned address.

``FOLL_LONGTERM`` pins (:func:`pin_user_page_longterm`) move a device-coherent page to
system memory first (``migrate_device_coherent_folio``, -EBUSY when it is pinned).
XX: movable (ZONE_MOVABLE / CMA) pages are not modelled, so only device-coherent pages
move for a long-term pin.

``v7`` (``geometry.thp``): both ways in read the PMD first, as 7.0 does.
GUP-fast's ``gup_fast_pmd_range`` falls back on a PMD that is not present (none, a PMD
migration entry, a device-private PMD) and hands a huge present PMD to
:func:`gup_fast_pmd_leaf`; the slow path's ``follow_pmd_mask`` faults for a PMD that is
none or not present (``no_page_table``: ``handle_pmd_fault_v7`` waits for the migration
or migrates the device folio back) and follows a huge PMD under the PMD lock
(:func:`follow_huge_pmd`). A pin of a page of a large folio (PMD- or PTE-mapped) is the
folio's: one reference on the head and one ``_pincount``; the pin record keeps the 4K
page, so the oracle judges each pinned page of the folio at its own address.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..actors import register_op
from ..machine import folio as fo
from ..machine import pmd as pm
from ..machine.errors import FailureKind
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    F_PIN,
    F_REF,
    GUP_PIN_COUNTING_BIAS,
    M_WP_SEQ,
    MM_WORDS,
    PMD_INVALID,
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    VM_WRITE,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
)
from ..oracles.world import check_pin, dma_read_check
from .huge_memory import huge_pmd_set_accessed
from .memory import (
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    handle_mm_fault,
    handle_mm_fault_locked,
)
from .migrate_device import migrate_device_coherent_folio

EFAULT = -14
ENOMEM = -12

# pin_dma modes (the op's ``mode`` argument).
MODE_PIN = 0  # pin_user_pages (FOLL_PIN, slow path)
MODE_PIN_FAST = 1  # pin_user_pages_fast (GUP-fast, falling back to the slow path)
MODE_GET = 2  # get_user_pages (FOLL_GET, slow path)
MODE_GET_FAST = 3  # get_user_pages_fast (FOLL_GET)
MODE_LONGTERM = 4  # pin_user_pages(FOLL_LONGTERM): device-coherent pages move out first
MODE_NAMES = ("pin", "pin_fast", "get", "get_fast", "longterm")


@dataclass
class PinRecord:
    """One page a pinner holds: where it was pinned, which frame, how."""

    actor: int
    mm: int
    vpn: int
    pfn: int
    pin: bool  # FOLL_PIN (else FOLL_GET)
    site: str
    detached: bool = False  # the address was unmapped since (zap): nothing to check


def pins_unmapped(k: Kernel, mm: int, vpn: int, moved_to: int = -1) -> None:
    """The entry at (mm, vpn) was zapped (or, with ``moved_to``, moved there by mremap):
    the pins this process's actors hold there no longer name an address (or follow the
    page). In the parallel engine each worker knows only its own actors' pins."""
    for recs in pin_table(k).values():
        for rec in recs:
            if rec.mm == mm and rec.vpn == vpn and not rec.detached:
                if moved_to >= 0:
                    rec.vpn = moved_to
                else:
                    rec.detached = True


def pin_table(k: Kernel) -> dict[int, list[PinRecord]]:
    """The pins each actor holds now (actor id → records), kept on the kernel."""
    t = k.hooks.get("gup.pins")
    if t is None:
        t = k.hooks["gup.pins"] = {}
    return t


def _large_head(k: Kernel, pfn: int) -> int:
    """The head of the large folio ``pfn`` belongs to (``v7``), or -1 for a page that is
    its own order-0 folio (every page of the older generations)."""
    if not k.geo.thp:
        return -1
    head = fo.page_folio(k, pfn)
    return head if fo.folio_test_large(k, head) else -1


def _grab(k: Kernel, a: Actor, pfn: int, pin: bool, site: str) -> None:
    """``try_grab_folio(page_folio(page), 1, flags)`` with the page mapped under the
    page-table (or PMD) lock, so its folio's refcount is held. 7.0: ``FOLL_GET`` adds a
    reference to the folio; ``FOLL_PIN`` adds ``GUP_PIN_COUNTING_BIAS`` to an order-0
    folio, and one reference plus one ``_pincount`` to a large one
    (``folio_has_pincount``)."""
    k.touch(a, pfn, site)
    head = _large_head(k, pfn)
    if head >= 0:
        k.get_page(a, head, site)  # folio_ref_add(folio, 1)
        if pin:
            fo.folio_pincount_add(k, head, 1)  # atomic_add(1, &folio->_pincount)
        return
    if pin:
        k.words.fetch_add(k.fw(pfn, F_PIN), 1)
        k.words.fetch_add(k.fw(pfn, F_REF), GUP_PIN_COUNTING_BIAS)
    else:
        k.get_page(a, pfn, site)


def _grab_fast(k: Kernel, a: Actor, pfn: int, pin: bool) -> bool:
    """``try_grab_folio_fast()``: ``try_get_folio`` (``folio_ref_try_add`` on
    ``page_folio(page)``, which fails on a free or frozen folio, then the check that the
    page still belongs to that folio: a split between the two puts the reference and
    retries), then the rest of the pin: the bias of an order-0 folio, one
    ``_pincount`` of a large one."""
    words = k.words
    if k.geo.thp:
        while True:
            head = fo.page_folio(k, pfn)
            w = k.fw(head, F_REF)
            old = words.load(w)
            if old <= 0:
                return False
            if not words.cas(w, old, old + 1):
                continue
            if fo.page_folio(k, pfn) != head:  # split meanwhile: folio_put_refs, retry
                fo.folio_put(k, a, head, "try_get_folio:split")
                continue
            if fo.folio_test_large(k, head):
                if pin:
                    fo.folio_pincount_add(k, head, 1)
                return True
            if pin:  # folio_ref_add(folio, GUP_PIN_COUNTING_BIAS - 1)
                words.fetch_add(w, GUP_PIN_COUNTING_BIAS - 1)
                words.fetch_add(k.fw(pfn, F_PIN), 1)
            return True
    w = k.fw(pfn, F_REF)
    add = GUP_PIN_COUNTING_BIAS if pin else 1
    while True:
        old = words.load(w)
        if old <= 0:
            return False
        if words.cas(w, old, old + add):
            break
    if pin:
        words.fetch_add(k.fw(pfn, F_PIN), 1)
    return True


def gup_put_folio(k: Kernel, a: Actor, pfn: int, pin: bool, site: str) -> None:
    """``gup_put_folio(page_folio(page), 1, flags)`` / ``unpin_user_page()``: drop a pin
    (the bias of an order-0 folio; one ``_pincount`` and one reference of a large one)
    or a reference; the folio is freed when the count reaches zero."""
    head = _large_head(k, pfn)
    if head >= 0:
        k.touch(a, head, site)
        if pin and fo.folio_pincount_add(k, head, -1) < 0:
            raise k.fail(
                FailureKind.REFCOUNT_UNDERFLOW,
                f"{a.name} unpinned page {pfn} of folio {head} at {site} with no pin held "
                "(_pincount went negative)",
                actors=[a],
                pages=[pfn, head],
                sites=[site],
            )
        fo.folio_put(k, a, head, site)
        return
    if not pin:
        k.put_page(a, pfn, site)
        return
    k.touch(a, pfn, site)
    if k.words.fetch_add(k.fw(pfn, F_PIN), -1) <= 0:
        raise k.fail(
            FailureKind.REFCOUNT_UNDERFLOW,
            f"{a.name} unpinned page {pfn} at {site} with no pin held",
            actors=[a],
            pages=[pfn],
            sites=[site],
        )
    k.put_page(a, pfn, site, refs=GUP_PIN_COUNTING_BIAS)


def _must_unshare(k: Kernel, page: int) -> bool:
    """``gup_must_unshare(vma, FOLL_PIN, page)`` for an anonymous page: a pin of a
    read-only mapping needs the page anon-exclusive (7.0 include/linux/mm.h)."""
    return k.test_flag(page, PG_anon) and not k.test_flag(page, PG_anon_exclusive)


def gup_fast_pmd_leaf(
    k: Kernel, a: Actor, mm: int, vpn: int, orig: int, write: bool, pin: bool
) -> Path:
    """``gup_fast_pmd_leaf()`` (7.0 mm/gup.c 2924) for one page: lockless, on the PMD
    ``orig`` that ``gup_fast_pmd_range`` read (``pmdp_get_lockless``). Back off when the
    hardware could not use it (``pmd_access_permitted``: an invalidated PMD, or a
    read-only one for a write); grab the folio of the page (``try_grab_folio_fast``: a
    reference, and a ``_pincount`` for a pin); back off when the PMD changed
    (``pmd_val(orig) != pmd_val(*pmdp)``) or, for a pin through a read-only PMD, when the
    folio's head is not anon-exclusive (``gup_must_unshare(NULL, flags, &folio->page)``).
    Returns the page's pfn, or -1 (the caller falls back to the slow path)."""
    site = "gup_fast_pmd_leaf"
    if orig & PMD_INVALID or (write and not orig & PTE_WRITE):
        return -1
    head = pm.pmd_pfn(orig)
    page = head + vpn % k.geo.ptes_per_table
    yield  # between the lockless read and the grab: the folio may be split, freed, reused
    if not _grab_fast(k, a, page, pin):
        k.count("gup_fast_grab_failed")
        return -1
    yield  # between the grab and the re-check: a split, zap or share may run here
    if "gup_fast_no_recheck" not in k.faults:
        idx = vpn // k.geo.ptes_per_table
        if pm.pmdp_get(k, mm, idx) != orig:
            gup_put_folio(k, a, page, pin, site + ":backoff_changed")
            k.count("gup_fast_pmd_backoff_changed")
            return -1
        if pin and not orig & PTE_WRITE and _must_unshare(k, head):
            gup_put_folio(k, a, page, pin, site + ":backoff_unshare")
            k.count("gup_fast_pmd_backoff_unshare")
            return -1
    return page


def gup_fast(k: Kernel, a: Actor, mm: int, vpn: int, write: bool, pin: bool) -> Path:
    """``gup_fast()`` → ``gup_fast_pmd_range()`` → ``gup_fast_pte_range()`` (mm/gup.c;
    seed 001 B1-B5): lockless, no mmap_lock. On ``v7`` the PMD is read first
    (``pmdp_get_lockless``): not present (none, a migration or device-private PMD) falls
    back, a huge one goes to :func:`gup_fast_pmd_leaf`, a PTE table to the PTE loop,
    whose re-check (B4) compares the PMD too.

    Returns the pinned pfn, or -1 to fall back to the slow path.
    """
    site = "gup_fast_pte_range"
    seq_w = k.lay.MM + mm * MM_WORDS + M_WP_SEQ
    seq = k.words.load(seq_w) if pin else 0
    if seq & 1:
        return -1  # raw_read_seqcount(&mm->write_protect_seq) odd: fork is copying
    pmd = PMD_TABLE
    if k.geo.thp:
        pmd = pm.pmdp_get(k, mm, vpn // k.geo.ptes_per_table)
        if pmd & PTE_TYPE_MASK != PMD_TABLE:
            if pmd & PTE_TYPE_MASK != PTE_PRESENT:
                return -1  # !pmd_present(pmd)
            pfn = yield from gup_fast_pmd_leaf(k, a, mm, vpn, pmd, write, pin)
            if pfn < 0:
                return -1
            if (
                pin and "gup_fast_no_recheck" not in k.faults and k.words.load(seq_w) != seq
            ):  # read_seqcount_retry(): a fork ran
                gup_put_folio(k, a, pfn, pin, "gup_fast:backoff_fork")
                k.count("gup_fast_backoff_fork")
                return -1
            k.count("gup_fast_pmd_pinned" if pin else "gup_fast_pmd_got")
            return pfn
    pte = k.pte_read(mm, vpn)  # B1: ptep_get_lockless
    if pte & PTE_TYPE_MASK != PTE_PRESENT:
        return -1
    if write and not pte & PTE_WRITE:  # B2
        return -1
    pfn = pte >> PTE_PFN_SHIFT
    if k.is_device_private(pfn):
        return -1
    yield  # between reading the entry and grabbing the folio: it may be freed and reused
    if not _grab_fast(k, a, pfn, pin):  # B3
        k.count("gup_fast_grab_failed")
        return -1
    yield  # between the pin and the re-check: A1-A4 of a concurrent share may run here
    if "gup_fast_no_recheck" not in k.faults:
        if k.pte_read(mm, vpn) != pte or (
            k.geo.thp and pm.pmdp_get(k, mm, vpn // k.geo.ptes_per_table) != pmd
        ):  # B4
            gup_put_folio(k, a, pfn, pin, site + ":backoff_changed")
            k.count("gup_fast_backoff_changed")
            return -1
        if pin and not pte & PTE_WRITE and _must_unshare(k, pfn):  # B5: gup_must_unshare()
            gup_put_folio(k, a, pfn, pin, site + ":backoff_unshare")
            k.count("gup_fast_backoff_unshare")
            return -1
        if pin and k.words.load(seq_w) != seq:  # read_seqcount_retry(): a fork ran
            gup_put_folio(k, a, pfn, pin, site + ":backoff_fork")
            k.count("gup_fast_backoff_fork")
            return -1
    k.count("gup_fast_pinned" if pin else "gup_fast_got")
    return pfn


def follow_huge_pmd(
    k: Kernel, a: Actor, mm: int, vpn: int, write: bool, pin: bool, touch: bool
) -> int:
    """``follow_huge_pmd()`` (7.0 mm/gup.c 701) with the PMD lock held and the PMD a huge
    present one: NULL (-1: fault it in) for a write through a read-only PMD
    (``can_follow_write_pmd``: no FOLL_FORCE in the model); ``-EMLINK`` (-2: fault with
    ``FAULT_FLAG_UNSHARE``) for a pin through a read-only PMD whose folio's head is not
    anon-exclusive (``gup_must_unshare``); else ``try_grab_folio(folio, 1)`` (a pin: one
    reference and one ``_pincount``), ``touch_pmd`` for ``FOLL_TOUCH`` (young, and dirty
    for a write: :func:`~core.mm.huge_memory.huge_pmd_set_accessed`), and the page at
    the address: ``pmd_page + (addr & ~HPAGE_PMD_MASK) >> PAGE_SHIFT``."""
    n = k.geo.ptes_per_table
    idx = vpn // n
    pmd = pm.pmdp_get(k, mm, idx)
    head = pm.pmd_pfn(pmd)
    if write and not pmd & PTE_WRITE:
        return -1
    if not pmd & PTE_WRITE and pin and _must_unshare(k, head):
        return -2
    page = head + vpn % n
    _grab(k, a, page, pin, "follow_huge_pmd:try_grab_folio")
    if touch:
        huge_pmd_set_accessed(k, mm, idx, pmd, write)  # touch_pmd()
    return page


def follow_pmd_mask(
    k: Kernel, a: Actor, mm: int, vpn: int, write: bool, pin: bool, touch: bool
) -> Path:
    """The huge part of ``follow_pmd_mask()`` (7.0 mm/gup.c 898), under
    ``mmap_read_lock``, for a PMD that the lockless read found not to be a PTE table.
    None or not present (a PMD migration entry, a device-private PMD): ``no_page_table``
    (-1: fault it in); a huge PMD: ``pmd_lock``, read again: not present → fault; a PTE
    table by now → ``follow_page_pte`` (-3); else :func:`follow_huge_pmd` under the
    lock. Returns the page, -1 (fault), -2 (fault to unshare) or -3 (PTE level)."""
    idx = vpn // k.geo.ptes_per_table
    if pm.pmdp_get(k, mm, idx) & PTE_TYPE_MASK != PTE_PRESENT:
        return -1  # pmd_none / !pmd_present: no_page_table()
    yield  # the lockless read and the PMD lock are apart
    ptl = yield from pm.pmd_lock(k, a, mm, idx, "follow_pmd_mask:pmd_lock")
    kind = pm.pmdp_get(k, mm, idx) & PTE_TYPE_MASK
    if kind == PMD_TABLE:
        k.spin_unlock(a, ptl, "follow_pmd_mask:pmd_unlock")
        return -3
    if kind != PTE_PRESENT:
        k.spin_unlock(a, ptl, "follow_pmd_mask:pmd_unlock")
        return -1
    page = follow_huge_pmd(k, a, mm, vpn, write, pin, touch)
    k.spin_unlock(a, ptl, "follow_pmd_mask:pmd_unlock")
    return page


def gup_slow(
    k: Kernel, a: Actor, mm: int, vpn: int, write: bool, pin: bool, touch: bool = False
) -> Path:
    """``__get_user_pages()``: ``follow_page_mask()`` under ``mmap_read_lock`` (on
    ``v7`` the PMD first: :func:`follow_pmd_mask`; then ``follow_page_pte()`` under the
    PTL); when the page is not there with the right access, ``faultin_page()``.
    ``touch``: ``FOLL_TOUCH`` (``get_user_pages``, and the slow part of the ``_fast``
    calls; not ``pin_user_pages``), which only a huge PMD's follow uses in the model.

    The model drops ``mmap_lock`` around the fault and retakes it (the ``FOLL_UNLOCKABLE``
    retry path), so the fault path takes the lock itself. A pin of an anonymous page that
    is not anon-exclusive faults with ``FAULT_FLAG_UNSHARE`` (here: a write fault, which
    copies or reuses the page and makes it exclusive).

    Returns the pfn, or ``-EFAULT``.
    """
    site = "follow_page_pte"
    while True:
        yield from k.mmap_read_lock(a, mm, "__get_user_pages:mmap_read_lock")
        row = k.s.find_vma(mm, vpn)
        if row < 0 or (write and not k.s.vma_flags(mm, row) & VM_WRITE):
            k.mmap_read_unlock(a, mm, "__get_user_pages:mmap_read_unlock")
            return EFAULT
        huge = -3
        if k.geo.thp and pm.pmdp_get(k, mm, vpn // k.geo.ptes_per_table) & PTE_TYPE_MASK != PMD_TABLE:
            huge = yield from follow_pmd_mask(k, a, mm, vpn, write, pin, touch)
        if huge >= 0:
            k.mmap_read_unlock(a, mm, "__get_user_pages:mmap_read_unlock")
            k.count("gup_pmd_pinned" if pin else "gup_pmd_got")
            return huge
        unshare = huge == -2
        if huge == -3:  # follow_page_pte()
            ptl = k.ptl_word(mm, vpn)
            yield from k.spin_lock(a, ptl, site + ":ptl")
            pte = k.pte_read(mm, vpn)
            ok = pte & PTE_TYPE_MASK == PTE_PRESENT and (not write or pte & PTE_WRITE)
            pfn = pte >> PTE_PFN_SHIFT
            if ok and pin and not pte & PTE_WRITE and _must_unshare(k, pfn):
                # 7.0 follow_page_pte (mm/gup.c 849): "!pte_write(pte) &&
                # gup_must_unshare()". A writable entry of a page that is not exclusive
                # exists only under 4.14-5.0's do_wp_page reuse (hmm-2017, v5.0): the
                # unshare fault would find it writable and loop.
                ok = False  # gup_must_unshare()
                unshare = True
            if ok:
                _grab(k, a, pfn, pin, site + ":try_grab_folio")
                k.spin_unlock(a, ptl, site + ":ptl")
                k.mmap_read_unlock(a, mm, "__get_user_pages:mmap_read_unlock")
                k.count("gup_pinned" if pin else "gup_got")
                return pfn
            k.spin_unlock(a, ptl, site + ":ptl")
        k.mmap_read_unlock(a, mm, "__get_user_pages:mmap_read_unlock")
        yield
        r = yield from handle_mm_fault(k, a, mm, vpn, write or unshare)
        if r & (VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV):
            return EFAULT
        k.count("gup_faultin")
        yield


def get_user_page_vma_remote(k: Kernel, a: Actor, mm: int, vpn: int, site: str) -> Path:
    """``get_user_page_vma_remote(mm, addr, FOLL_GET | FOLL_WRITE, &vma)`` (7.0) for a
    caller that holds ``mmap_read_lock`` (``make_device_exclusive``): the locked API,
    so ``__get_user_pages()`` keeps the lock across ``faultin_page()``, whose fault may
    not retry (no ``FOLL_UNLOCKABLE``). ``follow_page_pte()`` under the PTL takes a
    reference on a present writable entry (``can_follow_write_pte``: ``pte_write``);
    anything else (none, read-only, device-private, device-exclusive, swap, migration)
    is faulted in for write and looked up again.

    Returns the pfn with a reference held, or ``-EFAULT`` / ``-ENOMEM``.
    """
    while True:
        row = k.s.find_vma(mm, vpn)
        if row < 0 or not k.s.vma_flags(mm, row) & VM_WRITE:  # check_vma_flags()
            return EFAULT
        ptl = k.ptl_word(mm, vpn)
        yield from k.spin_lock(a, ptl, site + ":follow_page_pte:ptl")
        pte = k.pte_read(mm, vpn)
        if pte & PTE_TYPE_MASK == PTE_PRESENT and pte & PTE_WRITE:
            pfn = pte >> PTE_PFN_SHIFT
            _grab(k, a, pfn, False, site + ":try_grab_folio")
            k.spin_unlock(a, ptl, site + ":follow_page_pte:ptl")
            return pfn
        k.spin_unlock(a, ptl, site + ":follow_page_pte:ptl")
        yield
        r = yield from handle_mm_fault_locked(k, a, mm, vpn, True)  # faultin_page()
        if r & VM_FAULT_OOM:
            return ENOMEM
        if r & (VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV):
            return EFAULT
        k.count("gup_faultin")
        yield


def _leaf_pmd(k: Kernel, mm: int, vpn: int) -> bool:
    """``v7``: whether the PMD over (mm, vpn) is a huge leaf (present, migration or
    device-private), which the PMD lock guards instead of the PTL."""
    if not k.geo.thp:
        return False
    kind = pm.pmdp_get(k, mm, vpn // k.geo.ptes_per_table) & PTE_TYPE_MASK
    return kind in (PTE_PRESENT, PTE_MIGRATION, PTE_DEVICE_PRIVATE)


def _entry_lock_word(k: Kernel, mm: int, vpn: int) -> int:
    """The lock under which the entry mapping (mm, vpn) cannot change: the PMD lock
    while the PMD is a huge leaf, else the PTL (the oracle's bookkeeping only)."""
    if _leaf_pmd(k, mm, vpn):
        return pm.pmd_lockptr(k, mm, vpn // k.geo.ptes_per_table)
    return k.ptl_word(mm, vpn)


def _entry_lock(k: Kernel, a: Actor, mm: int, vpn: int, site: str) -> Path:
    """Take :func:`_entry_lock_word`'s lock, again if the PMD turned from or into a leaf
    while this actor waited for it; returns the lock word held."""
    while True:
        want = _entry_lock_word(k, mm, vpn)
        yield from k.spin_lock(a, want, site)
        if _entry_lock_word(k, mm, vpn) == want:
            return want
        k.spin_unlock(a, want, site)


def pin_user_page(k: Kernel, a: Actor, mm: int, vpn: int, mode: int, write: bool) -> Path:
    """``pin_user_pages{,_fast}()`` / ``get_user_pages{,_fast}()`` for one page.

    Returns the :class:`PinRecord`, or ``None`` on ``-EFAULT``.
    """
    pin = mode in (MODE_PIN, MODE_PIN_FAST, MODE_LONGTERM)
    pfn = -1
    if mode in (MODE_PIN_FAST, MODE_GET_FAST):
        pfn = yield from gup_fast(k, a, mm, vpn, write, pin)
        if pfn < 0:
            yield
    if pfn < 0:
        # FOLL_TOUCH: get_user_pages and the slow part of the _fast calls
        # (gup_fast_fallback); pin_user_pages (and FOLL_LONGTERM's) has none.
        touch = mode not in (MODE_PIN, MODE_LONGTERM)
        pfn = yield from gup_slow(k, a, mm, vpn, write, pin, touch)
        if pfn < 0:
            k.count("gup_efault")
            return None
    rec = PinRecord(a.id, mm, vpn, pfn, pin, f"{MODE_NAMES[mode]}:{mm}:{vpn}")
    pin_table(k).setdefault(a.id, []).append(rec)
    # Pin coherency as GUP returns, judged under the PTL so that a change in progress
    # (collect's clear-then-share) is not mistaken for a stale pin; when the PTL is busy
    # the next DMA access judges instead.
    ptl = _entry_lock_word(k, mm, vpn)
    if k.words.cas(ptl, 0, a.id + 1):
        try:
            if _entry_lock_word(k, mm, vpn) == ptl:
                check_pin(k, a, rec, "pin")
        finally:
            k.words.store(ptl, 0)
    return rec


def pin_user_page_longterm(k: Kernel, a: Actor, mm: int, vpn: int, write: bool) -> Path:
    """``pin_user_pages(FOLL_LONGTERM)`` → ``__gup_longterm_locked()``: a pinned
    device-coherent page cannot stay pinned for long (the device may need its memory
    back), so ``check_and_migrate_movable_folios()`` drops the pin, moves the page to
    system memory with ``migrate_device_coherent_folio()`` (folio locked, one reference
    held) and pins again. ``-EBUSY`` (another pin holds the page) fails the pin.

    Returns the :class:`PinRecord`, or ``None``.
    """
    while True:
        rec = yield from pin_user_page(k, a, mm, vpn, MODE_LONGTERM, write)
        if rec is None or not k.is_device_coherent(rec.pfn):
            return rec
        pfn = rec.pfn
        k.get_page(a, pfn, "migrate_longterm_unpinnable_folios:folio_get")
        unpin_user_page(k, a, rec, dirty=False)
        yield from k.lock_page(a, pfn, "migrate_device_coherent_folio:folio_lock")
        r = yield from migrate_device_coherent_folio(k, a, pfn)
        if r:
            k.count("longterm_pin_ebusy")
            return None
        k.count("longterm_pin_migrated")
        yield


def unpin_user_page(k: Kernel, a: Actor, rec: PinRecord, dirty: bool) -> None:
    """``unpin_user_pages_dirty_lock()`` / ``put_page()`` for one page."""
    if dirty:
        k.set_flag(rec.pfn, PG_dirty)
    recs = pin_table(k).get(a.id, [])
    if rec in recs:
        recs.remove(rec)
    gup_put_folio(k, a, rec.pfn, rec.pin, "unpin_user_pages")


def op_pin_dma(k: Kernel, a: Actor, mm: int, vpn: int, mode: int, hold: int, write: int) -> Path:
    """A pinner: pin one page, DMA through it ``hold`` times (a fresh content token per
    write, a content check per read), then unpin it."""
    if not 0 <= mode < len(MODE_NAMES):
        raise ValueError(f"pin_dma mode {mode} is not valid; valid: 0..{len(MODE_NAMES) - 1}")
    if mode == MODE_LONGTERM:
        rec = yield from pin_user_page_longterm(k, a, mm, vpn, bool(write))
    else:
        rec = yield from pin_user_page(k, a, mm, vpn, mode, bool(write))
    if rec is None:
        return EFAULT
    hw = k.hw_lock  # the parallel engine's: one DMA access is one atomic step
    for _ in range(hold):
        yield  # the DMA runs while other actors do
        # The device writes the page whatever the page tables say; the oracle's
        # bookkeeping (is the pinned page still the one mapped at the address, so the
        # program sees this value there?) is read under the PTL, where entries are
        # never half-changed, in both engines.
        ptl = yield from _entry_lock(k, a, rec.mm, rec.vpn, "dma:ptl")
        if hw is not None:
            hw.acquire(rec.mm, rec.vpn)
        try:
            mapped = check_pin(k, a, rec, "dma")
            if write:
                tok = k.new_token(a)
                k.set_data(rec.pfn, tok)
                # The device writes the page; set_page_dirty at unpin in the kernel,
                # here at once (the page is pinned meanwhile, reclaim cannot see it).
                k.set_flag(rec.pfn, PG_dirty)
                if mapped:
                    k.set_shadow(rec.mm, rec.vpn, tok)
                    alias = k.hooks.get("shadow_write")
                    if alias is not None:
                        alias(k, rec.mm, rec.vpn, rec.pfn, tok)
                k.count("dma_writes")
            elif mapped:
                dma_read_check(k, a, rec)
        finally:
            if hw is not None:
                hw.release(rec.mm, rec.vpn)
            k.spin_unlock(a, ptl, "dma:ptl")
    yield
    unpin_user_page(k, a, rec, bool(write))
    return 0


register_op("pin_dma", op_pin_dma)

__all__ = [
    "MODE_GET",
    "MODE_GET_FAST",
    "MODE_LONGTERM",
    "MODE_NAMES",
    "MODE_PIN",
    "MODE_PIN_FAST",
    "PinRecord",
    "follow_huge_pmd",
    "follow_pmd_mask",
    "get_user_page_vma_remote",
    "gup_fast",
    "gup_fast_pmd_leaf",
    "gup_put_folio",
    "gup_slow",
    "op_pin_dma",
    "pin_table",
    "pin_user_page",
    "pin_user_page_longterm",
    "pins_unmapped",
    "unpin_user_page",
]
