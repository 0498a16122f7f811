"""AtomicWords (the C extension) against PlainWords (the pure-Python reference).

The stateful test drives both backends with the same random operations over two separate
int64 arrays and checks equal results and equal arrays after every step. The error
tests pin the buffer, bounds and release contract, including the shared-memory pitfall
of MEASUREMENTS.md section 5 (an AtomicWords holds a buffer export until ``release()``).
The stress test spawns two real processes doing ``fetch_add`` on one shared word.
"""

from __future__ import annotations

import os
import pickle
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

# Skips with the ImportError's own message (extension not built, or package not importable).
_ext = pytest.importorskip("pagerace.core.machine._atomicwords")
AtomicWords = _ext.AtomicWords
PlainWords = pytest.importorskip("pagerace.core.machine.words").PlainWords

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
NWORDS = 6

int64s = st.one_of(
    st.integers(-4, 4),
    st.integers(I64_MIN, I64_MAX),
    st.sampled_from([I64_MIN, I64_MIN + 1, -1, 0, 1, I64_MAX - 1, I64_MAX]),
)
indexes = st.integers(0, NWORDS - 1)
bits = st.integers(0, 63)


def _wrap(x: int) -> int:
    """Reduce an int to signed 64-bit two's complement."""
    return (x + 2**63) % 2**64 - 2**63


def _bit_mask(bit: int) -> int:
    """Bit ``bit`` as a signed int64 mask (bit 63 is the sign bit)."""
    return _wrap(1 << bit)


# --------------------------------------------------------------------------- stateful


class WordsMachine(RuleBasedStateMachine):
    """Same ops on AtomicWords and PlainWords over two arrays; results and arrays agree."""

    def __init__(self) -> None:
        super().__init__()
        self.arr_a = np.zeros(NWORDS, dtype=np.int64)
        self.arr_p = np.zeros(NWORDS, dtype=np.int64)
        self.aw = AtomicWords(self.arr_a)
        self.pw = PlainWords(self.arr_p)

    def teardown(self) -> None:
        self.aw.release()
        self.pw.release()

    @rule(i=indexes)
    def load(self, i: int) -> None:
        assert self.aw.load(i) == self.pw.load(i)

    @rule(i=indexes, v=int64s)
    def store(self, i: int, v: int) -> None:
        assert self.aw.store(i, v) is None
        assert self.pw.store(i, v) is None

    @rule(i=indexes, expected=int64s, new=int64s, hit=st.booleans())
    def cas(self, i: int, expected: int, new: int, hit: bool) -> None:
        if hit:  # make success likely, not only the rare random match
            expected = self.pw.load(i)
        got = self.aw.cas(i, expected, new)
        want = self.pw.cas(i, expected, new)
        assert type(got) is bool
        assert got == want

    @rule(i=indexes, v=int64s)
    def fetch_add(self, i: int, v: int) -> None:
        old = self.pw.load(i)
        if I64_MIN <= old + v <= I64_MAX:
            assert self.aw.fetch_add(i, v) == self.pw.fetch_add(i, v) == old
        else:
            # Known difference: PlainWords (a memoryview) refuses to store the
            # overflowed sum; AtomicWords wraps modulo 2**64 like atomic64_add.
            with pytest.raises(ValueError):
                self.pw.fetch_add(i, v)
            assert self.aw.fetch_add(i, v) == old
            self.pw.store(i, _wrap(old + v))

    @rule(i=indexes, mask=int64s)
    def fetch_or(self, i: int, mask: int) -> None:
        assert self.aw.fetch_or(i, mask) == self.pw.fetch_or(i, mask)

    @rule(i=indexes, mask=int64s)
    def fetch_and(self, i: int, mask: int) -> None:
        assert self.aw.fetch_and(i, mask) == self.pw.fetch_and(i, mask)

    @rule(i=indexes, v=int64s)
    def xchg(self, i: int, v: int) -> None:
        assert self.aw.xchg(i, v) == self.pw.xchg(i, v)

    # PlainWords has no bit ops; the reference is fetch_or / fetch_and with the mask.
    @rule(i=indexes, bit=bits)
    def test_set_bit(self, i: int, bit: int) -> None:
        mask = _bit_mask(bit)
        got = self.aw.test_set_bit(i, bit)
        assert type(got) is bool
        assert got == bool(self.pw.fetch_or(i, mask) & mask)

    @rule(i=indexes, bit=bits)
    def test_clear_bit(self, i: int, bit: int) -> None:
        mask = _bit_mask(bit)
        got = self.aw.test_clear_bit(i, bit)
        assert type(got) is bool
        assert got == bool(self.pw.fetch_and(i, ~mask) & mask)

    @invariant()
    def same_words(self) -> None:
        assert len(self.aw) == len(self.pw) == NWORDS
        np.testing.assert_array_equal(self.arr_a, self.arr_p)


WordsMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestWordsMachine = WordsMachine.TestCase


# --------------------------------------------------------------------------- buffers


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.zeros(5, dtype=np.int64),
        lambda: memoryview(bytearray(40)),
        lambda: memoryview(np.zeros(5, dtype=np.int64)).cast("B"),
        lambda: np.zeros(10, dtype=np.int32),  # any dtype: only bytes and alignment count
    ],
    ids=["numpy-int64", "bytearray-memoryview", "cast-memoryview", "numpy-int32"],
)
def test_accepts_writable_buffers(make) -> None:
    buf = make()
    aw = AtomicWords(buf)
    try:
        assert len(aw) == 5
        aw.store(4, -7)
        assert aw.load(4) == -7
        assert np.frombuffer(buf, dtype=np.int64)[4] == -7  # zero-copy: writes land in buf
    finally:
        aw.release()


def test_shared_memory_close_needs_release() -> None:
    shm = SharedMemory(create=True, size=64)
    aw = None
    try:
        aw = AtomicWords(shm.buf)
        assert len(aw) == 8
        aw.fetch_add(3, 5)
        assert np.ndarray((8,), dtype=np.int64, buffer=shm.buf)[3] == 5
        with pytest.raises(BufferError):  # the export pins the mapping
            shm.close()
        aw.release()
        shm.close()  # fine once released
    finally:
        if aw is not None:
            aw.release()
        shm.close()
        shm.unlink()


def test_empty_buffer() -> None:
    aw = AtomicWords(bytearray())
    assert len(aw) == 0
    with pytest.raises(IndexError, match="length 0"):
        aw.load(0)
    aw.release()


@pytest.mark.parametrize("nbytes", [1, 7, 12, 41])
def test_length_not_multiple_of_8(nbytes: int) -> None:
    with pytest.raises(ValueError, match=rf"length {nbytes} bytes is not a multiple of 8"):
        AtomicWords(bytearray(nbytes))


@pytest.mark.parametrize("offset", [1, 4])
def test_misaligned(offset: int) -> None:
    raw = memoryview(np.zeros(4, dtype=np.int64)).cast("B")  # numpy data is 8-aligned
    with pytest.raises(ValueError, match=rf"not 8-byte aligned \(misaligned by {offset} "):
        AtomicWords(raw[offset : offset + 16])


def test_readonly_and_noncontiguous_rejected() -> None:
    with pytest.raises(BufferError):
        AtomicWords(bytes(16))
    ro = np.zeros(2, dtype=np.int64)
    ro.flags.writeable = False
    with pytest.raises((BufferError, ValueError)):
        AtomicWords(ro)
    with pytest.raises((BufferError, ValueError)):
        AtomicWords(np.zeros(8, dtype=np.int64)[::2])
    with pytest.raises(TypeError):
        AtomicWords(12345)


def test_constructor_arity() -> None:
    with pytest.raises(TypeError):
        AtomicWords()
    with pytest.raises(TypeError):
        AtomicWords(bytearray(8), bytearray(8))
    with pytest.raises(TypeError):
        AtomicWords(buf=bytearray(8))


