"""The chaos proxy (chaos/proxy.py), driven as a real process through the toxiproxy-python client.

One server process (`python -m chaos proxy --listen 127.0.0.1:0 --seed ...`) and one threaded
TCP echo upstream serve the whole module; every test creates its own proxies and the `tp`
fixture deletes them afterwards. Timings are measured around single round trips and compared
with generous margins; waits poll with deadlines. Where toxiproxy-python has no call for
something (server-side 409, error bodies, /populate, PATCH, toxic updates) the test uses raw
HTTP via httpx and says so.

tests/integration/test_chaos_proxy_conformance.py runs the same scenarios against a real
`toxiproxy-server` when one is available.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time

import httpx
import pytest
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
from toxiproxy.proxy import Proxy

from chaos.launcher import ProxyServer

SEED = 20240611
IO_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- fixtures/helpers

class EchoServer:
    """Threaded TCP echo server: echoes everything; on EOF half-closes back and records totals."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.finished: list[int] = []      # bytes received, per finished connection
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        total = 0
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    break
                total += len(data)
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self.finished.append(total)

    def stop(self):
        self._stopped = True
        self.sock.close()


def wait_for(predicate, timeout_s: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout_s}s")


def host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    return host, int(port)


def connect(proxy: Proxy) -> socket.socket:
    s = socket.create_connection(host_port(proxy.listen), timeout=IO_TIMEOUT_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_until_eof(s: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk


def round_trip(s: socket.socket, payload: bytes = b"ping") -> float:
    """Sends payload, reads the echo back; returns the elapsed seconds."""
    start = time.monotonic()
    s.sendall(payload)
    got = recv_exact(s, len(payload))
    elapsed = time.monotonic() - start
    assert got == payload
    return elapsed


def fresh_round_trip(proxy: Proxy, payload: bytes = b"ping") -> float:
    with connect(proxy) as s:
        return round_trip(s, payload)


def refused(proxy: Proxy) -> bool:
    try:
        socket.create_connection(host_port(proxy.listen), timeout=1.0).close()
        return False
    except ConnectionRefusedError:
        return True


@pytest.fixture(scope="module")
def server():
    with ProxyServer(prefer_external=False, seed=SEED) as s:
        yield s


@pytest.fixture(scope="module")
def echo():
    e = EchoServer()
    yield e
    e.stop()


@pytest.fixture
def tp(server):
    client = Toxiproxy()
    client.update_api_consumer(server.host, server.port)
    yield client
    client.update_api_consumer(server.host, server.port)   # a test may have pointed it elsewhere
    client.destroy_all()


@pytest.fixture
def api(server):
    """Raw HTTP, only for what toxiproxy-python cannot express."""
    with httpx.Client(base_url=server.api_url, timeout=10.0) as c:
        yield c


@pytest.fixture
def make_proxy(tp, echo, request):
    counter = iter(range(1000))

    def make(upstream: str | None = None, **kwargs) -> Proxy:
        name = f"{request.node.name}-{next(counter)}".replace("[", "_").replace("]", "")
        return tp.create(upstream=upstream or echo.address, name=name,
                         listen=kwargs.pop("listen", "127.0.0.1:0"), **kwargs)
    return make


def only_chaos(server):
    if server.kind != "chaos":
        pytest.skip("checks behaviour specific to chaos/proxy.py")


STREAMS = ["downstream", "upstream"]


# --------------------------------------------------------------------------- the API

def test_server_reports_running_and_a_version(tp):
    assert tp.running()
    assert json.loads(tp.version())["version"]


def test_created_proxy_binds_a_real_port_is_listed_forwards_and_is_deleted(tp, make_proxy, echo):
    proxy = make_proxy()
    host, port = host_port(proxy.listen)
    assert port != 0, "port 0 must be reported as the bound port"
    assert proxy.upstream == echo.address and proxy.enabled is True

    listed = tp.proxies()
    assert set(listed) == {proxy.name}
    got = tp.get_proxy(proxy.name)
    assert (got.listen, got.upstream, got.enabled) == (proxy.listen, proxy.upstream, True)
    assert got.toxics() == {}

    assert fresh_round_trip(proxy) < 1.0

    assert proxy.destroy() is True
    assert tp.get_proxy(proxy.name) is None
    assert tp.proxies() == {}
    wait_for(lambda: refused(proxy), what="deleted proxy refusing connections")


def test_duplicate_proxy_is_rejected(tp, make_proxy, api):
    proxy = make_proxy()
    with pytest.raises(ProxyExists):
        tp.create(upstream=proxy.upstream, name=proxy.name, listen="127.0.0.1:0")
    # toxiproxy-python refuses the duplicate itself (it lists proxies first), so the server's
    # own 409 and its error body are checked with raw HTTP.
    r = api.post("/proxies", json={"name": proxy.name, "upstream": proxy.upstream,
                                   "listen": "127.0.0.1:0"})
    assert r.status_code == 409
    assert r.json()["status"] == 409 and r.json()["error"]


def test_unknown_proxy_is_404(tp, api, echo):
    ghost = Proxy(name="ghost", upstream=echo.address, enabled=True, listen="127.0.0.1:1")
    with pytest.raises(NotFound):
        ghost.destroy()
    with pytest.raises(NotFound):
        ghost.toxics()
    with pytest.raises(NotFound):
        ghost.add_toxic(type="latency", attributes={"latency": 1})
    with pytest.raises(NotFound):
        ghost.disable()
    # Raw HTTP: the client does not expose error bodies.
    r = api.get("/proxies/ghost")
    assert r.status_code == 404
    assert r.json() == {"error": "proxy not found", "status": 404}


def test_bad_toxics_are_rejected(make_proxy):
    proxy = make_proxy()
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="no_such_toxic")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="sideways", attributes={"latency": 1})
    proxy.add_toxic(type="latency", attributes={"latency": 1})
    with pytest.raises(ProxyExists):            # 409: same default name latency_downstream
        proxy.add_toxic(type="latency", attributes={"latency": 2})
    assert list(proxy.toxics()) == ["latency_downstream"]


