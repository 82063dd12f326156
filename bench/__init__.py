"""Benchmark harness for Tributary (see bench/README.md). Run with `python -m bench.run`."""
