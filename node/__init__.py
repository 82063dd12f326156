"""A shard node: hosts shard replicas and serves them over internal gRPC."""
