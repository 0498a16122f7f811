"""The model's machinery: the word layout, the state over it, the words backends (plain and
the C extension's atomics), the kernel's primitives (page lock, PTL, mmap_lock, references,
allocators, TLBs) and the initial memory picture. No kernel path lives here."""
