"""The page cache (``core/mm/filemap.py``) and the catalog entry ``move-mapping-no-freeze``
against hand-written interleavings.

``migrate_page_move_mapping()`` freezes a page-cache page's refcount at the expected
count (isolation + cache) before it switches the slot to the new page. A lockless
lookup (``find_get_entry`` / ``filemap_get_entry``) whose ``get_page_unless_zero``
lands in that window fails and repeats; without the freeze it succeeds, its
``xas_reload`` still finds the old page in the slot, and a buffered read then copies the
old page after a newer write went to the new one: a stale read. A writer is safe either
way: it locks the page and re-checks ``page->mapping``, which migration cleared.
"""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.machine.errors import FailureKind, InvalidWorkload, InvariantViolation
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import PG_pagecache, PG_uptodate
from pagerace.core.mm.filemap import (
    filemap_read,
    generic_perform_write,
    page_mapping_index,
    xa_load,
)
from pagerace.core.mm.migrate import MIGRATE_SYNC, migrate_pages
from pagerace.core.mm.migrate_device import folio_isolate_lru
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.engine import innermost
from pagerace.harness.runner import build_model
from pagerace.workloads import parse_workload
from strategies import Stepper

BASE: dict[str, Any] = {
    "name": "pagecache",
    "geometry": {"sys_frames": 16, "dev_frames": 4, "pages_per_mm": 8, "files": 1,
                 "pages_per_file": 2},
    "mm": [{"id": 0}],
    "actor": [
        {"kind": "compactor", "count": 1},
        {"kind": "file_reader", "count": 1},
        {"kind": "file_writer", "count": 1},
    ],
}
NO_FREEZE = ("move-mapping-no-freeze",)


def _model(variant: str, bugs: tuple[str, ...] = ()) -> tuple[Kernel, list[Any]]:
    m = build_model(parse_workload(dict(BASE), "test"), variant, bugs, 0)
    m.kernel.actors = m.actors
    return m.kernel, m.actors


def _write(k: Kernel, w: Any, index: int) -> int:
    Stepper(generic_perform_write(k, w, 0, index)).finish(k)
    return k.data(xa_load(k, 0, index))


def _to_the_window(k: Kernel, c: Any, page: int) -> Stepper:
    """Isolate ``page`` and run compaction's migrate_pages to the preemption point of
    migrate_page_move_mapping between the refcount check and the slot switch."""
    assert folio_isolate_lru(k, c, page)
    mig = Stepper(migrate_pages(k, c, [page], MIGRATE_SYNC, False))
    mig.run_until(
        lambda: innermost(mig.gen)[0] == "migrate_page_move_mapping" and k.s.pcache_lock[0] != 0
    )
    assert xa_load(k, 0, 0) == page  # not switched yet
    return mig


def _lookup_done(rd: Stepper) -> bool:
    return innermost(rd.gen)[0] == "filemap_read"


@pytest.mark.parametrize("variant", ["v5.0", "v6"])
def test_unfrozen_window_lookup_returns_the_old_page_and_the_read_is_stale(variant: str) -> None:
    k, (c, r, w) = _model(variant, NO_FREEZE)
    _write(k, w, 0)
    old = xa_load(k, 0, 0)
    mig = _to_the_window(k, c, old)
    assert k.ref_count(old) == 2  # checked (isolation + cache), not frozen
    rd = Stepper(filemap_read(k, r, 0, 0, 1))
    rd.step()
    rd.run_until(lambda: _lookup_done(rd))
    # get_page_unless_zero succeeded in the window and xas_reload still named the page.
    assert k.ref_count(old) == 3 and xa_load(k, 0, 0) == old
    assert mig.finish(k) == 0
    new = xa_load(k, 0, 0)
    assert new != old and k.outcomes[("compact", "migrated")] == 1
    assert not k.test_flag(old, PG_pagecache) and k.ref_count(old) == 1  # the reader's
    tok = _write(k, w, 0)  # goes to the new page
    assert k.data(new) == tok != k.data(old)
    with pytest.raises(InvariantViolation) as info:
        rd.finish(k)
    f = info.value.failure
    assert f.kind is FailureKind.STALE_READ
    assert f.pages == (old, new) and f.actors == (r.name,)


