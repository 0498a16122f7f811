"""The dependency relation between steps, from the words each step touches.

A step is what one actor does between two preemption points. Its *footprint* is the
pair (words read, words written), recorded by
:class:`~pagerace.core.machine.words.RecordingWords` (installed for a run by
:func:`install_recorder`). Two steps of different actors are *dependent* when one
writes a word the other reads or writes; otherwise they commute: run in either order
from the same state they read the same values and leave the same state, and neither
enables or disables the other (an actor blocked on a lock word becomes runnable only
when a step writes that word, and its next step reads it).

The bounded search (``harness/explore.py``, sleep sets) and the POS and SURW
schedulers use it.

Limits: the relation sees only what goes through the words backend (and the VMA lookups
of :class:`~pagerace.core.machine.state.State`, which read numpy views and record their
rows themselves). Model state kept elsewhere and shared between actors (a Python list
another actor reads) would be invisible to it, and the reduction could then prune a run
that differs; the lock statistics and ``Actor`` bookkeeping (idle, held sites) are
per-actor or reporting only. Steps the engine runs without asking the scheduler (the
livelock oracle's fair window) and the engine's own reads of lock words between steps
land in the footprint of the step before them: more dependencies, never fewer.
"""

from __future__ import annotations

from typing import Any

from ...core.machine.words import RecordingWords

Footprint = tuple[frozenset[int], frozenset[int]]
EMPTY: Footprint = (frozenset(), frozenset())


def dependent(a: Footprint, b: Footprint) -> bool:
    """Whether two steps (of different actors) fail to commute."""
    ra, wa = a
    rb, wb = b
    return not (wa.isdisjoint(wb) and wa.isdisjoint(rb) and wb.isdisjoint(ra))


def install_recorder(kernel: Any) -> RecordingWords:
    """Record every word the kernel's paths touch from now on; call before the first
    step (the engine and the kernel take the words backend when they start)."""
    existing = kernel.s.words
    if isinstance(existing, RecordingWords):
        return existing
    rec = kernel.s.start_recording()
    kernel.use_words(rec)  # the Python accessors again: every access is recorded
    return rec

