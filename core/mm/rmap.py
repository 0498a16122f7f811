"""The reverse map: anon_vmas, who maps a folio, and the walks that unmap and remap it.

Transcribes ``mm/rmap.c`` of 7.0 (``rmap_walk_anon()``, ``rmap_walk_anon_lock()``,
``folio_lock_anon_vma_read()``, ``try_to_migrate()`` / ``try_to_migrate_one()``,
``try_to_unmap()``'s walk, ``__folio_set_anon()``, ``anon_vma_fork()``'s linking), the
lookup of ``mm/page_vma_mapped.c`` (``map_pte()`` / ``check_pte()``),
``folio_try_share_anon_rmap_pte()`` from ``include/linux/rmap.h`` (seed 001) and
``mm/migrate.c`` (``remove_migration_ptes()`` / ``remove_migration_pte()``).

How the model keeps the kernel's rmap (words, so both engines share it):

- **anon_vma.** One per mm (``anon_vma`` table, ``AV_*``): every anonymous VMA of an
  mm uses its mm's anon_vma, as ``find_mergeable_anon_vma()`` lets neighbours share one.
  A forked child's anon_vma is new, under its parent's root (``anon_vma_fork()``). The
  rwsem is the root's (``anon_vma_lock_read()`` locks ``anon_vma->root->rwsem``).
- **anon_vma_chain.** ``V_AVC`` of a VMA row: a bit per anon_vma the VMA is linked to
  (its own, and after fork every anon_vma its parent's VMA was linked to:
  ``anon_vma_clone()``). The interval tree of anon_vma ``X`` is every live VMA with bit
  ``X``, keyed by ``V_PGOFF``; :func:`anon_vma_interval_tree` visits them in the tree's
  in-order: by ``vm_pgoff``, equal ``vm_pgoff`` in insertion order (``V_SEQ``: the rbtree
  inserts an equal key to the right), which is why a child's VMA, linked by fork after
  its parent's, is visited after it.
- **folio->mapping / ->index.** The ``mapping`` word of a frame
  (:func:`~pagerace.core.machine.layout.mapping_encode`): the anon_vma and pgoff set by
  :func:`folio_set_anon` when an anonymous folio is first mapped, copied to a migration
  destination by ``folio_migrate_mapping()``, cleared when the frame is freed.

Every change to the trees (a VMA linked, split, moved, merged or unlinked) holds the
root's rwsem for write, as ``vma_prepare()`` / ``anon_vma_clone()`` /
``unlink_anon_vmas()`` do; the walks hold it for read across the walk, so a walk sees
one picture of the trees. The page-cache side (``rmap_walk_file`` over ``i_mmap``) finds
nothing: no VMA maps a file in the model (docs/internals.md, "Deliberate
simplifications").
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..machine.kernel import S_ACQUIRED, S_CONTENDED, Actor, Block, Kernel, Path
from ..machine.layout import (
    AV_OWNER,
    AV_PARENT,
    AV_ROOT,
    AV_RWSEM,
    AV_WORDS,
    MAPPING_AV_MASK,
    MAPPING_INDEX_SHIFT,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_TYPE_MASK,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    RWSEM_WRITER,
    V_AVC,
    V_END,
    V_FLAGS,
    V_PGOFF,
    V_SEQ,
    V_START,
    VM_LIVE,
    VM_STACK_INCOMPLETE_SETUP,
    VMA_WORDS,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_ksm,
    PG_pagecache,
    mapping_encode,
    pte_encode,
)
from .mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)

# rmap_one(mm, vpn) -> continue the walk?  (rwc->rmap_one; the address is (mm, vpn))
RmapOne = Callable[[int, int], Generator[Any, Any, bool]]


# --------------------------------------------------------------------------------------
# anon_vma and its rwsem


def _avw(k: Kernel, av: int, field: int) -> int:
    return k.lay.ANON_VMA + av * AV_WORDS + field


def anon_vma_root(k: Kernel, av: int) -> int:
    """``anon_vma->root``."""
    r = k.words.load(k.lay.ANON_VMA + av * AV_WORDS + AV_ROOT)  # _avw, inlined (hot)
    return r - 1 if r else av


def anon_vma_link_child(k: Kernel, child: int, parent: int) -> None:
    """``anon_vma_fork()``'s new anon_vma for the child: same root, parent ``parent``."""
    k.words.store(_avw(k, child, AV_ROOT), anon_vma_root(k, parent) + 1)
    k.words.store(_avw(k, child, AV_PARENT), parent + 1)


