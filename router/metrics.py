"""Prometheus metrics of the router (prometheus-client)."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter("tributary_router_requests_total", "Requests served by the router",
                   ["protocol", "route", "status"])
REQUEST_LATENCY = Histogram("tributary_router_request_seconds", "Router request latency",
                            ["protocol", "route"])