def test_bad_toxic_attributes_are_rejected(server, make_proxy):
    only_chaos(server)   # Toxiproxy itself accepts negative and unknown attributes
    proxy = make_proxy()
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", attributes={"latency": -5})
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", attributes={"latncy": 5})
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="bandwidth", attributes={"rate": "fast"})
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", toxicity=1.5, attributes={"latency": 5})
    assert proxy.toxics() == {}


def test_toxics_default_their_name_stream_and_toxicity_and_are_removed_once(make_proxy):
    proxy = make_proxy()
    proxy.add_toxic(type="latency", attributes={"latency": 10})
    proxy.add_toxic(type="bandwidth", stream="upstream", name="slow-up", toxicity=0.5,
                    attributes={"rate": 1000})
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "slow-up"}
    lat = toxics["latency_downstream"]
    assert (lat.type, lat.stream, lat.toxicity) == ("latency", "downstream", 1.0)
    assert lat.attributes["latency"] == 10 and lat.attributes.get("jitter", 0) == 0
    bw = proxy.get_toxic("slow-up")
    assert (bw.type, bw.stream, bw.toxicity, bw.attributes["rate"]) == (
        "bandwidth", "upstream", 0.5, 1000)
    assert proxy.destroy_toxic("latency_downstream") is True
    assert set(proxy.toxics()) == {"slow-up"}
    with pytest.raises(NotFound):
        proxy.destroy_toxic("latency_downstream")


# --------------------------------------------------------------------------- toxics

@pytest.mark.parametrize("stream", STREAMS)
def test_latency_adds_delay(make_proxy, stream):
    proxy = make_proxy()
    assert fresh_round_trip(proxy) < 0.15
    proxy.add_toxic(type="latency", stream=stream, attributes={"latency": 200, "jitter": 0})
    with connect(proxy) as s:
        for _ in range(2):
            elapsed = round_trip(s)
            assert 0.2 - 0.005 <= elapsed < 1.5, elapsed


def test_latency_with_toxicity_zero_has_no_effect(make_proxy):
    proxy = make_proxy()
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 500})
    for _ in range(3):
        assert fresh_round_trip(proxy) < 0.25


def test_toxic_applies_to_live_connection_and_removal_restores(make_proxy):
    proxy = make_proxy()
    with connect(proxy) as s:
        assert round_trip(s) < 0.15
        proxy.add_toxic(type="latency", attributes={"latency": 250})
        assert round_trip(s) >= 0.25 - 0.005
        proxy.destroy_toxic("latency_downstream")
        assert round_trip(s) < 0.15