def anon_vma_rwsem_word(k: Kernel, av: int) -> int:
    """The word of ``anon_vma->root->rwsem``."""
    # _avw(k, anon_vma_root(k, av), AV_RWSEM), inlined (hot: every rmap walk)
    base = k.lay.ANON_VMA
    r = k.words.load(base + av * AV_WORDS + AV_ROOT)
    return base + (r - 1 if r else av) * AV_WORDS + AV_RWSEM


def anon_vma_trylock_read(k: Kernel, a: Actor, av: int, site: str) -> bool:
    """``anon_vma_trylock_read()``: ``down_read_trylock(&anon_vma->root->rwsem)``."""
    # anon_vma_rwsem_word(k, av) and k._stat(site), inlined (hot: every rmap walk)
    words = k.words
    base = k.lay.ANON_VMA
    r = words.load(base + av * AV_WORDS + AV_ROOT)
    w = base + (r - 1 if r else av) * AV_WORDS + AV_RWSEM
    try:
        st = k.stats[site]
    except KeyError:
        st = k._stat(site)
    cur = words.load(w)
    if cur & RWSEM_WRITER or not words.cas(w, cur, cur + 1):
        st[S_CONTENDED] += 1
        return False
    st[S_ACQUIRED] += 1
    a.held[w] = site
    return True


def anon_vma_lock_read(
    k: Kernel, a: Actor, av: int, site: str, _w: int = -1, _st: list[int] | None = None
) -> Path:
    """``anon_vma_lock_read()``: readers share the root's rwsem; a writer excludes them.

    The same reader/writer word as ``mmap_lock`` (``kernel/locking/rwsem.c``), without
    writer preference, as the model's mmap_lock had it when this was written.

    ``_w`` / ``_st``: the rwsem word and statistics row of a caller that made the first
    attempt itself and failed (:func:`rmap_walk_ksm` inlines the uncontended path): the
    generator then starts at the wait, so a waiter's innermost function is this one."""
    if _w < 0:
        # anon_vma_rwsem_word(k, av) and k._stat(site), inlined (hot: every KSM rmap item)
        words = k.words
        base = k.lay.ANON_VMA
        r = words.load(base + av * AV_WORDS + AV_ROOT)
        w = base + (r - 1 if r else av) * AV_WORDS + AV_RWSEM
        try:
            st = k.stats[site]
        except KeyError:
            st = k._stat(site)
        cur = words.load(w)
        if not cur & RWSEM_WRITER and words.cas(w, cur, cur + 1):
            st[S_ACQUIRED] += 1
            a.held[w] = site
            return
    else:
        w = _w
        st = _st if _st is not None else k._stat(site)
    st[S_CONTENDED] += 1
    t0 = k.clock()
    while True:
        req = Block(w, RWSEM_WRITER, "anon_vma", anon_vma_root(k, av), site)
        k._block(a, req)
        yield req
        k._unblock(a)
        words = k.words
        cur = words.load(w)
        if not cur & RWSEM_WRITER and words.cas(w, cur, cur + 1):
            break
    k._waited(st, t0)
    st[S_ACQUIRED] += 1
    a.held[w] = site


def anon_vma_unlock_read(k: Kernel, a: Actor, av: int, site: str) -> None:
    """``anon_vma_unlock_read()``."""
    # anon_vma_rwsem_word(k, av), inlined (hot: every rmap walk)
    words = k.words
    base = k.lay.ANON_VMA
    r = words.load(base + av * AV_WORDS + AV_ROOT)
    w = base + (r - 1 if r else av) * AV_WORDS + AV_RWSEM
    old = words.fetch_add(w, -1)
    held = a.held
    if old & (RWSEM_WRITER - 1) == 0 or w not in held:
        from ..machine.errors import FailureKind

        raise k.fail(
            FailureKind.BAD_UNLOCK,
            f"{a.name} released the anon_vma rwsem of {anon_vma_root(k, av)} for read at "
            f"{site} without holding it",
            actors=[a],
            sites=[site],
            locks=[k.lock_name(w)],
        )
    del held[w]  # held: checked above


