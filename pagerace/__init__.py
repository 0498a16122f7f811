"""pagerace: a stress and reproduction harness for the kernel's page-migration locks.

The implementation lives in the subpackages ``pagerace.core`` (the model),
``pagerace.harness`` (engines, CLI), ``pagerace.workloads`` and ``pagerace.reports``.
"""

from pagerace._version import __version__ as __version__

__all__ = ["__version__"]
