"""The search-frame wire format: the router -> node search hop over a plain TCP connection.

A router's plain searches to a node ride one long-lived connection per router and node
(router/search_frames.py to node/search_frames.py) instead of a gRPC bidi stream: a gRPC
message costs the Python side one completion-queue round through grpc.aio's Cython callbacks
on each end, and a frame costs one buffer slice. `python -m bench.hop_floor --transports`
measured 0.98 against 1.67 ms of CPU per 2-shard search (router + nodes, canned answers).

The connection opens with MAGIC (8 bytes, the format's version in its last byte). Then each
way, frames: a 4-byte big-endian length and that many bytes. A router -> node frame is a
serialized node.proto ShardSearchStreamRequest with the cluster proof appended
(cluster_auth.ClusterToken.sign with FRAMES_METHOD, so a proof of one transport is no proof on
another); a node -> router frame is a ShardSearchStreamResponse. The proof works as on gRPC:
a frame without a valid one closes the connection.

Why not a library: what is needed is a length prefix over asyncio's own transport; a framing
or RPC library (grpclib, msgpack-rpc) would bring back the per-message machinery this hop
exists to avoid."""

from __future__ import annotations

import socket
import struct

from tributary import limits

MAGIC = b"TRBSRCH\x01"
FRAMES_METHOD = "/tributary.node.ShardNode/SearchFrames"
_LENGTH = struct.Struct(">I")


class FrameError(Exception):
    """A connection that does not speak the format (bad preamble, a frame over the size
    bound): it is closed."""


def tune_socket(transport) -> None:
    """Keepalive probes, and a bound on how long sent bytes may go unacknowledged
    (search_frames_unacked_ms, Linux TCP_USER_TIMEOUT), on a frame connection: a peer whose
    host vanished without a reset ends the connection then, rather than after the kernel's
    retransmissions (~15 min), and its messages go again over gRPC. A stopped process still
    has its kernel acknowledge, so only the per-message deadline covers that."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    probe_s = max(1, limits.search_frames_unacked_ms // 3000)
    for option, value in (("TCP_KEEPIDLE", probe_s), ("TCP_KEEPINTVL", probe_s),
                          ("TCP_KEEPCNT", 3),
                          ("TCP_USER_TIMEOUT", limits.search_frames_unacked_ms)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def encode(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


class FrameReader:
    """Cuts the bytes of one connection into frames. `expect_magic`: the connection must
    open with MAGIC (the node's side)."""

    __slots__ = ("_buffer", "_max_bytes", "_greeted")

    def __init__(self, max_bytes: int, expect_magic: bool = False):
        self._buffer = bytearray()
        self._max_bytes = max_bytes
        self._greeted = not expect_magic

    @property
    def greeted(self) -> bool:
        """True once the preamble has come (always, for a reader that expects none)."""
        return self._greeted

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by `data`, in order. Raises FrameError on a bad preamble or a
        frame longer than max_bytes."""
        buffer = self._buffer
        buffer += data
        if not self._greeted:
            if len(buffer) < len(MAGIC):
                if not MAGIC.startswith(bytes(buffer)):
                    raise FrameError("the connection does not open with the search-frame "
                                     "preamble")
                return []
            if buffer[:len(MAGIC)] != MAGIC:
                raise FrameError("the connection does not open with the search-frame preamble "
                                 "(another protocol, or another version of it)")
            del buffer[:len(MAGIC)]
            self._greeted = True
        frames = []
        start = 0
        end = len(buffer)
        while end - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if size > self._max_bytes:
                raise FrameError(f"a frame of {size} bytes is over the bound of "
                                 f"{self._max_bytes}")
            if end - start - 4 < size:
                break
            frames.append(bytes(buffer[start + 4:start + 4 + size]))
            start += 4 + size
        if start:
            del buffer[:start]
        return frames
