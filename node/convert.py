"""Conversions between internal proto messages and shard records."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from proto import deeplake_service_pb2 as pb
from shard.records import VectorRecord
from tributary.validation import as_vector


def timestamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def record_from_proto(vector: pb.Vector, dimensions: int, metric: str) -> VectorRecord:
    return VectorRecord(
        id=vector.id, values=as_vector(list(vector.values), dimensions, metric,
                                       what=f"vector '{vector.id}'"),
        document_id=vector.document_id, chunk_id=vector.chunk_id, content=vector.content,
        content_hash=vector.content_hash, metadata=dict(vector.metadata),
        content_type=vector.content_type, language=vector.language,
        chunk_index=vector.chunk_index, chunk_count=vector.chunk_count, model=vector.model)


def record_to_proto(record: VectorRecord, dimensions: int) -> pb.Vector:
    vector = pb.Vector(
        id=record.id, document_id=record.document_id, chunk_id=record.chunk_id,
        content=record.content, content_hash=record.content_hash, metadata=record.metadata,
        content_type=record.content_type, language=record.language,
        chunk_index=record.chunk_index, chunk_count=record.chunk_count, model=record.model,
        dimensions=dimensions, created_at=timestamp(record.created_at_ms),
        updated_at=timestamp(record.updated_at_ms))
    if record.values is not None:
        vector.values.extend(record.values.tolist())
    return vector
