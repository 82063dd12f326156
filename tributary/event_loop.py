"""The event loop the router and the node run on: uvloop when it is installed (the default,
from requirements.lock), asyncio's own when TRIBUTARY_EVENT_LOOP=asyncio or uvloop is absent.

uvloop runs the loop's own work (ready callbacks, timers, the selector) in C: on this machine a
grpc.aio server answering a canned search spent 0.17 instead of 0.21 ms of CPU per call
(bench.hop_floor's echo shape, 16 client threads). grpc.aio drives its completion queue through
the loop's add_reader, which uvloop implements, so both loops serve the same way. Child
processes are not spawned through the loop (node/backup.py says why)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

CHOICES = ("uvloop", "asyncio")


def chosen() -> str:
    """The loop TRIBUTARY_EVENT_LOOP asks for (uvloop when unset); a bad value is refused."""
    choice = os.environ.get("TRIBUTARY_EVENT_LOOP", "uvloop")
    if choice not in CHOICES:
        raise ValueError(f"TRIBUTARY_EVENT_LOOP must be one of {', '.join(CHOICES)}, "
                         f"got {choice!r}")
    return choice


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run(main) on the chosen loop."""
    if chosen() == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; running on asyncio's own event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)
