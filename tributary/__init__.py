"""Tributary: a sharded, distributed vector database over Deep Lake and hnswlib."""

__version__ = "0.1.0"
