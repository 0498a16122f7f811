"""The OOM reaper: ``mm/oom_kill.c`` (7.0; the same code since 6.18's mm_flags and the
reverse walk) ``oom_reap_task`` → ``oom_reap_task_mm`` → ``__oom_reap_task_mm``.

After the OOM killer has sent SIGKILL to a victim, the ``oom_reaper`` kthread unmaps the
victim's private memory without waiting for the victim to exit: under
``mmap_read_trylock`` (retried ``MAX_OOM_REAP_RETRIES`` times, sleeping between
attempts), it sets ``MMF_UNSTABLE`` and zaps every VMA that is anonymous or not shared
(``unmap_page_range`` inside an ``MMU_NOTIFY_UNMAP`` invalidation that may not block:
``mmu_notifier_invalidate_range_start_nonblock``; a VMA whose notifier would block is
skipped and the attempt counts as failed), from the top of the address space down.
Then ``MMF_OOM_SKIP``.

Everyone else may still touch the mm meanwhile (the victim's other threads, kthreads
that ``kthread_use_mm`` it, a driver migrating its memory to a device, a mirror faulting
it through ``hmm_range_fault``). ``MMF_UNSTABLE`` tells them the content is gone:
:func:`~pagerace.core.mm.memory.check_stable_address_space`, tested under the PTL by
``do_anonymous_page`` and ``migrate_vma_insert_page``, turns a refault into SIGBUS
instead of a fresh zeroed page where the program's data was.

The oracle's side: the reaper's zap keeps the shadow (the last value the program wrote:
the program did not ask to drop it), marked ``SHADOW_REAPED``, so a refault that maps
zeroes is a ``stale_read``; a SIGBUS on an unstable mm is expected (``core/actors.py``),
and the global content check does not count the pages the reaper zapped in an unstable
mm, and nothing mapped again, as lost writes (``core/oracles/invariants.py``). Any other
page of a reaped mm must still hold its data, and every other mm is judged as before.

Modelled per ``Variant``: the 7.0 reaper runs in every generation (the older reapers
differ: 4.14 skipped an mm with notifiers altogether); which paths test the flag is
the generation's (``Variant.stable_check_fault`` / ``stable_check_insert``).
"""

from __future__ import annotations

