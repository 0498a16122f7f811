"""Build hook for the one C extension: cross-process atomics over shared memory.

Everything else is declared in pyproject.toml. The extension lives in core/ next to the
pure-Python backend it replaces for the parallel engine (see core/machine/words.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pagerace.core.machine._atomicwords",
            sources=["core/machine/_atomicwords.c"],
            extra_compile_args=["-O2", "-std=c11"],
        )
    ]
)
