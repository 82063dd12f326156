"""One member of the metadata Raft group (`tributary meta`).

The pysyncobj object owns the replicated state; its single `@replicated` method only decodes the
command and calls the pure `state.apply`. A gRPC server beside it serves the internal Meta API
(proto/meta.proto) to routers and nodes. Node liveness is soft state kept by the leader in memory,
because heartbeats would otherwise fill the Raft log. A new leader counts every registered node
live for one liveness period (it has not had the time to hear from them), then only those it has
heard from.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import threading
import time
from concurrent import futures

import grpc
import pysyncobj.syncobj
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import SyncObjException

from consensus import commands, state as meta_state, watch
from consensus import metrics as meta_metrics
from consensus.failover import FailoverController
from proto import meta_pb2, meta_pb2_grpc
from tributary import cluster_auth, faults, limits, tracing
from tributary.netaddr import is_loopback  # noqa: F401 - re-exported for callers
from tributary.errors import InvalidArgument, NotLeader, TributaryError, Unavailable

log = logging.getLogger("tributary.meta")


SNAPSHOT_FORMAT = "tributary-meta-snapshot"
SNAPSHOT_VERSION = 1
_GZIP_MAGIC = b"\x1f\x8b"


class MetaStateMachine(SyncObj):
    def __init__(self, self_raft: str, partner_raft: list[str], data_dir: str,
                 password: str | None, raft_bind: str | None = None):
        os.makedirs(data_dir, exist_ok=True)
        # Set before SyncObj.__init__: pysyncobj loads a snapshot from its own thread soon after
        # it starts, through _load_snapshot, which replaces this.
        self.meta = meta_state.MetaState()
        # The changes of recent catalog revisions, streamed by Watch.
        self.history = watch.WatchHistory(limits.watch_history_revisions_max)
        # When this member last became leader (monotonic), None while it is not.
        self.leading_since: float | None = None
        # Set when the member stops: waits on the group give up at once instead of holding the
        # server's threads (and the process's exit) until their deadline.
        self.stopping = threading.Event()
        # A pickled snapshot is read only from this member's own disk at start-up, never from
        # one that arrives over the Raft port later.
        self._legacy_snapshot_allowed = _starts_with(os.path.join(data_dir, "raft.dump"),
                                                     _GZIP_MAGIC)
        conf = SyncObjConf(
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=os.path.join(data_dir, "raft.dump"),
            # Snapshots are JSON through to_doc/from_doc, never pickles: a snapshot also travels
            # to followers that fell behind, and must not be code.
            serializer=self._write_snapshot,
            deserializer=self._load_snapshot,
            password=password,
            # The address peers know this member by may be a proxy's (chaos tests) or a
            # Service's; it binds raft_bind then.
            bindAddress=raft_bind,
            dynamicMembershipChange=False,
            commandsWaitLeader=True,
            # Send each command at once instead of batching it into the next append-entries
            # period (100 ms), which would put ~100 ms on every catalog write and 2PC decision.
            appendEntriesUseBatch=False,
            # Timings from tributary/limits.py (meta_*), which says why each is what it is.
            leaderFallbackTimeout=limits.meta_leader_fallback_ms / 1000,
            raftMinTimeout=limits.meta_election_timeout_min_ms / 1000,
            raftMaxTimeout=limits.meta_election_timeout_max_ms / 1000,
            connectionTimeout=limits.meta_connect_timeout_ms / 1000,
            logCompactionMinEntries=limits.meta_log_compaction_entries_min,
            logCompactionMinTime=limits.meta_log_compaction_interval_min_ms / 1000,
            dnsCacheTime=limits.meta_dns_cache_ms / 1000,
            dnsFailCacheTime=limits.meta_dns_fail_cache_ms / 1000,
            # The fork-based dump would copy the gRPC server's threads' state; keep it in-process
            # (the serializer then runs on pysyncobj's thread, between two applied commands, so
            # self.meta is exactly the state at the snapshot's last entry).
            useFork=False,
            onStateChanged=self._on_raft_state,
        )
        super().__init__(self_raft, partner_raft, conf)

    def _on_raft_state(self, old: int, new: int) -> None:
        # pysyncobj's state numbers: 2 is leader.
        self.leading_since = time.monotonic() if new == 2 else None

    def _write_snapshot(self, path: str, raft_data: tuple) -> None:
        """pysyncobj's custom serializer: raft_data is (last applied entry, the one before it,
        the cluster's nodes); entries are (command bytes, index, term)."""
        last, before, cluster = raft_data
        doc = {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION,
               "meta": meta_state.to_doc(self.meta),
               "entries": [_entry_to_doc(last), _entry_to_doc(before)],
               "cluster": sorted(getattr(n, "address", str(n)) for n in cluster)}
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())

    def _load_snapshot(self, path: str) -> tuple:
        """pysyncobj's custom deserializer; also reads, once, a snapshot in the pickled format
        that members wrote before snapshots were JSON (a local file this member wrote itself),
        after which the next compaction writes JSON."""
        with open(path, "rb") as handle:
            raw = handle.read()
        legacy_allowed, self._legacy_snapshot_allowed = self._legacy_snapshot_allowed, False
        if raw[:2] == _GZIP_MAGIC:
            if not legacy_allowed:
                raise ValueError("refusing a pickled snapshot received from a peer")
            return self._load_legacy_snapshot(raw)
        doc = json.loads(raw)
        if doc.get("format") != SNAPSHOT_FORMAT or doc.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"{path} is not a version-{SNAPSHOT_VERSION} meta snapshot")
        self.meta = meta_state.from_doc(doc["meta"])
        self.history.reset(self.meta.version)
        last, before = (_entry_from_doc(e) for e in doc["entries"])
        return last, before, {TCPNode(address) for address in doc["cluster"]}

    def _load_legacy_snapshot(self, raw: bytes) -> tuple:
        import gzip
        import pickle  # noqa: S403 - only our own pre-JSON snapshot file, read once on upgrade

        own, last, before, cluster = pickle.loads(gzip.decompress(raw))  # noqa: S301
        legacy = own.get("meta") if isinstance(own, dict) else None
        if legacy is not None:
            # Through the document form, so the state is of today's types.
            self.meta = meta_state.from_doc(meta_state.to_doc(legacy))
            self.history.reset(self.meta.version)
        self.forceLogCompaction()
        log.warning("read a pickled meta snapshot from disk; rewriting it as JSON")
        return last, before, cluster

    @replicated
    def _apply_command(self, command_json: str) -> str:
        # The one replicated entry point: decode, then the pure transition. No other logic.
        try:
            command = commands.decode(command_json)
        except commands.CommandDecodeError as exc:
            return json.dumps({"error": {"type": "InvalidArgument", "message": str(exc)}})
        if isinstance(command, commands.DecideTxn) and self._isLeader():
            # Test-only crash point: the leader dies while applying a 2PC decision.
            faults.crash_point(faults.META_LEADER_ON_DECIDE)
        before = self.meta
        self.meta, result = meta_state.apply(before, command)
        if self.meta.version != before.version:
            self.history.record(self.meta.version, watch.catalog_changes(before, self.meta))
        named = command.command if isinstance(command, commands.Requested) else command
        meta_metrics.APPLIED_COMMANDS.labels(type(named).__name__).inc()
        return json.dumps({**result, "version": self.meta.version})

    def read_index(self, timeout_s: float) -> int:
        """Confirms, without appending to the log, that this member still leads, and returns the
        applied index a linearizable read may answer from (Raft thesis 6.4, ReadIndex).

        The commit index at the call is the read index. Leadership is confirmed when a majority
        (this member included) has answered an append-entries after the call started: a
        follower answers only a leader of its current term, so no later leader can have
        committed anything before that moment. This member's no-op of its term must be applied
        first, or its commit index may lag writes an earlier leader acknowledged. Then it waits
        until its state machine has applied the read index. Raises NotLeader or Unavailable."""
        deadline = time.monotonic() + timeout_s
        # On pysyncobj's clock, which stamps the responses below: CLOCK_MONOTONIC_RAW, not
        # time.monotonic's CLOCK_MONOTONIC. The two drift apart (NTP slews one only; 0.3 s
        # after a few hours here). Measured on time.monotonic, a read waited out the offset
        # (~0.4 s per read here, every read past its deadline once the offset passes it) where
        # RAW lags, and counted answers from before the call where RAW leads: not linearizable.
        started = pysyncobj.syncobj.monotonicTime()

        def pause(late: str) -> None:
            if self.stopping.is_set():
                raise Unavailable("this meta member is stopping")
            if time.monotonic() > deadline:
                raise Unavailable(late)
            self.stopping.wait(limits.meta_read_index_poll_ms / 1000)

        while True:
            if not self._isLeader():
                raise NotLeader("not the leader")
            noop = self._SyncObj__noopIDx
            if noop is not None and self.raftLastApplied >= noop:
                break
            pause("the new meta leader has not applied its first entry yet")
        read_index = self.raftCommitIndex
        # Ask for the next append-entries round now instead of at the next heartbeat period.
        self._SyncObj__newAppendEntriesTime = 0
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()
        while True:
            others = list(self._SyncObj__otherNodes)
            responses = dict(self._SyncObj__lastResponseTime)
            confirmed = 1 + sum(1 for n in others if responses.get(n, 0) > started)
            if confirmed > (len(others) + 1) / 2:
                break
            if not self._isLeader():
                raise NotLeader("lost leadership while confirming a read")
            pause("a quorum did not confirm this meta leader in time")
        while self.raftLastApplied < read_index:
            pause("the meta leader did not apply its read index in time")
        return read_index

    def propose(self, command_json: str, timeout_s: float) -> str:
        kind = meta_metrics.command_type(command_json)
        started = time.perf_counter()
        with tracing.span("raft.propose", {"raft.command": kind}):
            try:
                result = self._committed(command_json, timeout_s)
            except SyncObjException as exc:
                meta_metrics.PROPOSAL_ERRORS.labels(kind).inc()
                raise Unavailable(f"metadata group could not commit the command: "
                                  f"{exc.errorCode}")
        meta_metrics.PROPOSAL_SECONDS.labels(kind).observe(time.perf_counter() - started)
        return result

    def _committed(self, command_json: str, timeout_s: float) -> str:
        """pysyncobj's `sync=True` apply, except that it gives up as soon as the member stops
        (the wait would otherwise hold a server thread, and so the process's exit, for up to
        timeout_s once the peers are gone). Raises SyncObjException as `sync=True` does, and
        Unavailable when the member stops; the command may still commit then, as after a
        timeout."""
        done = threading.Event()
        outcome: list = []

        def on_result(result, error) -> None:
            outcome.append((result, error))
            done.set()

        self._apply_command(command_json, callback=on_result)
        deadline = time.monotonic() + timeout_s
        while not done.wait(limits.meta_stop_poll_ms / 1000):
            if self.stopping.is_set():
                raise Unavailable("this meta member is stopping")
            if time.monotonic() > deadline:
                raise SyncObjException("Timeout")
        result, error = outcome[0]
        if error != FAIL_REASON.SUCCESS:
            raise SyncObjException(error)
        return result


