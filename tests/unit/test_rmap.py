"""The rmap walk (core/mm/rmap.py) finds exactly the mappings the kernel's
``rmap_walk_anon()`` would, in its order, after fork, mremap and a partial munmap.

Each expectation is written by hand from the kernel's rules: a folio's anon_vma and
index are set when it is first mapped (``__folio_set_anon``) and never change; fork
links the child's VMA into every anon_vma tree of its parent's VMA, after it; the
tree is visited by ``vm_pgoff`` and, for equal pgoffs, in insertion order; mremap
keeps the pages' pgoffs (the new VMA's ``vm_pgoff`` is the old one's plus the offset);
a split VMA's upper part gets a pgoff that follows its address.
"""

from __future__ import annotations

from typing import Any

from pagerace.core.machine.kernel import Actor, Kernel
from pagerace.core.machine.layout import (
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PRESENT,
    PTE_WRITE,
    V_FLAGS,
    VM_STACK_INCOMPLETE_SETUP,
    pte_pfn,
    pte_type,
)
from pagerace.core.mm.fork import op_fork
from pagerace.core.mm.memory import ACCESS_OK, cpu_access
from pagerace.core.mm.mremap import op_mremap
from pagerace.core.mm.rmap import (
    anon_vma_interval_tree,
    folio_anon_vma,
    folio_pgoff,
    rmap_walk,
    try_to_migrate,
)
from pagerace.core.mm.vma import op_munmap
from pagerace.core.oracles.invariants import check_all
from strategies import Stepper, model

SYS = {
    "name": "rmap",
    "geometry": {
        "sys_frames": 32, "dev_frames": 8, "mms": 3, "pages_per_mm": 16,
        "ptes_per_table": 4, "swap_slots": 8, "max_vmas": 6,
    },
    "mm": [{"id": 0, "vmas": [{"start": 0, "end": 8}], "populate": [{"start": 0, "end": 6}]}],
    "actor": [{"kind": "cpu", "count": 2}],
}


def _m() -> tuple[Kernel, Actor, Actor]:
    m = model(SYS)
    return m.kernel, m.actors[0], m.actors[1]


def _run(k: Kernel, gen: Any) -> Any:
    return Stepper(gen).finish(k)


def _pfn(k: Kernel, mm: int, vpn: int) -> int:
    return pte_pfn(k.pte_read(mm, vpn))


def _walk(k: Kernel, a: Actor, pfn: int) -> list[tuple[int, int]]:
    """Every (mm, vpn) the walk visits whose entry maps ``pfn``, in the walk's order."""
    seen: list[tuple[int, int]] = []

    def rmap_one(mm: int, vpn: int) -> Any:
        pte = k.pte_read(mm, vpn)
        if pte_type(pte) in (PTE_PRESENT, PTE_DEVICE_PRIVATE, PTE_MIGRATION) and (
            pte_pfn(pte) == pfn
        ):
            seen.append((mm, vpn))
        return True
        yield

    k.trylock_page(a, pfn, "test")  # rmap_walk_anon: VM_WARN_ON_FOLIO(!folio_test_locked)
    _run(k, rmap_walk(k, a, pfn, rmap_one, "test"))
    k.unlock_page(a, pfn, "test")
    return seen


def _tree(k: Kernel, pfn: int) -> list[tuple[int, int]]:
    tree = anon_vma_interval_tree(k, folio_anon_vma(k, pfn), folio_pgoff(k, pfn))
    return [(mm, vpn) for mm, vpn, _f in tree]


def test_first_mapping_sets_the_anon_vma_and_index() -> None:
    k, a, _b = _m()
    p = _pfn(k, 0, 3)
    assert (folio_anon_vma(k, p), folio_pgoff(k, p)) == (0, 3)
    assert _run(k, cpu_access(k, a, 0, 7, True)) == ACCESS_OK  # do_anonymous_page
    q = _pfn(k, 0, 7)
    assert (folio_anon_vma(k, q), folio_pgoff(k, q)) == (0, 7)
    assert _walk(k, a, q) == [(0, 7)]


def test_after_fork_the_parent_page_is_found_in_parent_then_child() -> None:
    k, a, _b = _m()
    p = _pfn(k, 0, 2)
    assert _run(k, op_fork(k, a, 0, 1)) == 0
    assert _tree(k, p) == [(0, 2), (1, 2)]  # equal pgoff: the child was linked later
    assert _walk(k, a, p) == [(0, 2), (1, 2)]
    # A COW in the child: the new page is the child's anon_vma's; the parent's page is
    # still visited in the child's VMA (linked to the parent's anon_vma), not mapped.
    assert _run(k, cpu_access(k, a, 1, 2, True)) == ACCESS_OK
    c = _pfn(k, 1, 2)
    assert c != p and (folio_anon_vma(k, c), folio_pgoff(k, c)) == (1, 2)
    assert _tree(k, c) == [(1, 2)]
    assert _walk(k, a, c) == [(1, 2)]
    assert _tree(k, p) == [(0, 2), (1, 2)]
    assert _walk(k, a, p) == [(0, 2)]
    # A grandchild links into both trees.
    assert _run(k, op_fork(k, a, 1, 2)) == 0
    assert _walk(k, a, p) == [(0, 2)]
    assert _walk(k, a, _pfn(k, 0, 3)) == [(0, 3), (1, 3), (2, 3)]
    assert _walk(k, a, c) == [(1, 2), (2, 2)]
    check_all(k)


