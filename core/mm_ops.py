"""The memory-management world around device migration, in one place to plug in.

Importing this module registers the operations of ``core/gup.py`` (``pin_dma``),
``core/fork.py`` (``fork``, ``child_exit``), ``core/zap.py`` (``munmap``,
``madv_dontneed``), ``core/mremap.py`` (``mremap``) and ``core/vmscan.py``
(``reclaim``) with :func:`~pagerace.core.actors.register_op`; :func:`install_mm` plugs
their oracles and the swap-in fault path into a kernel (``harness/runner.py`` calls it
for every run it builds).
"""

from __future__ import annotations

from . import fork as fork
from . import gup as gup
from . import mremap as mremap
from . import vmscan as vmscan
from . import zap as zap
from ._kernel import Kernel
from .oracles import install


def install_mm(k: Kernel) -> None:
    """Plug the pin, TLB, dirty and device-page oracles and ``do_swap_page`` into ``k``."""
    install(k)


__all__ = ["install_mm"]
