"""Giving the memory a process freed back to the operating system (glibc's malloc_trim).

Why: glibc keeps freed heap memory for reuse instead of returning it, unless it lies at the top
of a heap. Building a shard's graph frees a great deal in small pieces (the indexer's pending
chunks, Deep Lake's read and commit buffers, the transient lists of an open), scattered between
blocks still in use, so a node's RSS stayed hundreds of MB above what it holds: measured at 1M x
128 on 2 nodes (`python -m bench.million`), a node held ~1,110 MB right after the build and ~710
MB after a restart on the same data. malloc_trim(0) walks every arena and returns each free
page (madvise), wherever it lies.

It costs a walk of the heap (milliseconds to tens of ms, holding each arena's lock in turn, so
a thread allocating meanwhile may wait), so it runs only after work that freed much (a drained
indexing backlog, a large delete, a compaction, an open), off the search path, and at most once
per limits.memory_trim_interval_ms per process. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

from tributary import limits

log = logging.getLogger("tributary.shard")

_lock = threading.Lock()
_last_trim = float("-inf")
_malloc_trim = None
_looked_up = False


def _trim_function():
    """glibc's malloc_trim, or None (another C library, or none found)."""
    global _malloc_trim, _looked_up
    if not _looked_up:
        _looked_up = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            function = libc.malloc_trim
            function.argtypes = [ctypes.c_size_t]
            function.restype = ctypes.c_int
            _malloc_trim = function
        except (OSError, AttributeError):
            _malloc_trim = None
    return _malloc_trim


def return_freed_memory(reason: str, force: bool = False) -> bool:
    """Returns the process's freed heap memory to the OS, unless another call did so less than
    limits.memory_trim_interval_ms ago (`force` skips that wait: tests) or the C library has no
    malloc_trim. Returns whether it trimmed. Safe from any thread; never raises."""
    global _last_trim
    function = _trim_function()
    if function is None:
        return False
    with _lock:
        now = time.monotonic()
        if not force and (now - _last_trim) * 1000 < limits.memory_trim_interval_ms:
            return False
        _last_trim = now
    started = time.perf_counter()
    try:
        function(0)
    except Exception:  # noqa: BLE001 - a trim is an optimization; never fail the caller
        log.exception("malloc_trim failed")
        return False
    log.debug("returned freed memory to the OS after %s (%.1f ms)", reason,
              (time.perf_counter() - started) * 1000)
    return True


def return_freed_memory_soon(reason: str) -> None:
    """return_freed_memory on a short-lived background thread, so that the caller (a write, a
    compaction) never waits for the heap walk; nothing at all while the last trim is recent."""
    with _lock:
        if (time.monotonic() - _last_trim) * 1000 < limits.memory_trim_interval_ms:
            return
    threading.Thread(target=return_freed_memory, args=(reason,), daemon=True,
                     name="malloc-trim").start()


def available() -> bool:
    """Whether this process's C library can trim (glibc)."""
    return _trim_function() is not None
