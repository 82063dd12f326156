"""tributary.client against the shared cluster: both clients (sync, async) over both transports
(REST, gRPC), the error classes, and a contract that REST and gRPC answer the same search the
same way."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from tributary import errors
from tributary.client import AsyncTributaryClient, TributaryClient

pytestmark = pytest.mark.integration

TRANSPORTS = ["rest", "grpc"]
DIM = 8


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def endpoint(cluster, transport: str) -> str:
    return cluster.rest if transport == "rest" else cluster.grpc_target


def unit(values) -> list[float]:
    """Cosine datasets store vectors normalized."""
    values = np.asarray(values, dtype=np.float64)
    return (values / np.linalg.norm(values)).tolist()


def make_vectors(n: int, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, DIM)).astype(np.float32)
    return [{"id": f"v{i:03d}", "document_id": f"doc{i % 5}", "values": values[i],
             "content": f"text {i}",
             "metadata": {"parity": "even" if i % 2 == 0 else "odd", "i": i, "flag": i < 3}}
            for i in range(n)]


@pytest.fixture(params=TRANSPORTS)
def client(request, cluster):
    with TributaryClient(endpoint(cluster, request.param), transport=request.param,
                         timeout=30) as c:
        yield c


def test_sync_client_flow(client):
    name = unique(f"pyc-{client.transport}")
    created = client.create_dataset(name, DIM, "cosine", description="client test",
                                    metadata={"team": "x"}, shard_count=2)
    assert created["dataset"]["name"] == name and created["dataset"]["shard_count"] == 2
    try:
        vectors = make_vectors(25)
        inserted = client.insert_vectors(name, vectors)
        assert inserted["inserted_count"] == 25

        assert name in [d["name"] for d in client.list_datasets()]
        got_dataset = client.get_dataset(name)["dataset"]
        assert got_dataset["vector_count"] == 25 and isinstance(got_dataset["vector_count"], int)
        assert got_dataset["metadata"] == {"team": "x"}

        found = client.search(name, vectors[3]["values"], top_k=5, include_content=True,
                              include_metadata=True)
        assert found["results"][0]["vector"]["id"] == "v003"
        assert found["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert [r["rank"] for r in found["results"]] == [1, 2, 3, 4, 5]
        assert found["results"][0]["vector"]["content"] == "text 3"
        # Numbers and booleans in metadata are stored as strings on both transports.
        assert found["results"][0]["vector"]["metadata"] == {"parity": "odd", "i": "3",
                                                             "flag": "false"}
        assert isinstance(found["stats"]["vectors_scanned"], int)

        filtered = client.search(name, vectors[0]["values"], top_k=25,
                                 filter="parity = 'even' AND i >= 10", include_metadata=True)
        ids = {r["vector"]["id"] for r in filtered["results"]}
        assert ids == {f"v{i:03d}" for i in range(10, 25, 2)}
        by_map = client.search(name, vectors[0]["values"], top_k=25, filters={"parity": "odd"})
        assert len(by_map["results"]) == 12

        vector = client.get_vector(name, "v004")["vector"]
        assert vector["id"] == "v004" and vector["document_id"] == "doc4"
        assert vector["values"] == pytest.approx(unit(vectors[4]["values"]), abs=1e-6)

        updated = client.update_vector(name, "v004", content="rewritten",
                                       metadata={"parity": "changed"})
        assert updated["vector"]["content"] == "rewritten"
        assert updated["vector"]["values"] == pytest.approx(unit(vectors[4]["values"]),
                                                            abs=1e-6)
        assert client.get_vector(name, "v004")["vector"]["metadata"] == {"parity": "changed"}

        first = client.list_vectors_page(name, page_size=10)
        assert len(first["vectors"]) == 10 and first["next_page_token"]
        assert first["total_count"] == 25
        assert "values" not in first["vectors"][0] or first["vectors"][0]["values"] == []
        listed = list(client.list_vectors(name, page_size=7, include_values=True))
        assert sorted(v["id"] for v in listed) == [f"v{i:03d}" for i in range(25)]
        assert all(len(v["values"]) == DIM for v in listed)

        assert client.delete_vector(name, "v000")["success"] is True
        with pytest.raises(errors.NotFound):
            client.get_vector(name, "v000")
        deleted = client.delete_vectors(name, ["v001", "v002", "nope"])
        assert deleted == {"deleted_count": 2, "not_found_count": 1}
        assert client.get_dataset(name)["dataset"]["vector_count"] == 22
    finally:
        assert client.delete_dataset(name)["success"] is True
    with pytest.raises(errors.NotFound):
        client.get_dataset(name)


def test_sync_client_errors(client):
    name = unique(f"pye-{client.transport}")
    client.create_dataset(name, DIM)
    try:
        with pytest.raises(errors.AlreadyExists):
            client.create_dataset(name, DIM)
        client.insert_vectors(name, make_vectors(3))
        with pytest.raises(errors.AlreadyExists):
            client.insert_vectors(name, make_vectors(1))
        assert client.insert_vectors(name, make_vectors(2), skip_existing=True)[
            "skipped_count"] == 2
        with pytest.raises(errors.InvalidArgument):
            client.insert_vectors(name, [{"id": "short", "values": [0.1, 0.2]}])
        with pytest.raises(errors.InvalidArgument):
            client.insert_vectors(name, [{"id": "x", "values": [0.1] * DIM, "colour": "red"}])
        with pytest.raises(errors.InvalidArgument):
            client.search(name, [0.1] * (DIM + 1))
        with pytest.raises(errors.InvalidArgument):
            client.search(name, [0.1] * DIM, filter="parity = ")
        with pytest.raises(errors.InvalidArgument):
            client.list_vectors_page(name, page_token="not-a-token")
        with pytest.raises(errors.NotFound):
            client.get_vector(name, "missing")
        with pytest.raises(errors.NotFound):
            client.delete_vector(name, "missing")
        with pytest.raises(errors.NotFound):
            client.update_vector(name, "missing", values=[0.1] * DIM)
        with pytest.raises(errors.NotFound):
            client.search(unique("no-such-dataset"), [0.1] * DIM)
        with pytest.raises(errors.NotFound):
            client.delete_dataset(unique("no-such-dataset"))
    finally:
        client.delete_dataset(name)


def test_idempotency_key_and_tenant(cluster):
    name = unique("pyi")
    for transport in TRANSPORTS:
        tenant = unique(f"tenant-{transport}")
        with TributaryClient(endpoint(cluster, transport), transport=transport,
                             tenant_id=tenant) as client, \
                TributaryClient(endpoint(cluster, transport), transport=transport) as other:
            client.create_dataset(name, DIM)
            try:
                key = unique("key")
                first = client.insert_vectors(name, make_vectors(4), idempotency_key=key)
                again = client.insert_vectors(name, make_vectors(4), idempotency_key=key)
                assert first["inserted_count"] == again["inserted_count"] == 4
                assert client.get_dataset(name)["dataset"]["tenant_id"] == tenant
                # Another tenant does not see the dataset.
                with pytest.raises(errors.NotFound):
                    other.get_dataset(name)
            finally:
                client.delete_dataset(name)


def test_health(client):
    health = client.health()
    assert health["status"] and isinstance(health["dependencies"], dict)


def test_unreachable_endpoint_is_unavailable():
    with TributaryClient("http://127.0.0.1:9/api/v1", timeout=2) as rest:
        with pytest.raises(errors.Unavailable):
            rest.health()
    with TributaryClient("127.0.0.1:9", transport="grpc", timeout=2) as grpc_client:
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            grpc_client.list_datasets_page()


def test_bad_transport_is_rejected():
    with pytest.raises(ValueError):
        TributaryClient(transport="soap")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_client_flow(cluster, transport):
    async def scenario():
        name = unique(f"pya-{transport}")
        async with AsyncTributaryClient(endpoint(cluster, transport),
                                        transport=transport) as client:
            created = await client.create_dataset(name, DIM, "l2", shard_count=2)
            assert created["dataset"]["metric_type"] == "l2"
            try:
                vectors = make_vectors(12, seed=3)
                assert (await client.insert_vectors(name, vectors,
                                                    idempotency_key=unique("k")))[
                    "inserted_count"] == 12
                found = await client.search(name, vectors[5]["values"], top_k=3)
                assert found["results"][0]["vector"]["id"] == "v005"
                assert (await client.get_vector(name, "v005"))["vector"]["id"] == "v005"
                await client.update_vector(name, "v005", {"content": "async"})
                assert (await client.get_vector(name, "v005"))["vector"]["content"] == "async"
                ids = [v["id"] async for v in client.list_vectors(name, page_size=5)]
                assert sorted(ids) == [f"v{i:03d}" for i in range(12)]
                assert name in [d["name"] for d in await client.list_datasets()]
                assert (await client.delete_vectors(name, ["v000", "v001"]))[
                    "deleted_count"] == 2
                await client.delete_vector(name, "v002")
                with pytest.raises(errors.NotFound):
                    await client.get_vector(name, "v002")
                with pytest.raises(errors.AlreadyExists):
                    await client.create_dataset(name, DIM)
                with pytest.raises(errors.InvalidArgument):
                    await client.search(name, [1.0])
                health = await client.health()
                assert health["status"]
            finally:
                await client.delete_dataset(name)
            with pytest.raises(errors.NotFound):
                await client.get_dataset(name)
    asyncio.run(scenario())


def test_rest_and_grpc_agree(cluster):
    """The contract: the same search over REST and gRPC gives the same ids, ranks and scores."""
    name = unique("pyx")
    with TributaryClient(cluster.rest) as rest, \
            TributaryClient(cluster.grpc_target, transport="grpc") as grpc_client:
        rest.create_dataset(name, DIM, shard_count=2)
        try:
            vectors = make_vectors(40, seed=11)
            rest.insert_vectors(name, vectors[:20])
            grpc_client.insert_vectors(name, vectors[20:])
            rng = np.random.default_rng(5)
            requests = [dict(query_vector=rng.normal(size=DIM).tolist(), top_k=10,
                             include_content=True, include_metadata=True),
                        dict(query_vector=vectors[7]["values"].tolist(), top_k=15,
                             filter="parity = 'odd'"),
                        dict(query_vector=vectors[8]["values"].tolist(), top_k=5,
                             filters={"parity": "even"}, ef_search=64)]
            for request in requests:
                over_rest = rest.search(name, **request)
                over_grpc = grpc_client.search(name, **request)
                assert over_rest["total_found"] == over_grpc["total_found"]
                assert [r["vector"]["id"] for r in over_rest["results"]] == \
                    [r["vector"]["id"] for r in over_grpc["results"]]
                assert [r["rank"] for r in over_rest["results"]] == \
                    [r["rank"] for r in over_grpc["results"]]
                for a, b in zip(over_rest["results"], over_grpc["results"]):
                    assert a["score"] == pytest.approx(b["score"], abs=1e-5)
                    assert a["distance"] == pytest.approx(b["distance"], abs=1e-5)
                    assert a["vector"].get("metadata") == b["vector"].get("metadata")
                    assert a["vector"].get("content") == b["vector"].get("content")
                assert set(over_rest) == set(over_grpc)
            # The non-search reads agree field for field, too.
            assert rest.get_vector(name, "v021") == grpc_client.get_vector(name, "v021")
            rest_dataset = rest.get_dataset(name)["dataset"]
            grpc_dataset = grpc_client.get_dataset(name)["dataset"]
            assert rest_dataset == grpc_dataset
            assert rest.list_vectors_page(name, page_size=9) == \
                grpc_client.list_vectors_page(name, page_size=9)
        finally:
            rest.delete_dataset(name)
