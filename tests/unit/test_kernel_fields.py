"""The C accessors of ``Kernel.use_words`` (``KernelFields``) against the Python methods
they replace: the same results, the same words changed, the same errors; and the
Python methods back whenever the backend is not an ``AtomicWords`` (the dependency
relation's recorder must see every access)."""

from __future__ import annotations

import numpy as np
import pytest
from pagerace.core.machine.kernel import Kernel, _kernel_fields
from pagerace.core.machine.words import PlainWords, RecordingWords
from pagerace.harness.runner import build_model
from pagerace.harness.schedulers.dependency import install_recorder
from pagerace.workloads import load_workload

aw = pytest.importorskip("pagerace.core.machine._atomicwords")

# (name, argument makers): each maker draws the arguments from a seeded generator.
ONE_PFN = ("flags", "is_zone_device", "is_device_private", "page_locked", "ref_count",
           "mapcount", "pincount", "data")
PFN_MASK = ("test_flag", "set_flag", "clear_flag", "test_clear_flag")


def _model() -> Kernel:
    m = build_model(load_workload("default"), "v6", (), 0)
    return m.kernel


def _python(k: Kernel, name: str):  # type: ignore[no-untyped-def]
    return getattr(Kernel, name).__get__(k)


def test_the_fast_accessors_are_installed_over_atomic_words() -> None:
    k = _model()
    assert type(k.words) is aw.AtomicWords
    for name in Kernel._FAST:
        assert type(getattr(k, name)).__name__ == "builtin_function_or_method", name


def test_every_fast_accessor_gives_what_the_python_method_gives() -> None:
    k = _model()
    g = k.geo
    rng = np.random.default_rng(7)
    snap = np.array(k.s.arr, copy=True)
    buf = k.s.arr
    # make the words interesting: random flags, counts and entries
    buf[:] = rng.integers(-(2**40), 2**40, size=buf.size)
    for _ in range(400):
        pfn = int(rng.integers(0, g.frames))
        mask = int(1 << int(rng.integers(0, 40)))
        mm = int(rng.integers(0, g.mms))
        vpn = int(rng.integers(0, g.pages_per_mm))
        for name in ONE_PFN:
            assert getattr(k, name)(pfn) == _python(k, name)(pfn), name
        for name in PFN_MASK:
            before = buf.copy()
            fast = getattr(k, name)(pfn, mask)
            after_fast = buf.copy()
            buf[:] = before
            slow = _python(k, name)(pfn, mask)
            assert fast == slow and np.array_equal(after_fast, buf), name
        n = int(rng.integers(-3, 4))
        before = buf.copy()
        fast = k.mapcount_add(pfn, n)
        after_fast = buf.copy()
        buf[:] = before
        assert fast == _python(k, "mapcount_add")(pfn, n)
        assert np.array_equal(after_fast, buf)
        v = int(rng.integers(-(2**40), 2**40))
        for name, args in (("set_data", (pfn, v)), ("set_pte", (mm, vpn, v)),
                           ("ptep_get_and_clear", (mm, vpn))):
            before = buf.copy()
            fast = getattr(k, name)(*args)
            after_fast = buf.copy()
            buf[:] = before
            assert fast == _python(k, name)(*args), name
            assert np.array_equal(after_fast, buf), name
        assert k.pte_read(mm, vpn) == _python(k, "pte_read")(mm, vpn)
        assert k.ptl_word(mm, vpn) == _python(k, "ptl_word")(mm, vpn)
        # numpy integers are accepted like Python ints
        assert k.flags(np.int64(pfn)) == _python(k, "flags")(pfn)
    buf[:] = snap


