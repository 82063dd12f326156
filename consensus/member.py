"""One member of the metadata Raft group (`tributary meta`).

The pysyncobj object owns the replicated state; its single `@replicated` method only decodes the
command and calls the pure `state.apply`. A gRPC server beside it serves the internal Meta API
(proto/meta.proto) to routers and nodes. Node liveness is soft state kept by the leader in memory,
because heartbeats would otherwise fill the Raft log. A new leader counts a node live only once it
has itself received a heartbeat from it, so health never reports a node that is not serving.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from concurrent import futures

import grpc
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.syncobj import SyncObjException

from consensus import commands, state as meta_state
from proto import meta_pb2, meta_pb2_grpc
from tributary import cluster_auth, faults, limits
from tributary.netaddr import is_loopback  # noqa: F401 - re-exported for callers
from tributary.errors import InvalidArgument, NotLeader, TributaryError, Unavailable

log = logging.getLogger("tributary.meta")


class MetaStateMachine(SyncObj):
    def __init__(self, self_raft: str, partner_raft: list[str], data_dir: str,
                 password: str | None, raft_bind: str | None = None):
        os.makedirs(data_dir, exist_ok=True)
        conf = SyncObjConf(
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=os.path.join(data_dir, "raft.dump"),
            password=password,
            # The address peers know this member by may be a proxy's (chaos tests) or a
            # Service's; it binds raft_bind then.
            bindAddress=raft_bind,
            dynamicMembershipChange=False,
            commandsWaitLeader=True,
            # Send each command at once instead of batching it into the next append-entries
            # period (100 ms), which would put ~100 ms on every catalog write and 2PC decision.
            appendEntriesUseBatch=False,
            # A leader cut off from its quorum steps down after this long (pysyncobj's default
            # is 30 s, during which an isolated leader still answered is_leader=True).
            leaderFallbackTimeout=3.0,
            raftMinTimeout=0.4,
            raftMaxTimeout=1.2,
            connectionTimeout=3.5,
            logCompactionMinEntries=10_000,
            logCompactionMinTime=600,
            # In Kubernetes a rescheduled member keeps its DNS name but not its IP; pysyncobj's
            # default 10-minute DNS cache would keep peers dialing the old address.
            dnsCacheTime=5.0,
            dnsFailCacheTime=2.0,
            # The fork-based dump would copy the gRPC server's threads' state; keep it in-process.
            useFork=False,
        )
        super().__init__(self_raft, partner_raft, conf)
        # Set after SyncObj.__init__ so pysyncobj includes it in its full dump.
        self.meta = meta_state.MetaState()

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
        self.meta, result = meta_state.apply(self.meta, command)
        return json.dumps({**result, "version": self.meta.version})

    def propose(self, command_json: str, timeout_s: float) -> str:
        try:
            return self._apply_command(command_json, sync=True, timeout=timeout_s)
        except SyncObjException as exc:
            raise Unavailable(f"metadata group could not commit the command: {exc.errorCode}")


class MetaService(meta_pb2_grpc.MetaServicer):
    def __init__(self, machine: MetaStateMachine, raft_to_grpc: dict[str, str]):
        self.machine = machine
        self.raft_to_grpc = raft_to_grpc
        self.last_seen: dict[str, float] = {}
        self.lock = threading.Lock()

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
                self.machine.propose(commands.encode(commands.Barrier(at_ms=0)),
                                     limits.meta_rpc_timeout_ms / 1000)
            current = self.machine.meta
            if current.version == request.known_version and request.known_version > 0:
                return meta_pb2.GetStateResponse(version=current.version, unchanged=True)
            return meta_pb2.GetStateResponse(version=current.version,
                                             state_json=json.dumps(meta_state.to_doc(current)))
        return self._guard(context, run)

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
        now = time.monotonic()
        timeout_s = limits.node_liveness_timeout_ms / 1000
        with self.lock:
            return sorted(n for n in self.machine.meta.nodes
                          if now - self.last_seen.get(n, -1e18) < timeout_s)

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
            commit_index=int(status.get("commit_idx", 0)))

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
    parser.add_argument("--password", default=os.environ.get("TRIBUTARY_META_PASSWORD"),
                        help="Raft transport password; required off loopback "
                             "(env TRIBUTARY_META_PASSWORD)")
    cluster_auth.add_argument(parser)


def run(args: argparse.Namespace) -> None:
    peers = [_parse_peer(p) for p in args.peer]
    addresses = [args.raft] + [raft for raft, _ in peers] + (
        [args.raft_bind] if args.raft_bind else [])
    if not args.password and not all(is_loopback(a) for a in addresses):
        # pysyncobj unpickles whatever reaches its port; off loopback only a password stops that.
        raise SystemExit("refusing to start: a meta member binds or talks to a non-loopback "
                         "address and no --password (TRIBUTARY_META_PASSWORD) is set")
    token = cluster_auth.load(args.cluster_secret_file)
    raft_to_grpc = {args.raft: args.grpc, **dict(peers)}
    machine = MetaStateMachine(args.raft, [raft for raft, _ in peers], args.data_dir,
                               args.password or None, args.raft_bind)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        interceptors=[cluster_auth.ServerInterceptor(token)] if token else None, options=[
            ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
            ("grpc.max_send_message_length", limits.grpc_message_bytes_max)])
    meta_pb2_grpc.add_MetaServicer_to_server(MetaService(machine, raft_to_grpc), server)
    if server.add_insecure_port(args.grpc) == 0:
        raise SystemExit(f"cannot bind meta gRPC address {args.grpc}")
    server.start()
    log.info("meta member raft=%s grpc=%s peers=%s internal auth %s", args.raft, args.grpc,
             args.peer, "on" if token else "off")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    machine.destroy()
