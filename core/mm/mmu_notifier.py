"""mmu interval notifiers: ``mm/mmu_notifier.c`` and ``include/linux/mmu_notifier.h`` (7.0).

A driver that mirrors a process's page table (``lib/test_hmm.c``, Xe's SVM, amdkfd,
nouveau) subscribes to a virtual range with ``mmu_interval_notifier_insert``; every
kernel path that changes an entry of the range brackets the change with
``mmu_notifier_invalidate_range_start`` / ``_end``, and start calls the driver's
``invalidate`` callback, which takes the driver's lock and drops its device mappings.
The driver's own reads of the CPU page table (``hmm_range_fault``) are a collision-retry
section: ``mmu_interval_read_begin`` → walk → take the driver lock →
``mmu_interval_read_retry``.

Reduced to what the model needs, all in words (``Layout`` tables ``mn`` and ``mni``) so
both engines share it:

- per mm, ``struct mmu_notifier_subscriptions``: its spinlock (a lock word the engines
  see), ``invalidate_seq`` (odd while an invalidation that hit an interval notifier is
  in progress: the "fully excluded" state), ``active_invalidate_ranges`` and
  ``has_itree``. The interval tree is the ``mni`` rows of that mm in ``start`` order
  (an overlap scan; no tree);
- per interval notifier: state (free / in the tree / deferred add / deferred remove,
  the ``deferred_list`` that ``mn_itree_inv_end`` processes), its ``invalidate_seq``,
  ``[start, end)``, mm, ops (which driver callback) and the dmirror it belongs to.

The callbacks are the driver's (``core/lib/test_hmm.py`` plugs them in as
``k.hooks["mni_invalidate"]``): the path modules never import the driver.

Without a subscription on an mm (``mm_has_notifiers``) start and end are no-ops with no
preemption point, as in the kernel: workloads without dmirrors run exactly as before.

Simplifications (docs/internals.md, "Deliberate simplifications"): the waits in
``mmu_interval_read_begin`` and ``mmu_interval_notifier_remove`` sleep until
``invalidate_seq`` is even (``Block`` on its low bit) where the kernel's ``wait_event``
wakes as soon as it differs from the value read: a new invalidation that starts before
the sleeper runs keeps it asleep until that one ends too; no other mmu notifier kind
(``struct mmu_notifier`` with ``ops->invalidate_range_start``, ``release``) is modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..machine.kernel import Actor, Block, Kernel, Path
from ..machine.layout import (
    MN_ACTIVE,
    MN_HAS_ITREE,
    MN_LOCK,
    MN_SEQ,
    MN_WORDS,
    MNI_DEFERRED_ADD,
    MNI_DEFERRED_REMOVE,
    MNI_END,
    MNI_FREE,
    MNI_IN_TREE,
    MNI_MIRROR,
    MNI_MM,
    MNI_OPS,
    MNI_SEQ,
    MNI_START,
    MNI_STATE,
    MNI_WORDS,
)

# enum mmu_notifier_event (include/linux/mmu_notifier.h)
MMU_NOTIFY_UNMAP = 0
MMU_NOTIFY_CLEAR = 1
MMU_NOTIFY_PROTECTION_VMA = 2
MMU_NOTIFY_PROTECTION_PAGE = 3
MMU_NOTIFY_SOFT_DIRTY = 4
MMU_NOTIFY_RELEASE = 5
MMU_NOTIFY_MIGRATE = 6
MMU_NOTIFY_EXCLUSIVE = 7
EVENT_NAMES = (
    "unmap", "clear", "protection_vma", "protection_page", "soft_dirty", "release",
    "migrate", "exclusive",
)

# Which driver callback an interval notifier has (its ops).
OPS_DMIRROR = 0  # dmirror_min_ops: dmirror_interval_invalidate
OPS_SNAPSHOT = 1  # dmirror_mrn_ops: dmirror_snapshot_invalidate

EOVERFLOW = -75
EAGAIN = -11


@dataclass
class MmuNotifierRange:
    """``struct mmu_notifier_range``: ``[start, end)`` of ``mm``, the event, and the
    owner (the device of a migration's ``pgmap_owner``, -1 for none). Every call site
    is blockable (``mmu_notifier_invalidate_range_start`` sets
    ``MMU_NOTIFIER_RANGE_BLOCKABLE``) except the OOM reaper's
    (``mmu_notifier_invalidate_range_start_nonblock``, core/mm/oom_kill.py)."""

    event: int
    mm: int
    start: int
    end: int
    owner: int = -1
    blockable: bool = True


def _mn(k: Kernel, mm: int, field: int) -> int:
    return k.lay.MN + mm * MN_WORDS + field


def mni_word(k: Kernel, slot: int, field: int) -> int:
    """Word index of field ``field`` of interval notifier ``slot``."""
    return k.lay.MNI + slot * MNI_WORDS + field


def mm_has_notifiers(k: Kernel, mm: int) -> bool:
    """``mm_has_notifiers()``: the mm has subscriptions (only mms a dmirror mirrors)."""
    return bool(k.lay.MNI > k.lay.MN) and bool(k.words.load(_mn(k, mm, MN_HAS_ITREE)))


def _overlapping(k: Kernel, r: MmuNotifierRange) -> list[int]:
    """The interval tree walk (``interval_tree_iter_first`` / ``_next``): the notifiers
    of ``r.mm`` in the tree whose range meets ``[r.start, r.end)``, by start."""
    words = k.words
    n = (k.lay.DMIRROR - k.lay.MNI) // MNI_WORDS
    hits = []
    for slot in range(n):
        if words.load(mni_word(k, slot, MNI_STATE)) not in (MNI_IN_TREE, MNI_DEFERRED_REMOVE):
            continue
        if words.load(mni_word(k, slot, MNI_MM)) != r.mm:
            continue
        s, e = words.load(mni_word(k, slot, MNI_START)), words.load(mni_word(k, slot, MNI_END))
        if s < r.end and r.start < e:
            hits.append((s, slot))
    return [slot for _s, slot in sorted(hits)]


def mmu_notifier_invalidate_range_start(k: Kernel, a: Actor, r: MmuNotifierRange) -> Path:
    """``mmu_notifier_invalidate_range_start()`` → ``mn_itree_invalidate()``:
    ``mn_itree_inv_start_range`` (under the subscriptions lock: one more active range,
    ``invalidate_seq`` made odd when a notifier overlaps), then each overlapping
    notifier's ``invalidate(range, cur_seq)``, which may sleep on the driver's lock.

    Returns 0, or for a range that is not blockable
    (``mmu_notifier_invalidate_range_start_nonblock``) ``-EAGAIN`` when a callback
    could not take its lock without sleeping: then ``mn_itree_inv_end`` has already
    run (``out_would_block``) and the caller must not call the end."""
    if not mm_has_notifiers(k, r.mm):
        return 0
    lock = _mn(k, r.mm, MN_LOCK)
    yield from k.spin_lock(a, lock, "mn_itree_inv_start_range:lock")
    k.words.fetch_add(_mn(k, r.mm, MN_ACTIVE), 1)
    hits = _overlapping(k, r)
    if hits:
        k.words.fetch_or(_mn(k, r.mm, MN_SEQ), 1)
    cur_seq = k.words.load(_mn(k, r.mm, MN_SEQ))
    k.spin_unlock(a, lock, "mn_itree_inv_start_range:lock")
    k.count(f"mmu_notify_{EVENT_NAMES[r.event]}")
    invalidate = k.hooks.get("mni_invalidate")
    for slot in hits:
        yield
        if invalidate is not None:
            ok = yield from invalidate(k, a, slot, r, cur_seq)
            if not ok and not r.blockable:
                k.count("mmu_notify_would_block")
                yield from mn_itree_inv_end(k, a, r.mm)
                return EAGAIN
    yield
    return 0


def mn_itree_inv_end(k: Kernel, a: Actor, mm: int) -> Path:
    """``mn_itree_inv_end()``: the last active range makes ``invalidate_seq`` even and
    runs the deferred inserts and removes; ``wake_up_all`` is the seq word changing."""
    lock = _mn(k, mm, MN_LOCK)
    yield from k.spin_lock(a, lock, "mn_itree_inv_end:lock")
    words = k.words
    active = words.fetch_add(_mn(k, mm, MN_ACTIVE), -1) - 1
    seq = words.load(_mn(k, mm, MN_SEQ))
    if active or not seq & 1:
        k.spin_unlock(a, lock, "mn_itree_inv_end:lock")
        return
    n = (k.lay.DMIRROR - k.lay.MNI) // MNI_WORDS
    for slot in range(n):
        st = mni_word(k, slot, MNI_STATE)
        if words.load(mni_word(k, slot, MNI_MM)) != mm:
            continue
        state = words.load(st)
        if state == MNI_DEFERRED_ADD:
            words.store(st, MNI_IN_TREE)
        elif state == MNI_DEFERRED_REMOVE:
            words.store(st, MNI_FREE)
    words.store(_mn(k, mm, MN_SEQ), seq + 1)
    k.spin_unlock(a, lock, "mn_itree_inv_end:lock")


def mmu_notifier_invalidate_range_end(k: Kernel, a: Actor, r: MmuNotifierRange) -> Path:
    """``mmu_notifier_invalidate_range_end()`` → ``mn_itree_inv_end()``."""
    if not mm_has_notifiers(k, r.mm):
        return
    yield from mn_itree_inv_end(k, a, r.mm)


def _wait_seq_released(k: Kernel, a: Actor, mm: int, seq: int, site: str) -> Path:
    """``wait_event(subscriptions->wq, invalidate_seq != seq)``, as a Block on the seq
    word's low bit (see the module docstring)."""
    w = _mn(k, mm, MN_SEQ)
    while k.words.load(w) == seq:
        req = Block(w, 1, "mmu_notifier", mm, site)
        k._block(a, req)
        yield req
        k._unblock(a)


def mmu_interval_notifier_insert(
    k: Kernel, a: Actor, slot: int, mm: int, start: int, length: int, ops: int, mirror: int
) -> Path:
    """``mmu_interval_notifier_insert()`` → ``__mmu_interval_notifier_insert()``: into
    the tree, or onto the deferred list while the tree is being invalidated; the
    notifier's ``invalidate_seq`` starts odd (so ``read_begin`` will wait while an
    invalidation runs) or one below the current even seq."""
    if length == 0:
        return EOVERFLOW
    words = k.words
    words.store(mni_word(k, slot, MNI_MM), mm)
    words.store(mni_word(k, slot, MNI_START), start)
    words.store(mni_word(k, slot, MNI_END), start + length)
    words.store(mni_word(k, slot, MNI_OPS), ops)
    words.store(mni_word(k, slot, MNI_MIRROR), mirror)
    lock = _mn(k, mm, MN_LOCK)
    yield from k.spin_lock(a, lock, "mmu_interval_notifier_insert:lock")
    seqw = _mn(k, mm, MN_SEQ)
    if words.load(_mn(k, mm, MN_ACTIVE)):
        if words.load(seqw) & 1:
            words.store(mni_word(k, slot, MNI_STATE), MNI_DEFERRED_ADD)
        else:
            words.fetch_or(seqw, 1)
            words.store(mni_word(k, slot, MNI_STATE), MNI_IN_TREE)
        words.store(mni_word(k, slot, MNI_SEQ), words.load(seqw))
    else:
        words.store(mni_word(k, slot, MNI_SEQ), words.load(seqw) - 1)
        words.store(mni_word(k, slot, MNI_STATE), MNI_IN_TREE)
    words.store(_mn(k, mm, MN_HAS_ITREE), 1)
    k.spin_unlock(a, lock, "mmu_interval_notifier_insert:lock")
    return 0


def mmu_interval_notifier_remove(k: Kernel, a: Actor, slot: int) -> Path:
    """``mmu_interval_notifier_remove()``: out of the tree, or (while the tree is being
    invalidated) onto the deferred list, then wait for that invalidation to end."""
    words = k.words
    mm = words.load(mni_word(k, slot, MNI_MM))
    lock = _mn(k, mm, MN_LOCK)
    st = mni_word(k, slot, MNI_STATE)
    seq = -1
    yield from k.spin_lock(a, lock, "mmu_interval_notifier_remove:lock")
    if words.load(_mn(k, mm, MN_SEQ)) & 1:
        if words.load(st) == MNI_DEFERRED_ADD:
            words.store(st, MNI_FREE)
        else:
            words.store(st, MNI_DEFERRED_REMOVE)
            seq = words.load(_mn(k, mm, MN_SEQ))
    else:
        words.store(st, MNI_FREE)
    k.spin_unlock(a, lock, "mmu_interval_notifier_remove:lock")
    if seq >= 0:
        yield from _wait_seq_released(k, a, mm, seq, "mmu_interval_notifier_remove:wait")


def mmu_interval_read_begin(k: Kernel, a: Actor, slot: int) -> Path:
    """``mmu_interval_read_begin()``: the notifier's seq; when it equals the mm's (an
    invalidation of this notifier is in progress) sleep until that one ends."""
    words = k.words
    mm = words.load(mni_word(k, slot, MNI_MM))
    lock = _mn(k, mm, MN_LOCK)
    yield from k.spin_lock(a, lock, "mmu_interval_read_begin:lock")
    seq = words.load(mni_word(k, slot, MNI_SEQ))
    is_invalidating = seq == words.load(_mn(k, mm, MN_SEQ))
    k.spin_unlock(a, lock, "mmu_interval_read_begin:lock")
    if is_invalidating:
        k.count("mmu_interval_read_begin_wait")
        yield from _wait_seq_released(k, a, mm, seq, "mmu_interval_read_begin:wait")
    return seq


def mmu_interval_set_seq(k: Kernel, slot: int, cur_seq: int) -> None:
    """``mmu_interval_set_seq()``: called by ``invalidate`` under the driver lock."""
    k.words.store(mni_word(k, slot, MNI_SEQ), cur_seq)


def mmu_interval_read_retry(k: Kernel, slot: int, seq: int) -> bool:
    """``mmu_interval_read_retry()``: called under the driver lock."""
    return k.words.load(mni_word(k, slot, MNI_SEQ)) != seq


def mmu_interval_check_retry(k: Kernel, slot: int, seq: int) -> bool:
    """``mmu_interval_check_retry()``: the same, lockless, as a hint."""
    return k.words.load(mni_word(k, slot, MNI_SEQ)) != seq


__all__ = [
    "MMU_NOTIFY_CLEAR",
    "MMU_NOTIFY_EXCLUSIVE",
    "MMU_NOTIFY_MIGRATE",
    "MMU_NOTIFY_PROTECTION_PAGE",
    "MMU_NOTIFY_UNMAP",
    "MmuNotifierRange",
    "mm_has_notifiers",
    "mmu_interval_check_retry",
    "mmu_interval_notifier_insert",
    "mmu_interval_notifier_remove",
    "mmu_interval_read_begin",
    "mmu_interval_read_retry",
    "mmu_interval_set_seq",
    "mmu_notifier_invalidate_range_end",
    "mmu_notifier_invalidate_range_start",
]
