"""Reads spread over a shard's in-sync copies, with a hedge against a copy that hangs.

A read goes to one in-sync copy (rotating, so copies share the load). If that copy has not
answered after a hedge delay (read_hedge_min_ms, or four times its usual latency if that is
longer), the same read goes to the next copy too and the first answer wins; a copy that fails
outright is skipped at once. A copy that made a read wait or fail is a suspect for
read_suspect_ms: reads try it last. So a frozen node (SIGSTOP) costs the first reads one hedge
delay, not the whole pause.

`read_order` is the pure decision; `ReadBalancer` keeps the state it needs (latencies,
suspects, a rotation counter) and runs the hedged calls.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Awaitable, Callable, TypeVar

from tributary import errors, limits

T = TypeVar("T")


def read_order(copies: tuple[str, ...], suspect_until: dict[str, float], now: float,
               turn: int) -> list[str]:
    """The copies in the order a read tries them: healthy ones first, rotated by `turn`, then
    the suspects, the one suspected longest ago first."""
    healthy = [c for c in copies if suspect_until.get(c, 0.0) <= now]
    if healthy:
        start = turn % len(healthy)
        healthy = healthy[start:] + healthy[:start]
    suspects = sorted((c for c in copies if suspect_until.get(c, 0.0) > now),
                      key=lambda c: suspect_until[c])
    return healthy + suspects


class ReadBalancer:
    def __init__(self):
        self._turns = itertools.count()
        self._latency_s: dict[str, float] = {}
        self.suspect_until: dict[str, float] = {}

    def _hedge_delay_s(self, node: str) -> float:
        usual = self._latency_s.get(node, 0.0)
        return max(limits.read_hedge_min_ms / 1000, 4 * usual)

    def observe(self, node: str, seconds: float) -> None:
        """A read `node` answered in `seconds` (its usual latency sets its hedge delay)."""
        old = self._latency_s.get(node)
        self._latency_s[node] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def suspect(self, node: str) -> None:
        """`node` made a read wait or fail: reads try it last for read_suspect_ms."""
        self.suspect_until[node] = time.monotonic() + limits.read_suspect_ms / 1000

    async def read(self, copies: tuple[str, ...],
                   call: Callable[[str], Awaitable[T]]) -> T:
        """call(node) on the copies in read_order, hedged; the first answer wins. Raises the
        last error when every copy failed."""
        order = read_order(copies, self.suspect_until, time.monotonic(), next(self._turns))
        if not order:
            raise errors.Unavailable("the shard has no in-sync copy to read from")
        if len(order) == 1:
            return await self._read_only_copy(order[0], call)
        pending: dict[asyncio.Task, tuple[str, float]] = {}
        last_error: BaseException | None = None

        def launch(node: str) -> None:
            pending[asyncio.ensure_future(call(node))] = (node, time.monotonic())

        remaining = list(order)
        launch(remaining.pop(0))
        try:
            while pending:
                newest = max(pending.values(), key=lambda p: p[1])
                timeout = None if not remaining else max(
                    0.0, newest[1] + self._hedge_delay_s(newest[0]) - time.monotonic())
                done, _ = await asyncio.wait(pending, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    # No answer within the hedge delay: suspect it, ask the next copy as well.
                    self.suspect(newest[0])
                    launch(remaining.pop(0))
                    continue
                for task in done:
                    node, started = pending.pop(task)
                    if task.exception() is None:
                        self.observe(node, time.monotonic() - started)
                        return task.result()
                    last_error = task.exception()
                    if isinstance(last_error, errors.StaleEpoch):
                        # The placement moved on: the caller refreshes it and reads again.
                        raise last_error
                    self.suspect(node)
                if not remaining:
                    # Every copy was asked and one failed: what is still pending is a copy that
                    # made us wait past its hedge delay already, so stop here.
                    break
                if not pending:
                    launch(remaining.pop(0))
        finally:
            for task in pending:
                task.cancel()
        raise last_error if last_error is not None else errors.Unavailable("no copy answered")

    async def _read_only_copy(self, node: str, call: Callable[[str], Awaitable[T]]) -> T:
        """A read of a shard with one in-sync copy: nothing to hedge with, so the call runs in
        the caller's task (no task of its own and no wait set, which took about 5% of a busy
        router's event loop), with the same bookkeeping as read()."""
        started = time.monotonic()
        try:
            result = await call(node)
        except errors.StaleEpoch:
            raise
        except Exception:
            self.suspect(node)
            raise
        self.observe(node, time.monotonic() - started)
        return result
