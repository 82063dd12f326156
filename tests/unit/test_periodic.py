"""Specification of tributary/periodic.py (`Periodic`) and of the background loops built on it:
CatalogCache's catalog watch and the router's heartbeats stop without leaving a task behind."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from consensus.client import CatalogCache
from consensus import state as meta_state
from router.quotas import RouterCount
from tributary import errors
from tributary.periodic import Periodic


async def _until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(0.005)


def _others() -> set[asyncio.Task]:
    """Tasks of the running loop other than the test's own."""
    return asyncio.all_tasks() - {asyncio.current_task()}


def test_rounds_run_at_once_then_one_interval_apart():
    starts: list[float] = []

    async def round_():
        starts.append(time.monotonic())

    async def scenario():
        began = time.monotonic()
        loop = Periodic(0.05, round_, "ticker").start()
        await _until(lambda: len(starts) >= 5)
        await loop.stop()
        return began

    began = asyncio.run(scenario())
    assert starts[0] - began < 0.04
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.045, gaps


def test_wait_first_runs_the_first_round_after_one_interval():
    starts: list[float] = []

    async def round_():
        starts.append(time.monotonic())

    async def scenario():
        began = time.monotonic()
        loop = Periodic(0.1, round_, "saver", wait_first=True).start()
        await _until(lambda: starts)
        await loop.stop()
        return began

    began = asyncio.run(scenario())
    assert starts[0] - began >= 0.095


def test_a_round_that_raises_does_not_stop_the_rounds(caplog):
    calls = []

    async def round_():
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        if len(calls) == 2:
            raise errors.Unavailable("no meta leader")

    async def scenario():
        loop = Periodic(0.01, round_, "flaky").start()
        await _until(lambda: len(calls) >= 4)
        assert loop.running
        await loop.stop()

    with caplog.at_level(logging.DEBUG, logger="tributary.periodic"):
        asyncio.run(scenario())
    assert len(calls) >= 4
    unexpected = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert unexpected and "flaky failed" in unexpected[0].getMessage()
    assert unexpected[0].exc_info is not None          # the traceback of the unexpected error
    expected = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("no meta leader" in r.getMessage() for r in expected)


def test_stop_cancels_a_round_in_progress_and_returns_once_the_task_has_ended():
    events = []

    async def round_():
        events.append("started")
        try:
            await asyncio.Event().wait()      # a round that never ends by itself
        finally:
            events.append("cleaned up")

    async def scenario():
        loop = Periodic(1.0, round_, "stuck").start()
        await _until(lambda: events)
        await loop.stop()
        # Nothing of the loop is left pending, and the round's clean-up has run.
        assert events == ["started", "cleaned up"]
        assert _others() == set()
        assert not loop.running

    asyncio.run(scenario())


def test_stop_twice_and_stop_before_start_are_harmless():
    async def round_():
        pass

    async def scenario():
        never_started = Periodic(0.01, round_, "idle")
        await never_started.stop()
        loop = Periodic(0.01, round_, "twice").start()
        await loop.stop()
        await loop.stop()
        assert _others() == set()
        loop.start()                 # and it can run again after a stop
        assert loop.running
        await loop.stop()

    asyncio.run(scenario())


def test_start_while_running_is_refused():
    async def round_():
        pass

    async def scenario():
        loop = Periodic(0.01, round_, "once").start()
        with pytest.raises(RuntimeError):
            loop.start()
        await loop.stop()

    asyncio.run(scenario())


def test_a_non_positive_interval_is_refused():
    async def round_():
        pass

    with pytest.raises(ValueError):
        Periodic(0, round_, "busy loop")


class _HangingMeta:
    """A meta client whose calls never answer, so a round is in progress when stop() comes."""

    def __init__(self):
        self.calls = 0
        self.cleaned_up = 0

    async def _hang(self):
        self.calls += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.cleaned_up += 1

    async def get_state(self, version, linearizable=False) -> meta_state.MetaState:
        await self._hang()

    async def router_heartbeat(self, router_id):
        await self._hang()

    def watch_call(self, from_revision):
        """A catalog watch stream that never delivers an event."""
        meta = self

        class Call:
            async def read(self):
                await meta._hang()

            def cancel(self):
                pass
        return "meta-0", Call()

    def avoid(self, address):
        pass


@pytest.mark.parametrize("make", [CatalogCache, RouterCount], ids=["catalog", "router_count"])
def test_background_loops_leave_no_task_behind_when_stopped(make):
    async def scenario():
        meta = _HangingMeta()
        loop = make(meta)
        loop.start()
        await _until(lambda: meta.calls)
        await loop.stop()
        assert meta.cleaned_up == meta.calls == 1
        assert _others() == set()

    asyncio.run(scenario())
