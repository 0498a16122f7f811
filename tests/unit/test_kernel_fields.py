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
    for name in Kernel._FAST + Kernel._FAST_BOUND:
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
    for name in Kernel._FAST + Kernel._FAST_BOUND:
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
    for name in Kernel._FAST + Kernel._FAST_BOUND:
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


def test_tlb_operations_match_the_python_ones() -> None:
    k = _model()
    rng = np.random.default_rng(5)
    buf = k.s.arr
    snap = buf.copy()
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
    buf[:] = snap


def test_get_page_and_put_page_match_the_python_ones() -> None:
    """``get_page`` / ``put_page`` bound to ``KernelFields`` (one C call on the fast
    path, the Python methods for the rest) against the Python methods alone, over random
    frames: allocated or free, counts 0-3, 1 or 2 references dropped (positionally and
    as ``refs=``): the same words, the same failure (use after free, get on a zero
    count, refcount underflow), the same free at zero."""
    k = _model()
    rng = np.random.default_rng(17)
    buf = k.s.arr
    snap = buf.copy()
    actors = [_actor_n(i) for i in range(k.geo.actors)]
    from pagerace.core.machine.layout import F_REF, FRAME_WORDS, Z_DEVICE, PG_allocated

    assert type(k.get_page).__name__ == "builtin_function_or_method"
    seen = set()
    for _ in range(400):
        a = actors[int(rng.integers(0, len(actors)))]
        pfn = int(rng.integers(0, k.geo.frames))
        fl = k.lay.FRAMES + pfn * FRAME_WORDS
        if buf[fl] & Z_DEVICE:
            continue  # a device page's free calls its driver (state outside the words)
        buf[fl] = (buf[fl] & ~PG_allocated) | int(rng.integers(0, 2)) * PG_allocated
        buf[fl + F_REF] = int(rng.integers(0, 4))
        refs = int(rng.integers(1, 3))
        for name, args, kw in (("get_page", (a, pfn, "t"), {}),
                               ("put_page", (a, pfn, "t"), {}),
                               ("put_page", (a, pfn, "t", refs), {}),
                               ("put_page", (a, pfn, "t"), {"refs": refs})):
            before = buf.copy()
            events = dict(k.events)
            results = []
            for fn in (getattr(k, name), _python(k, name)):
                buf[:] = before
                k.events = dict(events)
                try:
                    fn(*args, **kw)
                    results.append((None, buf.copy(), k.events))
                except Exception as exc:  # the oracles raise for some random states
                    results.append((str(exc), buf.copy(), k.events))
            (e1, b1, ev1), (e2, b2, ev2) = results
            assert e1 == e2 and ev1 == ev2 and np.array_equal(b1, b2), (name, args, kw)
            freed = any(key.startswith("free_zone") for key in ev1) and ev1 != events
            seen.add((name, e1 is None, freed))
            buf[:] = before
            k.events = events
    buf[:] = snap
    assert {("get_page", True, False), ("get_page", False, False),
            ("put_page", True, False), ("put_page", True, True),
            ("put_page", False, False)} <= seen


def _lock_state(k: Kernel, a) -> tuple:  # type: ignore[no-untyped-def]
    import copy

    return (k.s.arr.copy(), copy.deepcopy(k.stats), dict(k._held_since), dict(a.held), a.site)


def _set_lock_state(k: Kernel, a, state) -> None:  # type: ignore[no-untyped-def]
    import copy

    k.s.arr[:] = state[0]
    k.stats = copy.deepcopy(state[1])
    k._held_since = dict(state[2])
    a.held = dict(state[3])
    a.site = state[4]


def _same_lock_state(s1: tuple, s2: tuple) -> bool:
    return bool(np.array_equal(s1[0], s2[0])) and s1[1:] == s2[1:]


