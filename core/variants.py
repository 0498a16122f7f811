"""Protocol variants: the three generations of device migration, side by side.

A variant differs from another only where the kernel did. Each difference is one
method here, with a comment naming the seed and the kernel behaviour it follows; the
shared steps (pages, finalize, the rmap walks) stay in ``core/migrate_device.py``.

- ``v6`` (seed 000, today's ``mm/migrate_device.c``): folio trylock in collect with the
  ``fault_folio`` exception, migration entries installed at once, the page check with
  extra references for the fault page and ZONE_DEVICE, ``migrate_vma_setup`` refusing
  an unlocked fault page.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._kernel import Actor, Kernel, Path
from .migrate_device import (
    MigrateVma,
    migrate_vma_check_page,
    migrate_vma_collect,
    migrate_vma_unmap,
)


class Variant:
    """The hooks a protocol generation provides. Subclasses override what changed."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    seed: ClassVar[str] = ""
    # Paths this variant has; a workload that needs another is refused with a reason.
    provides: ClassVar[frozenset[str]] = frozenset()

    def collect(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        raise NotImplementedError

    def unmap(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        raise NotImplementedError

    def check_page(self, k: Kernel, pfn: int, fault_page: int) -> bool:
        raise NotImplementedError

    def checks_fault_page_locked(self, k: Kernel) -> bool:
        return False

    def driver_alloc_and_copy(self, k: Kernel, a: Actor, dev: Any, m: MigrateVma) -> Path:
        """The driver's allocate-and-copy step between setup and pages (the driver calls
        it directly in v5.0 and v6; hmm-2017 calls it as the ``alloc_and_copy`` callback)."""
        yield from dev.alloc_and_copy_to_device(k, a, m)


class V6(Variant):
    """Today's protocol (``mm/migrate_device.c``, seed 000)."""

    name = "v6"
    description = (
        "mm/migrate_device.c today: folio_trylock in collect with the fault_folio "
        "exception, migrate_vma_setup/pages/finalize, migrate_device_range/pfns, "
        "device-coherent folios"
    )
    seed = "000_50ce908311638d57.txt"
    provides = frozenset(
        {"migrate_vma", "migrate_to_ram", "migrate_device_range", "device_coherent"}
    )

    def collect(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        yield from migrate_vma_collect(k, a, m)

    def unmap(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        yield from migrate_vma_unmap(k, a, m)

    def check_page(self, k: Kernel, pfn: int, fault_page: int) -> bool:
        return migrate_vma_check_page(k, pfn, fault_page)

    def checks_fault_page_locked(self, k: Kernel) -> bool:
        # 1afaeb8293c9 (6.15): fault_page must be locked. The older fault protocols the
        # catalog restores passed it unlocked (or not at all).
        return not ({"fault-ref-no-trylock", "fault-without-ref"} & k.bugs)


VARIANTS: dict[str, type[Variant]] = {"v6": V6}


def get_variant(name: str) -> Variant:
    """The variant object for ``name``.

    Raises:
        KeyError: ``name`` is not a known variant (the caller turns it into bad input).
    """
    return VARIANTS[name]()
