"""The internal API routers and nodes use to read and change metadata.

`MetaClient` talks to whichever member leads, rotating through the configured members on
NotLeader or an unreachable member until its deadline. `CatalogCache` keeps the last state it saw
with its version, refreshes it in the background, and refreshes on demand when a node reports a
stale epoch or a name is missing (so a dataset created through another router is found).
"""

from __future__ import annotations

import asyncio
import logging
import dataclasses
import json
import time
import uuid
from typing import Any

import grpc

from consensus import commands, state as meta_state, watch
from proto import meta_pb2
from tributary import errors, limits
from tributary import cluster_auth
from tributary.cluster_auth import ClusterToken
from tributary.grpc_options import internal_channel_options

log = logging.getLogger("tributary.meta.client")


class MetaClient:
    def __init__(self, addresses: list[str], token: ClusterToken | None = None):
        if not addresses:
            raise ValueError("at least one meta address is required")
        self.addresses = list(addresses)
        self._channels = {a: grpc.aio.insecure_channel(a, options=internal_channel_options())
                          for a in self.addresses}
        service = meta_pb2.DESCRIPTOR.services_by_name["Meta"]
        self._stubs = {a: cluster_auth.stub(service, ch, token)
                       for a, ch in self._channels.items()}
        self._preferred = 0
        self.last_revision = 0
        # Members that missed a deadline recently, until when (monotonic seconds).
        self._suspect_until: dict[str, float] = {}

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def _call(self, method: str, request: Any, timeout_s: float | None = None) -> Any:
        """Calls `method` on the member that leads, within timeout_s overall.

        Each attempt has meta_member_deadline_ms. A member that misses it, or cannot be
        reached, is suspect for meta_member_suspect_ms, and the leader is then looked for among
        the others in parallel (Status), so a hung (SIGSTOPped) leader costs one member deadline,
        not the whole call. NotLeader also starts that search."""
        deadline = time.monotonic() + (timeout_s or limits.meta_rpc_timeout_ms / 1000 * 2)
        last: errors.TributaryError | None = None
        while time.monotonic() < deadline:
            address = self.addresses[self._preferred]
            if self._suspect_until.get(address, 0) > time.monotonic():
                found = await self._find_leader(deadline)
                address = found or address
            remaining = max(0.05, deadline - time.monotonic())
            try:
                response = await getattr(self._stubs[address], method)(
                    request, timeout=min(remaining, limits.meta_member_deadline_ms / 1000))
                self._suspect_until.pop(address, None)
                return response
            except grpc.aio.AioRpcError as exc:
                last = errors.from_wire(exc.code(), exc.details())
                if not last.retriable:
                    raise last from None
                if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.UNAVAILABLE):
                    self._suspect_until[address] = (time.monotonic()
                                                    + limits.meta_member_suspect_ms / 1000)
            found = await self._find_leader(deadline, exclude=address)
            if found is None:
                await asyncio.sleep(limits.meta_client_round_pause_ms / 1000)
        raise errors.Unavailable(f"metadata group unavailable: {last.message if last else 'timeout'}")

    async def _find_leader(self, deadline: float, exclude: str = "") -> str | None:
        """Asks every member but `exclude` and the suspects, in parallel, who leads; prefers the
        one that says it does. Returns its address (and prefers it from now on), or None."""
        now = time.monotonic()
        candidates = [a for a in self.addresses
                      if a != exclude and self._suspect_until.get(a, 0) <= now] or \
            [a for a in self.addresses if a != exclude] or list(self.addresses)
        timeout = max(0.05, min(deadline - now, limits.meta_status_timeout_ms / 1000))

        async def ask(address: str):
            try:
                return address, await self._stubs[address].Status(meta_pb2.MetaStatusRequest(),
                                                                   timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._suspect_until[address] = (time.monotonic()
                                                    + limits.meta_member_suspect_ms / 1000)
                return address, None

        pending = {asyncio.ensure_future(ask(a)) for a in candidates}
        named: str | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    address, status = task.result()
                    if status is None:
                        continue
                    if status.is_leader:
                        self._preferred = self.addresses.index(address)
                        return address
                    if status.leader_grpc_address in self.addresses:
                        named = status.leader_grpc_address
        finally:
            for task in pending:
                task.cancel()
        if named is not None and self._suspect_until.get(named, 0) <= time.monotonic():
            self._preferred = self.addresses.index(named)
            return named
        return None

    async def propose(self, command: Any) -> dict[str, Any]:
        """Commits one command; raises the TributaryError the state machine refused it with.

        `_call` proposes again when an attempt's answer is lost (a deadline, a leader change),
        and the lost attempt may have committed. An operator's command (commands.ANSWERED_ONCE)
        therefore goes out named by a fresh request id, the same in every attempt, and the
        state machine answers a repeat as it answered the first."""
        if isinstance(command, commands.ANSWERED_ONCE):
            command = commands.Requested(uuid.uuid4().hex, command.at_ms, command)
        response = await self._call("Propose", meta_pb2.ProposeRequest(
            command_json=commands.encode(command)))
        result = json.loads(response.result_json)
        # The catalog revision this client's own writes reached, for read-your-writes through
        # a watched catalog (CatalogCache.refresh).
        self.last_revision = max(self.last_revision, int(result.get("version", 0)))
        if "error" in result:
            err = result["error"]
            raise errors.from_wire(grpc.StatusCode.UNKNOWN, json.dumps(err))
        return result

    async def get_state(self, known_version: int = 0, linearizable: bool = False
                        ) -> meta_state.MetaState | None:
        """Returns the state, or None when it is unchanged since known_version."""
        response = await self._call("GetState", meta_pb2.GetStateRequest(
            known_version=known_version, linearizable=linearizable))
        if response.unchanged:
            return None
        return meta_state.from_doc(json.loads(response.state_json))

    async def read_revision(self, include_txns: bool = False, idempotency_key: str = ""
                            ) -> meta_pb2.GetStateResponse:
        """A linearizable read (ReadIndex on the leader, no log entry) of the catalog revision
        only, with the 2PC bookkeeping and an idempotency record when asked for."""
        return await self._call("GetState", meta_pb2.GetStateRequest(
            linearizable=True, revision_only=True, include_txns=include_txns,
            idempotency_key=idempotency_key))

    async def idempotency_record(self, key: str) -> meta_state.IdempotencyRecord | None:
        """The committed batch recorded under `key`, read linearizably, or None."""
        response = await self.read_revision(idempotency_key=key)
        if not response.idempotency_json:
            return None
        return meta_state.IdempotencyRecord(**json.loads(response.idempotency_json))

    def watch_call(self, from_revision: int):
        """Opens a Watch stream on the member this client prefers (the leader, once known)."""
        address = self.addresses[self._preferred]
        return address, self._stubs[address].Watch(meta_pb2.WatchRequest(
            from_revision=from_revision))

    def avoid(self, address: str) -> None:
        """Marks a member suspect (a watch on it went silent) and prefers the next one."""
        self._suspect_until[address] = time.monotonic() + limits.meta_member_suspect_ms / 1000
        if self.addresses[self._preferred] == address and len(self.addresses) > 1:
            self._preferred = (self._preferred + 1) % len(self.addresses)

    async def heartbeat(self, node_id: str, address: str) -> int:
        response = await self._call("Heartbeat", meta_pb2.HeartbeatRequest(
            node_id=node_id, address=address), timeout_s=limits.node_heartbeat_interval_ms / 1000 * 4)
        return response.version

    async def router_heartbeat(self, router_id: str) -> meta_pb2.RouterHeartbeatResponse:
        """Tells the leader this router is alive; answers how many routers are."""
        return await self._call("RouterHeartbeat", meta_pb2.RouterHeartbeatRequest(
            router_id=router_id), timeout_s=limits.router_heartbeat_interval_ms / 1000 * 2)

    async def leader_status(self, timeout_s: float = limits.meta_leader_status_timeout_ms / 1000
                            ) -> meta_pb2.MetaStatusResponse:
        """Status as the leader sees it; raises Unavailable when no member leads. Every member
        is asked at once, so a hung one costs nothing while another leads."""
        deadline = time.monotonic() + timeout_s

        async def ask(address: str):
            try:
                return await self._stubs[address].Status(
                    meta_pb2.MetaStatusRequest(), timeout=limits.meta_status_timeout_ms / 1000)
            except grpc.aio.AioRpcError:
                return None

        while time.monotonic() < deadline:
            pending = {asyncio.ensure_future(ask(a)) for a in self.addresses}
            try:
                while pending:
                    done, pending = await asyncio.wait(pending,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        status = task.result()
                        if status is not None and status.is_leader:
                            self._preferred = self.addresses.index(
                                next((a for a in self.addresses
                                      if a == status.leader_grpc_address),
                                     self.addresses[self._preferred]))
                            return status
            finally:
                for task in pending:
                    task.cancel()
            await asyncio.sleep(limits.meta_client_round_pause_ms / 1000)
        raise errors.Unavailable("no metadata member reports itself leader")

    async def member_statuses(self) -> list[dict]:
        """Every member's own view (asked in parallel): its gRPC address, Raft address, role
        (leader or follower), term and commit index, or `error` when it did not answer."""
        async def one(address: str) -> dict:
            try:
                status = await self._stubs[address].Status(
                    meta_pb2.MetaStatusRequest(), timeout=limits.meta_status_timeout_ms / 1000)
            except grpc.aio.AioRpcError as exc:
                return {"grpc_address": address, "error": exc.details() or exc.code().name}
            return {"grpc_address": address, "raft_address": status.self_raft_address,
                    "role": "leader" if status.is_leader else "follower",
                    "term": status.raft_term, "commit_index": status.commit_index}
        return list(await asyncio.gather(*(one(a) for a in self.addresses)))


class CatalogCache:
    """A local copy of the catalog, fed by a Watch stream once start() has run (before that,
    and whenever the watch cannot keep up, by reading the state from the leader).

    `state` is the catalog at the watched revision; a cache made with_txns=True (a shard node)
    also carries the 2PC bookkeeping of its last linearizable read. `refresh()` waits for the
    revision of this process's own last write; `refresh(linearizable=True)` asks the leader for
    its revision with a ReadIndex round (no log entry) and waits for the watch to reach it."""

    def __init__(self, client: MetaClient, with_txns: bool = False):
        self.client = client
        self.with_txns = with_txns
        self._catalog = meta_state.MetaState()
        self._bookkeeping: dict[str, Any] = {}
        self._merged: tuple[Any, Any, meta_state.MetaState] | None = None
        self._lock = asyncio.Lock()
        # Linearizable reads are coalesced: callers join the next round that has not started
        # yet, and one round runs at a time, at most one per catalog_linearizable_read_gap_ms.
        # So a burst of name misses costs the leader a bounded rate of ReadIndex confirmations,
        # and every caller's round still starts after its call (linearizable).
        self._pending_round: asyncio.Future | None = None
        self._round_lock = asyncio.Lock()
        self._last_round_at = 0.0
        self.linearizable_rounds = 0
        self._watch_task: asyncio.Task | None = None
        self._watch_address = ""
        self._reconnect = False
        self._changed = asyncio.Event()
        self.watching = False
        # Counters for tests and the benchmark.
        self.snapshots_received = 0
        self.changes_received = 0
        self.progress_received = 0
        self.full_reads = 0

    # ---- the state ------------------------------------------------------------------------------

    @property
    def state(self) -> meta_state.MetaState:
        if not self._bookkeeping:
            return self._catalog
        merged = self._merged
        if merged is None or merged[0] is not self._catalog or merged[1] is not self._bookkeeping:
            state = dataclasses.replace(self._catalog, **self._bookkeeping)
            merged = self._merged = (self._catalog, self._bookkeeping, state)
        return merged[2]

    @state.setter
    def state(self, value: meta_state.MetaState) -> None:
        self._set_catalog(value)

    def _set_catalog(self, state: meta_state.MetaState) -> None:
        self._catalog = state
        self._changed.set()
        self._changed = asyncio.Event()

    def _set_bookkeeping(self, state: meta_state.MetaState) -> None:
        if self.with_txns:
            self._bookkeeping = {"txns": state.txns, "txn_tombstones": state.txn_tombstones}

    # ---- reads ----------------------------------------------------------------------------------

    async def refresh(self, linearizable: bool = False) -> meta_state.MetaState:
        """The catalog, at least as fresh as this process's own last write (linearizable=False)
        or as every write acknowledged before the call (linearizable=True; the leader confirms
        itself with a ReadIndex round, appending nothing to the log)."""
        if linearizable:
            return await self._linearizable()
        if self.watching and await self._wait_for(self.client.last_revision):
            return self.state
        return await self._fetch(False)

    async def _wait_for(self, revision: int) -> bool:
        """Waits up to catalog_watch_wait_ms for the watched catalog to reach `revision`."""
        deadline = time.monotonic() + limits.catalog_watch_wait_ms / 1000
        while self._catalog.version < revision:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.watching:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    async def _fetch(self, linearizable: bool) -> meta_state.MetaState:
        """Reads the whole state from the leader (start-up, or a watch that fell behind)."""
        async with self._lock:
            self.full_reads += 1
            fresh = await self.client.get_state(0, linearizable=linearizable)
            if fresh is not None:
                self._set_bookkeeping(fresh)
                if fresh.version >= self._catalog.version:
                    self._set_catalog(dataclasses.replace(fresh, txns={}, idempotency={},
                                                          txn_tombstones={}))
            if self.watching and self._watch_address:
                # The watch lags behind the leader: take it there.
                self._restart_watch()
            return self.state

    async def _linearizable_read(self) -> meta_state.MetaState:
        if not self.watching:
            return await self._fetch(True)
        response = await self.client.read_revision(include_txns=self.with_txns)
        if response.txns_json:
            doc = json.loads(response.txns_json)
            self._set_bookkeeping(meta_state.from_doc(
                {"version": 0, "tenants": {}, "datasets": {}, "nodes": {}, **doc}))
        if await self._wait_for(response.version):
            return self.state
        return await self._fetch(True)

    async def _linearizable(self) -> meta_state.MetaState:
        if self._pending_round is None:
            self._pending_round = asyncio.get_running_loop().create_future()
            asyncio.ensure_future(self._run_round(self._pending_round))
        return await asyncio.shield(self._pending_round)

    async def _run_round(self, round_done: asyncio.Future) -> None:
        async with self._round_lock:
            gap_s = limits.catalog_linearizable_read_gap_ms / 1000
            wait_s = self._last_round_at + gap_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            # Started: callers from now on join the next round.
            if self._pending_round is round_done:
                self._pending_round = None
            self._last_round_at = time.monotonic()
            self.linearizable_rounds += 1
            try:
                round_done.set_result(await self._linearizable_read())
            except asyncio.CancelledError:
                round_done.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the round
                round_done.set_exception(exc)
                # Retrieved here too, so a round nobody awaits any more logs no warning.
                round_done.exception()

    # ---- the watch ------------------------------------------------------------------------------

    def start(self) -> None:
        """Keeps the catalog current through a Watch stream, in the background, from now on."""
        if self._watch_task is None:
            self.watching = True
            self._watch_task = asyncio.ensure_future(self._watch_forever())

    def _restart_watch(self) -> None:
        """Reconnects the watch, at its next event, to the member the client prefers now."""
        self._reconnect = True

    async def stop(self) -> None:
        """Stops the watch and waits until it has ended."""
        self.watching = False
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass

    async def _watch_forever(self) -> None:
        have_snapshot = self._catalog.version > 0
        while True:
            self._reconnect = False
            try:
                address, call = self.client.watch_call(
                    self._catalog.version if have_snapshot else 0)
            except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                log.exception("cannot open a catalog watch")
                await asyncio.sleep(limits.meta_wait_retry_ms / 1000)
                continue
            self._watch_address = address
            # The first event may be a snapshot of a large catalog, which takes the member a
            # while to write; after it, silence past the idle timeout means a hung member.
            wait_s = limits.watch_snapshot_timeout_ms / 1000
            try:
                while not self._reconnect:
                    event = await asyncio.wait_for(call.read(), wait_s)
                    wait_s = limits.watch_idle_timeout_ms / 1000
                    if event is grpc.aio.EOF:
                        break
                    if event.kind == "snapshot":
                        self.snapshots_received += 1
                        have_snapshot = True
                        self._set_catalog(watch.catalog_from_doc(
                            json.loads(event.snapshot_json)))
                    elif event.kind == "changes":
                        self.changes_received += 1
                        if event.revision > self._catalog.version:
                            self._set_catalog(watch.apply_changes(
                                self._catalog, event.revision,
                                [tuple(c) for c in json.loads(event.changes_json)]))
                    elif event.kind == "progress":
                        self.progress_received += 1
                    elif event.kind == "compacted":
                        # The member no longer holds the changes we miss: start afresh.
                        have_snapshot = False
                        break
            except asyncio.TimeoutError:
                # Silent for longer than the progress interval allows: a hung member.
                self.client.avoid(address)
            except grpc.aio.AioRpcError:
                self.client.avoid(address)
                await asyncio.sleep(limits.meta_client_round_pause_ms / 1000)
            except (ValueError, KeyError, TypeError):
                # A document this client cannot read: start afresh from a snapshot.
                log.exception("bad catalog watch event from %s", address)
                have_snapshot = False
                await asyncio.sleep(limits.meta_wait_retry_ms / 1000)
            finally:
                call.cancel()
                self._watch_address = ""