def test_removing_latency_releases_data_already_held(make_proxy):
    proxy = make_proxy()
    proxy.add_toxic(type="latency", attributes={"latency": 10_000})
    with connect(proxy) as s:
        start = time.monotonic()
        s.sendall(b"held")
        s.settimeout(0.2)
        with pytest.raises(socket.timeout):
            s.recv(10)
        s.settimeout(IO_TIMEOUT_S)
        proxy.destroy_toxic("latency_downstream")
        assert recv_exact(s, 4) == b"held"
        assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("stream", STREAMS)
def test_bandwidth_limits_throughput(make_proxy, stream):
    proxy = make_proxy()
    payload = os.urandom(20_000)
    assert fresh_round_trip(proxy, payload) < 0.3
    proxy.add_toxic(type="bandwidth", stream=stream, attributes={"rate": 50})   # 50 KB/s
    elapsed = fresh_round_trip(proxy, payload)        # 20 kB at 50 kB/s = 0.4 s
    assert 0.35 <= elapsed < 3.0, elapsed


@pytest.mark.parametrize("stream", STREAMS)
def test_timeout_stalls_then_closes(make_proxy, stream):
    proxy = make_proxy()
    proxy.add_toxic(type="timeout", stream=stream, attributes={"timeout": 300})
    with connect(proxy) as s:
        start = time.monotonic()
        s.sendall(b"hello")
        try:
            received = recv_until_eof(s)
        except ConnectionResetError:
            received = b""
        elapsed = time.monotonic() - start
    assert received == b""
    assert 0.25 <= elapsed < 3.0, elapsed


def test_timeout_zero_stalls_until_removed(make_proxy):
    proxy = make_proxy()
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    with connect(proxy) as s:
        s.sendall(b"first")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)
        proxy.destroy_toxic("timeout_downstream")
        s.settimeout(IO_TIMEOUT_S)
        # The echo of "first" was dropped while the toxic was active; new data flows again.
        assert round_trip(s, b"second") < 1.0


@pytest.mark.parametrize("stream", STREAMS)
def test_reset_peer_resets_connection(make_proxy, stream):
    proxy = make_proxy()
    proxy.add_toxic(type="reset_peer", stream=stream, attributes={"timeout": 150})
    with connect(proxy) as s:
        start = time.monotonic()
        s.sendall(b"hello")          # reset_peer's timer starts with the first data
        with pytest.raises(ConnectionResetError):
            recv_until_eof(s)
        elapsed = time.monotonic() - start
    assert 0.14 <= elapsed < 3.0, elapsed


def test_limit_data_downstream_closes_after_n_bytes(make_proxy):
    proxy = make_proxy()
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    payload = bytes(range(100))
    with connect(proxy) as s:
        s.sendall(payload)
        assert recv_until_eof(s) == payload[:10]


def test_limit_data_upstream_closes_after_n_bytes(make_proxy, echo):
    proxy = make_proxy()
    proxy.add_toxic(type="limit_data", stream="upstream", attributes={"bytes": 10})
    before = len(echo.finished)
    with connect(proxy) as s:
        s.sendall(bytes(100))
        got = recv_until_eof(s)           # closed; at most the 10 forwarded bytes come back
    assert len(got) <= 10
    wait_for(lambda: len(echo.finished) > before, what="upstream connection closed")
    assert echo.finished[before:] == [10]


@pytest.mark.parametrize("stream", STREAMS)
def test_slicer_delivers_every_byte(make_proxy, stream):
    proxy = make_proxy()
    payload = os.urandom(20_000)
    assert fresh_round_trip(proxy, payload) < 0.3
    # ~1000-byte slices with 20 ms between them: 20 kB takes at least ~15 gaps = 0.3 s,
    # however the kernel splits the payload into reads.
    proxy.add_toxic(type="slicer", stream=stream,
                    attributes={"average_size": 1000, "size_variation": 200, "delay": 20_000})
    elapsed = fresh_round_trip(proxy, payload)     # round_trip checks every byte came back
    assert 0.2 <= elapsed < 5.0, elapsed