def test_spin_lock_and_unlock_match_the_python_ones() -> None:
    """``spin_lock`` / ``spin_unlock`` bound to ``KernelFields`` against the Python
    methods alone, over random lock words (free, held by the actor, by another), with
    and without the site's statistics row and a held-since record: the same words,
    statistics, held locks and hold times, the same Block on contention and the same
    bad-unlock failure. The C take returns an ended generator; a contended one the
    Python generator, whose first step is the wait."""
    from pagerace.core.machine.kernel import _DONE, Block

    k = _model()
    rng = np.random.default_rng(23)
    actors = [_actor_n(i) for i in range(k.geo.actors)]
    snap = k.s.arr.copy()
    words = [k.ptl_word(mm, vpn) for mm in range(k.geo.mms) for vpn in (0, k.geo.pages_per_mm - 1)]
    seen = set()
    for i in range(400):
        a = actors[int(rng.integers(0, len(actors)))]
        other = actors[(a.id + 1) % len(actors)]
        w = words[int(rng.integers(0, len(words)))]
        k.s.arr[w] = (0, a.id + 1, other.id + 1)[int(rng.integers(0, 3))]
        site = f"s{int(rng.integers(0, 3))}"
        if rng.integers(0, 2):
            k._stat(site)
        if rng.integers(0, 2):
            k._held_since[w] = (f"s{int(rng.integers(0, 4))}", int(rng.integers(0, 50)))
        k.clock = (lambda t: lambda: t)(int(rng.integers(0, 100)))
        start = _lock_state(k, a)
        out = []
        for fast in (True, False):
            _set_lock_state(k, a, start)
            gen = k.spin_lock(a, w, site) if fast else Kernel.spin_lock(k, a, w, site)
            first = next(gen, None)
            if fast and first is None:  # taken at once: in C (the row made if missing)
                assert gen is _DONE
            req = (first.word, first.mask, first.kind, first.target, first.site, first.lock) \
                if isinstance(first, Block) else first
            out.append((req, _lock_state(k, a)))
        assert out[0][0] == out[1][0] and _same_lock_state(out[0][1], out[1][1]), i
        seen.add(("lock", out[0][0] is None))
        out = []
        for fast in (True, False):
            _set_lock_state(k, a, start)
            try:
                (k.spin_unlock if fast else _python(k, "spin_unlock"))(a, w, site)
                exc = None
            except Exception as e:  # a bad unlock raises
                exc = str(e)
            out.append((exc, _lock_state(k, a)))
        assert out[0][0] == out[1][0] and _same_lock_state(out[0][1], out[1][1]), i
        seen.add(("unlock", out[0][0] is None))
        k.s.arr[:] = snap
        k.stats, k._held_since, a.held = {}, {}, {}
    assert seen == {("lock", True), ("lock", False), ("unlock", True), ("unlock", False)}


def test_wrapped_lock_hooks_see_every_c_take_and_release() -> None:
    """A caller that wraps ``_acquired`` / ``_released`` (harness/steps.py logs lock
    events so) sees the takes and releases of the C ``spin_lock`` / ``spin_unlock`` and
    ``trylock_page`` / ``unlock_page``."""
    k = _model()
    a = _actor_n(0)
    log = []
    acq, rel = k._acquired, k._released

    def acquired(a, word, site):  # type: ignore[no-untyped-def]
        log.append(("takes", word, site))
        acq(a, word, site)

    def released(a, word):  # type: ignore[no-untyped-def]
        log.append(("releases", word))
        rel(a, word)

    k._acquired = acquired  # type: ignore[method-assign]
    k._released = released  # type: ignore[method-assign]
    w = k.ptl_word(0, 0)
    k._stat("t")
    for _ in k.spin_lock(a, w, "t"):
        raise AssertionError("an uncontended take does not wait")
    assert a.held == {w: "t"}
    k.spin_unlock(a, w, "t")
    assert log == [("takes", w, "t"), ("releases", w)] and a.held == {}
    assert k.stats["t"][0] == 1 and k.stats["t"][8] == 1
    pfn = k.alloc_page(a, 0, "t")
    fl = k.fw(pfn, 0)
    assert k.trylock_page(a, pfn, "t")
    k.unlock_page(a, pfn, "t")
    assert log[2:] == [("takes", fl, "t"), ("releases", fl)] and a.held == {}


def test_the_kernel_is_not_kept_alive_by_its_c_primitives() -> None:
    """``KernelFields`` holds its kernel weakly: the kernel's dict holds it, and a
    strong reference back would make a cycle the collector cannot see through (the type
    is not GC-tracked), so a dropped kernel and its state would never be freed. The
    bound methods of a dropped kernel refuse."""
    import gc
    import weakref

    k = _model()
    spin_lock = k.spin_lock
    ref = weakref.ref(k)
    del k
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="kernel of this KernelFields is gone"):
        spin_lock(_actor_n(0), 0, "t")


def _actor_n(i: int):  # type: ignore[no-untyped-def]
    from pagerace.core.machine.kernel import Actor

    return Actor(i, f"t{i}", "cpu")


