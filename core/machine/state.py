"""Model state: the flat word buffer, its named numpy views, and its words backend.

:class:`State` owns nothing but memory. It can be built over ordinary memory (one
process) or over any writable buffer of the right size, such as the ``buf`` of a
``multiprocessing.shared_memory.SharedMemory`` block (the parallel engine attaches the
same layout in every worker). Kernel paths use word indexes and the ``words`` object;
invariants and reports use the numpy views.
"""

from __future__ import annotations

import hashlib
from typing import Any, overload

import numpy as np

from .layout import (
    F_FLAGS,
    FRAME_WORDS,
    G_AVC_SEQ,
    PMD_TABLE,
    PTE_PFN_SHIFT,
    V_AVC,
    V_END,
    V_FLAGS,
    V_ORIGIN,
    V_PGOFF,
    V_SEQ,
    V_START,
    VM_ANON,
    VM_LIVE,
    Z_DEVICE,
    Z_DEVICE_COHERENT,
    Z_DEVICE_PRIVATE,
    Z_DEVID_SHIFT,
    Z_FREE,
    Geometry,
    Layout,
)
from .words import RecordingWords, Words, fast_words, kernel_fields


class _Views(dict[str, np.ndarray]):
    """``State.views``: each table's view of the words (its slice, in its shape), made the
    first time it is asked for; an unknown name is a ``KeyError`` as in a plain dict."""

    __slots__ = ("_arr", "_layout")

    def __init__(self, arr: np.ndarray, layout: Layout) -> None:
        super().__init__()
        self._arr: np.ndarray | None = arr
        self._layout = layout

    def __missing__(self, name: str) -> np.ndarray:
        t = self._layout.tables[name]
        if self._arr is None:  # released (State.close): no new view of the buffer
            raise KeyError(name)
        v = self._arr[t.offset : t.offset + t.size].reshape(t.shape)
        self[name] = v
        return v

    def release(self) -> None:
        """Drop the buffer (the shared block is closing)."""
        self._arr = None


