"""EfGate: a per-query ef_search over hnswlib, whose ef is one setting of the whole index.

hnswlib's Python API has no per-query ef: `set_ef` changes the index, and a `knn_query` reads it
while it runs. So two concurrent searches asking different ef values could each run with the
other's. The gate makes ef a true per-query setting: searches run in phases of one ef value.
Any number of searches with the phase's ef run at once (knn_query releases the GIL and is safe
beside itself); a search asking another ef waits until the phase drains, then sets its ef and
opens a new phase. The searches that were waiting for that ef enter the new phase together, and
once a search waits for another ef, no newcomer joins the running phase, so neither ef class
starves the other. Nearly every search asks the default ef, and then the gate costs one
uncontended lock round (about a microsecond).

The alternatives cost more: one index copy per ef class doubles the graph's memory, and a
global lock around set_ef + knn_query serializes every search.
"""

from __future__ import annotations

import threading
from collections import Counter


class EfGate:
    def __init__(self, index, ef: int):
        """`index` is an hnswlib index whose ef is currently `ef`. From here on only the gate
        may call its set_ef."""
        self._index = index
        self._cond = threading.Condition(threading.Lock())
        self._current = ef
        self._active = 0
        self._waiting: Counter[int] = Counter()
        # Searches that were waiting for the ef a new phase switched to: they may join it even
        # though searches for another ef wait.
        self._admitted = 0

    def acquire(self, ef: int, blocking: bool = True) -> bool:
        """Enters a phase running at `ef` (setting it when the index is idle). True means the
        caller may run knn_query and must call release(); False (only when not `blocking`)
        means entering would have meant waiting."""
        with self._cond:
            if self._may_enter(ef):
                self._enter(ef)
                return True
            if not blocking:
                return False
            self._waiting[ef] += 1
            try:
                while not self._may_enter(ef):
                    self._cond.wait()
            finally:
                self._waiting[ef] -= 1
                if not self._waiting[ef]:
                    del self._waiting[ef]
            self._enter(ef)
            return True

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    def _may_enter(self, ef: int) -> bool:
        if self._active == 0:
            return True
        if self._current != ef:
            return False
        return self._admitted > 0 or not any(other != ef for other in self._waiting)

    def _enter(self, ef: int) -> None:
        if self._current != ef:
            # No search is running (the phase drained): nobody reads ef while it changes.
            self._index.set_ef(ef)
            self._current = ef
            self._admitted = self._waiting[ef]
            self._cond.notify_all()
        elif self._admitted > 0:
            self._admitted -= 1
        self._active += 1