class MetaService(meta_pb2_grpc.MetaServicer):
    def __init__(self, machine: MetaStateMachine, raft_to_grpc: dict[str, str],
                 self_raft: str = ""):
        self.machine = machine
        self.self_raft = self_raft
        self.raft_to_grpc = raft_to_grpc
        self.last_seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.watch_slots = threading.Semaphore(limits.meta_watch_streams_max)
        self.snapshot_lock = threading.Lock()
        self.snapshot_cache: tuple[int, str] | None = None
        self.stopping = machine.stopping

    def _guard(self, context, fn):
        try:
            return fn()
        except TributaryError as exc:
            context.abort(exc.grpc_code, exc.to_wire())

    def _leader(self) -> str | None:
        leader = self.machine._getLeader()
        return None if leader is None else getattr(leader, "address", str(leader))

    def _require_leader(self) -> None:
        if not self.machine._isLeader():
            leader = self._leader()
            raise NotLeader(f"not the leader; leader is "
                            f"{self.raft_to_grpc.get(leader or '', 'unknown')}")

    def Propose(self, request, context):
        def run():
            timeout_s = limits.meta_rpc_timeout_ms / 1000
            result = self.machine.propose(request.command_json, timeout_s)
            return meta_pb2.ProposeResponse(result_json=result,
                                            version=self.machine.meta.version)
        return self._guard(context, run)

    def GetState(self, request, context):
        def run():
            self._require_leader()
            if request.linearizable:
                # A ReadIndex confirmation, not a log entry: reads never write.
                self.machine.read_index(limits.meta_rpc_timeout_ms / 1000)
            current = self.machine.meta
            extras = {}
            if request.include_txns:
                # Only the bookkeeping sections: the catalog may hold 10,000 datasets.
                bookkeeping = meta_state.to_doc(meta_state.MetaState(
                    txns=current.txns, txn_tombstones=current.txn_tombstones))
                extras["txns_json"] = json.dumps({section: bookkeeping[section]
                                                  for section in ("txns", "txn_tombstones")})
            if request.idempotency_key:
                record = current.idempotency.get(request.idempotency_key)
                extras["idempotency_json"] = "" if record is None else json.dumps(
                    meta_state.to_doc(meta_state.MetaState(idempotency={
                        record.key: record}))["idempotency"][record.key])
            if request.revision_only:
                return meta_pb2.GetStateResponse(version=current.version, unchanged=True,
                                                 **extras)
            if current.version == request.known_version and request.known_version > 0 \
                    and not extras:
                return meta_pb2.GetStateResponse(version=current.version, unchanged=True)
            return meta_pb2.GetStateResponse(version=current.version,
                                             state_json=json.dumps(meta_state.to_doc(current)),
                                             **extras)
        return self._guard(context, run)

    def Watch(self, request, context):
        """Streams the catalog from request.from_revision (see proto/meta.proto). Any member
        serves it, from its own applied state; each stream holds one server thread, so at most
        meta_watch_streams_max run at once."""
        if not self.watch_slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          "too many catalog watches on this meta member")
        try:
            history = self.machine.history
            revision = request.from_revision
            if revision <= 0:
                revision, snapshot_json = self._snapshot_json()
                yield meta_pb2.WatchEvent(revision=revision, kind="snapshot",
                                          snapshot_json=snapshot_json)
            wait_s = limits.watch_progress_interval_ms / 1000
            while context.is_active() and not self.stopping.is_set():
                try:
                    batch = history.after(revision, wait_s)
                except watch.Compacted as exc:
                    yield meta_pb2.WatchEvent(revision=history.revision, kind="compacted",
                                              compact_revision=exc.oldest)
                    return
                if not batch:
                    yield meta_pb2.WatchEvent(revision=history.revision, kind="progress")
                for at, changes in batch:
                    yield meta_pb2.WatchEvent(revision=at, kind="changes",
                                              changes_json=json.dumps(changes))
                    revision = at
        finally:
            self.watch_slots.release()

    def _snapshot_json(self) -> tuple[int, str]:
        """The catalog document at the current revision, written once per revision however
        many watchers ask for it (20 routers reconnecting at once cost one serialization)."""
        with self.snapshot_lock:
            current = self.machine.meta
            cached = self.snapshot_cache
            if cached is None or cached[0] != current.version:
                cached = self.snapshot_cache = (current.version,
                                                json.dumps(watch.catalog_doc(current)))
            return cached

    def Heartbeat(self, request, context):
        def run():
            self._require_leader()
            if request.node_id not in self.machine.meta.nodes:
                raise InvalidArgument(f"node '{request.node_id}' is not registered")
            with self.lock:
                self.last_seen[request.node_id] = time.monotonic()
            return meta_pb2.HeartbeatResponse(version=self.machine.meta.version)
        return self._guard(context, run)

    def live_nodes(self) -> list[str]:
        """Nodes heard from within node_liveness_timeout_ms. A leader that has led for less
        than that has not had the time to hear from every node, so until then it counts every
        registered node it has not heard from as live, as the leader before it most likely
        did: an empty list would refuse every catalog write for a liveness period."""
        now = time.monotonic()
        timeout_s = limits.node_liveness_timeout_ms / 1000
        since = self.machine.leading_since
        new_leader = since is not None and now - since < timeout_s
        with self.lock:
            return sorted(n for n in self.machine.meta.nodes
                          if now - self.last_seen.get(n, -1e18) < timeout_s
                          or (new_leader and n not in self.last_seen))

    def Status(self, request, context):
        is_leader = self.machine._isLeader()
        if not is_leader:
            # Heartbeats seen in an earlier term must not vouch for nodes in a later one.
            with self.lock:
                self.last_seen.clear()
        leader = self._leader()
        status = self.machine.getStatus()
        return meta_pb2.MetaStatusResponse(
            has_leader=leader is not None, is_leader=is_leader,
            leader_raft_address=leader or "",
            leader_grpc_address=self.raft_to_grpc.get(leader or "", ""),
            version=self.machine.meta.version,
            registered_nodes=sorted(self.machine.meta.nodes),
            live_nodes=self.live_nodes() if is_leader else [],
            raft_term=int(status.get("raft_term", 0)),
            commit_index=int(status.get("commit_idx", 0)),
            self_raft_address=self.self_raft)

    def RouterHeartbeat(self, request, context):
        """Router liveness (soft state, leader only): the count of routers heard from recently,
        which each router divides tenant rate limits by."""
        def run():
            now = time.monotonic()
            with self.lock:
                if not self.machine._isLeader():
                    # Forget what an earlier term saw; count afresh once leader.
                    self.__dict__["router_seen"] = {}
                    self.__dict__["router_leading_since"] = None
                    raise NotLeader("not the leader")
                seen = self.__dict__.setdefault("router_seen", {})
                if self.__dict__.get("router_leading_since") is None:
                    self.__dict__["router_leading_since"] = now
                if request.router_id:
                    seen[request.router_id] = now
                timeout_s = limits.router_liveness_timeout_ms / 1000
                for router_id in [r for r, at in seen.items() if now - at >= timeout_s]:
                    del seen[router_id]
                settled = now - self.__dict__["router_leading_since"] >= timeout_s
                return meta_pb2.RouterHeartbeatResponse(live_routers=max(1, len(seen)),
                                                        settled=settled)
        return self._guard(context, run)


