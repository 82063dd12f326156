"""tributary/event_loop.py: the router and the node run on uvloop unless told otherwise."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from tributary import event_loop


async def _loop_type():
    return type(asyncio.get_running_loop())


def test_the_servers_run_on_uvloop_by_default(monkeypatch):
    monkeypatch.delenv("TRIBUTARY_EVENT_LOOP", raising=False)
    assert event_loop.run(_loop_type()) is uvloop.Loop


def test_asyncio_own_loop_when_asked(monkeypatch):
    monkeypatch.setenv("TRIBUTARY_EVENT_LOOP", "asyncio")
    assert not issubclass(event_loop.run(_loop_type()), uvloop.Loop)


def test_a_bad_choice_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.setenv("TRIBUTARY_EVENT_LOOP", "tokio")
    coroutine = _loop_type()
    with pytest.raises(ValueError, match="TRIBUTARY_EVENT_LOOP must be one of uvloop, asyncio"):
        event_loop.run(coroutine)
    coroutine.close()

