"""Internal gRPC authenticated with a cluster secret (tributary/cluster_auth.py).

A cluster started with TRIBUTARY_CLUSTER_SECRET works end to end through the router (so routers and
nodes send the token to nodes and meta members), while a caller that talks to a node or a meta
member directly without the token, or with the token of another secret, is refused with
UNAUTHENTICATED and changes nothing."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from cluster import Cluster, wait_for
from consensus import commands
from proto import meta_pb2, meta_pb2_grpc, node_pb2, node_pb2_grpc
from tributary.cluster_auth import ClusterToken

pytestmark = pytest.mark.integration

SECRET = "internal-secret-" + "7" * 32
GOOD = ClusterToken.from_secret(SECRET).metadata
WRONG = ClusterToken.from_secret("another-secret-" + "8" * 32).metadata
MISSING = ()


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster-auth"), meta=1, nodes=1,
                env={"TRIBUTARY_CLUSTER_SECRET": SECRET}).start()
    yield c
    c.stop()


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_the_cluster_works_through_the_router_with_internal_auth_on(secured):
    assert '"internal_auth": "on"' in secured.output()
    with httpx.Client(base_url=secured.rest, timeout=30) as client:
        assert client.post("/datasets", json={"name": "docs", "dimensions": 3}).status_code == 201
        r = client.post("/datasets/docs/vectors", json={"vectors": [
            {"id": "a", "values": [1, 0, 0]}, {"id": "b", "values": [0, 1, 0]}]})
        assert r.status_code == 201, r.text
        r = client.post("/datasets/docs/search", json={"query_vector": [1, 0, 0],
                                                       "options": {"top_k": 1}})
        assert r.status_code == 200, r.text
        assert [hit["vector"]["id"] for hit in r.json()["results"]] == ["a"]
        wait_for(lambda: client.get("/health").status_code == 200, 30, what="healthy")


def test_a_node_refuses_calls_without_the_cluster_token(secured):
    with grpc.insecure_channel(secured.node_address(0)) as channel:
        stub = node_pb2_grpc.ShardNodeStub(channel)
        status = lambda md: stub.Status(node_pb2.NodeStatusRequest(), timeout=5,  # noqa: E731
                                        metadata=md)
        assert code_of(lambda: status(MISSING)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: status(WRONG)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: status(GOOD)) == grpc.StatusCode.OK


def test_a_meta_member_refuses_calls_without_the_cluster_token(secured):
    with grpc.insecure_channel(secured.meta_grpc(0)) as channel:
        stub = meta_pb2_grpc.MetaStub(channel)

        def state(md) -> dict:
            response = stub.GetState(meta_pb2.GetStateRequest(linearizable=True), timeout=5,
                                     metadata=md)
            return json.loads(response.state_json)

        assert "node-0" in state(GOOD)["nodes"]
        # A well-formed command that would register a node, sent with a wrong and with no token.
        forged = commands.encode(commands.RegisterNode("intruder", "10.0.0.66:7000", 1))
        for md in (MISSING, WRONG):
            assert code_of(lambda: stub.Propose(meta_pb2.ProposeRequest(command_json=forged),
                                                timeout=5, metadata=md)
                           ) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(lambda: state(md)) == grpc.StatusCode.UNAUTHENTICATED
        assert "intruder" not in state(GOOD)["nodes"]
