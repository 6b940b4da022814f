"""Reuse of freed memory on CPUs: glibc's malloc told not to hand large blocks back to the OS.

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves blocks above its mmap
threshold (at most 32 MiB, however it adapts) with a fresh ``mmap`` and gives them back with
``munmap`` when freed, so every large activation, gradient or feature map is new memory whose
pages the kernel zeroes and maps on first touch. :func:`keep_freed_memory` sets
``M_MMAP_MAX = 0`` (every block from the heap) and a 1 GiB ``M_TRIM_THRESHOLD`` (the heap's free
top is kept), the effect of the jemalloc/tcmalloc preloads that CPU performance guides advise,
without a library to install. The cost: the process keeps its peak heap instead of returning
freed memory. The benchmarks' ``--keep-freed-memory`` applies it (the README has what it
changes); a whole training step gains nothing measurable from it. Not glibc (musl, macOS,
Windows): nothing happens.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters, glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30

_state: dict[str, bool] = {}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
        'fordblks', 'keepcost')]


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None


def mallinfo2() -> _MallInfo2 | None:
    """glibc's ``mallinfo2()`` (``arena``: heap bytes, ``uordblks``: in use, ``hblkhd``: mapped
    blocks, ...), or None without glibc >= 2.33."""
    libc = _libc()
    if libc is None or not hasattr(libc, 'mallinfo2'):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


def heap_in_use() -> int | None:
    """Bytes that glibc's malloc has handed out and not got back (in-use heap chunks + mapped
    blocks), or None without glibc >= 2.33. Unlike RSS it falls when tensors are freed while
    :func:`keep_freed_memory` keeps their pages."""
    info = mallinfo2()
    return None if info is None else info.uordblks + info.hblkhd


def keep_freed_memory() -> bool:
    """Keep freed blocks for reuse (glibc ``mallopt``); True when it took effect.

    Idempotent; does nothing (False) when the C library is not glibc.
    """
    if 'on' in _state:
        return _state['on']
    on = False
    mallopt = getattr(_libc(), 'mallopt', None)
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        on = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _state['on'] = on
    return on


__all__ = ['heap_in_use', 'keep_freed_memory', 'mallinfo2']