@pytest.mark.parametrize("stream", STREAMS)
def test_slow_close_delays_close(make_proxy, stream):
    proxy = make_proxy()

    def time_to_close() -> float:
        with connect(proxy) as s:
            round_trip(s, b"x")
            start = time.monotonic()
            s.shutdown(socket.SHUT_WR)   # the echo server then closes its side
            assert recv_until_eof(s) == b""
            return time.monotonic() - start

    assert time_to_close() < 0.15
    proxy.add_toxic(type="slow_close", stream=stream, attributes={"delay": 300})
    elapsed = time_to_close()
    assert 0.3 - 0.005 <= elapsed < 3.0, elapsed


# --------------------------------------------------------------------------- enable/reset

def test_disable_refuses_and_enable_keeps_address(tp, make_proxy):
    proxy = make_proxy()
    listen = proxy.listen
    held = connect(proxy)
    round_trip(held)

    proxy.disable()
    assert tp.get_proxy(proxy.name).enabled is False
    assert refused(proxy)
    try:                                   # the open connection was closed too
        assert recv_until_eof(held) == b""
    except ConnectionResetError:
        pass
    held.close()

    proxy.enable()
    again = tp.get_proxy(proxy.name)
    assert again.enabled is True and again.listen == listen
    assert fresh_round_trip(proxy) < 1.0

    with proxy.down():
        assert refused(proxy)
    assert fresh_round_trip(proxy) < 1.0
    assert tp.get_proxy(proxy.name).listen == listen


def test_reset_enables_all_and_removes_toxics(tp, make_proxy):
    a, b = make_proxy(), make_proxy()
    a.add_toxic(type="latency", attributes={"latency": 500})
    b.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
    b.disable()
    assert refused(b)

    assert tp.reset() is True
    for p in (a, b):
        got = tp.get_proxy(p.name)
        assert got.enabled is True and got.listen == p.listen
        assert got.toxics() == {}
        assert fresh_round_trip(p) < 0.25