def test_after_mremap_the_page_is_found_at_its_new_address_in_pgoff_order() -> None:
    k, a, _b = _m()
    assert _run(k, op_fork(k, a, 0, 1)) == 0
    p1, p2 = _pfn(k, 0, 1), _pfn(k, 0, 2)
    # The parent moves [1, 3) to [9, 11): new VMA pgoff 1; the old one splits into
    # [0, 1) pgoff 0 and [3, 8) pgoff 3.
    assert _run(k, op_mremap(k, a, 0, 1, 2, 9)) == 0
    assert _pfn(k, 0, 9) == p1 and _pfn(k, 0, 10) == p2
    # pgoff order: the child's VMA (pgoff 0) before the parent's new one (pgoff 1).
    assert _tree(k, p2) == [(1, 2), (0, 10)]
    assert _walk(k, a, p1) == [(1, 1), (0, 9)]
    # The old VMA's upper part [3, 8) has pgoff 3: the child's [0, 8) (pgoff 0) first.
    assert _walk(k, a, _pfn(k, 0, 4)) == [(1, 4), (0, 4)]
    assert k.events.get("mremap_need_rmap_locks", 0) == 0
    check_all(k)


def test_mremap_merging_into_an_earlier_vma_takes_the_rmap_locks() -> None:
    k, a, _b = _m()
    assert _run(k, op_mremap(k, a, 0, 0, 2, 10)) == 0  # [10, 12) pgoff 0
    # [2, 4) (pgoff 2) to [12, 14): it continues [10, 12)'s pgoff, so it merges into
    # it, whose pgoff 0 <= 2: the walk could visit it first; move_ptes takes the locks.
    assert _run(k, op_mremap(k, a, 0, 2, 2, 12)) == 0
    assert k.events.get("mremap_need_rmap_locks", 0) == 1
    for vpn, idx in ((10, 0), (11, 1), (12, 2), (13, 3)):
        p = _pfn(k, 0, vpn)
        assert folio_pgoff(k, p) == idx and _walk(k, a, p) == [(0, vpn)]
    check_all(k)


def test_after_a_partial_munmap_the_walk_finds_what_is_left() -> None:
    k, a, _b = _m()
    assert _run(k, op_fork(k, a, 0, 1)) == 0
    p0, p1, p3 = _pfn(k, 0, 0), _pfn(k, 0, 1), _pfn(k, 0, 3)
    assert _run(k, op_munmap(k, a, 0, 1, 3)) == 0  # [0, 1) and [3, 8) remain
    # __split_vma() links the lower part anew (new_below): after the child's VMA.
    assert _walk(k, a, p0) == [(1, 0), (0, 0)]
    assert _tree(k, p1) == [(1, 1)]  # only the child's VMA still covers pgoff 1
    assert _walk(k, a, p1) == [(1, 1)]
    # The upper part [3, 8) has pgoff 3: the child's [0, 8) (pgoff 0) comes first.
    assert _tree(k, p3) == [(1, 3), (0, 3)]
    assert _walk(k, a, p3) == [(1, 3), (0, 3)]
    check_all(k)


def test_try_to_migrate_skips_the_temporary_stack() -> None:
    k, a, _b = _m()
    assert _run(k, op_fork(k, a, 0, 1)) == 0
    p = _pfn(k, 0, 5)
    k.s.vma[1, 0, V_FLAGS] |= VM_STACK_INCOMPLETE_SETUP  # invalid_migration_vma()
    k.get_page(a, p, "test")  # the isolation reference a migration holds
    k.trylock_page(a, p, "test")
    assert _run(k, try_to_migrate(k, a, p)) is False
    assert pte_type(k.pte_read(0, 5)) == PTE_MIGRATION
    assert pte_type(k.pte_read(1, 5)) == PTE_PRESENT and k.mapcount(p) == 1
    k.s.vma[1, 0, V_FLAGS] &= ~VM_STACK_INCOMPLETE_SETUP
    assert _run(k, try_to_migrate(k, a, p)) is True
    assert pte_type(k.pte_read(1, 5)) == PTE_MIGRATION and k.mapcount(p) == 0


