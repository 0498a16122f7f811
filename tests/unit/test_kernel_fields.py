"""The C accessors of ``Kernel.use_words`` (``KernelFields``) against the Python methods
they replace: the same results, the same words changed, the same errors; and the
Python methods back whenever the backend is not an ``AtomicWords`` (the dependency
relation's recorder must see every access)."""

from __future__ import annotations

import numpy as np
import pytest
from pagerace.core.machine.kernel import Kernel
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
        aw.KernelFields(PlainWords(np.zeros(8, dtype=np.int64)), *range(1, 15))


def test_a_released_backend_is_refused_not_read() -> None:
    words = aw.AtomicWords(np.zeros(64, dtype=np.int64))
    kf = aw.KernelFields(words, 0, 8, 32, 8, 40, 1, 8, 1, 2, 3, 4, 1, 2, 4)
    assert kf.flags(1) == 0
    words.release()
    with pytest.raises(ValueError, match="released"):
        kf.flags(1)


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
