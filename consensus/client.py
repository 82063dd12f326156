"""The internal API routers and nodes use to read and change metadata.

`MetaClient` talks to whichever member leads, rotating through the configured members on
NotLeader or an unreachable member until its deadline. `CatalogCache` keeps the last state it saw
with its version, refreshes it in the background, and refreshes on demand when a node reports a
stale epoch or a name is missing (so a dataset created through another router is found).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc

from consensus import commands, state as meta_state
from proto import meta_pb2
from tributary import errors, limits
from tributary import cluster_auth
from tributary.cluster_auth import ClusterToken
from tributary.grpc_options import internal_channel_options
from tributary.periodic import Periodic


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
        """Commits one command; raises the TributaryError the state machine refused it with."""
        response = await self._call("Propose", meta_pb2.ProposeRequest(
            command_json=commands.encode(command)))
        result = json.loads(response.result_json)
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
    def __init__(self, client: MetaClient):
        self.client = client
        self.state = meta_state.MetaState()
        self._lock = asyncio.Lock()
        # Linearizable reads are coalesced: callers join the next round that has not started
        # yet, and one round runs at a time, at most one per catalog_linearizable_read_gap_ms.
        # So a burst of name misses costs the leader a bounded rate of ReadIndex confirmations,
        # and every caller's round still starts after its call (linearizable).
        self._pending_round: asyncio.Future | None = None
        self._round_lock = asyncio.Lock()
        self._last_round_at = 0.0
        self.linearizable_rounds = 0
        self._refresher = Periodic(limits.catalog_refresh_interval_ms / 1000, self.refresh,
                                   "catalog refresh")

    async def refresh(self, linearizable: bool = False) -> meta_state.MetaState:
        """The catalog, fresher than before the call; with linearizable=True it reflects every
        write acknowledged before the call (the leader confirms itself with a ReadIndex round,
        appending nothing to the log)."""
        if linearizable:
            return await self._linearizable()
        return await self._fetch(False)

    async def _fetch(self, linearizable: bool) -> meta_state.MetaState:
        async with self._lock:
            fresh = await self.client.get_state(self.state.version, linearizable=linearizable)
            if fresh is not None and fresh.version >= self.state.version:
                self.state = fresh
            return self.state

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
                round_done.set_result(await self._fetch(True))
            except asyncio.CancelledError:
                round_done.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the round
                round_done.set_exception(exc)
                # Retrieved here too, so a round nobody awaits any more logs no warning.
                round_done.exception()

    def start(self) -> None:
        """Refreshes the catalog every catalog_refresh_interval_ms in the background."""
        self._refresher.start()

    async def stop(self) -> None:
        """Stops the background refresh and waits until it has ended."""
        await self._refresher.stop()
