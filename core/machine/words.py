"""Word-level atomic operations over one flat int64 buffer.

Every field of the model state is a 64-bit word in one flat buffer, addressed by its
word index (see ``core/machine/layout.py``). Kernel paths never read-modify-write a word with
numpy arithmetic: they go through a *words* object with the methods below, so the
same path code runs on two backends:

- :class:`PlainWords` (this module): a ``memoryview`` cast to ``'q'``. One process, one
  actor running at a time (the deterministic engine), so a read-modify-write in Python
  is atomic by construction. A memoryview element access costs about 30 ns, against
  about 50 ns for a numpy scalar (``../shared/MEASUREMENTS.md``).
- ``AtomicWords`` (``core/machine/_atomicwords.c``): the same methods as real
  ``__atomic`` builtins, sequentially consistent, for worker processes over
  ``multiprocessing.shared_memory`` (the parallel engine).

The words API is a deliberately tiny subset of the kernel's ``atomic64_*`` and bitops:
``load`` / ``store`` (READ_ONCE / WRITE_ONCE), ``cas`` (cmpxchg), ``fetch_add``,
``fetch_or``, ``fetch_and``, ``xchg``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .layout import (
    A_PROGRESS,
    ACTOR_WORDS,
    F_DATA,
    F_GEN,
    F_MAP,
    F_OWNER,
    F_PIN,
    F_PRIV,
    F_REF,
    FRAME_WORDS,
    G_PROGRESS,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    STATIC_MASK,
    TLB_SLOTS,
    V_AVC,
    V_END,
    V_FLAGS,
    V_PGOFF,
    V_SEQ,
    V_START,
    VM_LIVE,
    VMA_WORDS,
    Z_CURSOR,
    Z_DEVICE,
    Z_DEVICE_PRIVATE,
    Z_FREE,
    PG_allocated,
    PG_locked,
    PG_waiters,
)


class Words(Protocol):
    """The atomic word operations both backends provide."""

    def load(self, i: int, /) -> int: ...
    def store(self, i: int, v: int, /) -> None: ...
    def cas(self, i: int, expected: int, new: int, /) -> bool: ...
    def fetch_add(self, i: int, v: int, /) -> int: ...
    def fetch_or(self, i: int, mask: int, /) -> int: ...
    def fetch_and(self, i: int, mask: int, /) -> int: ...
    def xchg(self, i: int, v: int, /) -> int: ...
    def release(self) -> None: ...
    def __len__(self) -> int: ...


class PlainWords:
    """Single-process words over a writable int64 buffer (the deterministic backend).

    Args:
        buf: a C-contiguous, writable buffer of int64 words (a numpy array or a
            memoryview). The object holds a buffer export until :meth:`release`.
    """

    __slots__ = ("_mv",)

    def __init__(self, buf: Any) -> None:
        arr = np.asarray(buf)
        if arr.dtype != np.int64 or not arr.flags.c_contiguous or not arr.flags.writeable:
            raise ValueError(
                f"PlainWords needs a writable C-contiguous int64 buffer, got {arr.dtype}"
            )
        self._mv = memoryview(arr.reshape(-1)).cast("B").cast("q")  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._mv)

    def load(self, i: int, /) -> int:
        return self._mv[i]

    def store(self, i: int, v: int, /) -> None:
        self._mv[i] = v

    def cas(self, i: int, expected: int, new: int, /) -> bool:
        mv = self._mv
        if mv[i] == expected:
            mv[i] = new
            return True
        return False

    def fetch_add(self, i: int, v: int, /) -> int:
        mv = self._mv
        old = mv[i]
        mv[i] = old + v
        return old

    def fetch_or(self, i: int, mask: int, /) -> int:
        mv = self._mv
        old = mv[i]
        mv[i] = old | mask
        return old

    def fetch_and(self, i: int, mask: int, /) -> int:
        mv = self._mv
        old = mv[i]
        mv[i] = old & mask
        return old

    def xchg(self, i: int, v: int, /) -> int:
        mv = self._mv
        old = mv[i]
        mv[i] = v
        return old

    def release(self) -> None:
        self._mv.release()


# The C extension's classes (None where it is not built), looked up once: an import
# statement in kernel_fields cost a lookup every run (atomic_words, fast_words and
# kernel_fields use them).
try:
    from pagerace.core.machine._atomicwords import AtomicWords as _AtomicWords
    from pagerace.core.machine._atomicwords import KernelFields as _KernelFields
except ImportError:  # pragma: no cover - depends on the install
    _AtomicWords = _KernelFields = None

# np.count_nonzero without its axis, for the oracles' counts: numpy's C function itself
# (the same count, no Python wrapper a call; core/oracles/invariants.py, core/world.py).
try:
    from numpy._core.multiarray import count_nonzero as _c_count_nonzero
except ImportError:  # pragma: no cover - another numpy layout
    _c_count_nonzero = np.count_nonzero
count_nonzero = _c_count_nonzero


def atomic_words(buf: Any) -> Words:
    """The cross-process backend over ``buf`` (the C extension).

    Raises:
        ImportError: the extension was not built (the package was not installed with
            ``pip install``); the message says how to build it.
    """
    if _AtomicWords is None:  # pragma: no cover - depends on the install
        raise ImportError(
            "pagerace.core.machine._atomicwords is not built; reinstall with `pip install -e .`"
        )
    return _AtomicWords(buf)  # type: ignore[no-any-return,unused-ignore]


# kernel_fields's constants of the last layout (runs of one workload share theirs).
_consts_cache: tuple[Any, Any, dict[str, int]] | None = None


def kernel_fields(words: Any, lay: Any, geo: Any) -> Any:
    """The C extension's ``KernelFields`` over ``words`` (the model kernel's accessors
    over a layout ``lay`` of geometry ``geo``: core/machine/kernel.py, State.find_vma)
    when ``words`` is an ``AtomicWords`` (the extension is built), else None."""
    if _KernelFields is None or type(words) is not _AtomicWords:
        return None
    global _consts_cache
    cached = _consts_cache
    if cached is not None and cached[0] is lay and cached[1] is geo:
        consts = cached[2]
    else:
        consts = {
            "frames": lay.FRAMES, "frame_words": FRAME_WORDS, "pte": lay.PTE,
            "pages_per_mm": geo.pages_per_mm, "ptl": lay.PTL, "tables_per_mm": geo.tables_per_mm,
            "ptes_per_table": geo.ptes_per_table, "F_REF": F_REF, "F_MAP": F_MAP, "F_PIN": F_PIN,
            "F_DATA": F_DATA, "Z_DEVICE": Z_DEVICE, "Z_DEVICE_PRIVATE": Z_DEVICE_PRIVATE,
            "PG_locked": PG_locked, "tlb": lay.TLB, "tlb_slots": TLB_SLOTS, "actors": geo.actors,
            "Z_FREE": Z_FREE, "Z_CURSOR": Z_CURSOR, "STATIC_MASK": STATIC_MASK,
            "PG_allocated": PG_allocated, "F_OWNER": F_OWNER, "F_PRIV": F_PRIV, "F_GEN": F_GEN,
            "vma": lay.VMA, "vma_rows": geo.mms * geo.max_vmas, "max_vmas": geo.max_vmas,
            "VMA_WORDS": VMA_WORDS, "V_START": V_START, "V_END": V_END, "V_FLAGS": V_FLAGS,
            "V_PGOFF": V_PGOFF, "V_AVC": V_AVC, "V_SEQ": V_SEQ, "VM_LIVE": VM_LIVE,
            "actor_base": lay.ACTOR, "ACTOR_WORDS": ACTOR_WORDS, "A_PROGRESS": A_PROGRESS,
            "g_progress": lay.GLOB + G_PROGRESS, "PTE_PFN_SHIFT": PTE_PFN_SHIFT,
            "PTE_TYPE_MASK": PTE_TYPE_MASK, "PTE_PRESENT": PTE_PRESENT,
            "PTE_DEVICE_PRIVATE": PTE_DEVICE_PRIVATE, "PTE_MIGRATION": PTE_MIGRATION,
            "PG_waiters": PG_waiters,
        }
        _consts_cache = (lay, geo, consts)
    return _KernelFields(words, consts)


def fast_words(buf: Any) -> Words:
    """The fastest backend available for one process: the C extension when it is built
    (about 30 ns an operation), else :class:`PlainWords` (about 50 ns)."""
    if _AtomicWords is None:  # pragma: no cover - depends on the install
        return PlainWords(buf)
    return _AtomicWords(buf)  # type: ignore[no-any-return,unused-ignore]


class RecordingWords:
    """A words backend that records which words each step reads and writes.

    It wraps another backend (the same values, the same order of operations) and adds
    every index it is asked for to :attr:`reads` or :attr:`writes`; :meth:`take` hands
    the two sets over and starts new ones. The bounded search and the schedulers that
    need a dependency relation (``harness/schedulers/``) install it for their runs only:
    the ordinary backends stay as they are, so recording costs nothing when it is off.

    A ``cas`` that fails wrote nothing and counts as a read; every other
    read-modify-write counts as a write (two ``fetch_add`` on one word commute on the
    word but not on the values they return).
    """

    __slots__ = ("inner", "reads", "writes")

    def __init__(self, inner: Words) -> None:
        self.inner = inner
        self.reads: set[int] = set()
        self.writes: set[int] = set()

    def __len__(self) -> int:
        return len(self.inner)

    def take(self) -> tuple[frozenset[int], frozenset[int]]:
        """(reads, writes) since the last call; both sets start empty again."""
        r, w = frozenset(self.reads), frozenset(self.writes)
        self.reads.clear()
        self.writes.clear()
        return r, w

    def load(self, i: int, /) -> int:
        self.reads.add(i)
        return self.inner.load(i)

    def store(self, i: int, v: int, /) -> None:
        self.writes.add(i)
        self.inner.store(i, v)

    def cas(self, i: int, expected: int, new: int, /) -> bool:
        ok = self.inner.cas(i, expected, new)
        (self.writes if ok else self.reads).add(i)
        return ok

    def fetch_add(self, i: int, v: int, /) -> int:
        self.writes.add(i)
        return self.inner.fetch_add(i, v)

    def fetch_or(self, i: int, mask: int, /) -> int:
        self.writes.add(i)
        return self.inner.fetch_or(i, mask)

    def fetch_and(self, i: int, mask: int, /) -> int:
        self.writes.add(i)
        return self.inner.fetch_and(i, mask)

    def xchg(self, i: int, v: int, /) -> int:
        self.writes.add(i)
        return self.inner.xchg(i, v)

    def release(self) -> None:
        self.inner.release()
