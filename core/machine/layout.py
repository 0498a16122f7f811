"""The one layout object that describes all model state as int64 words.

All state lives in one flat int64 buffer: ordinary memory for the deterministic engine,
one ``multiprocessing.shared_memory`` block for the parallel engine. :class:`Layout`
says where each table starts; :class:`State` (``core/machine/state.py``) gives named numpy
views of the tables (for vectorized invariants) and word indexes (for atomics).

Word encodings follow the kernel where the kernel has one:

- page frame flags (``include/linux/page-flags.h``): bit per flag; the zone of a frame
  (system RAM, device-private or device-coherent memory of device ``d``) is kept in
  static high bits that never change after the model is built;
- page-table entries (``arch/x86/include/asm/pgtable_types.h`` and
  ``include/linux/swapops.h``): a type field (none / present / migration entry /
  device-private entry / swap entry / device-exclusive), the pfn or swap slot, and the
  write / dirty / young / soft-dirty / uffd-wp / exclusive bits;
- mmap_lock (``kernel/locking/rwsem.c``): a reader count with a writer bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------
# Page frames: one row of FRAME_WORDS words per frame (64 bytes: the memory target).
F_FLAGS, F_REF, F_MAP, F_PIN, F_OWNER, F_DATA, F_PRIV, F_GEN = range(8)
FRAME_WORDS = 8
FRAME_FIELDS = ("flags", "refcount", "mapcount", "pincount", "lock_owner", "data", "private", "gen")

# Dynamic page flags (include/linux/page-flags.h), low bits.
PG_locked = 1 << 0
PG_lru = 1 << 1
PG_dirty = 1 << 2
PG_anon = 1 << 3
PG_anon_exclusive = 1 << 4
PG_swapcache = 1 << 5
PG_writeback = 1 << 6
PG_uptodate = 1 << 7
PG_allocated = 1 << 8  # model only: the frame is out of its zone's free pool
PG_isolated = 1 << 9  # model only: taken off the LRU by folio_isolate_lru()
PG_pagecache = 1 << 10  # model only: page->mapping is a file's address_space (core/mm/filemap.py)
PG_waiters = 1 << 11  # the folio's hashed wait queue may hold waiters (folio_set_waiters)
# PG_head (include/linux/page-flags.h): the first frame of a large folio
# (folio_test_large). Set only in geometries with ``thp`` (core/machine/folio.py).
PG_head = 1 << 12
# folio_test_ksm(): folio->mapping is a KSM stable node. Only the setup of a share whose
# pages sit in reverse order (which only KSM merging can produce) makes one (setup.py).
PG_ksm = 1 << 15
DYNAMIC_MASK = (1 << 16) - 1

# Static zone bits, set when the model is built and never cleared.
Z_DEVICE = 1 << 16  # ZONE_DEVICE
Z_DEVICE_PRIVATE = 1 << 17  # MEMORY_DEVICE_PRIVATE
Z_DEVICE_COHERENT = 1 << 18  # MEMORY_DEVICE_COHERENT
Z_DEVID_SHIFT = 20  # device id (pgmap owner) in bits 20..27
Z_DEVID_MASK = 0xFF << Z_DEVID_SHIFT
STATIC_MASK = ~DYNAMIC_MASK

FLAG_NAMES = {
    PG_locked: "locked",
    PG_lru: "lru",
    PG_dirty: "dirty",
    PG_anon: "anon",
    PG_anon_exclusive: "anon_exclusive",
    PG_swapcache: "swapcache",
    PG_writeback: "writeback",
    PG_uptodate: "uptodate",
    PG_allocated: "allocated",
    PG_isolated: "isolated",
    PG_pagecache: "pagecache",
    PG_waiters: "waiters",
    PG_ksm: "ksm",
    PG_head: "head",
    Z_DEVICE: "zone_device",
    Z_DEVICE_PRIVATE: "device_private",
    Z_DEVICE_COHERENT: "device_coherent",
}

# GUP_PIN_COUNTING_BIAS (include/linux/mm.h): a pin adds 1024 to the refcount.
GUP_PIN_COUNTING_BIAS = 1024

# --------------------------------------------------------------------------------------
# Page-table entries.
PTE_TYPE_MASK = 0x7
PTE_NONE = 0
PTE_PRESENT = 1
PTE_MIGRATION = 2  # is_migration_entry()
PTE_DEVICE_PRIVATE = 3  # is_device_private_entry()
PTE_SWAP = 4  # a real swap entry
PTE_DEVICE_EXCLUSIVE = 5  # is_device_exclusive_entry()
PTE_TYPE_NAMES = ("none", "present", "migration", "device_private", "swap", "device_exclusive")

PTE_WRITE = 1 << 3  # pte_write / is_writable_*_entry
PTE_DIRTY = 1 << 4  # pte_dirty / is_migration_entry_dirty
PTE_YOUNG = 1 << 5  # pte_young / is_migration_entry_young
PTE_SOFT_DIRTY = 1 << 6  # pte_soft_dirty / pte_swp_soft_dirty
PTE_UFFD_WP = 1 << 7  # pte_uffd_wp / pte_swp_uffd_wp
PTE_EXCLUSIVE = 1 << 8  # is_readable_exclusive_migration_entry()
PTE_FLAG_MASK = (1 << 16) - 1 - PTE_TYPE_MASK
PTE_PFN_SHIFT = 16

PTE_BIT_NAMES = {
    PTE_WRITE: "write",
    PTE_DIRTY: "dirty",
    PTE_YOUNG: "young",
    PTE_SOFT_DIRTY: "soft_dirty",
    PTE_UFFD_WP: "uffd_wp",
    PTE_EXCLUSIVE: "exclusive",
}


def pte_encode(kind: int, pfn: int = 0, bits: int = 0) -> int:
    """Build a page-table entry word from its type, pfn (or swap slot) and bits."""
    return (pfn << PTE_PFN_SHIFT) | (bits & PTE_FLAG_MASK) | kind


def pte_type(pte: int) -> int:
    return pte & PTE_TYPE_MASK


def pte_pfn(pte: int) -> int:
    return pte >> PTE_PFN_SHIFT


def pte_bits(pte: int) -> int:
    return pte & PTE_FLAG_MASK


def pte_describe(pte: int) -> str:
    """A readable form of an entry, e.g. ``present(pfn=3, write|dirty)``."""
    kind = pte_type(pte)
    if kind == PTE_NONE:
        return "none"
    name = PTE_TYPE_NAMES[kind] if kind < len(PTE_TYPE_NAMES) else f"type{kind}"
    bits = "|".join(n for b, n in PTE_BIT_NAMES.items() if pte & b)
    return f"{name}(pfn={pte_pfn(pte)}{', ' + bits if bits else ''})"


def flags_describe(flags: int) -> str:
    names = [n for b, n in FLAG_NAMES.items() if flags & b]
    if flags & Z_DEVICE:
        names.append(f"dev{(flags & Z_DEVID_MASK) >> Z_DEVID_SHIFT}")
    return "|".join(names) or "0"


# --------------------------------------------------------------------------------------
# VMAs: per mm, MAX_VMAS rows of VMA_WORDS words.
# V_PGOFF is vma->vm_pgoff (for an anonymous VMA: its start when it was mmapped; it
# moves with the pages on mremap, so folio_pgoff() finds them at their new address);
# V_AVC the anon_vma_chain: a bit per anon_vma the VMA is linked to (its own and, after
# fork, its ancestors'); V_SEQ the order of its insertion into the anon_vma interval
# trees (equal pgoffs are visited in insertion order: core/mm/rmap.py).
V_START, V_END, V_FLAGS, V_ORIGIN, V_PGOFF, V_AVC, V_SEQ = range(7)
VMA_WORDS = 7
VM_READ = 1 << 0
VM_WRITE = 1 << 1
VM_ANON = 1 << 2  # vma_is_anonymous()
VM_SHARED = 1 << 3
VM_SPECIAL = 1 << 4  # VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_HUGETLB = 1 << 5
VM_STACK_INCOMPLETE_SETUP = 1 << 6  # exec's temporary stack (vma_is_temporary_stack)
VM_LIVE = 1 << 7  # model only: the row is in use
VM_HUGEPAGE = 1 << 8  # madvise(MADV_HUGEPAGE): THP-eligible (v7's do_huge_pmd_anonymous_page)

# Per mm words. M_WP_SEQ is mm->write_protect_seq (fork bumps it around copy_page_range;
# GUP-fast pins back off when it is odd or changed, core/mm/gup.py). M_SPARE holds the
# mmap_lock's writer (M_MMAP_LOCK + 3: core/machine/kernel.py).
M_MMAP_LOCK, M_USERS, M_PARENT, M_SPARE, M_WP_SEQ = range(5)
MM_WORDS = 5
# mm->flags (7.0: the mm_flags bitmap, include/linux/mm_types.h), as far as the model
# uses it: the OOM reaper's bits (core/mm/oom_kill.py), one word per mm in the
# ``mm_flags`` table, which is empty unless the geometry asks for it (``mm_flags``: a
# workload with an OOM reaper). MMF_UNSTABLE: the reaper has started to unmap the mm;
# its content is no longer stable and a fault must not refill it
# (check_stable_address_space, include/linux/oom.h). MMF_OOM_SKIP: the reaper is done
# with it (or gave up).
MMF_UNSTABLE = 1 << 0
MMF_OOM_SKIP = 1 << 1
# The oracle's mark on a shadow word whose page the OOM reaper zapped: the value is the
# last one the program wrote, and the page is gone by design (core/mm/oom_kill.py).
# Content tokens never reach this bit.
SHADOW_REAPED = 1 << 62
RWSEM_WRITER = 1 << 40  # mmap_lock word: writer bit above a reader count
RWSEM_FLAG_WAITERS = 1 << 41  # kernel/locking/rwsem.c: the wait list is not empty
RWSEM_READER_MASK = RWSEM_WRITER - 1
RWSEM_LOCK_MASK = RWSEM_WRITER | RWSEM_READER_MASK

# anon_vma (mm/rmap.c): one per mm (the anon_vma of every anonymous VMA of that mm; a
# forked child's is a new one under its parent's root). AV_RWSEM is the rwsem (reader
# count, RWSEM_WRITER bit; only the root's is used: anon_vma_lock_*() lock root->rwsem),
# AV_OWNER the writer (actor + 1), AV_ROOT / AV_PARENT the root and parent anon_vma + 1
# (0: itself, none).
AV_RWSEM, AV_OWNER, AV_ROOT, AV_PARENT = range(4)
AV_WORDS = 4

# folio->mapping / folio->index of an anonymous folio, one word per frame in the
# ``mapping`` table: 0 (no anon_vma), or (index << MAPPING_INDEX_SHIFT) | (anon_vma + 1).
MAPPING_AV_MASK = 0xFF
MAPPING_INDEX_SHIFT = 8


def mapping_encode(av: int, index: int) -> int:
    """The ``mapping`` word of an anonymous folio of anon_vma ``av`` at pgoff ``index``."""
    return (index << MAPPING_INDEX_SHIFT) | (av + 1)


# Per actor words: what the parallel watchdog and the deadlock finder read.
(
    A_STATE,
    A_WAIT_WORD,
    A_WAIT_MASK,
    A_WAIT_SITE,
    A_PROGRESS,
    A_STEPS,
    A_SITE,
    A_ACK,
    A_WQ_LOCK,
    A_WQ_FLAGS,
    A_WQ_SEQ,
    A_WAIT_LOCK,
) = range(12)
ACTOR_WORDS = 12
# The actor's wait-queue entry (``struct wait_page_queue`` / ``struct rwsem_waiter`` on its
# stack in the kernel): A_WQ_LOCK is the lock word + 1 whose queue it is on (0: on none),
# A_WQ_SEQ its place in the queue (FIFO: from the global G_WQ_SEQ counter), A_WQ_FLAGS:
WQ_EXCLUSIVE = 1 << 0  # WQ_FLAG_EXCLUSIVE: wants the lock, only one is woken
WQ_CUSTOM = 1 << 1  # WQ_FLAG_CUSTOM: the waker hands the lock over (fair hand-off)
WQ_WOKEN = 1 << 2  # WQ_FLAG_WOKEN
WQ_DONE = 1 << 3  # WQ_FLAG_DONE: the waker (or the waiter) took the bit
WQ_SLEEP = 1 << 4  # model only: the task is not TASK_RUNNING; a wake-up clears it
WQ_RWSEM_READ = 1 << 5  # RWSEM_WAITING_FOR_READ
WQ_RWSEM_WRITE = 1 << 6  # RWSEM_WAITING_FOR_WRITE
# A_WAIT_LOCK: the lock a blocked actor waits for (for the waits-for graph; its
# A_WAIT_WORD / A_WAIT_MASK say what wakes it, its own A_WQ_FLAGS when it is queued).
ACTOR_IDLE, ACTOR_RUNNING, ACTOR_BLOCKED, ACTOR_DONE, ACTOR_FAILED = range(5)

# Per-CPU TLB: TLB_SLOTS direct-mapped entries of (key, value) per actor.
TLB_SLOTS = 32
TLB_KEY, TLB_VAL = 0, 1

# Per-CPU LRU-add batches (mm/swap.c cpu_fbatches.lru_add): a count, then up to
# FOLIO_BATCH_SIZE pfns, per actor (each actor is its own CPU). A folio in a batch holds a
# reference and is not on the LRU (no PG_lru) until the batch is drained.
FOLIO_BATCH_SIZE = 31  # PAGEVEC_SIZE (include/linux/pagevec.h, 6.10+)
LRU_BATCH_WORDS = 1 + FOLIO_BATCH_SIZE

# Per-CPU work (kernel/workqueue.c, as far as lru_add_drain_all uses it): one word per
# CPU (rows sized by the actor count, which includes the kworkers): the pending work bits
# and CPU_IDLE, set while the CPU's kworker sleeps with nothing to do.
CPU_IDLE = 1 << 0  # the kworker has no work (it sleeps until this is cleared)
WORK_LRU_DRAIN = 1 << 1  # lru_add_drain_per_cpu is queued (lru_drain_works)
CPU_WORDS = 1

# Swap slots: (data, in-use) per slot.
S_DATA, S_USED = 0, 1
SWAP_HAS_CACHE = 1 << 20  # include/linux/swap.h: the swap_map bit for "in the swap cache"
SWAP_WORDS = 2

# Zones: (free count, allocation cursor) per zone.
Z_FREE, Z_CURSOR = 0, 1
ZONE_WORDS = 2

# mmu notifiers and dmirror instances (core/mm/mmu_notifier.py, core/lib/test_hmm.py):
# empty tables unless the geometry has dmirrors.
# Per mm: struct mmu_notifier_subscriptions reduced to its lock, invalidate_seq,
# active_invalidate_ranges and whether it has an interval tree (has_itree).
MN_LOCK, MN_SEQ, MN_ACTIVE, MN_HAS_ITREE = range(4)
MN_WORDS = 4
# Per interval notifier (struct mmu_interval_notifier): one per dmirror (its open file)
# and one per actor (the temporary notifier of HMM_DMIRROR_SNAPSHOT).
MNI_STATE, MNI_SEQ, MNI_START, MNI_END, MNI_MM, MNI_OPS, MNI_MIRROR = range(7)
MNI_WORDS = 7
MNI_FREE, MNI_IN_TREE, MNI_DEFERRED_ADD, MNI_DEFERRED_REMOVE = range(4)
# Per dmirror (struct dmirror): its device, its mm, dmirror->mutex (0 free, owner + 1),
# dmirror->flags (HMM_DMIRROR_FLAG_FAIL_ALLOC).
DM_DEV, DM_MM, DM_MUTEX, DM_FLAGS = range(4)
DM_WORDS = 4
# Per device, the model's deterministic failure counters (``[[device]] fail_alloc`` /
# ``copy_error``: every n-th allocation / copy back of the device fails): the device's
# allocations and copies so far, in words so that the parallel engine's workers count
# the device's, not each its own (the ``dev_counters`` table; empty unless a device sets
# one of the two).
DVC_ALLOCS, DVC_COPIES = range(2)
DVC_WORDS = 2
# Per device, its device memory as one chunk (struct dmirror_chunk and its dev_pagemap,
# lib/test_hmm.c / mm/memremap.c 7.0; empty unless the geometry has ``chunks``):
# DC_REF pgmap->ref (the initial reference + one per allocated device page),
# DC_KILLED percpu_ref_kill done, DC_REMOVE chunk->remove, DC_LOCK
# mdevice->devmem_lock (a mutex: 0 free, owner + 1), DC_COUNT mdevice->devmem_count.
DC_REF, DC_KILLED, DC_REMOVE, DC_LOCK, DC_COUNT = range(5)
DC_WORDS = 5
# A device page-table entry (dmirror->pt, an xarray of tagged page pointers): 0 or
# ((pfn + 1) << DPT_PFN_SHIFT) | tags. DPT_BACKING: the entry is BACKING_PAGE(dpage),
# the system page backing a device-private page, which the model keeps in the device
# frame itself; without it an entry naming a device-private frame is the struct page
# of device memory the CPU cannot address.
DPT_TAG_WRITE = 1 << 0  # DPT_XA_TAG_WRITE
DPT_TAG_ATOMIC = 1 << 1  # DPT_XA_TAG_ATOMIC
DPT_BACKING = 1 << 2
DPT_PFN_SHIFT = 4

# Large folios and the PMD level (issue 15, the ``v7`` generation; core/machine/folio.py,
# core/machine/pmd.py). The tables below are empty unless the geometry has ``thp``.
#
# Folio fields the kernel keeps outside the head's own words (include/linux/mm_types.h
# of 7.0, 64-bit, CONFIG_PAGE_MAPCOUNT): every tail page's ``compound_head`` (its lru
# word, bit 0 set) and, in the second page (``page[1]``), ``_flags_1`` (the order in its
# low byte), ``_large_mapcount``, ``_nr_pages_mapped``, ``_entire_mapcount`` and
# ``_pincount``. The model keeps them in one row of FOLIO_WORDS words per frame (the
# ``folio`` table), at the frame the kernel keeps them in: FO_HEAD in every tail's row
# (head pfn + 1; 0 in a head or an order-0 frame), the rest in page[1]'s row (the head's
# row holds nothing). Counts are stored as counts, not the kernel's count - 1 (the same
# convention as F_MAP): a folio nobody maps has 0 in each.
#
# ``_mm_ids`` and ``_mm_id_mapcount[2]`` (page[1], 7.0 ``CONFIG_MM_ID``): FO_MM_IDS packs
# the two mm ids (``mm + 1``, 0 = MM_ID_DUMMY, MM_ID_BITS each), FOLIO_MM_IDS_SHARED and
# the bit lock of ``folio_lock_large_mapcount``; FO_MM_MAP0/1 count each slot's mappings
# (counts: 0 = the kernel's -1).
(
    FO_HEAD, FO_ORDER, FO_LARGE_MAPCOUNT, FO_ENTIRE_MAPCOUNT, FO_NR_PAGES_MAPPED, FO_PINCOUNT,
    FO_MM_IDS, FO_MM_MAP0, FO_MM_MAP1,
) = range(9)
FOLIO_WORDS = 9
FOLIO_FIELDS = (
    "compound_head", "order", "large_mapcount", "entire_mapcount", "nr_pages_mapped", "pincount",
    "mm_ids", "mm_id_mapcount0", "mm_id_mapcount1",
)
MM_ID_BITS = 7
MM_ID_MASK = (1 << MM_ID_BITS) - 1
FOLIO_MM_IDS_SHARED = 1 << (2 * MM_ID_BITS)
FOLIO_MM_IDS_LOCK = 1 << (2 * MM_ID_BITS + 1)
# mm/internal.h: _nr_pages_mapped counts the pages mapped by PTEs, plus ENTIRELY_MAPPED
# per PMD mapping of the whole folio (its first one only: _entire_mapcount counts them).
ENTIRELY_MAPPED = 0x800000
FOLIO_PAGES_MAPPED = ENTIRELY_MAPPED - 1

# PMD entries: one word per PMD (per PTE table) of each mm, in the ``pmd`` table. The
# encoding is the PTE's (type, pfn, bits); a PMD word adds the type PMD_TABLE (a PTE
# table hangs here: pmd_present && !pmd_leaf) and uses the leaf types for the huge
# entries: PTE_PRESENT is a huge present PMD (pmd_trans_huge), PTE_MIGRATION a PMD
# migration entry (is_pmd_migration_entry), PTE_DEVICE_PRIVATE a device-private PMD
# (is_pmd_device_private_entry). The pfn of a leaf is the folio's head.
PMD_TABLE = 6
# pmdp_invalidate() (pmd_mkinvalid): a huge present PMD the hardware may no longer use,
# still pmd_trans_huge for the kernel, while __split_huge_pmd_locked replaces it.
PMD_INVALID = 1 << 9
PMD_TYPE_NAMES = ("none", "huge", "migration", "device_private", "swap", "device_exclusive", "table")

# Huge TLB entries (arch/x86: 2M translations are cached apart from 4K ones): HTLB_SLOTS
# direct-mapped (key, value) pairs per actor; key = mm * tables_per_mm + pmd index + 1,
# value = (head pfn << 1) | writable.
HTLB_SLOTS = 8


def pmd_describe(pmd: int) -> str:
    """A readable form of a PMD word, e.g. ``huge(pfn=64, write|dirty)`` or ``table``."""
    kind = pmd & PTE_TYPE_MASK
    if kind == PTE_NONE:
        return "none"
    if kind == PMD_TABLE:
        return "table"
    name = PMD_TYPE_NAMES[kind]
    bits = "|".join(n for b, n in PTE_BIT_NAMES.items() if pmd & b)
    if pmd & PMD_INVALID:
        bits = "|".join(x for x in (bits, "invalid") if x)
    return f"{name}(pfn={pte_pfn(pmd)}{', ' + bits if bits else ''})"


# Global words.
G_TICKET, G_STOP, G_PAUSE, G_PROGRESS, G_FAILED, G_WQ_LOCK, G_WQ_SEQ = range(7)
# G_WQ_LOCK: the wait queues' spinlock (every page's hashed q->lock and every rwsem's
# wait_lock, as one word); G_WQ_SEQ: the next wait-queue entry's place.
G_AVC_SEQ = 15  # the anon_vma interval trees' insertion counter (V_SEQ)
GLOBAL_WORDS = 16


@dataclass(frozen=True)
class Geometry:
    """The sizes a workload asks for.

    Args:
        sys_frames: page frames of system RAM.
        dev_frames: page frames per device.
        devices: number of devices (each DEVICE_PRIVATE unless listed in ``coherent``).
        mms: number of address spaces (processes).
        pages_per_mm: virtual pages per address space.
        ptes_per_table: entries per page table, i.e. per page-table lock.
        actors: number of actors (CPUs, drivers, pinners...).
        max_vmas: VMA rows per mm.
        swap_slots: swap slots.
        coherent: ids of devices whose memory is DEVICE_COHERENT.
        files: files with a page cache (``core/mm/filemap.py``); 0 for none.
        pages_per_file: page-cache slots per file.
        dmirrors: the mirrors (device, mm), one per open file of a device.
        chunks: model each device's memory as a removable chunk (the ``devmem`` table:
            pgmap references, ``HMM_DMIRROR_RELEASE``); set by workloads that remove it.
    """

    sys_frames: int = 64
    dev_frames: int = 32
    devices: int = 1
    mms: int = 1
    pages_per_mm: int = 32
    ptes_per_table: int = 8
    actors: int = 4
    max_vmas: int = 4
    swap_slots: int = 16
    coherent: tuple[int, ...] = field(default_factory=tuple)
    files: int = 0
    pages_per_file: int = 0
    dmirrors: tuple[tuple[int, int], ...] = field(default_factory=tuple)
    chunks: bool = False
    dev_counters: bool = False  # the per-device failure counters (``dev_counters`` table)
    mm_flags: bool = False  # a flags word per mm (the ``mm_flags`` table): the OOM reaper's
    # Large folios and the PMD level (the v7 generation): the ``folio``, ``pmd``,
    # ``pmd_ptl`` and ``htlb`` tables exist only when set, so the other generations'
    # state (and their fingerprints) is unchanged. HPAGE_PMD_NR is ``ptes_per_table``.
    thp: bool = False

    def __post_init__(self) -> None:
        for name in ("sys_frames", "mms", "pages_per_mm", "ptes_per_table", "actors", "max_vmas"):
            if getattr(self, name) < 1:
                raise ValueError(f"geometry: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("dev_frames", "devices", "swap_slots", "files", "pages_per_file"):
            if getattr(self, name) < 0:
                raise ValueError(f"geometry: {name} must be >= 0, got {getattr(self, name)}")
        if self.files and self.pages_per_file < 1:
            raise ValueError(
                f"geometry: files = {self.files} needs pages_per_file >= 1, got {self.pages_per_file}"
            )
        if self.mms > 62:
            raise ValueError(f"geometry: at most 62 mms (V_AVC is a bit per anon_vma), got {self.mms}")
        if self.devices > 255:
            raise ValueError(f"geometry: at most 255 devices, got {self.devices}")
        for dev, mm in self.dmirrors:
            if not (0 <= dev < self.devices and 0 <= mm < self.mms):
                raise ValueError(
                    f"geometry: dmirror (device {dev}, mm {mm}) names a device or mm that "
                    f"does not exist ({self.devices} devices, {self.mms} mms)"
                )

    @property
    def frames(self) -> int:
        return self.sys_frames + self.devices * self.dev_frames

    @property
    def tables_per_mm(self) -> int:
        return -(-self.pages_per_mm // self.ptes_per_table)

    @property
    def zones(self) -> int:
        return 1 + self.devices

    @property
    def hpage_pmd_nr(self) -> int:
        """HPAGE_PMD_NR: the pages one PMD maps (one PTE table's worth)."""
        return self.ptes_per_table

    @property
    def pmd_tables_per_mm(self) -> int:
        """PMD tables per mm (one split PMD lock each, ``pmd_lockptr``): a PMD table
        holds ``ptes_per_table`` PMD entries, as a PTE table holds that many PTEs."""
        return -(-self.tables_per_mm // self.ptes_per_table)


@dataclass(frozen=True)
class Table:
    name: str
    offset: int  # in words
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class Layout:
    """Where every table sits in the flat word buffer.

    The tables are, in order: ``glob``, ``frames``, ``zones``, ``pte``, ``ptl``, ``mm``,
    ``vma``, ``actor``, ``tlb``, ``shadow``, ``swap``, and the page cache: ``pcache``
    (one slot per file page: pfn + 1, or 0 when the page is not cached; the XArray of
    ``mapping->i_pages``), ``pcache_lock`` (one ``xa_lock`` word per file) and
    ``fshadow`` (the oracle's last token written to each file page), and ``lru_batch``
    (each CPU's LRU-add batch), ``cpu`` (each CPU's queued work). The page-cache tables
    are empty when the geometry has no files. Then ``anon_vma`` (one row per mm,
    ``AV_*``) and ``mapping`` (one word per frame: ``folio->mapping`` / ``->index`` of an
    anonymous folio, :func:`mapping_encode`), the mirror's tables (``mn``, ``mni``,
    ``dmirror``, ``dpt``, ``dpt_gen``, ``dpage_mirror``: docs/mirror.md), then ``devmem``
    (each device's memory chunk, when the geometry has ``chunks``) and ``mm_flags`` (one
    word per mm when the geometry has ``mm_flags``: ``MMF_*``), and, only when the
    geometry has ``thp``, ``folio`` (FOLIO_WORDS per frame), ``pmd`` (one PMD word per PTE
    table), ``pmd_ptl`` (one split PMD lock per PMD table) and ``htlb`` (each CPU's huge
    TLB).
    """

    def __init__(self, geo: Geometry) -> None:
        self.geo = geo
        g = geo
        specs: list[tuple[str, tuple[int, ...]]] = [
            ("glob", (GLOBAL_WORDS,)),
            ("frames", (g.frames, FRAME_WORDS)),
            ("zones", (g.zones, ZONE_WORDS)),
            ("pte", (g.mms, g.pages_per_mm)),
            ("ptl", (g.mms, g.tables_per_mm)),
            ("mm", (g.mms, MM_WORDS)),
            ("vma", (g.mms, g.max_vmas, VMA_WORDS)),
            ("actor", (g.actors, ACTOR_WORDS)),
            ("tlb", (g.actors, TLB_SLOTS, 2)),
            ("shadow", (g.mms, g.pages_per_mm)),
            ("swap", (max(g.swap_slots, 1), SWAP_WORDS)),
            ("pcache", (g.files, g.pages_per_file)),
            ("pcache_lock", (g.files,)),
            ("fshadow", (g.files, g.pages_per_file)),
            ("lru_batch", (g.actors, LRU_BATCH_WORDS)),
            ("cpu", (g.actors, CPU_WORDS)),
            ("mn", (g.mms if g.dmirrors else 0, MN_WORDS)),
            ("mni", (len(g.dmirrors) + g.actors if g.dmirrors else 0, MNI_WORDS)),
            ("dmirror", (len(g.dmirrors), DM_WORDS)),
            ("dpt", (len(g.dmirrors), g.pages_per_mm)),
            ("dpt_gen", (len(g.dmirrors), g.pages_per_mm)),
            ("dpage_mirror", (g.frames if g.dmirrors else 0,)),
            ("anon_vma", (g.mms, AV_WORDS)),
            ("mapping", (g.frames,)),
            ("devmem", (g.devices if g.chunks else 0, DC_WORDS)),
            ("mm_flags", (g.mms if g.mm_flags else 0,)),
            ("dev_counters", (g.devices if g.dev_counters else 0, DVC_WORDS)),
            # Large folios and the PMD level: empty unless g.thp (folio.py, pmd.py).
            ("folio", (g.frames if g.thp else 0, FOLIO_WORDS)),
            ("pmd", (g.mms if g.thp else 0, g.tables_per_mm)),
            ("pmd_ptl", (g.mms if g.thp else 0, g.pmd_tables_per_mm)),
            ("htlb", (g.actors if g.thp else 0, HTLB_SLOTS, 2)),
        ]
        self.tables: dict[str, Table] = {}
        off = 0
        for name, shape in specs:
            t = Table(name, off, shape)
            self.tables[name] = t
            off += t.size
        self.words = off
        tb = self.tables
        # Base word indexes, used by the hot paths.
        self.GLOB = tb["glob"].offset
        self.FRAMES = tb["frames"].offset
        self.ZONES = tb["zones"].offset
        self.PTE = tb["pte"].offset
        self.PTL = tb["ptl"].offset
        self.MM = tb["mm"].offset
        self.VMA = tb["vma"].offset
        self.ACTOR = tb["actor"].offset
        self.TLB = tb["tlb"].offset
        self.SHADOW = tb["shadow"].offset
        self.SWAP = tb["swap"].offset
        self.PCACHE = tb["pcache"].offset
        self.PCACHE_LOCK = tb["pcache_lock"].offset
        self.FSHADOW = tb["fshadow"].offset
        self.LRU_BATCH = tb["lru_batch"].offset
        self.CPU = tb["cpu"].offset
        self.MN = tb["mn"].offset
        self.MNI = tb["mni"].offset
        self.DMIRROR = tb["dmirror"].offset
        self.DEV_COUNTERS = tb["dev_counters"].offset
        self.DPT = tb["dpt"].offset
        self.DPT_GEN = tb["dpt_gen"].offset
        self.DPAGE_MIRROR = tb["dpage_mirror"].offset
        self.ANON_VMA = tb["anon_vma"].offset
        self.MAPPING = tb["mapping"].offset
        self.DEVMEM = tb["devmem"].offset
        self.MM_FLAGS = tb["mm_flags"].offset
        self.FOLIO = tb["folio"].offset
        self.PMD = tb["pmd"].offset
        self.PMD_PTL = tb["pmd_ptl"].offset
        self.HTLB = tb["htlb"].offset

    @property
    def nbytes(self) -> int:
        return self.words * 8

    def zone_range(self, zone: int) -> tuple[int, int]:
        """Frame range ``[lo, hi)`` of zone 0 (system RAM) or zone ``1 + device``."""
        g = self.geo
        if zone == 0:
            return 0, g.sys_frames
        lo = g.sys_frames + (zone - 1) * g.dev_frames
        return lo, lo + g.dev_frames

    def zone_of(self, pfn: int) -> int:
        g = self.geo
        if pfn < g.sys_frames:
            return 0
        return 1 + (pfn - g.sys_frames) // g.dev_frames

    def describe(self) -> dict[str, object]:
        return {n: {"offset": t.offset, "shape": list(t.shape)} for n, t in self.tables.items()}