def test_unreachable_upstream_closes_client(make_proxy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = "127.0.0.1:%d" % s.getsockname()[1]   # bound, never listening: refuses
    proxy = make_proxy(upstream=dead)
    with connect(proxy) as c:
        try:
            assert recv_until_eof(c) == b""
        except ConnectionResetError:
            pass


# --------------------------------------------------------------------------- raw-HTTP-only parts

def test_populate_is_idempotent_patch_keeps_the_address_and_toxic_updates_reach_live_connections(
        server, tp, make_proxy, api, echo):
    # toxiproxy-python implements populate() client-side and has no call for POST /populate,
    # PATCH, or updating a toxic, so these use raw HTTP.
    body = [{"name": "pop-a", "listen": "127.0.0.1:0", "upstream": echo.address},
            {"name": "pop-b", "listen": "127.0.0.1:0", "upstream": echo.address}]
    r = api.post("/populate", json=body)
    assert r.status_code == 201, r.text
    first = {p["name"]: p for p in r.json()["proxies"]}
    assert set(first) == {"pop-a", "pop-b"}
    assert all(p["enabled"] and not p["listen"].endswith(":0") for p in first.values())
    assert set(tp.proxies()) == {"pop-a", "pop-b"}

    # Re-populating with the bound addresses leaves the proxies as they are.
    again = [dict(b, listen=first[b["name"]]["listen"]) for b in body]
    r = api.post("/populate", json=again)
    assert r.status_code == 201
    assert {p["name"]: p["listen"] for p in r.json()["proxies"]} == {
        n: p["listen"] for n, p in first.items()}

    r = api.post("/populate", json={"not": "a list"})
    assert r.status_code == 400 and r.json()["status"] == 400

    # PATCH /proxies/{name}: disable, then enable again on the same address.
    r = api.patch("/proxies/pop-a", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = api.patch("/proxies/pop-a", json={"enabled": True})
    assert r.json()["enabled"] is True and r.json()["listen"] == first["pop-a"]["listen"]

    # Updating a toxic changes live connections.
    proxy = make_proxy()
    proxy.add_toxic(type="latency", attributes={"latency": 300})
    with connect(proxy) as s:
        assert round_trip(s) >= 0.3 - 0.005
        r = api.patch(f"/proxies/{proxy.name}/toxics/latency_downstream",
                      json={"attributes": {"latency": 0}})
        assert r.status_code == 200, r.text
        assert r.json()["attributes"]["latency"] == 0
        assert api.get(f"/proxies/{proxy.name}/toxics/latency_downstream").json()[
            "attributes"]["latency"] == 0
        assert round_trip(s) < 0.15
    assert api.get(f"/proxies/{proxy.name}/toxics/nope").status_code == 404


def test_browsers_are_refused(server, api):
    only_chaos(server)
    # Raw HTTP: the point is the User-Agent header, which the client never sends this way.
    r = api.get("/proxies", headers={"User-Agent": "Mozilla/5.0"})
    assert r.status_code == 403


# --------------------------------------------------------------------------- seeding, CLI

def _toxicity_pattern(seed: int, echo: EchoServer) -> list[int]:
    """With limit_data(1 byte) at toxicity 0.5: bytes echoed on each of 16 connections."""
    with ProxyServer(prefer_external=False, seed=seed) as srv:
        client = Toxiproxy()
        client.update_api_consumer(srv.host, srv.port)
        proxy = client.create(upstream=echo.address, name="seeded", listen="127.0.0.1:0")
        proxy.add_toxic(type="limit_data", toxicity=0.5, attributes={"bytes": 1})
        pattern = []
        for _ in range(16):
            with connect(proxy) as s:
                s.sendall(b"abcd")
                s.shutdown(socket.SHUT_WR)
                pattern.append(len(recv_until_eof(s)))
        return pattern


def test_seed_makes_toxicity_reproducible(server, tp, echo):
    only_chaos(server)
    first = _toxicity_pattern(7, echo)
    assert set(first) == {1, 4}, first            # toxicity 0.5 hits some connections, not all
    assert _toxicity_pattern(7, echo) == first


def test_config_file_populates_at_start_and_sigterm_exits_cleanly(server, echo, tmp_path):
    only_chaos(server)
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "from-config", "listen": "127.0.0.1:0",
                                   "upstream": echo.address}]))
    srv = ProxyServer(prefer_external=False, seed=1, extra_args=["--config", str(config)])
    with srv:
        client = Toxiproxy()
        client.update_api_consumer(srv.host, srv.port)
        proxy = client.get_proxy("from-config")
        assert proxy is not None and proxy.enabled
        assert fresh_round_trip(proxy) < 1.0
    assert srv.process.returncode == 0, srv.output()


def test_proxy_command_takes_listen_and_seed_and_defaults_to_the_toxiproxy_port():
    from chaos import cli, proxy

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["proxy", "--listen", "127.0.0.1:0", "--seed", "3"])
    assert (args.chaos_command, args.listen, args.seed) == ("proxy", "127.0.0.1:0", 3)
    assert args.chaos_func is proxy.run
    assert parser.parse_args(["proxy"]).listen == "127.0.0.1:8474"


def test_the_harness_api_takes_a_link_down_and_poisons_it_on_every_proxy_of_the_link(
        server, make_proxy):
    """A router -> node link has two proxies (gRPC, and search frames: chaos/topology.py
    search_proxy); a fault the nemesis puts on the link must hit both, or searches would
    bypass a partition."""
    from chaos.harness import ToxiproxyApi
    link, search, other = make_proxy(), make_proxy(), make_proxy()
    api = ToxiproxyApi(server.api_url, companions={link.name: [search.name]})

    def state(proxy: Proxy) -> tuple[bool, list[str]]:
        listed = api.proxies()[proxy.name]
        return listed["enabled"], sorted(t["name"] for t in listed["toxics"])

    api.set_enabled(link.name, False)
    assert state(link)[0] is False and state(search)[0] is False and state(other)[0] is True
    assert refused(search)
    api.set_enabled(link.name, True)
    assert state(link)[0] is True and state(search)[0] is True
    api.add_toxic(link.name, {"name": "slow", "type": "latency", "stream": "downstream",
                              "toxicity": 1.0, "attributes": {"latency": 50}})
    assert state(link)[1] == state(search)[1] == ["slow"] and state(other)[1] == []
    api.remove_toxic(link.name, "slow")
    assert state(link)[1] == state(search)[1] == []