class _View:
    """A :class:`State` attribute naming a table (``s.frames``, ``s.pte``...): its view,
    made on first use; the instance attribute it then sets answers every later lookup
    (a non-data descriptor), so a view costs nothing until a run uses it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: Any = None) -> _View: ...

    @overload
    def __get__(self, obj: State, owner: Any = None) -> np.ndarray: ...

    def __get__(self, obj: State | None, owner: Any = None) -> np.ndarray | _View:
        if obj is None:
            return self
        v = obj.views[self.name]
        obj.__dict__[self.name] = v
        return v


class State:
    """All model state over one flat int64 buffer.

    Args:
        layout: the layout to build.
        buf: an existing writable buffer of ``layout.nbytes`` bytes to attach to (for
            shared memory); ``None`` allocates ordinary memory.
        words: the atomic backend to use; default the C extension when built (:func:`fast_words`).
        init: write the static parts (zones, free counts). Workers attaching to a block
            the parent already built pass ``False``.
    """

    def __init__(
        self,
        layout: Layout,
        buf: Any = None,
        words: Words | None = None,
        init: bool = True,
    ) -> None:
        self.layout = layout
        self.geo: Geometry = layout.geo
        if buf is None:
            self.arr = np.zeros(layout.words, dtype=np.int64)
        else:
            self.arr = np.frombuffer(buf, dtype=np.int64, count=layout.words)
        self.words: Words = words if words is not None else fast_words(self.arr)
        # The named views of the tables (``views["frames"]``, also ``self.frames``...),
        # each made the first time it is used: a run uses a dozen of the ~30.
        self.views: dict[str, np.ndarray] = _Views(self.arr, layout)
        if init:
            self._init_static()

    glob = _View("glob")
    frames = _View("frames")
    zones = _View("zones")
    pte = _View("pte")
    ptl = _View("ptl")
    mm = _View("mm")
    vma = _View("vma")
    actor = _View("actor")
    tlb = _View("tlb")
    shadow = _View("shadow")
    swap = _View("swap")
    pcache = _View("pcache")
    pcache_lock = _View("pcache_lock")
    fshadow = _View("fshadow")
    lru_batch = _View("lru_batch")
    cpu = _View("cpu")
    anon_vma = _View("anon_vma")
    mapping = _View("mapping")
    # Large folios and the PMD level (empty unless the geometry has thp).
    folio = _View("folio")
    pmd = _View("pmd")
    pmd_ptl = _View("pmd_ptl")
    htlb = _View("htlb")

    @classmethod
    def build(cls, geo: Geometry) -> State:
        return cls(Layout(geo))

    # ----------------------------------------------------------------------------------
    # Snapshots: a model is built once per workload and every run starts from a copy of
    # its initial words (harness/runner.py), instead of building the state again.
    def snapshot(self) -> np.ndarray:
        """A read-only copy of every word, to start states from (:meth:`from_snapshot`,
        :meth:`restore`)."""
        snap = self.arr.copy()
        snap.flags.writeable = False
        return snap

    @classmethod
    def from_snapshot(cls, layout: Layout, snap: np.ndarray, words: Words | None = None) -> State:
        """A new state in ordinary memory holding the words of ``snap``, a
        :meth:`snapshot` of a state of ``layout``.

        Raises:
            ValueError: ``snap`` is not ``layout.words`` int64 words.
        """
        if snap.dtype != np.int64 or snap.shape != (layout.words,):
            raise ValueError(
                f"snapshot of {snap.shape} {snap.dtype} words does not fit a layout of "
                f"{layout.words} int64 words"
            )
        return cls(layout, buf=snap.copy(), words=words, init=False)

    def restore(self, snap: np.ndarray) -> None:
        """Put every word back to ``snap`` (a :meth:`snapshot` of a state of this layout),
        in place: the views and the words backend stay valid."""
        if snap.dtype != np.int64 or snap.shape != self.arr.shape:
            raise ValueError(
                f"snapshot of {snap.shape} {snap.dtype} words does not fit a state of "
                f"{self.arr.shape[0]} int64 words"
            )
        self.arr[:] = snap

    def _init_static(self) -> None:
        g = self.geo
        lay = self.layout
        for dev in range(g.devices):
            lo, hi = lay.zone_range(1 + dev)
            kind = Z_DEVICE_COHERENT if dev in g.coherent else Z_DEVICE_PRIVATE
            self.frames[lo:hi, F_FLAGS] = Z_DEVICE | kind | (dev << Z_DEVID_SHIFT)
        for zone in range(g.zones):
            lo, hi = lay.zone_range(zone)
            self.zones[zone, Z_FREE] = hi - lo
        if g.thp:
            # Every PMD starts as a PTE table: the model's PTE tables always exist
            # (pte_alloc is not modelled where the older generations reach), so the
            # paths that do not know PMDs and v7's agree on every 4K entry.
            self.pmd[:] = PMD_TABLE

    def close(self) -> None:
        """Drop the words backend and every view (needed before a shared block closes)."""
        self.words.release()
        views = self.views
        if isinstance(views, _Views):
            views.release()
        views.clear()
        for name in _VIEW_NAMES:
            self.__dict__.pop(name, None)
        del self.arr

    # ----------------------------------------------------------------------------------
    # Word indexes (for the hot paths).
    def frame_word(self, pfn: int, field: int) -> int:
        return self.layout.FRAMES + pfn * FRAME_WORDS + field

    def pte_word(self, mm: int, vpn: int) -> int:
        return self.layout.PTE + mm * self.geo.pages_per_mm + vpn

    def ptl_word(self, mm: int, vpn: int) -> int:
        return self.layout.PTL + mm * self.geo.tables_per_mm + vpn // self.geo.ptes_per_table

    def pcache_word(self, f: int, index: int) -> int:
        """The page-cache slot of page ``index`` of file ``f`` (pfn + 1, or 0)."""
        return self.layout.PCACHE + f * self.geo.pages_per_file + index

    def pcache_lock_word(self, f: int) -> int:
        """The ``xa_lock`` of file ``f``'s page cache (0 free, owner + 1 held)."""
        return self.layout.PCACHE_LOCK + f

    def fshadow_word(self, f: int, index: int) -> int:
        """The oracle's last token written to page ``index`` of file ``f``."""
        return self.layout.FSHADOW + f * self.geo.pages_per_file + index

    # ----------------------------------------------------------------------------------
    # VMAs. Rows are sorted by start; the table changes only under mmap_lock for write.
    def add_vma(self, mm: int, start: int, end: int, flags: int, origin: int = -1) -> int:
        """Insert a VMA ``[start, end)`` (virtual page numbers) into ``mm``; return its row."""
        if not 0 <= start < end <= self.geo.pages_per_mm:
            raise ValueError(
                f"vma [{start}, {end}) does not fit in {self.geo.pages_per_mm} pages"
            )
        rows = self.vma[mm]
        for r in range(rows.shape[0]):
            if rows[r, V_FLAGS] & VM_LIVE and not (
                end <= rows[r, V_START] or start >= rows[r, V_END]
            ):
                raise ValueError(f"vma [{start}, {end}) overlaps row {r} of mm {mm}")
        for r in range(rows.shape[0]):
            if not rows[r, V_FLAGS] & VM_LIVE:
                rows[r, V_START] = start
                rows[r, V_END] = end
                rows[r, V_FLAGS] = flags | VM_LIVE
                rows[r, V_ORIGIN] = origin
                # mmap() of an anonymous range: vm_pgoff is its start; its anon_vma
                # (anon_vma_prepare on the first fault) is the mm's own.
                rows[r, V_PGOFF] = start
                rows[r, V_AVC] = (1 << mm) if flags & VM_ANON else 0
                self.glob[G_AVC_SEQ] += 1
                rows[r, V_SEQ] = self.glob[G_AVC_SEQ]
                return r
        raise ValueError(f"mm {mm} has no free VMA row (max_vmas={self.geo.max_vmas})")

    # find_vma has tried to bind the C lookup (once per state).
    _vma_tried: bool = False

    def find_vma(self, mm: int, vpn: int) -> int:
        """The VMA row of ``mm`` that covers ``vpn``, or -1 (``find_vma`` + bounds check).

        Over the C extension's words, the first lookup binds ``KernelFields.find_vma``
        on the instance in place of this method: the same rows read in the same order,
        in one C call (:meth:`start_recording` takes it back). Over any other backend,
        the numpy loop below."""
        if not self._vma_tried and type(self) is State:
            self._vma_tried = True
            kf = kernel_fields(self.words, self.layout, self.geo)
            if kf is not None:
                self.find_vma = kf.find_vma  # type: ignore[method-assign]
                return self.find_vma(mm, vpn)
        rows = self.vma[mm]
        for r in range(rows.shape[0]):
            f = int(rows[r, V_FLAGS])
            if f & VM_LIVE and rows[r, V_START] <= vpn < rows[r, V_END]:
                return r
        return -1

    def vma_flags(self, mm: int, row: int) -> int:
        return int(self.vma[mm, row, V_FLAGS])

    def vma_bounds(self, mm: int, row: int) -> tuple[int, int]:
        return int(self.vma[mm, row, V_START]), int(self.vma[mm, row, V_END])

    # ----------------------------------------------------------------------------------
    def pte_pfns(self) -> np.ndarray:
        return self.pte >> PTE_PFN_SHIFT

    def digest(self) -> bytes:
        """A hash of the whole state (for trace fingerprints): of its words' bytes, read
        in place (a contiguous buffer) rather than copied out first."""
        arr = self.arr
        data = arr.data if arr.flags.c_contiguous else arr.tobytes()
        return hashlib.blake2b(data, digest_size=16).digest()

    # ----------------------------------------------------------------------------------
    def start_recording(self) -> RecordingWords:
        """Record the words every step reads and writes from now on (the dependency
        relation of the bounded search and of POS / SURW): the words backend is wrapped
        in a :class:`RecordingWords`, and the VMA lookups, which read the VMA table
        through numpy, record the rows they read. Whoever cached ``words`` before (the
        kernel) must take the returned object instead. Costs nothing until called."""
        rec = RecordingWords(self.words)
        self.words = rec
        self.__dict__.pop("find_vma", None)  # the C lookup (find_vma) reads unrecorded
        self.__class__ = _RecordingState
        return rec


_VIEW_NAMES = tuple(n for n, v in vars(State).items() if isinstance(v, _View))


class _RecordingState(State):
    """A :class:`State` whose VMA lookups record the rows they read."""

    words: RecordingWords

    def _read_vmas(self, mm: int) -> None:
        n = self.vma.shape[1] * self.vma.shape[2]
        base = self.layout.VMA + mm * n
        self.words.reads.update(range(base, base + n))

    def find_vma(self, mm: int, vpn: int) -> int:
        self._read_vmas(mm)
        return State.find_vma(self, mm, vpn)

    def vma_flags(self, mm: int, row: int) -> int:
        self._read_vmas(mm)
        return State.vma_flags(self, mm, row)

    def vma_bounds(self, mm: int, row: int) -> tuple[int, int]:
        self._read_vmas(mm)
        return State.vma_bounds(self, mm, row)