# --------------------------------------------------------------------------- arguments


@pytest.fixture
def aw4():
    arr = np.zeros(4, dtype=np.int64)
    aw = AtomicWords(arr)
    yield aw
    aw.release()


ALL_CALLS = [
    ("load", ()),
    ("store", (1,)),
    ("cas", (0, 1)),
    ("fetch_add", (1,)),
    ("fetch_or", (1,)),
    ("fetch_and", (1,)),
    ("xchg", (1,)),
    ("test_set_bit", (3,)),
    ("test_clear_bit", (3,)),
]


@pytest.mark.parametrize(("name", "rest"), ALL_CALLS, ids=[c[0] for c in ALL_CALLS])
@pytest.mark.parametrize("index", [4, 5, 1 << 40, 2**70])
def test_index_past_end(aw4, name: str, rest: tuple, index: int) -> None:
    with pytest.raises(IndexError, match=rf"index {index} out of range \(length 4\)"):
        getattr(aw4, name)(index, *rest)


@pytest.mark.parametrize(("name", "rest"), ALL_CALLS, ids=[c[0] for c in ALL_CALLS])
@pytest.mark.parametrize("index", [-1, -4, -(2**70)])
def test_negative_index_rejected(aw4, name: str, rest: tuple, index: int) -> None:
    # Unlike PlainWords (a memoryview, which counts -1 from the end), AtomicWords
    # rejects negative indexes: a negative word index is always a layout bug.
    with pytest.raises(IndexError, match=r"out of range \(length 4\)"):
        getattr(aw4, name)(index, *rest)


@pytest.mark.parametrize(("name", "rest"), ALL_CALLS, ids=[c[0] for c in ALL_CALLS])
def test_wrong_arity(aw4, name: str, rest: tuple) -> None:
    method = getattr(aw4, name)
    with pytest.raises(TypeError, match=rf"{name}\(\) takes exactly"):
        method()
    with pytest.raises(TypeError, match=rf"{name}\(\) takes exactly"):
        method(0, *rest, 0)


def test_argument_types_and_ranges(aw4) -> None:
    with pytest.raises(TypeError):
        aw4.load(1.0)
    with pytest.raises(TypeError):
        aw4.store(0, "1")
    with pytest.raises(OverflowError):
        aw4.store(0, I64_MAX + 1)
    with pytest.raises(OverflowError):
        aw4.fetch_add(0, I64_MIN - 1)
    with pytest.raises(ValueError, match="bit 64 out of range"):
        aw4.test_set_bit(0, 64)
    with pytest.raises(ValueError, match="bit -1 out of range"):
        aw4.test_clear_bit(0, -1)
    assert aw4.load(0) == 0  # nothing was written by the failed calls
    aw4.store(np.int64(2), np.int64(-9))  # __index__ objects are accepted
    assert aw4.load(np.int32(2)) == -9
    aw4.store(1, True)
    assert aw4.load(1) == 1


def test_extremes_wrap(aw4) -> None:
    aw4.store(0, I64_MAX)
    assert aw4.fetch_add(0, 1) == I64_MAX
    assert aw4.load(0) == I64_MIN  # wraps like atomic64_add, no signed-overflow UB
    assert aw4.test_set_bit(1, 63) is False
    assert aw4.load(1) == I64_MIN
    assert aw4.test_set_bit(1, 63) is True
    assert aw4.test_clear_bit(1, 63) is True
    assert aw4.test_clear_bit(1, 63) is False
    assert aw4.load(1) == 0


def test_not_picklable(aw4) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(aw4)


# --------------------------------------------------------------------------- release


@pytest.mark.parametrize(("name", "rest"), ALL_CALLS, ids=[c[0] for c in ALL_CALLS])
def test_methods_after_release(name: str, rest: tuple) -> None:
    arr = np.zeros(4, dtype=np.int64)
    aw = AtomicWords(arr)
    aw.release()
    assert aw.released
    with pytest.raises(ValueError, match=r"^AtomicWords is released$"):
        getattr(aw, name)(0, *rest)
    with pytest.raises(ValueError, match=r"^AtomicWords is released$"):
        len(aw)


