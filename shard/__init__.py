"""A shard replica: one Deep Lake dataset (store of record) plus one hnswlib index (a cache)."""