@pytest.mark.parametrize("variant", ["v5.0", "v6"])
def test_frozen_window_lookup_fails_its_speculative_get_and_retries(variant: str) -> None:
    k, (c, r, w) = _model(variant)
    _write(k, w, 0)
    old = xa_load(k, 0, 0)
    mig = _to_the_window(k, c, old)
    assert k.ref_count(old) == 0  # page_ref_freeze(page, 2)
    rd = Stepper(filemap_read(k, r, 0, 0, 1))
    for _ in range(12):  # the reader spins in filemap_get_entry's "goto repeat"
        rd.step()
        assert k.ref_count(old) == 0 and not rd.done
    assert k.events["pagecache_get_speculative_failed"] >= 3
    assert mig.finish(k) == 0
    new = xa_load(k, 0, 0)
    assert new != old and k.ref_count(new) == 1  # the cache's reference only
    # The freed old page; the reader finds the new page (its reload re-check or a fresh
    # lookup) and reads the current token.
    assert rd.finish(k) == 0
    assert k.events["file_read_copied"] == 1
    tok = _write(k, w, 0)
    assert k.data(new) == tok
    check_all(k)


@pytest.mark.parametrize("bugs", [(), NO_FREEZE])
def test_writer_in_the_window_waits_for_the_lock_and_rechecks_the_mapping(bugs) -> None:
    """With or without the freeze, a write is never lost: a writer that got the old page
    sleeps on its lock (migration holds it) and then finds page->mapping cleared."""
    k, (c, _r, w) = _model("v6", bugs)
    _write(k, w, 0)
    old = xa_load(k, 0, 0)
    mig = _to_the_window(k, c, old)
    wr = Stepper(generic_perform_write(k, w, 0, 0))
    if bugs:
        # The speculative reference lands; the writer then sleeps on the old page's lock.
        wr.run_until(lambda: wr.blocked_on(k) is not None, limit=40)
        assert wr.blocked_on(k).target == old and k.ref_count(old) == 3
    else:
        for _ in range(12):  # frozen: the lookup repeats, no reference, no lock
            wr.step()
            assert k.ref_count(old) == 0 and wr.blocked_on(k) is None and not wr.done
    assert mig.finish(k) == 0
    new = xa_load(k, 0, 0)
    assert wr.finish(k) == 0
    assert k.events.get("file_write_mapping_changed", 0) == (1 if bugs else 0)
    assert k.data(new) == k.words.load(k.s.fshadow_word(0, 0)) != 0
    check_all(k)


@pytest.mark.parametrize("variant", ["v5.0", "v6", "hmm-2017"])
def test_write_then_read_round_trip(variant: str) -> None:
    k, (_c, r, w) = _model(variant)
    # A page never written is read in from "disk" (zeros) by readahead on the miss.
    assert Stepper(filemap_read(k, r, 0, 1, 1)).finish(k) == 0
    p1 = xa_load(k, 0, 1)
    assert p1 >= 0 and k.data(p1) == 0 and k.test_flag(p1, PG_uptodate)
    assert page_mapping_index(k, p1) == (0, 1)
    tok = _write(k, w, 0)
    assert tok != 0
    assert Stepper(filemap_read(k, r, 0, 0, 2)).finish(k) == 0
    assert k.events["file_read_copied"] == 3
    tok2 = _write(k, w, 1)
    assert k.data(p1) == tok2 and xa_load(k, 0, 1) == p1  # written in place
    assert Stepper(filemap_read(k, r, 0, 0, 2)).finish(k) == 0
    check_all(k)  # the cache's references are accounted; fshadow matches


def test_read_into_a_user_buffer_faults_it_in() -> None:
    k, (_c, r, w) = _model("v6")
    _write(k, w, 0)
    assert k.pte_read(0, 3) == 0
    assert Stepper(filemap_read(k, r, 0, 0, 1, 0, 3)).finish(k) == 0
    assert k.pte_read(0, 3) != 0 and k.events["faults"] >= 1
    check_all(k)


def test_lost_write_and_cache_reference_invariants() -> None:
    k, (_c, _r, w) = _model("v6")
    _write(k, w, 0)
    p = xa_load(k, 0, 0)
    check_all(k)
    k.words.store(k.s.fshadow_word(0, 0), 12345)
    with pytest.raises(InvariantViolation) as info:
        check_all(k)
    assert info.value.failure.kind is FailureKind.LOST_WRITE
    k.words.store(k.s.fshadow_word(0, 0), k.data(p))
    k.words.store(k.fw(p, 1), 2)  # F_REF: one reference more than the cache holds
    with pytest.raises(InvariantViolation) as info:
        check_all(k)
    assert info.value.failure.kind is FailureKind.LEAK


def test_file_page_outside_the_geometry_is_bad_input() -> None:
    k, (_c, r, _w) = _model("v6")
    with pytest.raises(InvalidWorkload, match="file 0 page 2"):
        Stepper(filemap_read(k, r, 0, 1, 2)).finish(k)
