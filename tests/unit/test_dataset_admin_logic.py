"""Specification of the dataset admin pieces of the router: UpdateDataset, GetDatasetStats,
GET /stats and multi-dataset search. Pure helpers are tested directly; RouterCore methods run
against in-memory fakes of the meta group, the catalog cache and the shard nodes."""

from __future__ import annotations

import asyncio

import pytest

from consensus import commands as c
from consensus.state import DatasetRecord, MetaState, apply
from proto import deeplake_service_pb2 as pb
from proto import meta_pb2, node_pb2
from router.core import (IMMUTABLE_DATASET_FIELDS, RouterCore, check_same_shape,
                         dataset_stats_map, immutable_field_conflicts, merge_dataset_results)
from router.rest import split_update_body
from router.routing import shard_of
from tributary import errors, limits


def record(name="docs", tenant="t1", dimensions=4, metric="cosine", placement=("n1", "n2"),
           uuid=None, epoch=3) -> DatasetRecord:
    return DatasetRecord(uuid=uuid or f"uuid-{tenant}-{name}", tenant_id=tenant, name=name,
                         description="old", dimensions=dimensions, metric_type=metric,
                         index_type="hnsw", metadata={"team": "a"}, placement=tuple(placement),
                         epoch=epoch, created_at_ms=1, updated_at_ms=1)


def hit(vector_id: str, score: float, content_hash: str = "") -> pb.SearchResult:
    return pb.SearchResult(vector=pb.Vector(id=vector_id, content_hash=content_hash),
                           score=score, rank=99)


# ---- immutable fields ----------------------------------------------------------------------------

def test_repeating_the_current_immutable_values_is_no_conflict():
    r = record()
    same = {"id": "docs", "name": "docs", "dimensions": 4, "metric_type": "cosine",
            "index_type": "hnsw", "shard_count": 2, "storage_location": f"shards/{r.uuid}",
            "replication_factor": 1}
    assert set(same) == set(IMMUTABLE_DATASET_FIELDS)
    assert immutable_field_conflicts(r, same) == []
    assert immutable_field_conflicts(r, {}) == []


@pytest.mark.parametrize("field,value", [("dimensions", 8), ("metric_type", "l2"),
                                         ("shard_count", 3), ("index_type", "flat"),
                                         ("name", "renamed"), ("dimensions", "4"),
                                         ("shard_count", True), ("replication_factor", 3)])
def test_changing_an_immutable_field_is_a_conflict_that_names_it(field, value):
    problems = immutable_field_conflicts(record(), {field: value})
    assert len(problems) == 2
    assert problems[0].startswith(f"{field} cannot be changed")
    assert "docs" in problems[0] and repr(value) in problems[0]
    assert "only description and metadata" in problems[1]


def test_an_unknown_field_is_a_conflict():
    assert "'colour' is not a dataset field" in immutable_field_conflicts(
        record(), {"colour": "red"})[0]


# ---- REST body of PUT /datasets/{id} -------------------------------------------------------------

def test_absent_and_null_fields_keep():
    for body in ({}, {"description": None, "metadata": None}):
        doc, immutable, clear_description, clear_metadata = split_update_body(body)
        assert doc == {} and immutable == {}
        assert not clear_description and not clear_metadata


def test_explicit_empty_values_clear():
    doc, _, clear_description, clear_metadata = split_update_body(
        {"description": "", "metadata": {}})
    assert doc == {"description": "", "metadata": {}}
    assert clear_description and clear_metadata


def test_values_are_kept_and_metadata_is_stringified():
    doc, _, clear_description, clear_metadata = split_update_body(
        {"description": "new", "metadata": {"n": 2, "ok": True}, "tenant_id": "t9"})
    assert doc == {"description": "new", "metadata": {"n": "2", "ok": "true"}, "tenant_id": "t9"}
    assert not clear_description and not clear_metadata


def test_immutable_and_output_only_fields_are_split_off():
    body = {"description": "x", "dimensions": 8, "metric_type": "l2", "dataset_id": "other",
            "vector_count": 5, "storage_size": 1, "created_at": "2020-01-01T00:00:00Z",
            "updated_at": "2020-01-01T00:00:00Z"}
    doc, immutable, _, _ = split_update_body(body)
    assert doc == {"description": "x"}
    assert immutable == {"dimensions": 8, "metric_type": "l2", "id": "other"}
    assert "dimensions" in body, "the caller's dict is not modified"


