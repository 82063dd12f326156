"""Reads over a shard's copies (router/reads.py): rotation, suspects last, and a hedge that turns
a hung copy into one bounded delay."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.reads import ReadBalancer, read_order
from tributary import errors, limits


def test_healthy_copies_rotate_and_suspects_come_last():
    copies = ("a", "b", "c")
    assert read_order(copies, {}, 10.0, 0) == ["a", "b", "c"]
    assert read_order(copies, {}, 10.0, 1) == ["b", "c", "a"]
    assert read_order(copies, {"a": 12.0, "c": 11.0}, 10.0, 0) == ["b", "c", "a"]
    assert read_order(copies, {"a": 9.0}, 10.0, 0) == ["a", "b", "c"]   # suspicion expired


def test_a_hung_copy_costs_one_hedge_delay_and_is_then_avoided():
    async def scenario():
        balancer = ReadBalancer()
        hung = asyncio.Event()

        async def call(node):
            if node == "frozen":
                await hung.wait()
            return node

        started = time.monotonic()
        answers = [await balancer.read(("frozen", "ok"), call) for _ in range(6)]
        return answers, time.monotonic() - started, balancer
    answers, elapsed, balancer = asyncio.run(scenario())
    assert answers == ["ok"] * 6
    # Only the first read waited for the hedge; the frozen copy is then a suspect.
    assert elapsed < limits.read_hedge_min_ms / 1000 * 3
    assert balancer.suspect_until["frozen"] > time.monotonic()


def test_a_failed_copy_is_skipped_at_once_and_all_failing_raises_the_last_error():
    async def scenario():
        balancer = ReadBalancer()

        async def call(node):
            if node != "good":
                raise errors.Unavailable(f"{node} is down")
            return node
        first = await balancer.read(("down", "good"), call)
        with pytest.raises(errors.Unavailable, match="down2 is down|down is down"):
            await balancer.read(("down", "down2"), call)
        return first
    assert asyncio.run(scenario()) == "good"


def test_a_stale_placement_ends_the_read_at_once_even_with_a_copy_hanging():
    async def scenario():
        balancer = ReadBalancer()

        async def call(node):
            if node == "frozen":
                await asyncio.Event().wait()
            raise errors.StaleEpoch("placement epoch 1 is older than 2")
        started = time.monotonic()
        with pytest.raises(errors.StaleEpoch):
            await balancer.read(("frozen", "moved"), call)
        return time.monotonic() - started
    assert asyncio.run(scenario()) < limits.read_hedge_min_ms / 1000 * 3
