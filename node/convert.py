"""Conversions between internal proto messages and shard records."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from proto import deeplake_service_pb2 as pb
from shard.records import VectorRecord
from tributary.validation import as_matrix


def timestamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def records_from_protos(vectors, dimensions: int, metric: str) -> list[VectorRecord]:
    """Shard records from proto vectors, validating and normalizing all values at once."""
    vectors = list(vectors)
    matrix = as_matrix([v.values for v in vectors], dimensions, metric,
                       names=[v.id for v in vectors])
    return [VectorRecord(
        id=v.id, values=matrix[i], document_id=v.document_id, chunk_id=v.chunk_id,
        content=v.content, content_hash=v.content_hash, metadata=dict(v.metadata),
        content_type=v.content_type, language=v.language, chunk_index=v.chunk_index,
        chunk_count=v.chunk_count, model=v.model) for i, v in enumerate(vectors)]


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