@pytest.mark.parametrize("body,needle", [({"colour": "red"}, "unknown field(s) colour"),
                                         ({"metadata": ["a"]}, "metadata must be an object"),
                                         ({"metadata": {"k": [1]}}, "metadata 'k'")])
def test_bad_update_bodies_are_invalid_argument(body, needle):
    with pytest.raises(errors.InvalidArgument) as exc:
        split_update_body(body)
    assert needle in exc.value.message


# ---- multi-dataset shape check and merge ---------------------------------------------------------

def test_same_shape_passes():
    check_same_shape([record("a"), record("b")])
    check_same_shape([record("a")])


def test_different_dimensions_are_listed():
    with pytest.raises(errors.InvalidArgument) as exc:
        check_same_shape([record("a", dimensions=4), record("b", dimensions=8)])
    assert "equal dimensions" in exc.value.message
    assert "'a': 4" in exc.value.message and "'b': 8" in exc.value.message


def test_different_metrics_are_listed():
    with pytest.raises(errors.InvalidArgument) as exc:
        check_same_shape([record("a", metric="cosine"), record("b", metric="l2")])
    assert "equal metric_type" in exc.value.message
    assert "'a': cosine" in exc.value.message and "'b': l2" in exc.value.message


def test_merge_orders_by_score_then_dataset_then_id_and_reranks():
    merged = merge_dataset_results([
        ("b", [hit("x", 0.9), hit("a", 0.5)]),
        ("a", [hit("z", 0.9), hit("y", 0.7)]),
    ], top_k=10)
    assert [(h.vector.dataset_id, h.vector.id) for h in merged] == [
        ("a", "z"), ("b", "x"), ("a", "y"), ("b", "a")]
    assert [h.rank for h in merged] == [1, 2, 3, 4]


def test_merge_keeps_top_k_and_does_not_depend_on_input_order():
    lists = [("a", [hit(f"a{i}", i / 10) for i in range(5)]),
             ("b", [hit(f"b{i}", i / 10) for i in range(5)])]
    one = merge_dataset_results(lists, top_k=3)
    two = merge_dataset_results(list(reversed(lists)), top_k=3)
    assert [(h.vector.dataset_id, h.vector.id) for h in one] == \
        [(h.vector.dataset_id, h.vector.id) for h in two] == [("a", "a4"), ("b", "b4"),
                                                                ("a", "a3")]


def test_merge_does_not_modify_its_inputs():
    original = hit("x", 0.5)
    merge_dataset_results([("a", [original])], top_k=1)
    assert original.rank == 99 and original.vector.dataset_id == ""


def test_merge_deduplicates_content_across_datasets_only_when_asked():
    lists = [("a", [hit("1", 0.9, "h"), hit("2", 0.5, "g")]), ("b", [hit("3", 0.8, "h")])]
    assert [h.vector.id for h in merge_dataset_results(lists, 10)] == ["1", "3", "2"]
    assert [h.vector.id for h in merge_dataset_results(lists, 10, deduplicate=True)] == ["1", "2"]


def test_stats_map_names_every_shard_and_its_node():
    per_shard = [node_pb2.ShardStatsResponse(vector_count=3, storage_bytes=100),
                 node_pb2.ShardStatsResponse(vector_count=4, storage_bytes=50)]
    stats = dataset_stats_map(record(placement=("n1", "n2"), epoch=7), per_shard)
    assert stats["shard_count"] == "2" and stats["placement_epoch"] == "7"
    assert stats["shard.0.vectors"] == "3" and stats["shard.1.vectors"] == "4"
    assert stats["shard.0.storage_bytes"] == "100" and stats["shard.1.node"] == "n2"
    assert all(isinstance(v, str) for v in stats.values())


# ---- RouterCore against fakes --------------------------------------------------------------------

class FakeMeta:
    def __init__(self, state: MetaState, live=("n1", "n2")):
        self.state = state
        self.proposed = []
        self.live = list(live)
        self.down = False

    async def propose(self, command):
        self.proposed.append(command)
        self.state, result = apply(self.state, command)
        if "error" in result:
            raise errors.NotFound(result["error"]["message"])
        return result

    async def leader_status(self):
        if self.down:
            raise errors.Unavailable("no metadata member reports itself leader")
        return meta_pb2.MetaStatusResponse(is_leader=True, live_nodes=self.live,
                                           registered_nodes=self.live)


