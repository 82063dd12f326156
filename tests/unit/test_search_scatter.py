"""How the router core scatters one search over a dataset's shards (router/core.py
RouterCore._scatter, issue 18): a shard with one in-sync copy gets its search straight from the
shard client's `search_soon`, without a task of its own, and keeps what the full path gives
(StaleEpoch refresh and retry, the per-shard error metric); a shard with several copies keeps
its hedged read. The catalog and the nodes are in-memory stand-ins; the shard client speaks the
ShardClient interface (router/shard_client.py)."""

from __future__ import annotations

import asyncio

import pytest

from consensus import commands as c
from consensus.state import MetaState, apply
from proto import deeplake_service_pb2 as pb
from proto import node_pb2
from router import metrics as router_metrics
from router.core import RouterCore
from tributary import errors, limits

NODES = ("n1", "n2", "n3")
QUERY = [1.0, 0.0, 0.0, 0.0]


def ok(state, command):
    after, result = apply(state, command)
    assert "error" not in result, result
    return after


def dataset(copies: tuple[tuple[str, ...], ...]) -> MetaState:
    state = MetaState()
    for n in NODES:
        state = ok(state, c.RegisterNode(n, f"addr-{n}", 1))
    return ok(state, c.CreateDataset("u1", "t1", "docs", "", 4, "cosine", "hnsw", {},
                                     tuple(copy[0] for copy in copies), 10,
                                     max(len(copy) for copy in copies), copies))


class Catalog:
    def __init__(self, state: MetaState):
        self.state = state
        self.refreshes = 0

    async def refresh(self, linearizable: bool = False):
        self.refreshes += 1
        return self.state


class Nodes:
    """Shard s answers hit "s<s>" with score 1 - s/10. `refuse` maps a shard to the errors its
    next searches raise, one each; `hang` is the set of node addresses that never answer."""

    def __init__(self):
        self.refuse: dict[int, list[Exception]] = {}
        self.hang: set[str] = set()
        self.asked: list[tuple[str, int, str]] = []      # (address, shard, how)

    def _answer(self, address: str, request: node_pb2.ShardSearchRequest, how: str):
        shard = request.shard.shard
        self.asked.append((address, shard, how))
        waiting = self.refuse.get(shard)
        if waiting:
            raise waiting.pop(0)
        return node_pb2.ShardSearchResponse(hits=[node_pb2.ShardHit(
            vector=pb.Vector(id=f"s{shard}"), score=1 - shard / 10, distance=shard / 10)])

    async def search(self, address, request):
        if address in self.hang:
            await asyncio.Event().wait()
        return self._answer(address, request, "search")

    def search_soon(self, address, request) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()

        def settle():
            if future.done():
                return
            try:
                future.set_result(self._answer(address, request, "soon"))
            except Exception as exc:  # noqa: BLE001 - the search's error
                future.set_exception(exc)
        if address not in self.hang:
            asyncio.get_running_loop().call_soon(settle)
        return future


def _core(state: MetaState, nodes: Nodes) -> tuple[RouterCore, Catalog]:
    catalog = Catalog(state)
    return RouterCore(None, catalog, nodes), catalog


def _search(top_k: int = 10) -> pb.SearchVectorsRequest:
    return pb.SearchVectorsRequest(tenant_id="t1", dataset_id="docs", query_vector=QUERY,
                                   options=pb.SearchOptions(top_k=top_k))


def test_a_plain_search_over_single_copy_shards_starts_no_task_per_shard():
    state = dataset((("n1",), ("n2",), ("n3",)))
    nodes = Nodes()
    core, _ = _core(state, nodes)

    async def main():
        created = []
        loop = asyncio.get_running_loop()

        def factory(loop, coro, **kwargs):
            created.append(coro)
            return asyncio.Task(coro, loop=loop, **kwargs)
        loop.set_task_factory(factory)
        try:
            return await core.search_vectors(_search()), created
        finally:
            loop.set_task_factory(None)
    response, created = asyncio.run(main())
    assert [r.vector.id for r in response.results] == ["s0", "s1", "s2"]
    assert created == []
    assert sorted(shard for _, shard, how in nodes.asked if how == "soon") == [0, 1, 2]


def test_a_shard_that_refuses_a_stale_epoch_is_asked_again_after_a_refresh():
    state = dataset((("n1",), ("n2",)))
    nodes = Nodes()
    nodes.refuse[1] = [errors.StaleEpoch("placement epoch 1 is older than 2")]
    core, catalog = _core(state, nodes)
    response = asyncio.run(core.search_vectors(_search()))
    assert [r.vector.id for r in response.results] == ["s0", "s1"]
    assert catalog.refreshes == 1
    assert [shard for _, shard, _ in nodes.asked].count(1) == 2


def test_a_failed_single_copy_shard_fails_the_search_and_is_counted_once():
    state = dataset((("n1",), ("n2",)))
    nodes = Nodes()
    nodes.refuse[0] = [errors.Unavailable("node n1 is down")]
    core, _ = _core(state, nodes)
    errors_of = router_metrics.SHARD_CALL_ERRORS.labels("read", "Unavailable", "t1", "docs", "0")
    before = errors_of._value.get()
    with pytest.raises(errors.Unavailable):
        asyncio.run(core.search_vectors(_search()))
    assert errors_of._value.get() == before + 1
    # The copy that failed is read last for a while (router/reads.py).
    assert core.reads.suspect_until.get("n1", 0) > 0


def test_a_shard_with_two_copies_keeps_its_hedge_against_a_copy_that_hangs(monkeypatch):
    monkeypatch.setattr(limits, "read_hedge_min_ms", 20)
    state = dataset((("n1", "n2"), ("n3", "n2")))
    nodes = Nodes()
    nodes.hang.add("addr-n1")
    core, _ = _core(state, nodes)

    async def twice():
        # The rotation starts the first read on either copy; two reads hit the hanging one.
        return [await asyncio.wait_for(core.search_vectors(_search()), 5) for _ in range(2)]
    for response in asyncio.run(twice()):
        assert [r.vector.id for r in response.results] == ["s0", "s1"]
    assert ("addr-n2", 0, "search") in nodes.asked
