"""Memory: bytes of model state per page frame and per page-table entry, and the time
to build a model of one million pages.

Sizes come from :class:`Layout` tables (every word is an int64): the ``frames`` table
per frame, the ``pte`` table per entry, and, per virtual page, everything that scales
with it (the entry, its share of the page-table lock words and the oracle's shadow word).
The build time is ``Layout(Geometry(...))`` plus ``State(layout)`` for one million
system frames and one address space of one million pages, median of 3. ``np.zeros``
maps zero pages lazily, so the first touch of every word is measured separately.
"""

from __future__ import annotations

import gc
import time

from ._machine import Figure, Log, Target, median, quiet

FRAME_TARGET = Target("<=", 64, "≤64 bytes of state per page frame")
BUILD_TARGET = Target("<", 1.0, "one million pages built in under 1 s")
MILLION = 1_000_000


def _million_geometry():  # type: ignore[no-untyped-def]
    from pagerace.core.machine.layout import Geometry

    return Geometry(
        sys_frames=MILLION, dev_frames=0, devices=0, mms=1, pages_per_mm=MILLION, ptes_per_table=512
    )


def build_million(touch: bool = False) -> float:
    """Seconds to build the one-million-page model (and write every word if ``touch``)."""
    from pagerace.core.machine.layout import Layout
    from pagerace.core.machine.state import State

    gc.collect()
    t0 = time.perf_counter()
    s = State(Layout(_million_geometry()))
    if touch:
        s.arr.fill(0)  # write every word: faults in every page of the buffer
    dt = time.perf_counter() - t0
    del s
    return dt


def run(quick: bool = False, log: Log = quiet) -> list[Figure]:
    from pagerace.core.machine.layout import Geometry, Layout

    log("memory: layout sizes")
    lay = Layout(Geometry())  # any geometry: per-frame and per-entry sizes do not depend on it
    t = lay.tables
    g = lay.geo
    per_frame = t["frames"].size * 8 / g.frames
    per_pte = t["pte"].size * 8 / (g.mms * g.pages_per_mm)
    per_vpage = (t["pte"].size + t["ptl"].size + t["shadow"].size) * 8 / (g.mms * g.pages_per_mm)
    big = Layout(_million_geometry())
    total_per_page = big.nbytes / MILLION
    figs = [
        Figure(
            "memory.bytes_per_frame",
            "state per page frame",
            per_frame,
            "bytes",
            how="Layout.tables['frames'] size x 8 bytes / frames",
            target=FRAME_TARGET,
        ),
        Figure(
            "memory.bytes_per_pte",
            "state per page-table entry",
            per_pte,
            "bytes",
            how="Layout.tables['pte'] size x 8 bytes / entries",
        ),
        Figure(
            "memory.bytes_per_virtual_page",
            "state per virtual page (entry + lock share + shadow)",
            per_vpage,
            "bytes",
            how=f"(pte + ptl + shadow tables) x 8 / virtual pages, {g.ptes_per_table} entries per "
            "page-table lock",
        ),
        Figure(
            "memory.million_total_bytes_per_page",
            "whole state of the 1M-page model per page",
            total_per_page,
            "bytes",
            how="Layout.nbytes of 1M frames + 1M-page mm (512 entries per table) / 1M",
        ),
    ]
    # v7 (issue 15): geometries with ``thp`` add a folio row (FOLIO_WORDS per frame) and a
    # PMD word per page table, a PMD lock per PMD table and a huge TLB per actor.
    thp = Layout(Geometry(thp=True))
    tt = thp.tables
    tg = thp.geo
    thp_frame = (tt["frames"].size + tt["folio"].size) * 8 / tg.frames
    figs.append(
        Figure(
            "memory.bytes_per_frame_thp",
            "state per page frame with large folios (v7, thp)",
            thp_frame,
            "bytes",
            how="(Layout.tables['frames'] + ['folio']) size x 8 bytes / frames, Geometry(thp=True)",
            note="the generations without thp keep the figure above",
        )
    )
    figs.append(
        Figure(
            "memory.bytes_per_pte_thp",
            "state per page-table entry with the PMD level (v7, thp)",
            (tt["pte"].size + tt["pmd"].size + tt["pmd_ptl"].size) * 8 / (tg.mms * tg.pages_per_mm),
            "bytes",
            how="(pte + pmd + pmd_ptl tables) x 8 / virtual pages, Geometry(thp=True), "
            f"{tg.ptes_per_table} entries per PMD",
        )
    )
    reps = 3
    log("memory: build one million pages")
    build_million()  # warm-up (imports)
    builds = [build_million() for _ in range(reps)]
    touched = [build_million(touch=True) for _ in range(reps)]
    figs.append(
        Figure(
            "memory.build_1m_pages_s",
            "build a 1M-page model",
            median(builds),
            "s",
            how=f"Layout(Geometry(sys_frames=1M, pages_per_mm=1M)) + State, median of {reps}",
            target=BUILD_TARGET,
        )
    )
    figs.append(
        Figure(
            "memory.build_1m_pages_touched_s",
            "build a 1M-page model and touch every word",
            median(touched),
            "s",
            how=f"as above, then one write over the whole buffer ({big.nbytes / 2**20:.0f} MiB), "
            f"median of {reps}",
        )
    )
    return figs
