"""Channel options shared by every internal gRPC client."""

from tributary import limits


def internal_channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
        ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
        ("grpc.initial_reconnect_backoff_ms", limits.grpc_reconnect_backoff_min_ms),
        ("grpc.min_reconnect_backoff_ms", limits.grpc_reconnect_backoff_min_ms),
        ("grpc.max_reconnect_backoff_ms", limits.grpc_reconnect_backoff_max_ms),
    ]