def test_page_lock_and_free_operations_match_the_python_ones() -> None:
    """``trylock_page`` and ``unlock_page`` bound to ``KernelFields`` (one C call), and
    ``free_page`` with its C stores (``free_frame``), against the Python methods alone:
    the same words changed (wakes of PG_waiters included), the same result, the same
    failure, the same statistics, held locks and hold times, over random frames, owners
    and statistics rows present or not."""
    k = _model()
    rng = np.random.default_rng(11)
    buf = k.s.arr
    snap = buf.copy()
    fields = k._fields
    actors = [_actor_n(i) for i in range(k.geo.actors)]
    from pagerace.core.machine.layout import (
        FRAME_WORDS,
        Z_DEVICE,
        PG_allocated,
        PG_locked,
        PG_waiters,
    )

    seen = set()
    for i in range(300):
        a = actors[int(rng.integers(0, len(actors)))]
        pfn = int(rng.integers(0, k.geo.frames))
        fl = k.lay.FRAMES + pfn * FRAME_WORDS
        # flags: allocated or not, locked or not, waiters or not, never a device page
        # (its folio_free is driver state outside the words); owner: this actor,
        # another, nobody
        buf[fl] = (int(rng.integers(0, 2)) * PG_allocated) | (
            int(rng.integers(0, 2)) * PG_locked
        ) | (int(rng.integers(0, 2)) * PG_waiters) | (
            int(rng.integers(0, 2**20)) << 24 & ~Z_DEVICE)
        buf[fl] &= ~Z_DEVICE
        buf[fl + 1 : fl + FRAME_WORDS] = rng.integers(0, 3, size=FRAME_WORDS - 1)
        k.stats = {"t": [0] * 12} if rng.integers(0, 2) else {}
        k._held_since = {fl: ("u", 3)} if rng.integers(0, 2) else {}
        a.held = {fl: "u"} if rng.integers(0, 2) else {}
        k.clock = (lambda t: lambda: t)(int(rng.integers(0, 100)))
        for name in ("trylock_page", "unlock_page", "free_page"):
            start = _lock_state(k, a)
            results = []
            for use_c in (True, False):
                _set_lock_state(k, a, start)
                k._fields = fields if use_c else None
                fn = getattr(k, name) if use_c else _python(k, name)
                try:
                    got = fn(a, pfn, "t")
                    results.append((got, None, _lock_state(k, a)))
                except Exception as exc:  # the oracles raise for some random states
                    results.append((None, str(exc), _lock_state(k, a)))
            k._fields = fields
            (r1, e1, s1), (r2, e2, s2) = results
            assert (r1, e1) == (r2, e2) and _same_lock_state(s1, s2), (i, name)
            seen.add((name, e1 is None))
            _set_lock_state(k, a, start)
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


def test_ksm_items_match_the_numpy_scan() -> None:
    """``rmap_walk_ksm``'s rmap_items with ``KernelFields.ksm_items`` and with the numpy
    scan: the same (mm, vpn) in the same order, over random entries of every type
    naming a few pfns."""
    from pagerace.core.machine.layout import PTE_PFN_SHIFT
    from pagerace.core.mm.rmap import ksm_rmap_items

    k = build_model(load_workload("anon_write_child"), "v6", (), 0).kernel  # two mms
    rng = np.random.default_rng(29)
    pte = k.s.pte
    snap = pte.copy()
    fields = k._fields
    nonempty = 0
    for _ in range(200):
        pte[:] = (rng.integers(0, 4, size=pte.shape) << PTE_PFN_SHIFT) | rng.integers(
            0, 8, size=pte.shape
        )
        pfn = int(rng.integers(0, 4))
        fast = ksm_rmap_items(k, pfn)
        k._fields = None
        slow = ksm_rmap_items(k, pfn)
        k._fields = fields
        assert fast == slow
        nonempty += len(fast) > 1
    pte[:] = snap
    assert nonempty > 50  # the order was compared, not only empty lists


