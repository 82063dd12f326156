"""Dataset versions and time travel (issue 16, item 3): a version is a consistent cut of every
shard kept under a tag; get, list and search read it with as_of_version / as_of_time."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from cluster import Cluster
from router.routing import shard_of

pytestmark = pytest.mark.integration

SHARDS = 3
DIMS = 8


@pytest.fixture(scope="module")
def vcluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("versions"), meta=3, nodes=2).start()
    yield c
    c.stop()


@pytest.fixture
def client(vcluster):
    with httpx.Client(base_url=vcluster.rest, timeout=60) as http:
        yield http


def make_dataset(client: httpx.Client, metric: str = "l2") -> str:
    name = f"ver-{uuid.uuid4().hex[:8]}"
    r = client.post("/datasets", json={"name": name, "dimensions": DIMS, "metric_type": metric,
                                       "shard_count": SHARDS})
    assert r.status_code == 201, r.text
    return name


def vec(seed: int) -> list[float]:
    return np.random.default_rng(seed).standard_normal(DIMS).round(4).tolist()


def insert(client, name, ids, seed0=0, **extra):
    body = {"vectors": [{"id": i, "values": vec(seed0 + n), "metadata": {"n": str(n % 3)}}
                        for n, i in enumerate(ids)], **extra}
    r = client.post(f"/datasets/{name}/vectors", json=body)
    assert r.status_code == 201, r.text


def create_version(client, name, tag):
    r = client.post(f"/datasets/{name}/versions", json={"tag": tag})
    assert r.status_code == 201, r.text
    return r.json()


def ids_at(client, name, **as_of) -> list[str]:
    found, token = [], ""
    while True:
        r = client.get(f"/datasets/{name}/vectors",
                       params={"page_size": 500, "page_token": token, **as_of})
        assert r.status_code == 200, r.text
        found += [v["id"] for v in r.json()["vectors"]]
        token = r.json()["next_page_token"]
        if not token:
            return found


def test_a_read_at_a_tag_sees_the_dataset_as_it_was_then(client):
    name = make_dataset(client)
    insert(client, name, ["a", "b"])
    made = create_version(client, name, "v1")
    assert made["version"]["tag"] == "v1" and made["version"]["vector_count"] == 2
    insert(client, name, ["c"], seed0=10)
    insert(client, name, ["a"], seed0=20, overwrite=True)
    assert client.request("DELETE", f"/datasets/{name}/vectors/batch",
                          json={"vector_ids": ["b"]}).status_code == 200

    assert client.get(f"/datasets/{name}/vectors/c",
                      params={"as_of_version": "v1"}).status_code == 404
    assert client.get(f"/datasets/{name}/vectors/c").status_code == 200
    old_a = client.get(f"/datasets/{name}/vectors/a", params={"as_of_version": "v1"})
    assert old_a.status_code == 200
    assert np.allclose(old_a.json()["vector"]["values"], vec(0), atol=1e-4)
    assert np.allclose(client.get(f"/datasets/{name}/vectors/a").json()["vector"]["values"],
                       vec(20), atol=1e-4)
    assert client.get(f"/datasets/{name}/vectors/b",
                      params={"as_of_version": "v1"}).status_code == 200
    assert sorted(ids_at(client, name, as_of_version="v1")) == ["a", "b"]
    page = client.get(f"/datasets/{name}/vectors", params={"as_of_version": "v1"}).json()
    assert page["total_count"] == 2
    assert sorted(ids_at(client, name)) == ["a", "c"]


def test_as_of_time_reads_the_newest_version_taken_before_it(client):
    name = make_dataset(client)
    insert(client, name, ["x"])
    first = create_version(client, name, "first")
    insert(client, name, ["y"], seed0=5)
    create_version(client, name, "second")
    insert(client, name, ["z"], seed0=6)
    listed = client.get(f"/datasets/{name}/versions").json()["versions"]
    assert [v["tag"] for v in listed] == ["first", "second"]
    assert [v["vector_count"] for v in listed] == [1, 2]
    between = listed[1]["created_at"]
    assert sorted(ids_at(client, name, as_of_time=between)) == ["x", "y"]
    assert sorted(ids_at(client, name, as_of_time=first["version"]["created_at"])) == ["x"]
    assert client.get(f"/datasets/{name}/vectors/z",
                      params={"as_of_time": between}).status_code == 404


def test_time_travel_search_at_a_tag_equals_the_search_run_at_tag_time(client):
    name = make_dataset(client, metric="cosine")
    ids = [f"d{i}" for i in range(300)]
    for start in range(0, len(ids), 100):
        insert(client, name, ids[start:start + 100], seed0=start)
    queries = [vec(10_000 + q) for q in range(8)]

    def searches(**as_of):
        answers = []
        for q in queries:
            for body in ({"query_vector": q, "options": {"top_k": 10}},
                         {"query_vector": q, "options": {"top_k": 5, "filter": "n = '1'",
                                                         "include_metadata": True}}):
                r = client.post(f"/datasets/{name}/search",
                                json={**body, **({"exact": True} if not as_of else as_of)})
                assert r.status_code == 200, r.text
                answers.append([(h["vector"]["id"], round(h["score"], 5))
                                for h in r.json()["results"]])
        return answers

    at_tag_time = searches()
    create_version(client, name, "t")
    # Afterwards: vectors close to every query, overwrites, deletes, a soft delete + compaction.
    client.post(f"/datasets/{name}/vectors",
                json={"vectors": [{"id": f"late{q}", "values": queries[q]}
                                  for q in range(len(queries))], "overwrite": True})
    insert(client, name, ids[:50], seed0=777, overwrite=True)
    client.request("DELETE", f"/datasets/{name}/vectors/batch", json={"vector_ids": ids[50:80]})
    for victim in at_tag_time[0][:3]:
        client.post(f"/datasets/{name}/vectors/{victim[0]}/soft-delete")
    assert client.post(f"/datasets/{name}/compact").status_code == 200
    assert searches() != at_tag_time            # the present has moved on
    assert searches(as_of_version="t") == at_tag_time


def test_a_version_survives_compaction_of_rows_it_holds(client):
    name = make_dataset(client)
    insert(client, name, ["keep", "gone"])
    create_version(client, name, "before")
    assert client.post(f"/datasets/{name}/vectors/gone/soft-delete").status_code == 200
    assert client.post(f"/datasets/{name}/compact").json()["purged_count"] >= 1
    assert client.post(f"/datasets/{name}/vectors/gone/restore").status_code == 404
    assert client.get(f"/datasets/{name}/vectors/gone",
                      params={"as_of_version": "before"}).status_code == 200


def test_bad_version_input_is_refused_and_changes_nothing(client):
    name = make_dataset(client)
    insert(client, name, ["a"])
    before = client.get(f"/datasets/{name}/vectors/a",
                        params={"as_of_time": "2000-01-01T00:00:00Z"})
    assert before.status_code == 400 and "first version" in before.json()["error"]["message"]
    create_version(client, name, "v1")
    duplicate = client.post(f"/datasets/{name}/versions", json={"tag": "v1"})
    assert duplicate.status_code == 409, duplicate.text
    for bad in ("", "-x", "a/b", "x" * 64, "sp ace"):
        r = client.post(f"/datasets/{name}/versions", json={"tag": bad})
        assert r.status_code == 400, (bad, r.text)
    assert client.post(f"/datasets/{name}/versions", json={}).status_code == 400
    assert client.post(f"/datasets/{name}/versions",
                       json={"tag": "v9", "bogus": 1}).status_code == 400
    assert client.post("/datasets/nope-nope/versions", json={"tag": "v1"}).status_code == 404
    assert [v["tag"] for v in client.get(f"/datasets/{name}/versions").json()["versions"]] \
        == ["v1"]
    unknown = client.get(f"/datasets/{name}/vectors/a", params={"as_of_version": "v2"})
    assert unknown.status_code == 404 and "version 'v2'" in unknown.json()["error"]["message"]
    assert client.post(f"/datasets/{name}/search", json={
        "query_vector": vec(1), "as_of_version": "v2"}).status_code == 404
    assert client.get(f"/datasets/{name}/vectors", params={
        "as_of_version": "v1", "as_of_time": "2030-01-01T00:00:00Z"}).status_code == 400
    assert client.get(f"/datasets/{name}/vectors/a",
                      params={"as_of_time": "yesterday"}).status_code == 400
    assert client.get(f"/datasets/{name}/vectors/a",
                      params={"as_of_version": "bad/tag"}).status_code == 400


def _ids_for_every_shard(prefix: str, per_shard: int = 2) -> list[str]:
    ids, counts, i = [], [0] * SHARDS, 0
    while min(counts) < per_shard:
        candidate = f"{prefix}-{i}"
        shard = shard_of(candidate, SHARDS)
        if counts[shard] < per_shard:
            counts[shard] += 1
            ids.append(candidate)
        i += 1
    return ids


def test_every_version_holds_each_multi_shard_batch_whole(vcluster, client):
    """Cuts taken while 2PC batches commit: in every version each batch is all there or all
    absent, and every batch acknowledged before the version was asked for is there."""
    name = make_dataset(client)
    stop = threading.Event()
    acked: list[tuple[str, float, list[str]]] = []     # (batch, acked at, ids)
    failures: list[str] = []

    def writer(prefix: str):
        with httpx.Client(base_url=vcluster.rest, timeout=60) as http:
            n = 0
            while not stop.is_set():
                batch = f"{prefix}{n}"
                ids = _ids_for_every_shard(batch)
                r = http.post(f"/datasets/{name}/vectors", json={"vectors": [
                    {"id": i, "values": vec(n * 100 + k)} for k, i in enumerate(ids)]})
                if r.status_code == 201:
                    acked.append((batch, time.monotonic(), ids))
                elif r.status_code not in (409, 503):
                    failures.append(r.text)
                n += 1

    threads = [threading.Thread(target=writer, args=(prefix,)) for prefix in ("p", "q")]
    for t in threads:
        t.start()
    versions: list[tuple[str, float]] = []
    try:
        time.sleep(0.3)     # let the writers get going before the first cut
        for v in range(8):
            asked_at = time.monotonic()
            made = create_version(client, name, f"cut{v}")
            assert made["commit_pause_ms"] < 1_000
            versions.append((f"cut{v}", asked_at))
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:3]
    assert len(acked) >= 10, "the writers made too few batches to test anything"
    batches = {batch: set(ids) for batch, _, ids in acked}
    held = [len({i.split("-")[0] for i in ids_at(client, name, as_of_version=tag)})
            for tag, _ in versions]
    # The cuts fell while batches committed: some versions hold a part of the stream.
    assert len(set(held)) > 1 and 0 < max(held), held
    for tag, asked_at in versions:
        present = set(ids_at(client, name, as_of_version=tag))
        by_batch: dict[str, set[str]] = {}
        for vector_id in present:
            by_batch.setdefault(vector_id.split("-")[0], set()).add(vector_id)
        for batch, ids in by_batch.items():
            expected = batches.get(batch) or set(_ids_for_every_shard(batch))
            assert ids == expected, f"{tag}: batch {batch} is partial: {sorted(ids)}"
        for batch, at, ids in acked:
            if at < asked_at:
                assert set(ids) <= present, f"{tag}: batch {batch} acked before it is missing"


def _catalog(c: Cluster):
    import asyncio

    from consensus.client import MetaClient

    async def read():
        client = MetaClient([c.meta_grpc(i) for i in range(3)], c.token())
        try:
            return await client.get_state(linearizable=True)
        finally:
            await client.close()
    return asyncio.run(read())


def test_every_copy_of_a_shard_serves_the_same_version(vcluster, client):
    """Copies number their Deep Lake commits apart; the cut's tag names the same state on each,
    so a promoted copy reads the version exactly as the primary did."""
    import grpc

    from proto import node_pb2

    name = make_dataset(client)
    insert(client, name, [f"k{i}" for i in range(40)])
    create_version(client, name, "v")
    insert(client, name, [f"k{i}" for i in range(40, 60)], seed0=100)
    state = _catalog(vcluster)
    record = next(r for r in state.datasets.values() if r.name == name)
    version = state.versions[f"{record.uuid}/v"]
    for shard in range(record.shard_count):
        marked = dict(version.shards[shard].marked)
        assert set(marked) == set(record.copies_of(shard)) and len(marked) == 2, marked
        listed = []
        for node_id in marked:
            index = int(node_id.rsplit("-", 1)[1])
            with grpc.insecure_channel(vcluster.node_address(index)) as channel:
                answer = vcluster.node_stub(channel).List(node_pb2.ListRequest(
                    shard=node_pb2.ShardRef(dataset_uuid=record.uuid, shard=shard,
                                            epoch=record.epoch),
                    after_label=-1, limit=1000, include_values=True,
                    as_of_tag=version.deeplake_tag), timeout=30)
            listed.append(sorted((v.id, tuple(round(x, 4) for x in v.values))
                                 for v in answer.vectors))
        assert listed[0] == listed[1] and len(listed[0]) == version.shards[shard].vector_count
        assert all(v.startswith("k") and int(v[1:]) < 40 for v, _ in listed[0])


def test_a_fence_holds_multi_shard_commits_back_until_it_is_lifted(vcluster, client):
    """The cut's fence through the real meta group: a multi-shard batch prepared while its
    dataset is fenced is acknowledged only once the fence is lifted, and then whole."""
    import asyncio

    from consensus import commands
    from consensus.client import MetaClient

    name = make_dataset(client)
    state = _catalog(vcluster)
    record = next(r for r in state.datasets.values() if r.name == name)
    meta = [vcluster.meta_grpc(i) for i in range(3)]

    async def propose(command):
        meta_client = MetaClient(meta, vcluster.token())
        try:
            return await meta_client.propose(command)
        finally:
            await meta_client.close()

    now = int(time.time() * 1000)
    asyncio.run(propose(commands.FenceCommits(record.uuid, "test-fence", now + 900, now)))
    fenced_at = time.monotonic()
    acked_after: list[float] = []

    def write():
        r = httpx.post(f"{vcluster.rest}/datasets/{name}/vectors", timeout=60, json={
            "vectors": [{"id": i, "values": vec(n)}
                        for n, i in enumerate(_ids_for_every_shard("fenced"))]})
        assert r.status_code == 201, r.text
        acked_after.append(time.monotonic() - fenced_at)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.5)
    assert acked_after == [], "a multi-shard batch committed while its dataset was fenced"
    assert client.get(f"/datasets/{name}/vectors").json()["total_count"] == 0
    asyncio.run(propose(commands.LiftFence("test-fence", int(time.time() * 1000))))
    writer.join(60)
    assert acked_after and acked_after[0] >= 0.5
    assert sorted(ids_at(client, name)) == sorted(_ids_for_every_shard("fenced"))