class FakeCatalog:
    def __init__(self, meta: FakeMeta):
        self.meta = meta
        self.state = meta.state

    async def refresh(self, linearizable: bool = False):
        if self.meta.down:
            raise errors.Unavailable("metadata group unavailable")
        self.state = self.meta.state
        return self.state


class FakeShards:
    """Each shard holds {vector_id: score}; Search answers them all, best first."""

    def __init__(self):
        self.data: dict[tuple[str, int], dict[str, float]] = {}
        self.calls: list[tuple[str, str]] = []

    # The two ShardClient methods these tests reach (router/shard_client.py).
    async def stats(self, address, request):
        return self._answer("Stats", request)

    async def search(self, address, request):
        return self._answer("Search", request)

    async def drop_shard(self, address, request):
        self.calls.append(("DropShard", request.shard.dataset_uuid))
        return node_pb2.DropShardResponse()

    def _answer(self, method, request):
        key = (request.shard.dataset_uuid, request.shard.shard)
        self.calls.append((method, request.shard.dataset_uuid))
        rows = self.data.get(key, {})
        if method == "Stats":
            return node_pb2.ShardStatsResponse(vector_count=len(rows),
                                               storage_bytes=10 * len(rows))
        if method == "Search":
            hits = [node_pb2.ShardHit(vector=pb.Vector(id=i), score=s, distance=1 - s)
                    for i, s in sorted(rows.items(), key=lambda kv: -kv[1])][:request.top_k]
            return node_pb2.ShardSearchResponse(hits=hits, vectors_scanned=len(rows))
        raise AssertionError(method)


def make_core(*records: DatasetRecord):
    state = MetaState()
    for node in ("n1", "n2"):
        state, _ = apply(state, c.RegisterNode(node, f"addr-{node}", 1))
    for r in records:
        state, _ = apply(state, c.CreateDataset(r.uuid, r.tenant_id, r.name, r.description,
                                                r.dimensions, r.metric_type, r.index_type,
                                                r.metadata, r.placement, 1))
    meta = FakeMeta(state)
    shards = FakeShards()
    return RouterCore(meta, FakeCatalog(meta), shards), meta, shards


def put(shards: FakeShards, r: DatasetRecord, rows: dict[str, float]):
    for vector_id, score in rows.items():
        shards.data.setdefault((r.uuid, shard_of(vector_id, r.shard_count)), {})[vector_id] = score


def run(coro):
    return asyncio.run(coro)


def test_update_with_empty_fields_changes_nothing_and_proposes_nothing():
    core, meta, _ = make_core(record())
    response = run(core.update_dataset(pb.UpdateDatasetRequest(dataset_id="docs",
                                                               tenant_id="t1")))
    assert meta.proposed == []
    assert response.dataset.description == "old" and dict(response.dataset.metadata) == \
        {"team": "a"}
    assert "unchanged" in response.message


def test_update_description_keeps_metadata_and_the_reverse():
    core, meta, _ = make_core(record())
    response = run(core.update_dataset(pb.UpdateDatasetRequest(
        dataset_id="docs", tenant_id="t1", description="new")))
    assert response.dataset.description == "new"
    assert dict(response.dataset.metadata) == {"team": "a"}
    assert meta.proposed[-1].description == "new" and meta.proposed[-1].metadata is None
    response = run(core.update_dataset(pb.UpdateDatasetRequest(
        dataset_id="docs", tenant_id="t1", metadata={"team": "b", "tier": "1"})))
    assert response.dataset.description == "new"
    assert dict(response.dataset.metadata) == {"team": "b", "tier": "1"}
    assert meta.proposed[-1].description is None


def test_update_clear_flags_clear():
    core, _, _ = make_core(record())
    response = run(core.update_dataset(pb.UpdateDatasetRequest(dataset_id="docs", tenant_id="t1"),
                                       clear_description=True, clear_metadata=True))
    assert response.dataset.description == "" and dict(response.dataset.metadata) == {}


def test_update_refuses_an_immutable_change_before_proposing():
    core, meta, _ = make_core(record())
    with pytest.raises(errors.InvalidArgument) as exc:
        run(core.update_dataset(pb.UpdateDatasetRequest(dataset_id="docs", tenant_id="t1",
                                                        description="new"),
                                immutable={"dimensions": 8}))
    assert "dimensions cannot be changed" in exc.value.message
    assert meta.proposed == []


