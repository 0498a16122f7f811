"""Kernel code under ``lib/``: ``test_hmm`` is ``lib/test_hmm.c``, the dmirror driver."""
