#!/usr/bin/env python3
"""Tributary from Python, over REST and over gRPC, with tributary.client.

Start a cluster with `make up`, then run (from the repository root):

    .venv/bin/python docs/examples/python_client.py

Endpoints default to the `make up` ones; override with TRIBUTARY_REST
(e.g. http://127.0.0.1:8000/api/v1) and TRIBUTARY_GRPC (e.g. 127.0.0.1:50051).
"""

from __future__ import annotations

import os
import sys
import uuid

# Run from a checkout without installing: make the repository importable.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from tributary import errors  # noqa: E402
from tributary.client import TributaryClient  # noqa: E402

REST = os.environ.get("TRIBUTARY_REST", "http://127.0.0.1:8000/api/v1")
GRPC = os.environ.get("TRIBUTARY_GRPC", "127.0.0.1:50051")


def walk_through(client: TributaryClient) -> None:
    name = f"example-{client.transport}-{uuid.uuid4().hex[:6]}"
    print(f"[{client.transport}] health:", client.health()["status"])

    created = client.create_dataset(name, dimensions=4, metric_type="cosine",
                                    description="python example")
    print(f"[{client.transport}] created:", created["message"])
    try:
        inserted = client.insert_vectors(name, [
            {"id": "a1", "document_id": "doc1", "values": [0.1, 0.2, 0.3, 0.4],
             "content": "rivers join", "metadata": {"lang": "en", "year": 2024}},
            {"id": "a2", "values": [0.4, 0.3, 0.2, 0.1], "content": "streams part",
             "metadata": {"lang": "fr", "year": 2019}},
            {"id": "a3", "values": [0.2, 0.2, 0.3, 0.3], "content": "deltas spread",
             "metadata": {"lang": "en", "year": 2021}},
        ], idempotency_key=f"{name}-batch-1")
        print(f"[{client.transport}] inserted:", inserted["inserted_count"])

        found = client.search(name, [0.1, 0.2, 0.3, 0.4], top_k=2, include_content=True,
                              include_metadata=True)
        for hit in found["results"]:
            print(f"[{client.transport}]   #{hit['rank']} {hit['vector']['id']} "
                  f"score={hit['score']:.4f} {hit['vector']['content']!r}")

        filtered = client.search(name, [0.1, 0.2, 0.3, 0.4], top_k=5,
                                 filter="lang = 'en' AND year >= 2022")
        print(f"[{client.transport}] filtered:", [h["vector"]["id"] for h in filtered["results"]])

        client.update_vector(name, "a2", content="streams part, then meet again")
        print(f"[{client.transport}] a2 now:", client.get_vector(name, "a2")["vector"]["content"])
        print(f"[{client.transport}] all ids:",
              sorted(v["id"] for v in client.list_vectors(name, page_size=2)))

        client.delete_vector(name, "a3")
        try:
            client.get_vector(name, "a3")
        except errors.NotFound as exc:
            print(f"[{client.transport}] a3 is gone: NotFound: {exc.message}")
        print(f"[{client.transport}] vector_count:",
              client.get_dataset(name)["dataset"]["vector_count"])
    finally:
        client.delete_dataset(name)
        print(f"[{client.transport}] deleted {name}")


def main() -> int:
    with TributaryClient(REST) as rest:
        walk_through(rest)
    with TributaryClient(GRPC, transport="grpc") as grpc_client:
        walk_through(grpc_client)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