def test_update_validates_metadata_and_finds_only_the_tenants_dataset():
    core, meta, _ = make_core(record(tenant="t1"))
    too_many = {f"k{i}": "v" for i in range(limits.metadata_keys_max + 1)}
    with pytest.raises(errors.InvalidArgument):
        run(core.update_dataset(pb.UpdateDatasetRequest(dataset_id="docs", tenant_id="t1",
                                                        metadata=too_many)))
    with pytest.raises(errors.NotFound):
        run(core.update_dataset(pb.UpdateDatasetRequest(dataset_id="docs", tenant_id="t2",
                                                        description="x")))
    assert meta.proposed == []


def test_dataset_stats_sum_the_shards():
    r = record()
    core, _, shards = make_core(r)
    put(shards, r, {f"v{i}": 0.5 for i in range(10)})
    response = run(core.get_dataset_stats(pb.GetDatasetStatsRequest(dataset_id="docs",
                                                                     tenant_id="t1")))
    assert response.vector_count == 10 and response.storage_size == 100
    assert response.dimensions == 4 and response.metric_type == "cosine"
    assert int(response.stats["shard.0.vectors"]) + int(response.stats["shard.1.vectors"]) == 10
    assert response.stats["shard.0.node"] == "n1" and response.stats["placement_epoch"] == "1"


def test_multi_dataset_search_merges_and_labels_each_hit():
    a, b = record("a"), record("b")
    core, _, shards = make_core(a, b)
    put(shards, a, {"x": 0.9, "y": 0.2})
    put(shards, b, {"x": 0.8, "z": 0.95})
    response = run(core.multi_dataset_search(pb.MultiDatasetSearchRequest(
        dataset_ids=["a", "b"], query_vector=[1, 0, 0, 0], tenant_id="t1",
        options=pb.SearchOptions(top_k=3))))
    assert [(h.vector.dataset_id, h.vector.id) for h in response.results] == [
        ("b", "z"), ("a", "x"), ("b", "x")]
    assert [h.rank for h in response.results] == [1, 2, 3]
    assert response.total_found == 3 and response.has_more
    assert response.stats.vectors_scanned == 4


def test_multi_dataset_search_never_reaches_another_tenants_dataset():
    mine, theirs = record("a", tenant="t1"), record("secret", tenant="t2")
    core, _, shards = make_core(mine, theirs)
    with pytest.raises(errors.NotFound) as exc:
        run(core.multi_dataset_search(pb.MultiDatasetSearchRequest(
            dataset_ids=["a", "secret"], query_vector=[1, 0, 0, 0], tenant_id="t1")))
    assert "secret" in exc.value.message
    assert shards.calls == []


@pytest.mark.parametrize("ids,needle", [([], "dataset_ids is empty"),
                                        (["a", "a"], "appears twice"),
                                        (["a/b"], "must not contain"),
                                        (["a", "l2"], "equal metric_type"),
                                        (["a", "wide"], "equal dimensions")])
def test_multi_dataset_search_refuses_bad_requests_before_any_shard_call(ids, needle):
    core, _, shards = make_core(record("a"), record("l2", metric="l2"),
                                record("wide", dimensions=8))
    with pytest.raises(errors.InvalidArgument) as exc:
        run(core.multi_dataset_search(pb.MultiDatasetSearchRequest(
            dataset_ids=ids, query_vector=[1, 0, 0, 0], tenant_id="t1")))
    assert needle in exc.value.message
    assert shards.calls == []


def test_multi_dataset_search_checks_the_query_and_the_dataset_count():
    core, _, shards = make_core(record("a"))
    with pytest.raises(errors.InvalidArgument) as exc:
        run(core.multi_dataset_search(pb.MultiDatasetSearchRequest(
            dataset_ids=["a"], query_vector=[1, 0], tenant_id="t1")))
    assert "query_vector has dimension 2" in exc.value.message
    with pytest.raises(errors.InvalidArgument) as exc:
        run(core.multi_dataset_search(pb.MultiDatasetSearchRequest(
            dataset_ids=[f"d{i}" for i in range(limits.multi_search_datasets_max + 1)],
            query_vector=[1, 0, 0, 0], tenant_id="t1")))
    assert "multi_search_datasets_max" in exc.value.message
    assert shards.calls == []


