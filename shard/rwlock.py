"""A readers-writer lock for the hnswlib index.

hnswlib allows concurrent knn_query calls but not knn_query beside add_items, and resize_index
beside neither. The standard library has no readers-writer lock and the PyPI ones are either
unmaintained or asyncio-only, so this is a small Condition-based one.

Fairness goes both ways. A waiting writer stops new readers, so the background indexer is never
starved by a query stream. And when a writer releases, the readers that were waiting go before
the next writer: the indexer takes the lock again for its next chunk within microseconds, before
woken readers are even scheduled, so without this turn a search waited until the indexer ran
out of chunks (seconds to minutes under steady ingest). Each hold is one bounded chunk, so
queries never wait for more than one.

One reader is special: a background read (saving the index to a file) is long, so while one is
held, new readers enter even though a writer waits. Holding them back would gain the writer
nothing (it waits for the background reader anyway) and would stall every search for the whole
save.
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
        self._readers_waiting = 0
        # Readers that were waiting when the last writer released: they may enter although a
        # writer waits, and writers wait until they did.
        self._admitted = 0
        self._background = 0

    def _may_read(self) -> bool:
        return not self._writer and (not self._writers_waiting or self._admitted > 0 or
                                     self._background > 0)

    def _enter_read(self) -> None:
        if self._admitted:
            self._admitted -= 1
        self._readers += 1

    @contextmanager
    def read(self):
        with self._cond:
            self._readers_waiting += 1
            try:
                while not self._may_read():
                    self._cond.wait()
            except BaseException:
                self._readers_waiting -= 1
                self._cond.notify_all()     # a writer may have been waiting for this reader
                raise
            self._readers_waiting -= 1
            self._enter_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def read_background(self):
        """A read hold for long work (saving the index): it waits like any reader, but while
        it is held, other readers are not held back by waiting writers."""
        with self.read():
            with self._cond:
                self._background += 1
                self._cond.notify_all()     # readers held back by a waiting writer may enter
            try:
                yield
            finally:
                with self._cond:
                    self._background -= 1

    def try_read(self) -> bool:
        """Takes a read hold only if that needs no waiting. True means the caller holds it and
        must call release_read()."""
        with self._cond:
            if not self._may_read():
                return False
            self._enter_read()
            return True

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                # Admitted readers hold writers back only while some are still waiting to enter.
                while self._writer or self._readers or (self._admitted and
                                                         self._readers_waiting):
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
            self._admitted = 0
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._admitted = self._readers_waiting
                self._cond.notify_all()
