"""A fault-injecting TCP proxy that speaks the Toxiproxy v2 HTTP API.

`python -m chaos proxy --listen 127.0.0.1:8474` (later `tributary chaos proxy`) serves the API
with aiohttp and forwards each proxy's TCP connections with asyncio streams, passing the bytes
of each direction through that proxy's toxics:

    client --upstream stream--> [proxy listen] --> upstream server
    client <--downstream stream-- [proxy listen] <-- upstream server

Each direction of a connection is a reader task (socket -> bounded queue, stamping arrival
times) and a writer task (queue -> toxic chain -> socket).  Toxics are looked up afresh for
every chunk, so adding, updating or removing one affects live connections, as in Toxiproxy.
Whether a toxic applies to a connection ("toxicity") is drawn once per connection and toxic
from a random.Random derived from the server's --seed, so a run is reproducible.

Deliberate differences from Toxiproxy 2.x.  Input is checked more strictly, so a request
accepted here is accepted there: unknown or negative toxic attributes and a toxicity outside
[0, 1] are 400s, and a toxic update may not change its type or stream.  An omitted `listen`
means 127.0.0.1:0 rather than every interface.  Half-closes are forwarded (Toxiproxy closes
the whole connection instead).
Not implemented: GET /metrics, the `noop` toxic, and the toxiproxy-server flags other than
its seed and config file.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import itertools
import json
import logging
import os
import random
import signal
import socket
import struct
import sys
from typing import Any

from aiohttp import web

log = logging.getLogger("chaos.proxy")

VERSION = "2.12.0+tributary"
DEFAULT_API_LISTEN = "127.0.0.1:8474"
DEFAULT_PROXY_LISTEN = "127.0.0.1:0"
STREAMS = ("upstream", "downstream")
READ_SIZE = 64 * 1024
QUEUE_CHUNKS = 16
UPSTREAM_CONNECT_TIMEOUT_S = 10.0
CLOSE_GRACE_S = 5.0

# Every toxic type with its attributes and their defaults (all non-negative integers).
TOXIC_TYPES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},            # ms, ms
    "bandwidth": {"rate": 0},                          # KB/s (1 KB = 1000 bytes); 0 = unlimited
    "slow_close": {"delay": 0},                        # ms
    "timeout": {"timeout": 0},                         # ms; 0 = never close
    "reset_peer": {"timeout": 0},                      # ms
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},  # bytes, bytes, µs
    "limit_data": {"bytes": 0},                        # bytes
}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- addresses

def parse_hostport(text: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or ':port' -> (host, port); raises ValueError."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"address {text!r} is not host:port")
    host, _, port_s = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {text!r}: IPv6 hosts must be in brackets")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"address {text!r} has no valid port")
    return host, int(port_s)


def format_hostport(host: str, port: int) -> str:
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


async def bind_listener(address: str) -> socket.socket:
    """Resolves address to ONE socket address and returns a bound, listening socket."""
    host, port = parse_hostport(address)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {address!r}")
    family, type_, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bound_address(sock: socket.socket) -> str:
    name = sock.getsockname()
    return format_hostport(name[0], name[1])


def _same_listen(requested: str, current: str) -> bool:
    """True when `requested` names the address a proxy already has (port 0 = any port)."""
    if requested == current:
        return True
    try:
        rh, rp = parse_hostport(requested)
        ch, cp = parse_hostport(current)
    except ValueError:
        return False
    if rp not in (0, cp):
        return False
    if rh == ch:
        return True
    try:
        resolved = {i[4][0] for i in socket.getaddrinfo(rh or None, None, type=socket.SOCK_STREAM,
                                                        flags=socket.AI_PASSIVE)}
    except OSError:
        return False
    return ch in resolved


# --------------------------------------------------------------------------- toxics

_uids = itertools.count(1)


@dataclasses.dataclass
class Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int]
    uid: int = dataclasses.field(default_factory=lambda: next(_uids))
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": self.toxicity, "attributes": dict(self.attributes)}


def _check_toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ApiError(400, f"bad request body: toxicity must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_attributes(type_: str, raw: Any, base: dict[str, int]) -> dict[str, int]:
    spec = TOXIC_TYPES[type_]
    out = dict(base)
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise ApiError(400, "bad request body: attributes must be an object")
    for key, value in raw.items():
        if key not in spec:
            raise ApiError(400, f"bad request body: {type_} toxic has no attribute {key!r} "
                                f"(known: {', '.join(sorted(spec))})")
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not value.is_integer())):
            raise ApiError(400, f"bad request body: attribute {key!r} must be an integer, "
                                f"got {value!r}")
        if value < 0:
            raise ApiError(400, f"bad request body: attribute {key!r} must be >= 0, got {value}")
        out[key] = int(value)
    return out


def toxic_from_json(body: Any) -> Toxic:
    if not isinstance(body, dict):
        raise ApiError(400, "bad request body: a toxic must be a JSON object")
    type_ = body.get("type")
    if not isinstance(type_, str) or type_ not in TOXIC_TYPES:
        raise ApiError(400, f"invalid toxic type: {type_!r} (known: {', '.join(TOXIC_TYPES)})")
    stream = body.get("stream", "downstream")
    if stream in (None, ""):
        stream = "downstream"
    if not isinstance(stream, str) or stream.lower() not in STREAMS:
        raise ApiError(400, "stream was invalid, can be either upstream or downstream")
    stream = stream.lower()
    name = body.get("name")
    if name in (None, ""):
        name = f"{type_}_{stream}"
    if not isinstance(name, str):
        raise ApiError(400, "bad request body: toxic name must be a string")
    raw_toxicity = body.get("toxicity")
    toxicity = 1.0 if raw_toxicity is None else _check_toxicity(raw_toxicity)
    attributes = _check_attributes(type_, body.get("attributes"), TOXIC_TYPES[type_])
    return Toxic(name=name, type=type_, stream=stream, toxicity=toxicity, attributes=attributes)


def slice_sizes(n: int, average: int, variation: int, rng: random.Random) -> list[int]:
    """Splits n bytes into pieces of about `average` (+/- `variation`) bytes."""
    if average <= 0 or n <= average:
        return [n]
    variation = max(0, min(variation, average - 1))
    out: list[int] = []
    stack = [(0, n)]
    while stack:
        start, end = stack.pop()
        if (end - start) - average <= variation:
            out.append(end - start)
            continue
        mid = start + (end - start) // 2 + (rng.randint(-variation, variation) if variation else 0)
        stack.append((mid, end))      # right half is popped after the left one
        stack.append((start, mid))
    return out


# --------------------------------------------------------------------------- connections

class _CloseConnection(Exception):
    def __init__(self, reset: bool = False):
        super().__init__("reset" if reset else "close")
        self.reset = reset


_KICK = object()      # toxics changed while waiting
_EXPIRED = object()   # a timeout toxic's deadline passed


@dataclasses.dataclass
class _ToxicState:
    version: int
    enabled: bool
    started: float
    count: int = 0         # limit_data: bytes passed
    fired: bool = False    # reset_peer: timer started


class Direction:
    """One direction of one connection: source socket -> toxics -> destination socket."""

    def __init__(self, conn: "Connection", stream: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.conn, self.stream, self.reader, self.writer = conn, stream, reader, writer
        self.rng = random.Random(conn.rng.getrandbits(64))   # draws independent of the other way
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        self.changed = asyncio.Event()
        self._interrupt = asyncio.get_running_loop().create_future()
        self.states: dict[int, _ToxicState] = {}
        self.tasks: list[asyncio.Task] = []

    def toxics_changed(self) -> None:
        self.changed.set()
        interrupt, self._interrupt = self._interrupt, asyncio.get_running_loop().create_future()
        if not interrupt.done():
            interrupt.set_result(None)

    async def _toxic_sleep(self, seconds: float, toxic: Toxic) -> None:
        """Sleeps, but returns early once `toxic` is removed or updated (as Toxiproxy does,
        whose toxics pass held data on at once when interrupted)."""
        loop = asyncio.get_running_loop()
        end, version = loop.time() + seconds, toxic.version
        while True:
            remaining = end - loop.time()
            if (remaining <= 0 or toxic.version != version
                    or not any(t is toxic for t in self.conn.proxy.toxics)):
                return
            await asyncio.wait({self._interrupt}, timeout=remaining)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._read_loop()),
                      asyncio.create_task(self._write_loop())]

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                await self.queue.put((loop.time(), data))
        except (ConnectionError, OSError) as exc:
            log.debug("%s %s: source failed: %r", self.conn, self.stream, exc)
            self.conn.close()
            return
        await self.queue.put(None)

    def _active(self) -> list[tuple[Toxic, _ToxicState]]:
        """The toxics of this stream that apply to this connection, in the order added."""
        now = asyncio.get_running_loop().time()
        active, seen = [], set()
        for toxic in self.conn.proxy.toxics:
            if toxic.stream != self.stream:
                continue
            seen.add(toxic.uid)
            state = self.states.get(toxic.uid)
            if state is None or state.version != toxic.version:
                enabled = toxic.toxicity >= 1.0 or self.rng.random() < toxic.toxicity
                fresh = _ToxicState(version=toxic.version, enabled=enabled, started=now)
                if state is not None:
                    fresh.count = state.count
                self.states[toxic.uid] = state = fresh
            if state.enabled:
                active.append((toxic, state))
        for uid in [u for u in self.states if u not in seen]:
            del self.states[uid]
        return active

    async def _next(self, deadline: float | None):
        """The next queue item, _KICK when toxics change, or _EXPIRED at the deadline."""
        loop = asyncio.get_running_loop()
        if self.changed.is_set():
            return _KICK
        if not self.queue.empty():
            return self.queue.get_nowait()
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        get = asyncio.ensure_future(self.queue.get())
        kick = asyncio.ensure_future(self.changed.wait())
        try:
            done, _ = await asyncio.wait({get, kick}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            kick.cancel()
            if not get.done():
                get.cancel()   # asyncio.Queue.get leaves the item queued when cancelled
        if get.done() and not get.cancelled():
            return get.result()
        if kick in done:
            return _KICK
        return _EXPIRED

    async def _write_loop(self) -> None:
        eof = False
        try:
            while True:
                self.changed.clear()
                active = self._active()
                deadlines = [s.started + t.attributes["timeout"] / 1000.0
                             for t, s in active if t.type == "timeout" and t.attributes["timeout"]]
                stalled = any(t.type == "timeout" for t, _ in active)
                if eof and not stalled:
                    await self._finish(active)
                    return
                item = await self._next(min(deadlines) if deadlines else None)
                if item is _KICK:
                    continue
                if item is _EXPIRED:
                    raise _CloseConnection()
                if item is None:
                    eof = True
                    continue
                arrived, data = item
                await self._chain(active, 0, data, arrived)
        except _CloseConnection as exc:
            self.conn.close(reset=exc.reset)
        except (ConnectionError, OSError) as exc:
            log.debug("%s %s: destination failed: %r", self.conn, self.stream, exc)
            self.conn.close()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug must not leave the peer hanging
            log.exception("%s %s: toxic chain failed", self.conn, self.stream)
            self.conn.close()

    async def _finish(self, active: list[tuple[Toxic, _ToxicState]]) -> None:
        """The source half-closed: apply slow_close, then half-close the destination."""
        for toxic, _ in active:
            if toxic.type == "slow_close" and toxic.attributes["delay"]:
                await self._toxic_sleep(toxic.attributes["delay"] / 1000.0, toxic)
        if self.writer.can_write_eof() and not self.writer.is_closing():
            self.writer.write_eof()
        self.conn.direction_done(self)

    async def _emit(self, data: bytes) -> None:
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _chain(self, active: list[tuple[Toxic, _ToxicState]], i: int, data: bytes,
                     ready: float) -> None:
        """Passes data through active[i:], then writes it to the destination."""
        loop = asyncio.get_running_loop()
        rng = self.rng
        while i < len(active):
            toxic, state = active[i]
            a = toxic.attributes
            kind = toxic.type
            if kind == "latency":
                delay_ms = a["latency"]
                if a["jitter"]:
                    delay_ms += rng.uniform(-a["jitter"], a["jitter"])
                ready += max(0.0, delay_ms) / 1000.0
                wait = ready - loop.time()
                if wait > 0:
                    await self._toxic_sleep(wait, toxic)
            elif kind == "bandwidth" and a["rate"] > 0:
                bytes_per_s = a["rate"] * 1000.0
                step = max(1, a["rate"] * 100)        # 100 ms worth of bytes per write
                for off in range(0, len(data), step):
                    piece = data[off:off + step]
                    await self._toxic_sleep(len(piece) / bytes_per_s, toxic)
                    await self._chain(active, i + 1, piece, loop.time())
                return
            elif kind == "slicer" and a["average_size"] > 0:
                off = 0
                sizes = slice_sizes(len(data), a["average_size"], a["size_variation"], rng)
                for n, size in enumerate(sizes):
                    await self._chain(active, i + 1, data[off:off + size], ready)
                    off += size
                    if a["delay"] and n + 1 < len(sizes):
                        await self._toxic_sleep(a["delay"] / 1_000_000.0, toxic)
                return
            elif kind == "limit_data":
                remaining = a["bytes"] - state.count
                if remaining <= 0:
                    raise _CloseConnection()
                piece = data[:remaining]
                state.count += len(piece)
                await self._chain(active, i + 1, piece, ready)
                if state.count >= a["bytes"]:
                    raise _CloseConnection()
                return
            elif kind == "timeout":
                return                               # dropped; the write loop runs the timer
            elif kind == "reset_peer":
                if not state.fired:                  # first data starts the timer (as Toxiproxy)
                    state.fired = True
                    await asyncio.sleep(a["timeout"] / 1000.0)
                    raise _CloseConnection(reset=True)
                return
            i += 1
        await self._emit(data)


class Connection:
    _ids = itertools.count(1)

    def __init__(self, proxy: "Proxy", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, rng: random.Random):
        self.id = next(self._ids)
        self.proxy = proxy
        self.client_reader, self.client_writer = reader, writer
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.rng = rng
        self.directions: list[Direction] = []
        self._done: set[str] = set()
        self.closed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"<{self.proxy.name}#{self.id}>"

    async def run(self) -> None:
        self._task = asyncio.current_task()
        host, port = parse_hostport(self.proxy.upstream)
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), UPSTREAM_CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("%s: cannot reach upstream %s: %r", self, self.proxy.upstream, exc)
            self.close()
            return
        except asyncio.CancelledError:
            self.close()
            raise
        if self._closing:
            up_writer.close()
            return
        self.upstream_writer = up_writer
        self.directions = [Direction(self, "upstream", self.client_reader, up_writer),
                           Direction(self, "downstream", up_reader, self.client_writer)]
        for d in self.directions:
            d.start()
        await self.closed.wait()

    def toxics_changed(self) -> None:
        for d in self.directions:
            d.toxics_changed()

    def direction_done(self, direction: Direction) -> None:
        self._done.add(direction.stream)
        if len(self._done) == 2:
            self.close()

    def close(self, reset: bool = False) -> None:
        """Tears the connection down (with TCP RST on both sides when reset)."""
        if self._closing:
            return
        self._closing = True
        current = asyncio.current_task()
        for d in self.directions:
            for t in d.tasks:
                if t is not current:
                    t.cancel()
        if self._task is not None and self._task is not current and not self.directions:
            self._task.cancel()   # still connecting upstream
        loop = asyncio.get_running_loop()
        for w in (self.client_writer, self.upstream_writer):
            if w is None:
                continue
            if reset:
                sock = w.get_extra_info("socket")
                try:
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                except OSError:
                    pass
                w.transport.abort()
            else:
                w.close()
                loop.call_later(CLOSE_GRACE_S, w.transport.abort)
        self.closed.set()
        log.debug("%s closed%s", self, " with RST" if reset else "")


# --------------------------------------------------------------------------- proxies

class Proxy:
    def __init__(self, server: "ChaosServer", name: str, listen: str, upstream: str):
        self.server = server
        self.name, self.listen, self.upstream = name, listen, upstream
        self.enabled = False
        self.toxics: list[Toxic] = []
        self.connections: set[Connection] = set()
        self._listener: asyncio.base_events.Server | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "toxics": [t.to_json() for t in self.toxics]}

    async def start(self) -> None:
        if self._listener is not None:
            return
        try:
            sock = await bind_listener(self.listen)
        except (OSError, ValueError) as exc:
            raise ApiError(500, f"listen tcp {self.listen}: {exc}") from exc
        self.listen = bound_address(sock)   # keeps the resolved port for later re-enables
        self._listener = await asyncio.start_server(self._accept, sock=sock)
        self.enabled = True
        log.info("proxy %s listening on %s -> %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        self.enabled = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        conns = list(self.connections)
        for c in conns:
            c.close()
        if listener is not None:
            try:
                await asyncio.wait_for(listener.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
        log.info("proxy %s stopped (%d connections closed)", self.name, len(conns))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:
            writer.close()
            return
        conn = Connection(self, reader, writer, random.Random(self.server.rng.getrandbits(64)))
        self.connections.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            conn.close()
        finally:
            self.connections.discard(conn)

    def toxics_changed(self) -> None:
        for c in list(self.connections):
            c.toxics_changed()

    def find_toxic(self, name: str) -> Toxic:
        for t in self.toxics:
            if t.name == name:
                return t
        raise ApiError(404, "toxic not found")


class ChaosServer:
    """The proxies and their toxics; the HTTP handlers below only translate to these calls."""

    def __init__(self, seed: int | None = None):
        self.seed = seed if seed is not None else random.SystemRandom().getrandbits(32)
        self.rng = random.Random(self.seed)
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(404, "proxy not found")
        return proxy

    @staticmethod
    def _proxy_fields(body: Any) -> tuple[str, str, str, bool]:
        if not isinstance(body, dict):
            raise ApiError(400, "bad request body: a proxy must be a JSON object")
        name, upstream = body.get("name"), body.get("upstream")
        listen = body.get("listen") or DEFAULT_PROXY_LISTEN
        enabled = body.get("enabled", True)
        if not isinstance(name, str) or not name:
            raise ApiError(400, "missing required field: name")
        if not isinstance(upstream, str) or not upstream:
            raise ApiError(400, "missing required field: upstream")
        if not isinstance(listen, str):
            raise ApiError(400, "bad request body: listen must be a string")
        if not isinstance(enabled, bool):
            raise ApiError(400, "bad request body: enabled must be a boolean")
        for field, value in (("listen", listen), ("upstream", upstream)):
            try:
                parse_hostport(value)
            except ValueError as exc:
                raise ApiError(400, f"bad request body: {field}: {exc}") from exc
        return name, listen, upstream, enabled

    async def create(self, body: Any) -> Proxy:
        name, listen, upstream, enabled = self._proxy_fields(body)
        if name in self.proxies:
            raise ApiError(409, "proxy already exists")
        proxy = Proxy(self, name, listen, upstream)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    async def update(self, proxy: Proxy, body: Any) -> Proxy:
        if not isinstance(body, dict):
            raise ApiError(400, "bad request body: expected a JSON object")
        listen = body.get("listen", proxy.listen) or proxy.listen
        upstream = body.get("upstream", proxy.upstream) or proxy.upstream
        enabled = body.get("enabled", proxy.enabled)
        if not isinstance(listen, str) or not isinstance(upstream, str):
            raise ApiError(400, "bad request body: listen and upstream must be strings")
        if not isinstance(enabled, bool):
            raise ApiError(400, "bad request body: enabled must be a boolean")
        for field, value in (("listen", listen), ("upstream", upstream)):
            try:
                parse_hostport(value)
            except ValueError as exc:
                raise ApiError(400, f"bad request body: {field}: {exc}") from exc
        if listen != proxy.listen or upstream != proxy.upstream:
            await proxy.stop()                      # changing either drops every connection
            proxy.listen, proxy.upstream = listen, upstream
        if enabled and proxy._listener is None:
            await proxy.start()
        elif not enabled and (proxy.enabled or proxy._listener is not None):
            await proxy.stop()
        return proxy

    async def delete(self, name: str) -> None:
        proxy = self.get(name)
        del self.proxies[name]
        await proxy.stop()

    async def reset(self) -> None:
        for proxy in list(self.proxies.values()):
            if proxy._listener is None:
                await proxy.start()
            proxy.toxics.clear()
            proxy.toxics_changed()

    async def populate(self, body: Any) -> list[Proxy]:
        if not isinstance(body, list):
            raise ApiError(400, "bad request body: expected a JSON array of proxies")
        wanted = [self._proxy_fields(item) for item in body]   # validate everything first
        out: list[Proxy] = []
        for name, listen, upstream, enabled in wanted:
            existing = self.proxies.get(name)
            if existing is not None:
                if existing.upstream == upstream and _same_listen(listen, existing.listen):
                    await self.update(existing, {"enabled": enabled})
                    out.append(existing)
                    continue
                await self.delete(name)
            try:
                out.append(await self.create({"name": name, "listen": listen,
                                              "upstream": upstream, "enabled": enabled}))
            except ApiError as exc:
                exc.partial = out   # type: ignore[attr-defined]
                raise
        return out

    def add_toxic(self, proxy: Proxy, body: Any) -> Toxic:
        toxic = toxic_from_json(body)
        if any(t.name == toxic.name for t in proxy.toxics):
            raise ApiError(409, "toxic already exists")
        proxy.toxics.append(toxic)
        proxy.toxics_changed()
        return toxic

    def update_toxic(self, proxy: Proxy, name: str, body: Any) -> Toxic:
        toxic = proxy.find_toxic(name)
        if not isinstance(body, dict):
            raise ApiError(400, "bad request body: a toxic must be a JSON object")
        if body.get("type") not in (None, toxic.type):
            raise ApiError(400, "invalid toxic type: a toxic's type cannot be changed")
        stream = body.get("stream")
        if stream not in (None, "") and str(stream).lower() != toxic.stream:
            raise ApiError(400, "stream was invalid: a toxic's stream cannot be changed")
        toxicity = toxic.toxicity
        if body.get("toxicity") is not None:
            toxicity = _check_toxicity(body["toxicity"])
        attributes = _check_attributes(toxic.type, body.get("attributes"), toxic.attributes)
        toxic.toxicity, toxic.attributes = toxicity, attributes
        toxic.version += 1
        proxy.toxics_changed()
        return toxic

    def remove_toxic(self, proxy: Proxy, name: str) -> None:
        toxic = proxy.find_toxic(name)
        proxy.toxics.remove(toxic)
        proxy.toxics_changed()

    async def close(self) -> None:
        for proxy in list(self.proxies.values()):
            await proxy.stop()


# --------------------------------------------------------------------------- HTTP API

def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, "status": status, **extra}, status=status)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise ApiError(400, f"bad request body: {exc}") from exc


@web.middleware
async def _api_middleware(request: web.Request, handler):
    # As Toxiproxy: browsers may not drive the API (a web page could otherwise reach loopback).
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        return _error(403, "User agent not allowed")
    try:
        return await handler(request)
    except ApiError as exc:
        extra = {}
        if hasattr(exc, "partial"):
            extra["proxies"] = [p.to_json() for p in exc.partial]
        return _error(exc.status, exc.message, **extra)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.reason.lower())
        raise


def build_app(server: ChaosServer) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/version")
    async def version(request):
        return _json({"version": VERSION})

    @routes.get("/proxies")
    async def list_proxies(request):
        return _json({name: p.to_json() for name, p in server.proxies.items()})

    @routes.post("/proxies")
    async def create_proxy(request):
        body = await _body(request)
        async with server.lock:
            proxy = await server.create(body)
        return _json(proxy.to_json(), status=201)

    @routes.post("/populate")
    async def populate(request):
        body = await _body(request)
        async with server.lock:
            proxies = await server.populate(body)
        return _json({"proxies": [p.to_json() for p in proxies]}, status=201)

    @routes.post("/reset")
    async def reset(request):
        async with server.lock:
            await server.reset()
        return web.Response(status=204)

    @routes.get("/proxies/{proxy}")
    async def show_proxy(request):
        return _json(server.get(request.match_info["proxy"]).to_json())

    async def update_proxy(request):
        body = await _body(request)
        async with server.lock:
            proxy = await server.update(server.get(request.match_info["proxy"]), body)
        return _json(proxy.to_json())

    routes.post("/proxies/{proxy}")(update_proxy)
    routes.patch("/proxies/{proxy}")(update_proxy)

    @routes.delete("/proxies/{proxy}")
    async def delete_proxy(request):
        async with server.lock:
            await server.delete(request.match_info["proxy"])
        return web.Response(status=204)

    @routes.get("/proxies/{proxy}/toxics")
    async def list_toxics(request):
        proxy = server.get(request.match_info["proxy"])
        return _json([t.to_json() for t in proxy.toxics])

    @routes.post("/proxies/{proxy}/toxics")
    async def create_toxic(request):
        proxy = server.get(request.match_info["proxy"])
        body = await _body(request)
        async with server.lock:
            toxic = server.add_toxic(proxy, body)
        return _json(toxic.to_json())

    @routes.get("/proxies/{proxy}/toxics/{toxic}")
    async def show_toxic(request):
        proxy = server.get(request.match_info["proxy"])
        return _json(proxy.find_toxic(request.match_info["toxic"]).to_json())

    async def update_toxic(request):
        proxy = server.get(request.match_info["proxy"])
        body = await _body(request)
        async with server.lock:
            toxic = server.update_toxic(proxy, request.match_info["toxic"], body)
        return _json(toxic.to_json())

    routes.post("/proxies/{proxy}/toxics/{toxic}")(update_toxic)
    routes.patch("/proxies/{proxy}/toxics/{toxic}")(update_toxic)

    @routes.delete("/proxies/{proxy}/toxics/{toxic}")
    async def delete_toxic(request):
        proxy = server.get(request.match_info["proxy"])
        async with server.lock:
            server.remove_toxic(proxy, request.match_info["toxic"])
        return web.Response(status=204)

    app = web.Application(middlewares=[_api_middleware])
    app.add_routes(routes)
    app["chaos_server"] = server
    return app


# --------------------------------------------------------------------------- entry points

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default=DEFAULT_API_LISTEN,
                        help="host:port for the HTTP API (default %(default)s, loopback only; "
                             "port 0 picks a free port, printed on stdout)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for toxicity draws, jitter and slicing (default: random, "
                             "logged at start)")
    parser.add_argument("--config", default=None,
                        help="JSON file with an array of proxies to create at start "
                             "(same shape as POST /populate)")


async def serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    """Runs the API until `stop` is set (or SIGINT/SIGTERM)."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    server = ChaosServer(seed=args.seed)
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                await server.populate(json.load(f))
        except (OSError, ValueError, ApiError) as exc:
            await server.close()
            raise SystemExit(f"chaos proxy: --config {args.config}: {exc}") from exc
    try:
        sock = await bind_listener(args.listen)
    except (OSError, ValueError) as exc:
        await server.close()
        raise SystemExit(f"chaos proxy: --listen {args.listen}: {exc}") from exc
    address = bound_address(sock)
    runner = web.AppRunner(build_app(server), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    log.info("chaos proxy API on http://%s (seed %d, pid %d)", address, server.seed, os.getpid())
    print(f"chaos proxy API listening on {address}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()
        await runner.cleanup()


def run(args: argparse.Namespace) -> None:
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
