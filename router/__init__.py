"""The stateless router: REST and gRPC front ends over one core, routing to shard nodes."""
