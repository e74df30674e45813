"""Keeping freed memory for reuse (glibc), which a simulation's large tensors need.

Every read allocates tensors of tens of megabytes.  glibc serves allocations above its
mmap threshold (128 kB, growing to 32 MB at most) with fresh pages from the kernel and
gives them back when freed, so each such tensor costs its size in page faults on first
touch: measured on the default study's conv SNN, element-wise passes took 3-4x longer
and a third of the CPU time was the kernel's.  :func:`keep_freed_memory` raises the
mmap and trim thresholds (``mallopt``) so that freed memory stays in the heap and is
reused: the process's resident memory stays near its peak instead of shrinking between
reads.  It changes no number, only where memory comes from.  It does nothing on a C
library other than glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGEST = 2**31 - 1  # mallopt takes an int


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 2 GB, once per process; ``True`` if the
    C library took them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST)) and bool(mallopt(_M_TRIM_THRESHOLD, _LARGEST))
