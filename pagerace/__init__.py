"""pagerace: a stress and reproduction harness for the kernel's page-migration locks.

The implementation lives in the subpackages ``pagerace.core`` (the model),
``pagerace.harness`` (engines, CLI), ``pagerace.workloads`` and ``pagerace.reports``.
"""

import os as _os

from pagerace._version import __version__ as __version__

# In a source checkout the subpackages are the sibling folders core/, harness/... (they
# install as pagerace.core, pagerace.harness...). When this package is imported from the
# checkout itself (python -m pytest in the repository puts it first on sys.path), let the
# subpackages resolve to those folders, so a plain `pip install .` works there as well as
# an editable install. In an installed wheel there are no such siblings and this is a no-op.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isfile(
    _os.path.join(_root, "core", "machine", "kernel.py")
):
    __path__.append(_root)

__all__ = ["__version__"]
