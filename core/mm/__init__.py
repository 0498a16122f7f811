"""Kernel paths of ``mm/``, one module per kernel source file they transcribe.

``memory`` (mm/memory.c: faults, CPU access), ``rmap`` (mm/rmap.c), ``migrate``
(mm/migrate.c, generic migration), ``migrate_device`` (mm/migrate_device.c, the ``v6``
protocol), ``migrate_v50`` and ``migrate_hmm2017`` (mm/migrate.c of seeds 002 and 004: the
older device-migration generations), ``gup`` (mm/gup.c), ``mremap`` (mm/mremap.c),
``vmscan`` (mm/vmscan.c), ``swapfile`` (mm/swapfile.c, mm/swap_state.c and the swap branch
of ``do_swap_page``), ``filemap`` (mm/filemap.c, the page cache), ``vma`` (munmap, madvise
and exit through ``zap_pte_range`` and the mmu_gather), ``fork`` (``dup_mmap`` and
``copy_page_range``), ``mprotect`` (mm/mprotect.c: whole VMAs' write permission),
``device_exclusive`` (mm/rmap.c's ``make_device_exclusive``, apart
from ``rmap`` because it calls GUP)."""
