"""The metadata Raft group: catalog, nodes, shard placement and epochs. Never vector data."""
