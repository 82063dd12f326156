"""An operator's command whose answer was lost is proposed again, and its first attempt may have
committed. `commands.Requested` names the proposal, and the state machine answers a repeat from
the record of the first (consensus/state.py `_requested`), so a CreateApiKey is not refused as a
duplicate and a DeleteTenant or RevokeApiKey does not answer 404 after doing what it was asked.

The MetaClient part runs the real client against an in-process Meta server that applies with the
real `apply` and loses the answer to the first attempt."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus import metrics as meta_metrics
from consensus.client import MetaClient
from consensus.state import REQUEST_RECORD_PREFIX, MetaState, apply
from proto import meta_pb2, meta_pb2_grpc
from tributary import errors, limits

KEY_HASH = "ab" * 32


def tenant_with_key() -> MetaState:
    state, _ = apply(MetaState(), c.ProvisionTenant("acme", "Acme", {}, "active", 1))
    state, _ = apply(state, c.CreateApiKey("k1", KEY_HASH, "acme", "tenant", "read_write", (),
                                           "", 2))
    return state


# ---- the codec ----------------------------------------------------------------------------------

def test_a_requested_command_round_trips_and_holds_its_command():
    command = c.Requested("r1", 5, c.DeleteTenant("acme", 5))
    decoded = c.decode(c.encode(command))
    assert decoded == command and type(decoded.command) is c.DeleteTenant


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(0, 2 ** 62),
       st.sampled_from([c.CreateApiKey("k", KEY_HASH, "t", "tenant", "read_only", ("d",), "x",
                                       3),
                        c.RevokeApiKey("k", 3), c.StartReshard("u", 4, 3),
                        c.UpdateDataset("t", "d", None, {"type": "Requested"}, 3)]))
def test_any_requested_command_round_trips_canonically(request_id, at_ms, held):
    text = c.encode(c.Requested(request_id, at_ms, held))
    assert c.decode(text) == c.Requested(request_id, at_ms, held)
    assert c.encode(c.decode(text)) == text
    # The metrics label is the held command's type, even when its fields hold a "type" key.
    assert meta_metrics.command_type(text) == type(held).__name__


@pytest.mark.parametrize("fields", [
    {"request_id": "r", "at_ms": 1},
    {"request_id": "r", "at_ms": 1, "command": {"type": "Barrier", "fields": {"at_ms": 1}},
     "extra": 1},
    {"request_id": "", "at_ms": 1, "command": {"type": "Barrier", "fields": {"at_ms": 1}}},
    {"request_id": 7, "at_ms": 1, "command": {"type": "Barrier", "fields": {"at_ms": 1}}},
    {"request_id": "r" * (limits.request_id_bytes_max + 1), "at_ms": 1,
     "command": {"type": "Barrier", "fields": {"at_ms": 1}}},
    {"request_id": "r", "at_ms": True, "command": {"type": "Barrier", "fields": {"at_ms": 1}}},
    {"request_id": "r", "at_ms": "1", "command": {"type": "Barrier", "fields": {"at_ms": 1}}},
    {"request_id": "r", "at_ms": 1, "command": "Barrier"},
    {"request_id": "r", "at_ms": 1, "command": {"type": "Requested", "fields": {
        "request_id": "q", "at_ms": 1, "command": {"type": "Barrier", "fields": {"at_ms": 1}}}}},
    {"request_id": "r", "at_ms": 1, "command": {"type": "DropEverything", "fields": {}}},
])
def test_decode_refuses_a_malformed_requested_document(fields):
    with pytest.raises(c.CommandDecodeError):
        c.decode(json.dumps({"type": "Requested", "fields": fields}))


def test_encode_refuses_a_requested_command_inside_another():
    with pytest.raises(TypeError):
        c.encode(c.Requested("r", 1, c.Requested("q", 1, c.Barrier(1))))


# ---- the state machine --------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    c.CreateApiKey("k2", "cd" * 32, "acme", "tenant", "read_only", (), "", 5),
    c.RevokeApiKey("k1", 5),
    c.DeleteTenant("acme", 5),
    c.CreateTenant("beta", 5),
])
def test_a_repeat_answers_as_the_first_attempt_and_changes_nothing(command):
    state = tenant_with_key()
    # Bare, the repeat is refused: what a lost answer used to cost.
    once, first = apply(state, command)
    assert "error" not in first
    assert "error" in apply(once, command)[1]

    named = c.Requested("req-1", 5, command)
    once, first = apply(state, named)
    # The retry arrives as its encoded bytes do, decoded again.
    again, second = apply(once, c.decode(c.encode(named)))
    assert "error" not in first
    assert second == {**first, "repeated": True}
    assert again == once and again.version == once.version


def test_the_record_is_bookkeeping_the_command_alone_moves_the_revision():
    state = tenant_with_key()
    bare, _ = apply(state, c.RevokeApiKey("k1", 5))
    named, _ = apply(state, c.Requested("req-1", 5, c.RevokeApiKey("k1", 5)))
    assert named.version == bare.version == state.version + 1
    assert named.api_keys == bare.api_keys
    assert set(named.idempotency) - set(bare.idempotency) == {f"{REQUEST_RECORD_PREFIX}req-1"}


def test_a_refusal_is_not_recorded_so_a_repeat_is_judged_afresh():
    state, _ = apply(MetaState(), c.ProvisionTenant("acme", "Acme", {}, "active", 1))
    state, _ = apply(state, c.RegisterNode("n1", "127.0.0.1:1", 1))
    state, _ = apply(state, c.CreateDataset("u1", "acme", "docs", "", 4, "cosine", "hnsw", {},
                                            ("n1",), 1))
    assert state.dataset_by_name("acme", "docs") is not None
    named = c.Requested("req-1", 5, c.DeleteTenant("acme", 5))
    refused, result = apply(state, named)
    assert result["error"]["type"] == "InvalidArgument" and refused == state
    emptied, _ = apply(state, c.DeleteDataset("acme", "docs", 6))
    after, result = apply(emptied, named)
    assert result == {"tenant_id": "acme", "revoked_keys": []}
    assert "acme" not in after.tenants


def test_another_request_of_the_same_command_is_not_a_repeat():
    state = tenant_with_key()
    once, _ = apply(state, c.Requested("req-1", 5, c.RevokeApiKey("k1", 5)))
    _, result = apply(once, c.Requested("req-2", 6, c.RevokeApiKey("k1", 6)))
    assert result["error"]["type"] == "NotFound"


def test_records_expire_after_the_ttl_and_the_oldest_go_past_the_bound(monkeypatch):
    monkeypatch.setattr(limits, "request_records_max", 3)
    state = MetaState()
    for i in range(5):
        state, _ = apply(state, c.Requested(f"r{i}", 1_000 + i, c.CreateTenant(f"t{i}", 1)))
    mine = sorted(k for k in state.idempotency if k.startswith(REQUEST_RECORD_PREFIX))
    assert mine == [f"{REQUEST_RECORD_PREFIX}r{i}" for i in (2, 3, 4)]
    late = 1_004 + limits.request_record_ttl_ms
    state, _ = apply(state, c.Requested("r9", late, c.CreateTenant("t9", late)))
    mine = sorted(k for k in state.idempotency if k.startswith(REQUEST_RECORD_PREFIX))
    assert mine == [f"{REQUEST_RECORD_PREFIX}r9"]


def test_request_records_leave_the_2pc_and_delete_records_alone():
    state = tenant_with_key()
    state, _ = apply(state, c.DecideTxn("x1", "commit", ("u/0",), "acme/u/key", "{}", 10))
    late = 10 + limits.request_record_ttl_ms
    state, _ = apply(state, c.Requested("r1", late, c.CreateTenant("beta", late)))
    assert "acme/u/key" in state.idempotency


# ---- the client ---------------------------------------------------------------------------------

class LosesFirstAnswer(meta_pb2_grpc.MetaServicer):
    """One Meta member, always the leader, that applies each proposal with the real `apply` and
    loses the answer to the first one after it committed (UNAVAILABLE, as a leader change
    does)."""

    def __init__(self, state: MetaState):
        self.state = state
        self.proposals: list[str] = []

    async def Propose(self, request, context):
        self.proposals.append(request.command_json)
        self.state, result = apply(self.state, c.decode(request.command_json))
        if len(self.proposals) == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the answer was lost")
        return meta_pb2.ProposeResponse(
            result_json=json.dumps({**result, "version": self.state.version}),
            version=self.state.version)

    async def Status(self, request, context):
        return meta_pb2.MetaStatusResponse(is_leader=True)


async def _propose_through_a_lost_answer(command, state: MetaState):
    servicer = LosesFirstAnswer(state)
    server = grpc.aio.server()
    meta_pb2_grpc.add_MetaServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = MetaClient([f"127.0.0.1:{port}"])
    try:
        return await asyncio.wait_for(client.propose(command), 30), servicer
    finally:
        await client.close()
        await server.stop(None)


@pytest.mark.parametrize("command, expected", [
    (c.CreateApiKey("k2", "cd" * 32, "acme", "tenant", "read_only", (), "", 5),
     {"key_id": "k2"}),
    (c.RevokeApiKey("k1", 5), {"key_id": "k1"}),
    (c.DeleteTenant("acme", 5), {"tenant_id": "acme", "revoked_keys": ["k1"]}),
])
def test_the_client_names_an_operators_command_and_its_retry_gets_the_first_answer(
        command, expected):
    result, servicer = asyncio.run(_propose_through_a_lost_answer(command, tenant_with_key()))
    assert result == {**expected, "repeated": True, "version": servicer.state.version}
    first, second = (c.decode(text) for text in servicer.proposals)
    assert first == second and isinstance(first, c.Requested) and first.command == command


def test_without_a_name_the_same_lost_answer_is_refused():
    # The control, so the test above cannot pass by accident: a command outside ANSWERED_ONCE
    # goes out bare, and the repeat of a committed DeleteDataset with no request id of its own
    # is judged afresh: NotFound.
    state, _ = apply(MetaState(), c.RegisterNode("n1", "127.0.0.1:1", 1))
    state, _ = apply(state, c.CreateDataset("u1", "acme", "docs", "", 4, "cosine", "hnsw", {},
                                            ("n1",), 1))
    assert not isinstance(c.DeleteDataset("acme", "docs", 5), c.ANSWERED_ONCE)
    with pytest.raises(errors.NotFound):
        asyncio.run(_propose_through_a_lost_answer(c.DeleteDataset("acme", "docs", 5), state))