from ..actors import register_op
from ..machine.kernel import S_ACQUIRED, S_CONTENDED, S_TRY, S_TRY_FAIL, Actor, Kernel, Path
from ..machine.layout import (
    MMF_OOM_SKIP,
    MMF_UNSTABLE,
    RWSEM_FLAG_WAITERS,
    RWSEM_WRITER,
    VM_ANON,
    VM_HUGETLB,
    VM_SHARED,
    VM_SPECIAL,
)
from .mmu_notifier import (
    MMU_NOTIFY_UNMAP,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .vma import _zap_pte_range, vma_rows

MAX_OOM_REAP_RETRIES = 10
# schedule_timeout_idle(HZ/10) between attempts: the model has no time; the reaper
# sleeps for this many preemption points, during which everyone else runs.
OOM_REAP_SLEEP = 8


def mm_flags_set(k: Kernel, mm: int, flag: int) -> None:
    """``mm_flags_set(flag, mm)``: an atomic bit set in the mm's flags word (the
    geometry has one: a workload with an ``oom_reaper`` asks for ``mm_flags``)."""
    k.words.fetch_or(k.lay.MM_FLAGS + mm, flag)


def mm_flags_test(k: Kernel, mm: int, flag: int) -> bool:
    """``mm_flags_test(flag, mm)``."""
    return bool(k.geo.mm_flags and k.words.load(k.lay.MM_FLAGS + mm) & flag)


def mmap_read_trylock(k: Kernel, a: Actor, mm: int, site: str) -> bool:
    """``mmap_read_trylock()`` → ``down_read_trylock()`` (7.0 ``__down_read_trylock``):
    one reader more unless a writer holds the lock or anyone waits
    (``RWSEM_READ_FAILED_MASK``). Kept beside its only caller rather than among the
    kernel's primitives; the lock is recorded as held exactly as
    :meth:`Kernel.mmap_read_lock` records it, so lock balance and ``mmap_read_unlock``
    treat it alike."""
    w = k.mmap_word(mm)
    st = k._stat(site)
    st[S_TRY] += 1
    while True:
        cur = k.words.load(w)
        if cur & (RWSEM_WRITER | RWSEM_FLAG_WAITERS):
            st[S_TRY_FAIL] += 1
            st[S_CONTENDED] += 1
            return False
        if k.words.cas(w, cur, cur + 1):
            st[S_ACQUIRED] += 1
            a.held[w] = site
            return True


def __oom_reap_task_mm(k: Kernel, a: Actor, mm: int) -> Path:
    """``__oom_reap_task_mm()``: ``MMF_UNSTABLE``, then each VMA from the top down
    (``mas_for_each_rev``): skip ``VM_HUGETLB | VM_PFNMAP``; zap one that is anonymous
    or not shared inside a non-blocking ``MMU_NOTIFY_UNMAP`` invalidation of the whole
    VMA. Returns False when a notifier would have blocked (that VMA is left as it is)."""
    ret = True
    # "Tell all users of get_user/copy_from_user etc... that the content is no longer
    # stable."
    if "oom_reap_not_unstable" not in k.faults:
        mm_flags_set(k, mm, MMF_UNSTABLE)
    yield
    for _row, vs, ve, vflags in reversed(vma_rows(k, mm)):
        if vflags & (VM_HUGETLB | VM_SPECIAL):
            continue
        if vflags & VM_ANON or not vflags & VM_SHARED:
            rng = MmuNotifierRange(MMU_NOTIFY_UNMAP, mm, vs, ve, blockable=False)
            # tlb_gather_mmu(); the mmu_gather is zap's own per-table batch.
            if (yield from mmu_notifier_invalidate_range_start(k, a, rng)):
                k.count("oom_reap_notifier_would_block")
                ret = False
                continue
            yield from _zap_pte_range(k, a, mm, vs, ve, "oom_reap", keep_shadow=True)
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
    return ret


def oom_reap_task_mm(k: Kernel, a: Actor, mm: int) -> Path:
    """``oom_reap_task_mm()``: ``mmap_read_trylock`` (False: try again later), then,
    unless ``MMF_OOM_SKIP`` is set (``exit_mmap`` got there first), reap."""
    if not mmap_read_trylock(k, a, mm, "oom_reap_task_mm:mmap_read_trylock"):
        k.count("oom_reap_trylock_failed")
        return False
    try:
        if mm_flags_test(k, mm, MMF_OOM_SKIP):
            return True
        ret = yield from __oom_reap_task_mm(k, a, mm)
        if ret:
            k.count("oom_reaped")
        return ret
    finally:
        k.mmap_read_unlock(a, mm, "oom_reap_task_mm:mmap_read_unlock")


def oom_reap_task(k: Kernel, a: Actor, mm: int) -> Path:
    """``oom_reap_task()``: up to ``MAX_OOM_REAP_RETRIES`` attempts, sleeping
    (``schedule_timeout_idle(HZ/10)``: :data:`OOM_REAP_SLEEP` preemption points) after
    each failed one; then ``MMF_OOM_SKIP`` whether it succeeded or gave up. Returns 0
    when the mm was reaped, 1 when the reaper gave up."""
    attempts = 0
    while True:
        attempts += 1
        if attempts > MAX_OOM_REAP_RETRIES:
            break
        ok = yield from oom_reap_task_mm(k, a, mm)
        if ok:
            break
        for _ in range(OOM_REAP_SLEEP):
            yield
    if attempts > MAX_OOM_REAP_RETRIES and not mm_flags_test(k, mm, MMF_OOM_SKIP):
        k.count("oom_reap_gave_up")  # "oom_reaper: unable to reap pid"
    # "Hide this mm from OOM killer because it has been either reaped or somebody
    # can't call mmap_write_unlock(mm)."
    mm_flags_set(k, mm, MMF_OOM_SKIP)
    return 0 if attempts <= MAX_OOM_REAP_RETRIES else 1


def op_oom_reap(k: Kernel, a: Actor, mm: int) -> Path:
    """The ``oom_reaper`` kthread reaping victim ``mm`` (``wake_oom_reaper`` having
    queued it: the OOM killer's choice of victim is the workload's)."""
    yield
    return (yield from oom_reap_task(k, a, mm))


register_op("oom_reap", op_oom_reap)

__all__ = [
    "MAX_OOM_REAP_RETRIES",
    "mm_flags_set",
    "mm_flags_test",
    "mmap_read_trylock",
    "oom_reap_task",
    "oom_reap_task_mm",
    "op_oom_reap",
]