def test_out_of_range_is_an_index_error_as_with_the_words() -> None:
    k = _model()
    below = -(k._F // 8) - 2  # a frame index whose word is before the buffer
    n = len(k.words)
    for name, args in (("flags", (below,)), ("flags", (n,)), ("pte_read", (0, -(10**9))),
                       ("set_flag", (1 << 62, 1)), ("ref_count", (n,))):
        with pytest.raises(IndexError):
            getattr(k, name)(*args)
        with pytest.raises(IndexError):
            _python(k, name)(*args)
    with pytest.raises(TypeError):
        k.test_flag(1)
    with pytest.raises(TypeError):
        aw.KernelFields(PlainWords(np.zeros(8, dtype=np.int64)), {})


def test_a_released_backend_is_refused_not_read() -> None:
    k = _model()
    words = aw.AtomicWords(np.zeros(len(k.words), dtype=np.int64))
    kf = _kernel_fields(words, k.lay, k.geo)
    assert kf.flags(1) == 0
    words.release()
    with pytest.raises(ValueError, match="released"):
        kf.flags(1)
    with pytest.raises(KeyError, match="frame_words missing"):
        aw.KernelFields(aw.AtomicWords(np.zeros(8, dtype=np.int64)), {"frames": 0})


def test_the_recorder_gets_the_python_accessors_back() -> None:
    k = _model()
    rec = install_recorder(k)
    assert isinstance(k.words, RecordingWords)
    for name in Kernel._FAST:
        assert getattr(k, name).__func__ is getattr(Kernel, name), name
    rec.take()
    pfn = 3
    k.test_flag(pfn, 1)
    k.set_pte(0, 1, 0)
    reads, writes = rec.take()
    assert k.fw(pfn, 0) in reads
    assert k.pte_w(0, 1) in writes


def test_plain_words_keep_the_python_accessors() -> None:
    k = _model()
    k.use_words(PlainWords(k.s.arr))
    for name in Kernel._FAST:
        assert getattr(k, name).__func__ is getattr(Kernel, name), name


def test_flush_tlb_range_and_alloc_frame_match_the_python_loops() -> None:
    k = _model()
    rng = np.random.default_rng(3)
    buf = k.s.arr
    snap = buf.copy()
    fields = k._fields
    assert fields is not None
    for _ in range(30):
        # TLB: fill random slots with keys of the range and others
        tlb = k.s.tlb.reshape(-1)
        keys = rng.integers(0, k.geo.mms * k.geo.pages_per_mm, size=tlb.size // 2) + 1
        tlb[0::2] = keys
        tlb[1::2] = rng.integers(0, 1000, size=keys.size)
        mm = int(rng.integers(0, k.geo.mms))
        lo = int(rng.integers(0, k.geo.pages_per_mm))
        hi = int(rng.integers(lo, k.geo.pages_per_mm + 1))
        before = buf.copy()
        k.flush_tlb_range(mm, lo, hi)
        fast = buf.copy()
        buf[:] = before
        k._fields = None
        k.flush_tlb_range(mm, lo, hi)
        k._fields = fields
        assert np.array_equal(fast, buf)
        # allocation from each zone, full zones included
        for zone in range(k.geo.devices + 1):
            before = buf.copy()
            got = k.alloc_page(k.actors[0] if k.actors else _actor(), zone, "t")
            fast = buf.copy()
            buf[:] = before
            k._fields = None
            want = k.alloc_page(k.actors[0] if k.actors else _actor(), zone, "t")
            k._fields = fields
            assert got == want and np.array_equal(fast, buf)
    buf[:] = snap


def _actor():  # type: ignore[no-untyped-def]
    from pagerace.core.machine.kernel import Actor

    return Actor(0, "t0", "cpu")


def test_tlb_and_refcount_operations_match_the_python_ones() -> None:
    k = _model()
    rng = np.random.default_rng(5)
    buf = k.s.arr
    snap = buf.copy()
    fields = k._fields
    actors = [_actor_n(i) for i in range(k.geo.actors)]
    for _ in range(200):
        a = actors[int(rng.integers(0, len(actors)))]
        mm = int(rng.integers(0, k.geo.mms))
        vpn = int(rng.integers(0, k.geo.pages_per_mm))
        pfn = int(rng.integers(0, k.geo.frames))
        writable = bool(rng.integers(0, 2))
        for name, args in (("tlb_fill", (a, mm, vpn, pfn, writable)),
                           ("tlb_lookup", (a, mm, vpn)),
                           ("tlb_lookup", (a, mm, (vpn + 1) % k.geo.pages_per_mm))):
            before = buf.copy()
            fast = getattr(k, name)(*args)
            after = buf.copy()
            buf[:] = before
            assert fast == _python(k, name)(*args) and np.array_equal(after, buf), name
        for name in ("get_page", "put_page"):
            before = buf.copy()
            try:
                getattr(k, name)(a, pfn, "t")
                fast_exc = None
            except Exception as exc:  # the oracles raise for some random states
                fast_exc = str(exc)
            after = buf.copy()
            buf[:] = before
            k._fields = None
            try:
                getattr(k, name)(a, pfn, "t")
                slow_exc = None
            except Exception as exc:
                slow_exc = str(exc)
            k._fields = fields
            assert fast_exc == slow_exc and np.array_equal(after, buf), name
    buf[:] = snap


def _actor_n(i: int):  # type: ignore[no-untyped-def]
    from pagerace.core.machine.kernel import Actor

    return Actor(i, f"t{i}", "cpu")


def test_page_lock_and_free_operations_match_the_python_ones() -> None:
    """``trylock_page``, ``unlock_page`` and ``free_page`` with the C word operations
    (``page_trylock``, ``page_unlock``, ``free_frame``) and without: the same words
    changed, the same result, the same failure, over random frames and owners."""
    k = _model()
    rng = np.random.default_rng(11)
    buf = k.s.arr
    snap = buf.copy()
    fields = k._fields
    actors = [_actor_n(i) for i in range(k.geo.actors)]
    from pagerace.core.machine.layout import FRAME_WORDS, Z_DEVICE, PG_allocated, PG_locked

    seen = set()
    for _ in range(300):
        a = actors[int(rng.integers(0, len(actors)))]
        pfn = int(rng.integers(0, k.geo.frames))
        fl = k.lay.FRAMES + pfn * FRAME_WORDS
        # flags: allocated or not, locked or not, never a device page (its folio_free
        # is driver state outside the words); owner: this actor, another, nobody
        buf[fl] = (int(rng.integers(0, 2)) * PG_allocated) | (
            int(rng.integers(0, 2)) * PG_locked
        ) | (int(rng.integers(0, 2**20)) << 24 & ~Z_DEVICE)
        buf[fl] &= ~Z_DEVICE
        buf[fl + 1 : fl + FRAME_WORDS] = rng.integers(0, 3, size=FRAME_WORDS - 1)
        for name in ("trylock_page", "unlock_page", "free_page"):
            before = buf.copy()
            held = dict(a.held)
            results = []
            for use_c in (True, False):
                buf[:] = before
                a.held = dict(held)
                k._fields = fields if use_c else None
                try:
                    got = getattr(k, name)(a, pfn, "t")
                    results.append((got, None, buf.copy(), sorted(a.held)))
                except Exception as exc:  # the oracles raise for some random states
                    results.append((None, str(exc), buf.copy(), sorted(a.held)))
            k._fields = fields
            (r1, e1, b1, h1), (r2, e2, b2, h2) = results
            assert (r1, e1, h1) == (r2, e2, h2), name
            assert np.array_equal(b1, b2), name
            seen.add((name, e1 is None))
    buf[:] = snap
    # every operation both succeeded and failed at least once
    assert {(n, ok) for n in ("trylock_page", "unlock_page", "free_page")
            for ok in (True, False)} <= seen


def test_avc_walk_matches_the_python_interval_tree() -> None:
    """``anon_vma_interval_tree`` with ``KernelFields.avc_walk`` and with the Python
    loop: the same (mm, address, flags) in the same order, over random VMA rows (ties of
    pgoff and sequence included)."""
    from pagerace.core.machine.layout import (
        V_AVC,
        V_END,
        V_FLAGS,
        V_PGOFF,
        V_SEQ,
        V_START,
        VM_LIVE,
    )
    from pagerace.core.mm.rmap import anon_vma_interval_tree

    k = build_model(load_workload("anon_write_child"), "v6", (), 0).kernel  # two mms
    assert k._fields is not None and k.s.vma.shape[0] == 2
    rng = np.random.default_rng(3)
    vma = k.s.vma
    snap = vma.copy()
    fields = k._fields
    nonempty = 0
    for _ in range(300):
        for mm in range(vma.shape[0]):
            for row in range(vma.shape[1]):
                start = int(rng.integers(0, 8))
                vma[mm, row, V_START] = start
                vma[mm, row, V_END] = start + int(rng.integers(0, 6))
                vma[mm, row, V_FLAGS] = VM_LIVE * int(rng.integers(0, 4) > 0) | 3
                vma[mm, row, V_PGOFF] = int(rng.integers(0, 4))
                vma[mm, row, V_AVC] = int(rng.integers(0, 1 << min(4, vma.shape[0] + 1)))
                vma[mm, row, V_SEQ] = int(rng.integers(0, 3))
        av = int(rng.integers(0, vma.shape[0]))
        pgoff = int(rng.integers(0, 8))
        fast = anon_vma_interval_tree(k, av, pgoff)
        k._fields = None
        slow = anon_vma_interval_tree(k, av, pgoff)
        k._fields = fields
        assert fast == slow
        nonempty += len(fast) > 1
    vma[:] = snap
    assert nonempty > 10  # the order was compared, not only empty lists



def test_progress_matches_the_python_adds() -> None:
    """``Kernel.progress`` with ``KernelFields.progress`` and with the two Python
    ``fetch_add``: the same words and the same actor counters."""
    k = _model()
    buf = k.s.arr
    fields = k._fields
    for i in range(k.geo.actors):
        a, b = _actor_n(i), _actor_n(i)
        before = buf.copy()
        k.progress(a)
        after = buf.copy()
        buf[:] = before
        k._fields = None
        k.progress(b)
        k._fields = fields
        assert np.array_equal(after, buf) and not np.array_equal(after, before)
        assert (a.progress, a.steps_since_progress) == (b.progress, b.steps_since_progress)