def anon_vma_lock_write(k: Kernel, a: Actor, av: int, site: str) -> Path:
    """``anon_vma_lock_write()``: ``down_write(&anon_vma->root->rwsem)``."""
    w = anon_vma_rwsem_word(k, av)
    words = k.words
    st = k._stat(site)
    t0 = -1
    while not words.cas(w, 0, RWSEM_WRITER):
        if t0 < 0:
            st[S_CONTENDED] += 1
            t0 = k.clock()
        req = Block(w, -1, "anon_vma", anon_vma_root(k, av), site)
        k._block(a, req)
        yield req
        k._unblock(a)
    if t0 >= 0:
        k._waited(st, t0)
    st[S_ACQUIRED] += 1
    a.held[w] = site
    words.store(w - AV_RWSEM + AV_OWNER, a.id + 1)


def anon_vma_unlock_write(k: Kernel, a: Actor, av: int, site: str) -> None:
    """``anon_vma_unlock_write()``."""
    w = anon_vma_rwsem_word(k, av)
    owner_w = w - AV_RWSEM + AV_OWNER
    # the owner check of a bad unlock, not a race outcome:
    if k.words.load(owner_w) != a.id + 1 or not k.words.cas(w, RWSEM_WRITER, 0):  # not-a-race
        from ..machine.errors import FailureKind

        raise k.fail(
            FailureKind.BAD_UNLOCK,
            f"{a.name} released the anon_vma rwsem of {anon_vma_root(k, av)} for write at "
            f"{site} without holding it",
            actors=[a],
            sites=[site],
            locks=[k.lock_name(w)],
        )
    k.words.store(owner_w, 0)
    a.held.pop(w, None)


# --------------------------------------------------------------------------------------
# folio->mapping


def folio_anon_vma(k: Kernel, pfn: int) -> int:
    """``folio_anon_vma()``: the anon_vma of an anonymous folio, or -1."""
    m = k.words.load(k.lay.MAPPING + pfn)
    return (m & MAPPING_AV_MASK) - 1


def folio_pgoff(k: Kernel, pfn: int) -> int:
    """``folio_pgoff()`` (``folio->index``) of an anonymous folio."""
    return k.words.load(k.lay.MAPPING + pfn) >> MAPPING_INDEX_SHIFT


def linear_page_index(k: Kernel, mm: int, vpn: int) -> tuple[int, int]:
    """(anon_vma, pgoff) of address ``vpn`` in ``mm``'s VMA (``vma->anon_vma``,
    ``linear_page_index()``), or (-1, 0) outside any VMA."""
    row = k.s.find_vma(mm, vpn)
    if row < 0:
        return -1, 0
    v = k.s.vma[mm, row]
    return mm, int(v[V_PGOFF]) + vpn - int(v[V_START])


def folio_set_anon(k: Kernel, pfn: int, mm: int, vpn: int) -> None:
    """``__folio_set_anon()`` (from ``folio_add_new_anon_rmap()``): the folio's mapping
    is the anon_vma of the VMA it is first mapped in, its index the address's pgoff."""
    av, index = linear_page_index(k, mm, vpn)
    k.words.store(k.lay.MAPPING + pfn, mapping_encode(av, index) if av >= 0 else 0)


def folio_copy_mapping(k: Kernel, new: int, old: int) -> None:
    """``newfolio->index = folio->index; newfolio->mapping = folio->mapping``
    (``__folio_migrate_mapping()``; ``migrate_page_move_mapping()`` of the seeds). A KSM
    folio's mapping is its stable node: the new folio is KSM too (``ksm_migrate_page``)."""
    k.words.store(k.lay.MAPPING + new, k.words.load(k.lay.MAPPING + old))
    if k.test_flag(old, PG_ksm):
        k.set_flag(new, PG_ksm)