def test_release_is_idempotent_and_frees_the_export() -> None:
    buf = bytearray(16)
    aw = AtomicWords(buf)
    with pytest.raises(BufferError):  # exported: bytearray cannot resize
        buf.extend(b"x")
    assert not aw.released
    aw.release()
    aw.release()
    assert aw.released
    buf.extend(b"x")  # export gone


def test_dealloc_releases_the_export() -> None:
    buf = bytearray(16)
    aw = AtomicWords(buf)
    del aw
    buf.extend(b"x")


# --------------------------------------------------------------------------- processes

STRESS_OPS = 100_000
COUNTER, READY = 0, 1


def _stress_worker(shm_name: str, nprocs: int, ops: int) -> None:
    """Child: rendezvous with the others on READY, then fetch_add COUNTER ``ops`` times."""
    # multiprocess's SharedMemory, like the parent's: a spawned child then shares the
    # parent's resource tracker. The stdlib class would start a tracker of its own in
    # the child, which unlinks the segment as "leaked" when the child exits.
    from multiprocess.shared_memory import SharedMemory as _Shm
    from pagerace.core.machine._atomicwords import AtomicWords as _AW

    shm = _Shm(name=shm_name)
    aw = _AW(shm.buf)
    try:
        aw.fetch_add(READY, 1)
        while aw.load(READY) < nprocs:  # start together so the adds really overlap
            os.sched_yield()
        add = aw.fetch_add
        for _ in range(ops):
            add(COUNTER, 1)
    finally:
        aw.release()  # before close(): the export would make close() raise
        shm.close()


@pytest.mark.stress
def test_two_processes_fetch_add_exact() -> None:
    mp = pytest.importorskip("multiprocess")
    mp_shm = pytest.importorskip("multiprocess.shared_memory")
    ctx = mp.get_context("spawn")
    nprocs = 2
    shm = mp_shm.SharedMemory(create=True, size=64)
    procs = []
    try:
        init = np.ndarray((8,), dtype=np.int64, buffer=shm.buf)
        init[:] = 0
        del init  # numpy views hold no export: drop them before close()
        procs = [
            ctx.Process(target=_stress_worker, args=(shm.name, nprocs, STRESS_OPS))
            for _ in range(nprocs)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0] * nprocs
        aw = AtomicWords(shm.buf)
        try:
            assert aw.load(READY) == nprocs
            assert aw.load(COUNTER) == nprocs * STRESS_OPS
        finally:
            aw.release()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        shm.close()
        shm.unlink()


def test_blocked_mask_is_the_engines_load_loop() -> None:
    """``blocked_mask`` (the deterministic engine's blocked-actor test in one call)
    against the Python loop it replaces, over random words, masks and waiters."""
    from pagerace.core.machine.kernel import Block

    rng = np.random.default_rng(2)
    arr = np.zeros(16, dtype=np.int64)
    aw = AtomicWords(arr)
    hits = 0
    for _ in range(300):
        arr[:] = rng.integers(-(2**62), 2**62, size=16) & rng.integers(0, 2, size=16) * -1
        blocked = {
            int(aid): Block(int(rng.integers(0, 16)), int(rng.choice([-1, 1, 6, 1 << 40])),
                            "t", 0, "t")
            for aid in rng.choice(63, size=int(rng.integers(0, 5)), replace=False)
        }
        want = 0
        for b, rq in blocked.items():
            if int(arr[rq.word]) & rq.mask:
                want |= 1 << b
        assert aw.blocked_mask(blocked) == want
        hits += want != 0
    assert hits > 50
    with pytest.raises(ValueError, match="out of range"):
        aw.blocked_mask({63: Block(0, 1, "t", 0, "t")})
    with pytest.raises(IndexError):
        aw.blocked_mask({0: Block(99, 1, "t", 0, "t")})
    aw.release()