def test_find_vma_matches_the_numpy_loop() -> None:
    """``State.find_vma`` with ``KernelFields.find_vma`` and with the numpy loop: the
    same row (the first live one covering the address) or -1, over random rows; an mm
    out of range is an IndexError either way."""
    from pagerace.core.machine.layout import V_END, V_FLAGS, V_START, VM_LIVE
    from pagerace.core.machine.state import State

    s = build_model(load_workload("anon_write_child"), "v6", (), 0).kernel.s
    rng = np.random.default_rng(31)
    vma = s.vma
    snap = vma.copy()
    found = 0
    for _ in range(300):
        for mm in range(vma.shape[0]):
            for row in range(vma.shape[1]):
                start = int(rng.integers(0, 8))
                vma[mm, row, V_START] = start
                vma[mm, row, V_END] = start + int(rng.integers(0, 6))
                vma[mm, row, V_FLAGS] = VM_LIVE * int(rng.integers(0, 3) > 0) | 3
        mm = int(rng.integers(-vma.shape[0], vma.shape[0]))
        vpn = int(rng.integers(-1, 12))
        fast = s.find_vma(mm, vpn)
        assert type(s.find_vma).__name__ == "builtin_function_or_method"
        slow = State.find_vma(s, mm, vpn)
        assert fast == slow
        found += fast >= 0
    vma[:] = snap
    assert found > 50
    for mm in (vma.shape[0], -vma.shape[0] - 1):
        with pytest.raises(IndexError):
            s.find_vma(mm, 0)
        with pytest.raises(IndexError):
            State.find_vma(s, mm, 0)


def test_the_state_looks_vmas_up_through_the_kernels_fields() -> None:
    """A kernel over its state's own words gives the state its ``KernelFields``'s
    ``find_vma`` (no second KernelFields a run); over the Python backend there is none,
    and the state's lookup stays the numpy loop."""
    import numpy as np
    from pagerace.core.machine.kernel import Kernel
    from pagerace.core.machine.state import State
    from pagerace.core.machine.words import PlainWords
    from pagerace.core.variants import get_variant

    k = build_model(load_workload("default"), "v6", (), 0).kernel
    assert k._fields is not None
    assert k.s.find_vma.__self__ is k._fields  # type: ignore[attr-defined]
    buf = np.array(k.s.arr)
    s = State(k.s.layout, buf=buf, words=PlainWords(buf), init=False)
    k2 = Kernel(s, variant=get_variant("v6"))
    assert k2._fields is None and "find_vma" not in s.__dict__
    assert s.find_vma(0, 0) == k.s.find_vma(0, 0) >= 0
    assert "find_vma" not in s.__dict__  # still the numpy loop


def test_a_recording_state_gets_the_python_find_vma_back() -> None:
    """The dependency relation's recorder must see the VMA rows a lookup reads: after
    ``start_recording`` the C lookup is gone and the recording one runs."""
    from pagerace.core.machine.state import _RecordingState

    k = build_model(load_workload("default"), "v6", (), 0).kernel
    s = k.s
    s.find_vma(0, 0)
    assert "find_vma" in s.__dict__
    rec = install_recorder(k)
    assert "find_vma" not in s.__dict__ and type(s) is _RecordingState
    rec.take()
    s.find_vma(0, 0)
    reads, _ = rec.take()
    assert k.lay.VMA in reads


def test_pte_naming_matches_the_numpy_pass() -> None:
    """``KernelFields.pte_naming`` (device_free_check's search in C) finds the entry the
    numpy pass finds (the first, row-major, whose pfn field is the frame and whose type
    names a page, with its word) or none, over random entries: negative and too large
    frame numbers, every type, several entries naming one frame."""
    from pagerace.core.machine.layout import PTE_PFN_SHIFT, PTE_TYPE_MASK
    from pagerace.core.oracles.world import _NAMES_A_PAGE_MASK, _entry_naming

    k = build_model(load_workload("opposite-order"), "v6", (), 0).kernel
    fields = k._fields
    pte = k.s.pte
    snap = pte.copy()
    rng = np.random.default_rng(7)
    nframes = k.s.frames.shape[0]
    found = 0
    for _ in range(400):
        pfns = rng.integers(-2, 6, size=pte.shape)
        pfns[rng.random(pte.shape) < 0.2] = nframes + 1
        types = rng.integers(0, PTE_TYPE_MASK + 1, size=pte.shape)
        pte[:] = (pfns << PTE_PFN_SHIFT) | types
        for pfn in (-2, -1, 0, 1, 3, 5, nframes + 1):
            want = _entry_naming(k, pfn)
            assert fields.pte_naming(pfn, _NAMES_A_PAGE_MASK) == want
            found += want is not None
    pte[:] = snap
    assert found > 500
    assert fields.pte_naming(0, 0) is None  # no type: nothing names it
