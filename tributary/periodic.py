"""`Periodic`: one coroutine run in rounds on the running event loop, the one copy of the
background loops of the servers (catalog refresh, heartbeats, index saves, health tracking)."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from tributary import errors

log = logging.getLogger("tributary.periodic")


class Periodic:
    """Runs `round_fn()` (a coroutine function), then waits `interval_s`, and again, until
    `stop()`. The first round runs at once, or after one interval with `wait_first=True`.

    A round that raises does not end the loop: a TributaryError (an expected failure such as
    an unreachable meta group, retried next round) is logged at debug level with its message,
    any other exception with its traceback. `stop()` cancels the task and waits until it has
    ended, so nothing of it is left pending on the loop; it may be called more than once, and
    before `start()`."""

    def __init__(self, interval_s: float, round_fn: Callable[[], Awaitable[object]], name: str,
                 *, wait_first: bool = False):
        if not interval_s > 0:
            raise ValueError(f"{name}: interval_s must be positive, got {interval_s!r}")
        self.interval_s = interval_s
        self.round_fn = round_fn
        self.name = name
        self.wait_first = wait_first
        self.rounds = 0     # rounds that ended, with or without an error
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> "Periodic":
        """Starts the rounds in a task of the running loop. Raises RuntimeError if they are
        already running."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)
        return self

    async def stop(self) -> None:
        """Cancels the rounds (a round in progress is cancelled where it awaits) and returns
        once the task has ended."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise       # the caller itself is being cancelled, not just our task

    async def _loop(self) -> None:
        if self.wait_first:
            await asyncio.sleep(self.interval_s)
        while True:
            try:
                await self.round_fn()
            except errors.TributaryError as exc:
                log.debug("%s failed: %s", self.name, exc.message)
            except Exception:  # noqa: BLE001 - one failed round must not end the loop
                log.exception("%s failed", self.name)
            self.rounds += 1
            await asyncio.sleep(self.interval_s)


__all__ = ["Periodic"]
