"""pagerace.core: the model of kernel memory state and the kernel paths over it.

Pure model: numpy only; no processes, files or pandas. Implementation modules are
``_``-prefixed; the path modules are named after the kernel source file they
transcribe (``memory``, ``rmap``, ``migrate_device``, ``dmirror``...).
"""