def test_service_stats_counts_the_catalog():
    core, meta, _ = make_core(record("a", tenant="t1"), record("b", tenant="t1"),
                              record("c", tenant="t2"))
    stats = run(core.service_stats())
    assert stats["tenants"] == 2 and stats["datasets"] == 3 and stats["node_count"] == 2
    assert stats["nodes"] == ["n1", "n2"] and stats["live_nodes"] == ["n1", "n2"]
    assert stats["live_node_count"] == 2
    assert stats["datasets_per_tenant"] == {"t1": 2, "t2": 1}
    assert stats["catalog_version"] == meta.state.version
    assert stats["router_uptime_s"] >= 0 and stats["meta"] == "ok"
    assert stats["limits"] == limits.as_dict()


def test_service_stats_answers_from_the_cache_when_meta_is_down():
    core, meta, _ = make_core(record("a"))
    run(core.catalog.refresh())
    meta.down = True
    stats = run(core.service_stats())
    assert stats["datasets"] == 1 and stats["live_nodes"] is None
    assert stats["meta"].startswith("no leader")


def test_a_write_waiting_on_a_frozen_primary_moves_to_the_new_one_after_failover():
    """router/core.py _on_primary: the catalog names a new primary while a write hangs on the
    old one; the write is abandoned there and sent to the new primary."""
    state = MetaState()
    for node in ("n1", "n2"):
        state, _ = apply(state, c.RegisterNode(node, f"addr-{node}", 1))
    state, _ = apply(state, c.CreateDataset("u1", "t", "docs", "", 4, "cosine", "hnsw", {},
                                            ("n1",), 1, 2, (("n1", "n2"),)))
    meta = FakeMeta(state)
    core = RouterCore(meta, FakeCatalog(meta), FakeShards())
    calls = []

    async def scenario():
        async def write(_record, address, ref):
            calls.append(address)
            if address == "addr-n1":
                await asyncio.Event().wait()    # a frozen primary: never answers
            return "acknowledged by " + address

        async def fail_over():
            await asyncio.sleep(0.3)
            await meta.propose(c.PromotePrimary("u1", 0, "n2", 1, 2))
            await core.catalog.refresh()
        asyncio.ensure_future(fail_over())
        return await asyncio.wait_for(core.on_shard("t", "docs", 0, write), 5)
    assert run(scenario()) == "acknowledged by addr-n2"
    assert calls == ["addr-n1", "addr-n2"]


# ---- DeleteDataset ---------------------------------------------------------------------------


class AnswerLostMeta(FakeMeta):
    """A meta group whose first answer to a proposal is lost after it committed: the client
    proposes the same command again (consensus/client.py MetaClient._call) and gets the
    second answer."""

    async def propose(self, command):
        self.state, _ = apply(self.state, command)
        return await super().propose(command)


def test_a_delete_whose_first_answer_was_lost_succeeds():
    # make chaos (meta-faults, seed 109): the repeat of a committed delete answered 404.
    core, meta, shards = make_core(record())
    core.meta = AnswerLostMeta(meta.state)
    response = run(core.delete_dataset(pb.DeleteDatasetRequest(dataset_id="docs",
                                                               tenant_id="t1")))
    assert response.success and core.meta.state.datasets == {}
    assert ("DropShard", "uuid-t1-docs") in shards.calls


def test_a_delete_through_a_router_whose_catalog_is_behind_deletes_the_current_dataset():
    # Another router dropped "docs" and created it again; this one's catalog still holds the
    # first. The user's delete of "docs" deletes the one that exists.
    core, meta, shards = make_core(record())
    meta.state, _ = apply(meta.state, c.DeleteDataset("t1", "docs", 2))
    meta.state, _ = apply(meta.state, c.CreateDataset("uuid-new", "t1", "docs", "", 4, "cosine",
                                                      "hnsw", {}, ("n1", "n2"), 3))
    assert core.catalog.state.dataset_by_name("t1", "docs").uuid == "uuid-t1-docs"
    run(core.delete_dataset(pb.DeleteDatasetRequest(dataset_id="docs", tenant_id="t1")))
    assert meta.state.datasets == {}
    assert [d.uuid for d in meta.proposed] == ["uuid-t1-docs", "uuid-new"]
    assert ("DropShard", "uuid-new") in shards.calls
