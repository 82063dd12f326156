"""Searches batched across the router -> node hop, through a real cluster (issue 18): a burst of
concurrent searches with different top_k, ef_search, filters, stored fields, exact and
as_of_version reaches the nodes in fewer RPCs than shard searches, and every search answers
exactly what it answers alone."""

from __future__ import annotations

import asyncio
import re

import grpc
import httpx
import numpy as np
import pytest

from cluster import wait_for
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

DIMS = 16
NAME = "batched-search"


def _node_search_rpcs(cluster) -> float:
    """Search RPCs (Search and SearchBatch) the nodes have answered, from their /metrics."""
    total = 0.0
    for i in range(cluster.nodes):
        text = httpx.get(f"http://127.0.0.1:{cluster.internal_base + 40 + i}/metrics",
                         timeout=10).text
        found = re.search(r"^tributary_node_search_seconds_count (\S+)$", text, re.M)
        total += float(found.group(1)) if found else 0.0
    return total


def _requests(rng) -> list[pb.SearchVectorsRequest]:
    shapes = [
        dict(options=pb.SearchOptions(top_k=10)),
        dict(options=pb.SearchOptions(top_k=1)),
        dict(options=pb.SearchOptions(top_k=37, ef_search=200)),
        dict(options=pb.SearchOptions(top_k=5, ef_search=12)),
        dict(options=pb.SearchOptions(top_k=10, include_metadata=True, include_content=True)),
        dict(options=pb.SearchOptions(top_k=8, filters={"parity": "odd"})),
        dict(options=pb.SearchOptions(top_k=6, filter="bucket >= 3")),
        dict(options=pb.SearchOptions(top_k=10, min_score=0.5)),
        dict(options=pb.SearchOptions(top_k=10), exact=True),
        dict(options=pb.SearchOptions(top_k=10), as_of_version="v1"),
    ]
    return [pb.SearchVectorsRequest(dataset_id=NAME, query_vector=rng.standard_normal(
        DIMS).tolist(), **shapes[i % len(shapes)]) for i in range(60)]


def _answer(response: pb.SearchVectorsResponse) -> list[tuple]:
    return [(r.vector.id, r.score, r.distance, r.rank, r.vector.content,
             dict(r.vector.metadata)) for r in response.results]


def test_a_burst_of_mixed_searches_shares_node_calls_and_each_answers_as_alone(cluster):
    rng = np.random.default_rng(23)
    data = rng.standard_normal((3_000, DIMS)).astype(np.float32)
    with httpx.Client(base_url=cluster.rest, timeout=120) as client:
        r = client.post("/datasets", json={"name": NAME, "dimensions": DIMS,
                                           "metric_type": "cosine", "shard_count": 2})
        assert r.status_code == 201, r.text
        for start in range(0, 2_000, 1_000):
            r = client.post(f"/datasets/{NAME}/vectors", json={"vectors": [
                {"id": f"v{i}", "values": data[i].tolist(), "content": f"text {i}",
                 "metadata": {"parity": "odd" if i % 2 else "even", "bucket": str(i % 5)}}
                for i in range(start, start + 1_000)]})
            assert r.status_code == 201, r.text
        r = client.post(f"/datasets/{NAME}/versions", json={"tag": "v1"})
        assert r.status_code == 201, r.text
        # Rows after the version: a search at v1 must not see them.
        r = client.post(f"/datasets/{NAME}/vectors", json={"vectors": [
            {"id": f"v{i}", "values": data[i].tolist(), "metadata": {"parity": "odd",
                                                                        "bucket": "4"}}
            for i in range(2_000, 3_000)]})
        assert r.status_code == 201, r.text
        wait_for(lambda: client.get("/health").json()["checks"]["index_backlog"][
            "pending_vectors"] == 0, 120, 0.5, "the graph to hold every row")
    requests = _requests(rng)

    async def run_all(concurrently: bool) -> list:
        async with grpc.aio.insecure_channel(cluster.grpc_target) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            if concurrently:
                return await asyncio.gather(*(stub.SearchVectors(request, timeout=60)
                                              for request in requests))
            return [await stub.SearchVectors(request, timeout=60) for request in requests]

    alone = [_answer(r) for r in asyncio.run(run_all(concurrently=False))]
    shard_searches = 0
    burst = None
    for _ in range(5):      # the burst batches unless the router happened to trickle it out
        before = _node_search_rpcs(cluster)
        burst = [_answer(r) for r in asyncio.run(run_all(concurrently=True))]
        shard_searches = 2 * len(requests)
        rpcs = _node_search_rpcs(cluster) - before
        assert burst == alone
        if rpcs < shard_searches:
            break
    assert rpcs < shard_searches, f"{rpcs} node search calls for {shard_searches} searches"
    # The searches at v1 saw none of the rows written after it; the others did.
    at_v1 = [a for request, a in zip(requests, alone) if request.as_of_version]
    assert at_v1 and all(int(hit[0][1:]) < 2_000 for answer in at_v1 for hit in answer)
    assert any(int(hit[0][1:]) >= 2_000 for answer in alone for hit in answer)
    assert all(len(a) == 37 for request, a in zip(requests, alone)
               if request.options.top_k == 37)
    with httpx.Client(base_url=cluster.rest, timeout=60) as client:
        client.delete(f"/datasets/{NAME}")


def _maps_uvloop(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return any("uvloop/loop.cpython" in line for line in f)


def test_the_router_and_the_nodes_serve_on_uvloop(cluster):
    """tributary/event_loop.py: the running router and nodes have uvloop's loop loaded (the
    less-CPU-per-call loop of issue 18), not just its module importable."""
    servers = []
    for pid in cluster.pids()[1:]:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        if b"router" in argv or b"node" in argv:
            servers.append(pid)
    assert len(servers) == cluster.nodes + 1, servers
    assert all(_maps_uvloop(pid) for pid in servers)
