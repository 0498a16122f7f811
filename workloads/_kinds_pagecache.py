"""Actor kinds of the page cache (``core/mm/filemap.py``): buffered readers and writers of
the workload's files (``geometry.files`` of ``geometry.pages_per_file`` pages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.machine.errors import InvalidWorkload
from ..core.mm import filemap as _pagecache  # noqa: F401  (registers file_read, file_write)
from ._schema import OpList, register_actor_kind


def _file_pages(p: Mapping[str, Any], kind: str) -> tuple[int, int, int]:
    f = int(p["file"])
    pages = list(p["pages"])
    if len(pages) != 2 or not 0 <= int(pages[0]) < int(pages[1]) or f < 0:
        raise InvalidWorkload(
            f"{kind} file {f} pages {pages!r} is not valid; valid: file >= 0 and pages = "
            "[start, end] with 0 <= start < end"
        )
    return f, int(pages[0]), int(pages[1])


def _think(ops: OpList, p: Mapping[str, Any], rng: np.random.Generator) -> None:
    if int(p["think"]):
        t = int(rng.integers(0, int(p["think"]) + 1))
        if t:
            ops.append(("idle", t))


def _file_reader_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    f, lo, hi = _file_pages(p, "file_reader")
    n = max(1, min(int(p["npages"]), hi - lo))
    buf = [int(x) for x in p["buffer"]]
    if buf and (len(buf) != 2 or not 0 <= buf[0] < buf[1]):
        raise InvalidWorkload(
            f"file_reader buffer {buf!r} is not valid; valid: [] (no user buffer) or "
            "[start, end] user pages of mm with 0 <= start < end"
        )
    ops: OpList = []
    for _ in range(int(p["ops"])):
        _think(ops, p, rng)
        start = int(rng.integers(lo, hi - n + 1))
        if buf:
            ops.append(("file_read", f, start, n, int(p["mm"]), int(rng.integers(buf[0], buf[1]))))
        else:
            ops.append(("file_read", f, start, n))
    return ops


def _file_writer_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    f, lo, hi = _file_pages(p, "file_writer")
    ops: OpList = []
    for _ in range(int(p["ops"])):
        _think(ops, p, rng)
        ops.append(("file_write", f, int(rng.integers(lo, hi))))
    return ops


register_actor_kind(
    "file_reader",
    {"file": 0, "pages": [0, 1], "npages": 1, "ops": 4, "think": 2, "mm": 0, "buffer": []},
    "read(2) of page-cache pages: lockless lookup (find_get_entry / filemap_get_entry), "
    "copy of an up-to-date page without the page lock (filemap_read) into a user buffer "
    "page of mm (buffer = [start, end], one page per read; [] for none) that may fault",
    _file_reader_ops,
)

register_actor_kind(
    "file_writer",
    {"file": 0, "pages": [0, 1], "ops": 4, "think": 2},
    "write(2) of one page-cache page: lookup, lock_page and the mapping re-check "
    "(pagecache_get_page FGP_LOCK), a fresh token, set_page_dirty, unlock "
    "(generic_perform_write)",
    _file_writer_ops,
)
