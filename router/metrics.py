"""Prometheus metrics of the router (prometheus-client)."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter("tributary_router_requests_total", "Requests served by the router",
                   ["protocol", "route", "status"])
REQUEST_LATENCY = Histogram("tributary_router_request_seconds", "Router request latency",
                            ["protocol", "route"])

TXNS = Counter("tributary_txns_total", "Multi-shard write transactions by outcome "
               "(started, committed, aborted, in_doubt, deduplicated)", ["outcome"])
TXN_LATENCY = Histogram("tributary_txn_phase_seconds", "2PC phase latency", ["phase"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
