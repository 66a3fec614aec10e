"""Giving memory back to the operating system after a burst (glibc; a no-op elsewhere).

A burst of large image frames (libzmq allocates each with ``malloc``) used to leave the server's RSS at
its peak: glibc raises its mmap threshold every time a large mmapped block is freed (up to 32 MiB), so
after the first burst 16 MiB frames come from the heap, whose freed top is kept. Pinning the threshold
makes every block over ``MMAP_THRESHOLD`` its own mapping, returned the moment it is freed, and
``trim()`` hands back the heap's free pages once the queue has drained.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("posegpt.server")

__all__ = ["pin_mmap_threshold", "trim"]

MMAP_THRESHOLD = 256 * 1024          # blocks at least this large are mapped on their own
_M_MMAP_THRESHOLD = -3               # mallopt parameter numbers from glibc's malloc.h
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt, libc.malloc_trim          # glibc only
            _libc = libc
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (which also turns off its dynamic growth); True when it took."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    log.debug("mmap threshold pinned at %d bytes: %s", threshold, ok)
    return ok


def trim() -> None:
    """Return the heap's free pages to the operating system (``malloc_trim(0)``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