def test_collect_keeps_a_read_only_device_private_page_exclusive() -> None:
    """7.0 collect: an anon-exclusive device-private page mapped read-only gets a
    readable-exclusive migration entry (folio_try_share_anon_rmap_pte clears the flag),
    so the page it migrates to is exclusive again (RMAP_EXCLUSIVE) and a write reuses it."""
    m = model({
        "name": "rmap-dev",
        "geometry": {"sys_frames": 16, "dev_frames": 8, "pages_per_mm": 8, "ptes_per_table": 4},
        "mm": [{"id": 0, "device": [{"dev": 0, "start": 0, "end": 2}]}],
        "actor": [{"kind": "cpu", "count": 2}],
    })
    k, a = m.kernel, m.actors[0]
    dev = _pfn(k, 0, 1)
    assert pte_type(k.pte_read(0, 1)) == PTE_DEVICE_PRIVATE and k.anon_exclusive(dev)
    k.set_pte(0, 1, k.pte_read(0, 1) & ~PTE_WRITE)  # a read-only exclusive mapping
    assert _run(k, k.devices[0].migrate_to_system(k, a, 0, 0, 2)) == 0
    new = _pfn(k, 0, 1)
    assert pte_type(k.pte_read(0, 1)) == PTE_PRESENT and new != dev
    assert k.anon_exclusive(new) and not k.pte_read(0, 1) & PTE_WRITE
    assert (folio_anon_vma(k, new), folio_pgoff(k, new)) == (0, 1)  # the mapping moved too
    assert _run(k, cpu_access(k, a, 0, 1, True)) == ACCESS_OK
    assert _pfn(k, 0, 1) == new  # do_wp_page reused the exclusive page
    check_all(k)


OPPOSITE = {
    "name": "ksm",
    "geometry": {"sys_frames": 32, "dev_frames": 8, "mms": 2, "pages_per_mm": 8, "ptes_per_table": 8},
    "mm": [
        {"id": 0, "populate": [{"start": 0, "end": 4}]},
        {"id": 1, "share": [{"from_mm": 0, "from": 0, "to": 0, "count": 4, "reverse": True}]},
    ],
    "actor": [{"kind": "cpu", "count": 2}],
}


def _innermost(gen: Any) -> str:
    while gen.gi_yieldfrom is not None and hasattr(gen.gi_yieldfrom, "gi_code"):
        gen = gen.gi_yieldfrom
    return str(gen.gi_code.co_name)


def test_ksm_walk_waits_for_a_writer_of_the_anon_vma_in_anon_vma_lock_read() -> None:
    """rmap_walk_ksm inlines anon_vma_lock_read's uncontended path; behind a writer its
    first failed attempt hands over to anon_vma_lock_read's wait: the same Block, the
    same innermost function, one contended acquisition, and the walk goes on once the
    writer leaves."""
    from pagerace.core.machine.kernel import S_ACQUIRED, S_CONTENDED, Block
    from pagerace.core.mm.rmap import (
        anon_vma_lock_write,
        anon_vma_rwsem_word,
        anon_vma_unlock_write,
        rmap_walk_ksm,
    )

    m = model(OPPOSITE)
    k, a, b = m.kernel, m.actors[0], m.actors[1]
    pfn = _pfn(k, 0, 0)
    assert _pfn(k, 1, 3) == pfn  # mm 1 maps it in reverse order: a KSM page
    seen: list[tuple[int, int]] = []

    def rmap_one(mm: int, vpn: int) -> Any:
        seen.append((mm, vpn))
        return True
        yield

    k.trylock_page(a, pfn, "test")
    _run(k, anon_vma_lock_write(k, b, 1, "t:writer"))  # mm 1's root is mm 0's anon_vma
    walk = Stepper(rmap_walk_ksm(k, a, pfn, rmap_one, "t"))
    walk.run_until(lambda: walk.blocked_on(k) is not None)
    req = walk.blocked_on(k)
    assert type(req) is Block and req.kind == "anon_vma" and req.target == 0
    assert req.word == anon_vma_rwsem_word(k, 0) and req.site == "t:anon_vma_lock_read"
    assert _innermost(walk.gen) == "anon_vma_lock_read"
    assert seen == []
    st = k.stats["t:anon_vma_lock_read"]
    assert (st[S_CONTENDED], st[S_ACQUIRED]) == (1, 0)
    walk.step()  # woken too early: still the writer's, waits again, counted once
    assert walk.blocked_on(k) is not None and st[S_CONTENDED] == 1
    anon_vma_unlock_write(k, b, 1, "t:writer")
    walk.finish(k)
    assert seen == [(0, 0), (1, 3)]
    assert (st[S_CONTENDED], st[S_ACQUIRED]) == (1, 2)
    assert k.words.load(anon_vma_rwsem_word(k, 0)) == 0 and len(a.held) == 1  # the page lock
    k.unlock_page(a, pfn, "test")
    assert not a.held
