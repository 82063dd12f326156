"""A readers-writer lock for the hnswlib index.

hnswlib allows concurrent knn_query calls but not knn_query beside add_items, and resize_index
beside neither. The standard library has no readers-writer lock and the PyPI ones are either
unmaintained or asyncio-only, so this is a small Condition-based one. Writers are preferred: a
waiting writer stops new readers, so the background indexer is never starved by a query stream,
and it holds the lock only for one bounded chunk, so queries never wait long either.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
