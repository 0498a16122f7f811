"""``mm/memremap.c`` (7.0): the device pagemap's reference and ``memunmap_pages``.

A device's memory is one chunk (``struct dmirror_chunk`` of ``lib/test_hmm.c``) with
one ``struct dev_pagemap``, in the ``devmem`` table of the layout (present when the
geometry has ``chunks``). ``pgmap->ref`` is a word (``DC_REF``): the initial reference
``percpu_ref_init`` gives it, plus one for every allocated device page
(``zone_device_page_init`` → ``percpu_ref_tryget_many``), dropped when the page is
freed (``free_zone_device_folio`` → ``percpu_ref_put_many`` after the driver's
``folio_free``). ``memunmap_pages`` kills the reference (drops the initial one) and
sleeps in ``wait_for_completion(&pgmap->done)`` until it reaches zero: a
:class:`~pagerace.core.machine.kernel.Block` on the word, woken by the last free, not a
spin. If nothing can ever free the last page, the engine finds every live actor
blocked, and the eviction-liveness oracle (``core/oracles/eviction.py``) names the
pages still held.
"""

from __future__ import annotations

from ..machine.kernel import S_CONTENDED, Actor, Block, Kernel, Path
from ..machine.layout import DC_COUNT, DC_KILLED, DC_REF, DC_WORDS


def devmem_word(k: Kernel, dev: int, field: int) -> int:
    """The word ``field`` of device ``dev``'s chunk (``DC_*``)."""
    return k.lay.DEVMEM + dev * DC_WORDS + field


def has_chunks(k: Kernel) -> bool:
    """Whether the model tracks device chunks (the geometry's ``chunks``)."""
    return bool(k.geo.chunks)


def pgmap_get(k: Kernel, dev: int, nr: int = 1) -> None:
    """``zone_device_page_init()``: ``percpu_ref_tryget_many(&pgmap->ref, 1 << order)``
    (``nr``) for a device folio just allocated (7.0 WARNs when the ref was killed:
    "Drivers shouldn't be allocating pages after calling memunmap_pages()"; counted, as
    the model has no WARN failure)."""
    if k.words.load(devmem_word(k, dev, DC_KILLED)):
        k.count("zone_device_page_init_after_kill")
    k.words.fetch_add(devmem_word(k, dev, DC_REF), nr)


def pgmap_put(k: Kernel, dev: int, nr: int = 1) -> None:
    """``free_zone_device_folio()``: ``percpu_ref_put_many(&folio->pgmap->ref, nr)``
    after ``pgmap->ops->folio_free``; the last put completes ``pgmap->done``
    (``dev_pagemap_percpu_release``), which wakes ``memunmap_pages``."""
    k.words.fetch_add(devmem_word(k, dev, DC_REF), -nr)


def memremap_pages(k: Kernel, dev: int) -> None:
    """``memremap_pages()`` of a new chunk (``dmirror_allocate_chunk``): a live pagemap
    with its initial reference. The model's new chunk is the device's frames again
    (they are all free: ``memunmap_pages`` of the old one waited for that)."""
    k.words.store(devmem_word(k, dev, DC_REF), 1)
    k.words.store(devmem_word(k, dev, DC_KILLED), 0)
    k.words.store(devmem_word(k, dev, DC_COUNT), 1)
    k.count("memremap_pages")


def memunmap_pages(k: Kernel, a: Actor, dev: int) -> Path:
    """``memunmap_pages()``: ``percpu_ref_kill(&pgmap->ref)`` (the initial reference
    goes: a device-private / coherent pagemap puts nothing more), then
    ``wait_for_completion(&pgmap->done)`` until every device page of the chunk has been
    freed, then ``pageunmap_range`` (the model keeps the frames) and
    ``percpu_ref_exit``."""
    ref = devmem_word(k, dev, DC_REF)
    k.words.store(devmem_word(k, dev, DC_KILLED), 1)
    k.words.fetch_add(ref, -1)  # percpu_ref_kill: the initial reference
    yield
    site = "memunmap_pages:wait_for_completion"
    if k.words.load(ref) != 0:
        st = k._stat(site)
        st[S_CONTENDED] += 1
        t0 = k.clock()
        req = Block(ref, -1, "pgmap", dev, site)
        while k.words.load(ref) != 0:
            k._block(a, req)
            yield req
            k._unblock(a)
        k._waited(st, t0)
    k.count("memunmap_pages")


__all__ = ["devmem_word", "has_chunks", "memremap_pages", "memunmap_pages", "pgmap_get", "pgmap_put"]
