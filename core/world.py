"""The memory-management world around device migration, in one place to plug in.

Importing this module registers the operations of ``core/mm/gup.py`` (``pin_dma``),
``core/mm/fork.py`` (``fork``, ``child_exit``), ``core/mm/vma.py`` (``munmap``,
``madv_dontneed``), ``core/mm/mremap.py`` (``mremap``), ``core/mm/vmscan.py``
(``reclaim``) and ``core/mm/oom_kill.py`` (``oom_reap``) with
:func:`~pagerace.core.actors.register_op`; :func:`install_mm` plugs
their oracles, the swap-in fault path and the page cache into a kernel
(``harness/runner.py`` calls it for every run it builds). The wiring lives here, above
both the paths and the oracles, so that neither imports the other's plumbing.
"""

from __future__ import annotations

from .lib import test_hmm
from .machine.kernel import Kernel
from .machine.layout import V_FLAGS, VM_LIVE, VM_SHARED
from .machine.words import count_nonzero
from .mm import (  # noqa: F401  (register their ops)
    filemap,
    fork,
    gup,
    mprotect,
    mremap,
    oom_kill,
    vma,
    vmscan,
)
from .mm.swapfile import do_swap_page, reuse_swap_page
from .oracles import eviction
from .oracles.world import (
    check_device_pages,
    check_dirty,
    check_no_pins_left,
    check_swap_counts,
    device_free_check,
    htlb_hit_check,
    shared_shadow_write,
    tlb_hit_check,
)


def install_mm(k: Kernel) -> None:
    """Plug the pin, TLB, dirty, swap and device-page oracles, ``do_swap_page`` and (when
    the workload has files) the page cache into ``k``."""
    k.hooks["tlb_hit"] = tlb_hit_check
    if k.geo.thp:
        k.hooks["htlb_hit"] = htlb_hit_check  # v7: hits in the huge TLB
    if count_nonzero((k.s.vma[:, :, V_FLAGS] & (VM_SHARED | VM_LIVE)) == (VM_SHARED | VM_LIVE)):
        k.hooks["shadow_write"] = shared_shadow_write
    k.hooks["device_page_free"] = device_free_check
    k.hooks.setdefault("do_swap_page", do_swap_page)
    k.hooks.setdefault("reuse_swap_page", reuse_swap_page)  # 4.14-5.0's do_wp_page
    for chk in (check_no_pins_left, check_device_pages, check_dirty, check_swap_counts):
        if chk not in k.extra_checks:
            k.extra_checks.append(chk)
    if k.geo.files:
        filemap.install(k)  # page-cache references and the no-lost-write check
    if k.geo.dmirrors:
        test_hmm.install(k)  # the mirrors' notifier callbacks and device page-table check
    if k.geo.chunks:
        eviction.install(k)  # eviction liveness: memunmap_pages must end


__all__ = ["install_mm"]
