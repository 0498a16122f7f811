"""Build hook for the C extensions; everything else is declared in pyproject.toml.

- ``pagerace.core.machine._atomicwords``: cross-process atomics over shared memory, next
  to the pure-Python backend it replaces for the parallel engine (core/machine/words.py);
- ``pagerace.core.machine._cpcg``: numpy's seeded stream (SeedSequence + PCG64) without
  numpy's per-seeding objects (core/machine/seeding.py). Optional: where it does not
  build (no 128-bit integers), the streams seed and draw through numpy as before.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pagerace.core.machine._atomicwords",
            sources=["core/machine/_atomicwords.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
        Extension(
            "pagerace.core.machine._cpcg",
            sources=["core/machine/_cpcg.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        ),
    ]
)
