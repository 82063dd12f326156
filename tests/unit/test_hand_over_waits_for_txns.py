"""A primary handing its role over for a move (node/replication.py hand_over) first lets the
2PC txns prepared on the shard be decided: handing over under a prepared txn got it aborted by
recovery, and its client a 409 (bench.rebalance's drain). It waits only so long, so a steady
stream of txns cannot hold the move back for ever; the real Replication runs against a stand-in
node host, meta client and participant."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from consensus import commands as c
from consensus.placement import plan_copies
from consensus.state import MetaState, apply
from node.replication import Replication
from tributary import limits


def moving_state() -> MetaState:
    state = MetaState()
    for n in ("n1", "n2", "n3"):
        state, _ = apply(state, c.RegisterNode(n, f"{n}:1", 1))
    primaries, copies = plan_copies("t", "d0", 1, 2, ["n1", "n2"])
    state, _ = apply(state, c.CreateDataset("u0", "t", "d0", "", 4, "cosine", "hnsw", {},
                                            primaries, 1, 2, copies))
    source = state.datasets["u0"].primary_of(0)
    state, _ = apply(state, c.StartMove("m", "u0", 0, source, "n3", "", 2))
    state, _ = apply(state, c.SetInSync("u0", 0, "n3", True, 1, 3))
    return state


class StandInMeta:
    def __init__(self):
        self.proposed = []

    async def propose(self, command):
        self.proposed.append(command)
        return {}


def replication_on_source(prepared: dict):
    state = moving_state()
    source = state.datasets["u0"].primary_of(0)

    async def refresh(**_):
        return None
    host = SimpleNamespace(node_id=source, catalog=SimpleNamespace(state=state, refresh=refresh))
    meta = StandInMeta()
    replication = Replication(host, meta, None)
    replication.participant = SimpleNamespace(prepared=prepared)
    return replication, state.datasets["u0"], meta


def prepared_txn(shard: int) -> dict:
    return {("t1", f"u0/{shard}"): SimpleNamespace(dataset_uuid="u0", shard=shard)}


def test_a_primary_hands_over_at_once_when_no_txn_is_prepared_on_the_shard():
    replication, record, meta = replication_on_source(prepared_txn(1))   # another shard's
    asyncio.run(replication.hand_over(record, 0, "n3"))
    assert [type(p).__name__ for p in meta.proposed] == ["PromotePrimary"]
    assert meta.proposed[0].node_id == "n3"


def test_a_primary_waits_for_a_prepared_txn_then_hands_over_once_it_is_decided():
    prepared = prepared_txn(0)
    replication, record, meta = replication_on_source(prepared)
    asyncio.run(replication.hand_over(record, 0, "n3"))
    assert meta.proposed == []
    prepared.clear()                                  # the txn was decided
    asyncio.run(replication.hand_over(record, 0, "n3"))
    assert [type(p).__name__ for p in meta.proposed] == ["PromotePrimary"]


def test_a_steady_stream_of_txns_holds_a_hand_over_back_only_so_long(monkeypatch):
    replication, record, meta = replication_on_source(prepared_txn(0))
    asyncio.run(replication.hand_over(record, 0, "n3"))
    assert meta.proposed == []
    monkeypatch.setattr(limits, "move_hand_over_txn_wait_ms", 0)
    asyncio.run(replication.hand_over(record, 0, "n3"))
    assert [type(p).__name__ for p in meta.proposed] == ["PromotePrimary"]