def _starts_with(path: str, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(prefix)) == prefix
    except OSError:
        return False


def _entry_to_doc(entry: tuple) -> list:
    command, index, term = entry
    return [base64.b64encode(command).decode("ascii"), int(index), int(term)]


def _entry_from_doc(doc: list) -> tuple:
    return base64.b64decode(doc[0]), int(doc[1]), int(doc[2])


def _parse_peer(text: str) -> tuple[str, str]:
    raft, sep, grpc_addr = text.partition("=")
    if not sep or not raft or not grpc_addr:
        raise SystemExit(f"--peer must look like RAFT_HOST:PORT=GRPC_HOST:PORT, got '{text}'")
    return raft, grpc_addr


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raft", required=True, help="this member's Raft address host:port")
    parser.add_argument("--raft-bind", default=None,
                        help="address to bind for Raft when peers reach this member through "
                             "another address (a proxy); default: --raft")
    parser.add_argument("--grpc", required=True, help="this member's internal gRPC address")
    parser.add_argument("--peer", action="append", default=[],
                        help="another member as RAFT=GRPC; repeat per member")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--metrics", default=None,
                        help="serve Prometheus /metrics on this host:port (consensus/metrics.py)")
    parser.add_argument("--password", default=os.environ.get("TRIBUTARY_META_PASSWORD"),
                        help="Raft transport password (env TRIBUTARY_META_PASSWORD); prefer "
                             "--password-file, which keeps it out of the process list")
    parser.add_argument("--password-file", default=os.environ.get("TRIBUTARY_META_PASSWORD_FILE"),
                        help="file holding the Raft transport password (env "
                             "TRIBUTARY_META_PASSWORD_FILE). One of the two is required unless "
                             "--insecure-dev")
    cluster_auth.add_argument(parser)