# --------------------------------------------------------------------------------------
# the walk


def anon_vma_interval_tree(k: Kernel, av: int, pgoff: int) -> list[tuple[int, int, int]]:
    """``anon_vma_interval_tree_foreach(avc, &anon_vma->rb_root, pgoff, pgoff)``:
    (mm, address, vm_flags) of every VMA linked to ``av`` whose pgoff range covers
    ``pgoff``, in the tree's order (``vm_pgoff``, then insertion order), the address
    being ``vma_address()``. Called with the rwsem held, so the rows do not change."""
    if k._fields is not None:  # the same rows, test and order in one C call
        return k._fields.avc_walk(av, pgoff)
    # One tolist() and a loop: numpy calls on a handful of rows cost more than this.
    bit = 1 << av
    mv = k.geo.max_vmas
    found = []
    for i, r in enumerate(k.s.vma.reshape(-1, VMA_WORDS).tolist()):
        pg = r[V_PGOFF]
        if r[V_FLAGS] & VM_LIVE and r[V_AVC] & bit and pg <= pgoff < pg + r[V_END] - r[V_START]:
            found.append((pg, r[V_SEQ], i // mv, r[V_START] + pgoff - pg, r[V_FLAGS]))
    if len(found) > 1:
        found.sort()
    return [(m, vpn, f) for _pg, _seq, m, vpn, f in found]


def folio_lock_anon_vma_read(k: Kernel, a: Actor, pfn: int, site: str) -> Path:
    """``folio_lock_anon_vma_read()`` (rwc->anon_lock of try_to_migrate and
    try_to_unmap): nothing to walk when the folio is not anonymous or not mapped; the
    trylock, else the sleeping lock, and the mapped re-check. Returns the anon_vma or
    -1. (The anon_vma reference it takes around the sleep is not modelled: an anon_vma
    lives as long as its mm slot.)"""
    av = folio_anon_vma(k, pfn)
    if av < 0 or k.mapcount(pfn) <= 0:
        return -1
    if anon_vma_trylock_read(k, a, av, site):
        if k.mapcount(pfn) <= 0:
            anon_vma_unlock_read(k, a, av, site)
            return -1
        return av
    if k.mapcount(pfn) <= 0:
        return -1
    yield from anon_vma_lock_read(k, a, av, site)
    return av


def rmap_walk_anon_lock(k: Kernel, a: Actor, pfn: int, site: str) -> Path:
    """``rmap_walk_anon_lock()`` without ``rwc->anon_lock``: the trylock, else the
    sleeping lock (remove_migration_ptes: "cannot use folio_lock_anon_vma_read()")."""
    av = folio_anon_vma(k, pfn)
    if av < 0:
        return -1
    if not anon_vma_trylock_read(k, a, av, site):
        yield from anon_vma_lock_read(k, a, av, site)
    return av


def invalid_migration_vma(vflags: int) -> bool:
    """``invalid_migration_vma()``: exec's temporary stack (``vma_is_temporary_stack``)
    holds migration entries rmap cannot find, so try_to_migrate skips it."""
    return bool(vflags & VM_STACK_INCOMPLETE_SETUP)


def rmap_walk(
    k: Kernel,
    a: Actor,
    pfn: int,
    rmap_one: RmapOne,
    site: str,
    done: Callable[[], bool] | None = None,
    invalid_vma: Callable[[int], bool] | None = None,
    anon_lock: bool = False,
    ksm_names: int = -1,
) -> Path:
    """``rmap_walk()`` → ``rmap_walk_anon()`` (7.0): lock the folio's anon_vma for read,
    call ``rmap_one`` for each VMA of its interval tree at the folio's address there
    (skipping ``invalid_vma``), stop when it returns False or ``done()``, unlock. A
    page-cache folio walks its file's ``i_mmap``, which no VMA is in
    (``rmap_walk_file``); a KSM folio its stable node's rmap_items, the entries that
    name ``ksm_names`` (default: the folio itself) in the model."""
    if k.test_flag(pfn, PG_pagecache):
        return  # rmap_walk_file(): the model maps no file page
    if k.test_flag(pfn, PG_ksm):
        names = pfn if ksm_names < 0 else ksm_names
        yield from rmap_walk_ksm(k, a, names, rmap_one, site, done, invalid_vma)
        return
    lock_site = site + ":anon_vma_lock_read"
    if anon_lock:
        av = yield from folio_lock_anon_vma_read(k, a, pfn, lock_site)
    else:
        av = yield from rmap_walk_anon_lock(k, a, pfn, lock_site)
    if av < 0:
        return
    try:
        for mm, vpn, vflags in anon_vma_interval_tree(k, av, folio_pgoff(k, pfn)):
            yield  # cond_resched()
            if invalid_vma is not None and invalid_vma(vflags):
                continue
            if not (yield from rmap_one(mm, vpn)):
                break
            if done is not None and done():
                break
    finally:
        anon_vma_unlock_read(k, a, av, site + ":anon_vma_unlock_read")


def ksm_rmap_items(k: Kernel, pfn: int) -> list[tuple[int, int]]:
    """The rmap_items :func:`rmap_walk_ksm` visits: (mm, vpn) of every entry that names
    ``pfn`` and is present, device-private or migration, in (mm, vpn) order."""
    if k._fields is not None:  # the same scan, filter and order in one C call
        return k._fields.ksm_items(pfn)  # type: ignore[no-any-return,unused-ignore]
    flat = k.s.pte.reshape(-1)
    hits = np.flatnonzero((flat >> PTE_PFN_SHIFT) == pfn).tolist()
    ppm = k.geo.pages_per_mm
    return [
        (i // ppm, i % ppm)
        for i in hits
        if int(flat[i]) & PTE_TYPE_MASK in (PTE_PRESENT, PTE_DEVICE_PRIVATE, PTE_MIGRATION)
    ]


def rmap_walk_ksm(
    k: Kernel,
    a: Actor,
    pfn: int,
    rmap_one: RmapOne,
    site: str,
    done: Callable[[], bool] | None = None,
    invalid_vma: Callable[[int], bool] | None = None,
) -> Path:
    """``rmap_walk_ksm()`` (mm/ksm.c), for the KSM pages only setup makes: each
    ``rmap_item`` of the stable node is one (mm, address) mapping the page, visited
    under its anon_vma's rwsem. The model has no stable tree: the rmap_items are the
    entries that name ``pfn`` (the folio, or for remove_migration_ptes the source its
    migration entries name) when the walk starts (present, device-private or
    migration), in (mm, address) order."""
    lock_site = site + ":anon_vma_lock_read"  # once per walk, not per rmap_item
    unlock_site = site + ":anon_vma_unlock_read"
    base = k.lay.ANON_VMA
    for mm, vpn in ksm_rmap_items(k, pfn):
        yield  # cond_resched()
        s = k.s
        row = s.find_vma(mm, vpn)
        if row < 0 or (invalid_vma is not None and invalid_vma(s.vma_flags(mm, row))):
            continue
        # anon_vma_lock_read(k, a, mm, lock_site), its uncontended path inlined (hot:
        # every rmap_item): the same loads and cas; on a failed attempt its generator
        # takes over at the wait.
        words = k.words
        r = words.load(base + mm * AV_WORDS + AV_ROOT)
        w = base + (r - 1 if r else mm) * AV_WORDS + AV_RWSEM
        try:
            st = k.stats[lock_site]
        except KeyError:
            st = k._stat(lock_site)
        cur = words.load(w)
        if not cur & RWSEM_WRITER and words.cas(w, cur, cur + 1):
            st[S_ACQUIRED] += 1
            a.held[w] = lock_site
        else:
            yield from anon_vma_lock_read(k, a, mm, lock_site, w, st)
        try:
            cont = yield from rmap_one(mm, vpn)
        finally:
            anon_vma_unlock_read(k, a, mm, unlock_site)
        if not cont or (done is not None and done()):
            break


def map_pte(k: Kernel, a: Actor, mm: int, vpn: int, pfn: int, site: str) -> Path:
    """``page_vma_mapped_walk()`` without ``PVMW_SYNC`` or ``PVMW_MIGRATION``
    (``map_pte()`` + ``check_pte()``): read the entry without the lock and skip an
    empty or unrelated one; else take the PTL (a preemption point between the two)
    and check it names ``pfn``. Returns the entry with the PTL held, or -1 unlocked."""
    pte = k.pte_read(mm, vpn)
    kind = pte & PTE_TYPE_MASK
    if kind == PTE_NONE:
        return -1
    if kind != PTE_PRESENT and kind != PTE_DEVICE_PRIVATE and kind != PTE_DEVICE_EXCLUSIVE:
        return -1
    yield  # between the lockless read and spin_lock()
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, site + ":ptl")
    pte = k.pte_read(mm, vpn)
    kind = pte & PTE_TYPE_MASK
    if kind not in (PTE_PRESENT, PTE_DEVICE_PRIVATE, PTE_DEVICE_EXCLUSIVE) or (
        pte >> PTE_PFN_SHIFT != pfn
    ):
        k.spin_unlock(a, ptl, site + ":ptl")
        return -1
    return pte


# --------------------------------------------------------------------------------------
# try_to_migrate, remove_migration_ptes


def folio_try_share_anon_rmap_pte(k: Kernel, a: Actor, pfn: int) -> bool:
    """``folio_try_share_anon_rmap_pte()`` (include/linux/rmap.h, seed 001).

    Called with the entry already cleared and flushed (A1-A2): if the page may be
    pinned (A3), fail with -EBUSY; otherwise clear ``PageAnonExclusive`` (A4). GUP-fast
    re-reads the entry after pinning (B3), so it either sees the cleared entry and backs
    off, or its pin is visible here.
    """
    if k.maybe_dma_pinned(pfn):
        k.count("share_anon_rmap_ebusy")
        return False
    k.clear_flag(pfn, PG_anon_exclusive)
    return True


def make_migration_entry(pfn: int, old: int, anon_exclusive: bool) -> int:
    """The migration entry that replaces ``old`` (``migrate_vma_collect_pmd`` and
    ``try_to_migrate_one``): writable, readable-exclusive or readable, and it keeps the
    young / dirty / soft-dirty / uffd-wp bits of the entry it replaces."""
    bits = 0
    if old & PTE_WRITE:
        bits |= PTE_WRITE
    elif anon_exclusive:
        bits |= PTE_EXCLUSIVE
    bits |= old & (PTE_YOUNG | PTE_DIRTY | PTE_SOFT_DIRTY | PTE_UFFD_WP)
    return pte_encode(PTE_MIGRATION, pfn, bits)


def try_to_migrate(k: Kernel, a: Actor, pfn: int, site: str = "try_to_migrate_one") -> Path:
    """``try_to_migrate()`` (7.0): walk the locked folio's rmap
    (``folio_lock_anon_vma_read``, ``invalid_migration_vma``, done when
    ``folio_not_mapped``) and replace each mapping with a migration entry
    (``try_to_migrate_one``). A mapping it cannot convert (an anon-exclusive page that
    may be pinned) stops the walk; the caller sees the folio still mapped.
    """

    def try_to_migrate_one(mm: int, vpn: int) -> Generator[Any, Any, bool]:
        # 7.0 try_to_migrate_one(): an MMU_NOTIFY_CLEAR invalidation around the walk of
        # this mapping (no-op without notifiers on the mm).
        rng = MmuNotifierRange(MMU_NOTIFY_CLEAR, mm, vpn, vpn + 1)
        yield from mmu_notifier_invalidate_range_start(k, a, rng)
        old = yield from map_pte(k, a, mm, vpn, pfn, site)
        if old < 0:
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
            return True
        ptl = k.ptl_word(mm, vpn)
        old = k.ptep_get_and_clear(mm, vpn)
        k.flush_tlb_range(mm, vpn, vpn + 1)
        anon_exclusive = k.test_flag(pfn, PG_anon) and k.test_flag(pfn, PG_anon_exclusive)
        if anon_exclusive and not folio_try_share_anon_rmap_pte(k, a, pfn):
            k.set_pte(mm, vpn, old)
            k.spin_unlock(a, ptl, site + ":ptl")
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
            return False
        if old & PTE_DIRTY:
            k.set_flag(pfn, PG_dirty)
        k.set_pte(mm, vpn, make_migration_entry(pfn, old, anon_exclusive))
        k.mapcount_add(pfn, -1)
        k.put_page(a, pfn, site)
        k.spin_unlock(a, ptl, site + ":ptl")
        yield from mmu_notifier_invalidate_range_end(k, a, rng)
        return True

    yield from rmap_walk(
        k, a, pfn, try_to_migrate_one, "try_to_migrate",
        done=lambda: k.mapcount(pfn) <= 0,
        invalid_vma=invalid_migration_vma,
        anon_lock=True,
    )
    return k.mapcount(pfn) <= 0


def remove_migration_ptes(
    k: Kernel, a: Actor, src: int, dst: int, site: str = "remove_migration_pte"
) -> Path:
    """``remove_migration_ptes(src, dst)`` (mm/migrate.c): walk ``dst``'s rmap (its
    mapping was copied from ``src`` by ``folio_migrate_mapping``) once, and at each
    address make a migration entry that names ``src`` a mapping of ``dst``: a present
    entry for system RAM and device-coherent memory, a device-private entry for
    device-private memory. The write bit comes from the migration entry; a writable or
    readable-exclusive entry makes the anonymous page exclusive again
    (``RMAP_EXCLUSIVE``). ``PVMW_SYNC``: the PTL is taken before the entry is read.

    Young and dirty: on ``v6`` (6.1+, 2e3468778dbe "mm: remember young/dirty bit for page
    migrations") the entry is young if the migration entry was, and dirty only when the
    migration entry was dirty *and* the folio is (``folio_test_dirty(folio) &&
    softleaf_is_migration_dirty(entry)``). The older generations (4.14 / 5.0) build it
    ``pte_mkold(mk_pte())``: old and clean, the dirtiness being the folio's.
    """
    dst_private = k.is_device_private(dst)
    since_6_1 = k.variant.name in ("v6", "v7")

    def remove_migration_pte(mm: int, vpn: int) -> Generator[Any, Any, bool]:
        ptl = k.ptl_word(mm, vpn)
        yield from k.spin_lock(a, ptl, site + ":ptl")
        old = k.pte_read(mm, vpn)
        if old & PTE_TYPE_MASK == PTE_MIGRATION and old >> PTE_PFN_SHIFT == src:
            k.get_page(a, dst, site)
            bits = old & (PTE_WRITE | PTE_SOFT_DIRTY | PTE_UFFD_WP)
            # pte_encode(kind, dst, bits), inlined below (hot: every mapping restored;
            # bits are flag bits, so its PTE_FLAG_MASK changes nothing)
            if dst_private:
                new = (dst << PTE_PFN_SHIFT) | bits | PTE_DEVICE_PRIVATE
            else:
                if since_6_1:
                    bits |= old & PTE_YOUNG
                    if old & PTE_DIRTY and k.test_flag(dst, PG_dirty):
                        bits |= PTE_DIRTY
                new = (dst << PTE_PFN_SHIFT) | bits | PTE_PRESENT
            if k.test_flag(dst, PG_anon) and old & (PTE_WRITE | PTE_EXCLUSIVE):
                k.set_flag(dst, PG_anon_exclusive)
            k.mapcount_add(dst, 1)
            k.set_pte(mm, vpn, new)
        k.spin_unlock(a, ptl, site + ":ptl")
        return True

    # Forwards: a plain function returning the walk's generator (it has no preemption
    # point of its own before the walk, so no frame of its own at each point of it).
    return rmap_walk(k, a, dst, remove_migration_pte, "remove_migration_ptes", ksm_names=src)