def raft_password(args: argparse.Namespace) -> str | None:
    """The Raft transport password. pysyncobj unpickles every frame that reaches its port; with a
    password its frames are Fernet tokens (AES + HMAC-SHA256), and a frame whose HMAC does not
    verify is dropped, with its connection, before anything is unpickled. So a member never runs
    without one, whatever the address, unless --insecure-dev."""
    password = args.password
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as handle:
                password = handle.read().strip()
        except OSError as exc:
            raise SystemExit(f"cannot read the Raft password file {args.password_file}: "
                             f"{exc.strerror}") from None
    if password:
        if len(password) < limits.raft_password_chars_min:
            raise SystemExit(f"the Raft password must be at least "
                             f"{limits.raft_password_chars_min} characters")
        return password
    if getattr(args, "insecure_dev", False):
        return None
    raise SystemExit("refusing to start the meta member: no Raft password (--password-file, "
                     "TRIBUTARY_META_PASSWORD_FILE or TRIBUTARY_META_PASSWORD); without one any "
                     "process that reaches the Raft port can run code in this member. "
                     "`tributary up` creates one; --insecure-dev runs without, for local "
                     "development only")


def run(args: argparse.Namespace) -> None:
    peers = [_parse_peer(p) for p in args.peer]
    addresses = [args.raft] + [raft for raft, _ in peers] + (
        [args.raft_bind] if args.raft_bind else [])
    password = raft_password(args)
    if password is None and not all(is_loopback(a) for a in addresses):
        # Even --insecure-dev stays on loopback: off it, anyone on the network could run code.
        raise SystemExit("refusing to start: --insecure-dev with a non-loopback Raft address; "
                         "set a Raft password (--password-file)")
    token = cluster_auth.require(args, "meta member")
    raft_to_grpc = {args.raft: args.grpc, **dict(peers)}
    machine = MetaStateMachine(args.raft, [raft for raft, _ in peers], args.data_dir,
                               password, args.raft_bind)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=limits.meta_grpc_threads_max + limits.meta_watch_streams_max),
        interceptors=[tracing.ServerInterceptor()]
        + ([cluster_auth.ServerInterceptor(token)] if token else []), options=[
            ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
            ("grpc.max_send_message_length", limits.grpc_message_bytes_max)])
    service = MetaService(machine, raft_to_grpc, args.raft)
    meta_pb2_grpc.add_MetaServicer_to_server(service, server)
    if server.add_insecure_port(args.grpc) == 0:
        raise SystemExit(f"cannot bind meta gRPC address {args.grpc}")
    server.start()
    failover = FailoverController(machine, service)
    failover.start()
    leader_watch = meta_metrics.install(machine, args.metrics)
    log.info("meta member raft=%s grpc=%s peers=%s internal auth %s", args.raft, args.grpc,
             args.peer, "on" if token else "off")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    machine.stopping.set()     # service.stopping too: the same event
    server.stop(grace=limits.meta_stop_grace_ms / 1000).wait()
    failover.stop()
    leader_watch.stop()
    machine.destroy()
